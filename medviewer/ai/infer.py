"""``medviewer.ai.predict(volume, models)``: run the assistant's models over a series.

Slices go through each model in batches: ``torch.inference_mode``, channels-last memory,
automatic mixed precision on CUDA, CPU threads set explicitly, a batch size that fits the
device. Between batches the cancel token is checked and ``partial`` is called, so a viewer
can draw results as they arrive. Slices that hold a finding's label are segmented a second
time, mirrored left–right, and the two passes averaged; where they agree gives each finding
its confidence (slices without a candidate need no second opinion, which keeps the mirrored
pass to a fraction of the series). The classifier's Grad-CAM heatmap is computed for every
slice, from the same forward pass where the network's head allows (see ``explain``).

Each batch is cropped to the body before the networks see it: the air around a patient is a third or
more of a CT slice, and neither model finds anything there (see :func:`body_box`). Outside the crop the
segmentation is background and the heatmap zero, as the whole-slice pass gives them.

Before trusting any output the input is checked against what each model expects (modality,
units, value range, spacing): a mismatch becomes a warning in the Prediction, never a silent
result.
"""

from __future__ import annotations

import copy
import datetime
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from medviewer.ai import device as devices
from medviewer.ai.body import body_mask, hu_profile
from medviewer.ai.explain import cam_from_features, feature_layer, grad_cam, linear_head_weights
from medviewer.ai.findings import find_findings
from medviewer.ai.package import LoadedModel, Manifest, find_model, load_package
from medviewer.ai.prediction import ANATOMY_LABELS, Prediction
from medviewer.ai.preprocess import volume_batches
from medviewer.core.errors import Cancelled, CancelToken, MedViewerError, ProgressCallback, is_cancelled
from medviewer.core.volume import Volume

# A region is reported as a finding only when the mirrored pass confirms enough of it and it is compact (not
# tube-shaped); either way it stays in the mask, where the clinician sees it. A region less compact than that is
# first opened with a ball of SPLIT_RADIUS_MM, which cuts a nodule from the vessel it touches (and removes a thin
# vessel alone); the pieces are measured instead. Chosen on 16 tuning phantoms drawn from the training ranges with
# their own seed (20240777; not the test set): at 0.5 and 0.25 the built-in segmenter's regions held 25 of 34
# nodules >= 6 mm and 13 regions that were no nodule; at 0.7 and 0.4, the same 25 and 2. True nodules ran to
# confidence >= 0.75 and compactness >= 0.48; regions cut from vessels mostly under 0.4.
MIN_CONFIDENCE = 0.7
MIN_COMPACTNESS = 0.4
SPLIT_RADIUS_MM = 3.0


NOISE_MARGIN = 1.5
"""Noise beyond this multiple of the training data's highest noise is out of distribution."""


def estimate_noise_hu(volume: Volume, max_slices: int = 16) -> float | None:
    """The image noise (standard deviation, HU) in soft tissue: a robust spread (MAD) of differences between
    horizontally adjacent voxels that both lie in -150..150 HU, over up to ``max_slices`` slices. None where
    too few such pairs exist (no soft tissue: not a body CT)."""
    voxels = volume.voxels
    if voxels.ndim != 3 or voxels.shape[2] < 2:
        return None
    sample = np.asarray(voxels[:: max(1, voxels.shape[0] // max_slices)], dtype=np.float32)
    left, right = sample[:, :, :-1], sample[:, :, 1:]
    soft = (left > -150) & (left < 150) & (right > -150) & (right < 150)
    if soft.sum() < 500:
        return None
    d = (right - left)[soft]
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0))


# How far a study's share of the body in one HU band may stray from the training phantoms' range before the
# input check says so: below half their lowest, or above twice their highest.
PROFILE_LOW, PROFILE_HIGH = 0.5, 2.0
BAND_WORDS = {"air": "air (lung and airways)", "fat": "fat", "soft": "soft tissue and blood",
              "bone": "bone, contrast and metal"}


def _profile_warnings(volume: Volume, manifest: Manifest, name: str, cache: dict | None = None) -> list[str]:
    """The study's HU profile (:func:`medviewer.ai.body.hu_profile`) against the training phantoms' range in
    the manifest (``training.hu_profile``): one warning per band far outside it."""
    trained = (manifest.training or {}).get("hu_profile") or {}
    if not trained or volume.voxels.ndim != 3:
        return []
    if cache is not None and "hu_profile" in cache:
        profile = cache["hu_profile"]
    else:
        profile = hu_profile(volume.voxels, tuple(float(s) for s in volume.spacing_mm[1:]))
        if cache is not None:
            cache["hu_profile"] = profile
    if profile is None:
        return [f"{name}: no body found in the images (nothing denser than air)"]
    warnings = []
    for band, (lo, hi) in trained.items():
        share = profile.get(band)
        if share is None:
            continue
        if share < PROFILE_LOW * float(lo) or share > PROFILE_HIGH * float(hi):
            warnings.append(f"{name}: {BAND_WORDS.get(band, band)} is {share:.0%} of the body, where the CTs it "
                            f"was trained on had {float(lo):.0%}–{float(hi):.0%}: is this the kind of study it "
                            "was made for? Findings are unreliable")
    return warnings


def check_input(volume: Volume, manifest: Manifest, cache: dict | None = None) -> list[str]:
    """Plain-language warnings where ``volume`` is not what the model was made for (``cache``: a dict kept
    across the models of one prediction, so that the volume is measured once)."""
    spec = manifest.input
    name = manifest.name or manifest.id
    warnings = []
    if volume.is_color:
        return [f"{name}: expects {spec.modality} images, got colour pictures; results are meaningless"]
    if spec.modality and volume.modality != spec.modality:
        warnings.append(f"{name}: made for {spec.modality}, this series is {volume.modality or 'of unknown modality'}")
    if spec.units and volume.units != spec.units:
        warnings.append(f"{name}: expects values in {spec.units}, this series has "
                        f"{volume.units or 'no stated units'}")
    if spec.units == "HU":
        sample = volume.voxels[:: max(1, volume.shape[0] // 16), ::4, ::4]
        lo, hi = np.percentile(sample, [1, 99])
        if lo > -500 or hi > 4000 or lo < -1100:
            warnings.append(f"{name}: values {lo:.0f} to {hi:.0f} do not look like Hounsfield units of a chest CT "
                            "(air about -1000)")
        noise = estimate_noise_hu(volume)
        trained = (manifest.training.get("phantom_ranges") or {}).get("noise_hu") if manifest.training else None
        if noise is not None and trained and noise > NOISE_MARGIN * float(trained[1]):
            warnings.append(f"{name}: image noise of about {noise:.0f} HU is far beyond the {float(trained[0]):g}–"
                            f"{float(trained[1]):g} HU the model was trained on; findings are less reliable")
        warnings += _profile_warnings(volume, manifest, name, cache)
    dz, dy, dx = volume.spacing_mm
    lo_px, hi_px = spec.pixel_spacing_mm
    if not volume.pixel_spacing_known:
        warnings.append(f"{name}: the series has no pixel spacing")
    elif not (lo_px <= min(dy, dx) and max(dy, dx) <= hi_px):
        warnings.append(f"{name}: pixel spacing {dy:.2f}×{dx:.2f} mm is outside the model's range "
                        f"{lo_px:g}–{hi_px:g} mm")
    lo_z, hi_z = spec.slice_spacing_mm
    if volume.shape[0] > 1 and not (lo_z <= dz <= hi_z):
        warnings.append(f"{name}: slice spacing {dz:.2f} mm is outside the model's range {lo_z:g}–{hi_z:g} mm")
    return warnings


# The crop keeps everything denser than this (in HU: skin, table, blankets) and this many model pixels of air
# around it; its edges fall on the network's pooling grid, so the crop sees the same feature grid as the slice.
# With 8 pixels the classifier's deep features near the skin felt the crop's zero padding (slice probabilities
# moved by up to 0.025); with 16, by under 0.001.
BODY_HU = -500.0
BODY_MARGIN = 16
# Labels stay this far inside the skin (the chest wall is thicker than this everywhere, a child's included).
BODY_INSET_MM = 3.0


def body_box(images: torch.Tensor, manifest: Manifest, multiple: int | None) -> tuple[slice, slice] | None:
    """The part of a batch of network inputs ``images`` (N, C, H, W, normalised) that holds the body: rows and
    columns, widened by :data:`BODY_MARGIN` and out to multiples of ``multiple``. None where the whole slice is
    needed: a model not made for HU, a network that needs its full input size (``multiple`` None), a side that
    is not a multiple, or a batch with nothing denser than air."""
    spec = manifest.input
    height, width = images.shape[-2:]
    if multiple is None or spec.units != "HU" or spec.normalisation != "clip01" or height % multiple \
            or width % multiple or not images.shape[0]:
        return None
    lo, hi = spec.clip
    threshold = (BODY_HU - lo) / (hi - lo)
    dense = (images[:, images.shape[1] // 2] > threshold).any(0)
    rows, cols = torch.nonzero(dense.any(1)), torch.nonzero(dense.any(0))
    if not len(rows):
        return None

    def span(first: int, last: int, size: int) -> slice:
        start = max(0, (first - BODY_MARGIN) // multiple * multiple)
        stop = min(size, -(-(last + 1 + BODY_MARGIN) // multiple) * multiple)
        return slice(start, stop)

    box = (span(int(rows[0]), int(rows[-1]), height), span(int(cols[0]), int(cols[-1]), width))
    return None if box == (slice(0, height), slice(0, width)) else box


def _resolve(models: Sequence[LoadedModel | str | Path], device: torch.device) -> list[LoadedModel]:
    loaded = []
    for model in models:
        if isinstance(model, LoadedModel):
            loaded.append(model)
        else:
            info = find_model(str(model))
            loaded.append(load_package(info.path, device=device))
    return loaded


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """``model`` (in evaluation mode) with every BatchNorm2d that directly follows a Conv2d in a container folded
    into that convolution's weights and bias: the same outputs, one pass over the activations fewer."""
    for module in model.modules():
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats:
                module._modules[first] = fuse_conv_bn_eval(conv, norm)
                module._modules[second] = nn.Identity()
    return model


def inference_network(model: LoadedModel, target: torch.device) -> nn.Module:
    """The network ``model`` runs as for inference on ``target``: a copy (the package's own stays as loaded)
    with batch norms folded, channels-last (oneDNN and cuDNN both prefer it)."""
    net = fold_batch_norm(copy.deepcopy(model.model).eval()).to(target)
    if target.type in ("cuda", "cpu"):
        net = net.to(memory_format=torch.channels_last)
    return net


def _batch_size(device: torch.device, manifest: Manifest, requested: int | None) -> int:
    if requested:
        return requested
    h, w = manifest.input.size
    pixels = h * w
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # Activations of these networks take roughly a few kB per input pixel at width 16–32.
        return int(np.clip(free * 0.5 / (pixels * 4 * 64), 8, 512))
    # On a CPU small batches keep the activations in cache: 2 slices of 256² ran about 1.3x faster than 8
    # and 2x faster than 32; small batches also let a cancel or a partial result come sooner.
    return int(np.clip(2**17 // pixels, 1, 16))


def _temperature(manifest: Manifest) -> float:
    for source in (manifest.arguments, manifest.training, manifest.metrics):
        value = source.get("temperature") if isinstance(source, dict) else None
        if value:
            return float(value)
    return 1.0


def predict(
    volume: Volume,
    models: Sequence[LoadedModel | str | Path],
    *,
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    partial: Callable[[Prediction, str, np.ndarray], Any] | None = None,
    explain: bool = True,
    tta: bool = True,
    threads: int | None = None,
    crop: bool = True,
) -> Prediction:
    """Run ``models`` (loaded packages, ids or package paths) over every slice of ``volume``.

    ``progress(done, total)`` counts slices over all models; ``partial(prediction, model_id,
    slice_indices)`` is called after each batch with the prediction filled so far;
    ``cancel`` stops between batches with :class:`~medviewer.core.errors.Cancelled`; ``crop=False`` runs the
    networks on whole slices instead of the body's box (:func:`body_box`).
    """
    started = time.perf_counter()
    if volume.is_color:
        raise MedViewerError(volume.description or volume.series_uid or "series",
                             "a colour series: the assistant's models read grayscale images (CT in HU)")
    target = device if isinstance(device, torch.device) else devices.select_device(device)
    if target.type == "cpu":
        devices.configure_threads(threads)
    loaded = _resolve(models, target)
    if not loaded:
        raise ValueError("no model to run")
    slices, rows, cols = volume.voxels.shape[:3]
    classifiers = [m for m in loaded if m.manifest.task == "classification"]
    segmenters = [m for m in loaded if m.manifest.task == "segmentation"]
    classes = [label.name for m in classifiers for label in m.manifest.outputs]
    prediction = Prediction(
        series_uid=volume.series_uid,
        sop_instance_uids=volume.sop_instance_uids,
        positions_lps_mm=[tuple(p) for p in volume.positions_lps_mm] if volume.geometry_known else None,
        classes=classes,
        slice_probabilities=np.zeros((slices, len(classes)), dtype=np.float32) if classes else None,
        mask=np.zeros((slices, rows, cols), dtype=np.uint8) if segmenters else None,
        heatmap=np.zeros((slices, rows, cols), dtype=np.float16) if classifiers and explain else None,
        done_slices=np.zeros(slices, dtype=bool),
        device=devices.device_name(target),
    )
    measured: dict = {}
    for model in loaded:
        m = model.manifest
        prediction.models.append({
            "id": m.id, "name": m.name, "version": m.version, "sha256": m.sha256, "task": m.task,
            "not_for_clinical_use": m.not_for_clinical_use,
            "threshold": m.outputs[0].threshold if m.outputs else None,
        })
        for label in m.outputs:
            if m.task == "segmentation":
                prediction.labels[label.value] = {"name": label.name, "color": label.color,
                                                  "threshold": label.threshold}
        prediction.warnings.extend(check_input(volume, m, measured))

    total = slices * len(loaded)
    done = 0
    if progress:
        progress(0, total)
    class_offset = 0
    probability_maps: dict[int, np.ndarray] = {}
    agreement: np.ndarray | None = None
    for model in loaded:
        m = model.manifest
        net = inference_network(model, target)
        multiple = getattr(model.model, "size_multiple", None) if crop else None
        if m.task == "segmentation" and not any(label.value == 0 for label in m.outputs):
            multiple = None  # no background label to fill the rest of the slice with
        cam_weights = linear_head_weights(net) if m.task == "classification" else None
        finding_channels = [c for c, label in enumerate(m.outputs)
                            if label.value != 0 and label.name.lower() not in ANATOMY_LABELS]
        size = _batch_size(target, m, batch_size)
        t0 = time.perf_counter()
        if m.task == "segmentation":
            for value in (label.value for label in m.outputs):
                if value != 0:
                    probability_maps[value] = np.zeros((slices, rows, cols), dtype=np.float16)
            agreement = np.ones((slices, rows, cols), dtype=bool) if tta else None
        temperature = _temperature(m)
        for start in range(0, slices, size):
            if is_cancelled(cancel):
                raise Cancelled("prediction cancelled")
            indices = np.arange(start, min(start + size, slices))
            images = volume_batches(volume.voxels, m.input, indices).to(target)
            box = body_box(images, m, multiple)
            full = tuple(images.shape[-2:])
            if box is not None:
                images = images[:, :, box[0], box[1]]
            if target.type in ("cuda", "cpu"):
                images = images.contiguous(memory_format=torch.channels_last)
            if m.task == "classification":
                _classify(net, images, indices, prediction, class_offset, len(m.outputs), temperature, target,
                          explain, rows, cols, cam_weights, box, full)
            else:
                _segment(net, images, indices, prediction, m, probability_maps, agreement,
                         finding_channels if tta else [], target, rows, cols, cancel, box, full)
                if m.input.units == "HU" and any(label.value == 0 for label in m.outputs):
                    _keep_inside_body(volume, indices, prediction, probability_maps)
            prediction.done_slices[indices] = True
            done += len(indices)
            if partial:
                partial(prediction, m.id, indices)
            if progress:
                progress(done, total)
        prediction.timings[f"{m.id}_s"] = time.perf_counter() - t0
        if m.task == "classification":
            class_offset += len(m.outputs)

    next_id = 1
    for model in segmenters:
        for label in model.manifest.outputs:
            if label.value == 0 or label.name.lower() in ANATOMY_LABELS:
                continue
            found = find_findings(prediction.mask, volume, label_value=label.value, label_name=label.name,
                                  probability=probability_maps.get(label.value), agreement=agreement,
                                  first_id=next_id, split_below=MIN_COMPACTNESS, split_radius_mm=SPLIT_RADIUS_MM)
            found = [f for f in found if (f.confidence is None or f.confidence >= MIN_CONFIDENCE)
                     and (f.compactness is None or f.compactness >= MIN_COMPACTNESS)]
            for number, finding in enumerate(found):
                finding.id = next_id + number
            prediction.findings.extend(found)
            next_id += len(found)
    if prediction.slice_probabilities is not None and classes:
        prediction.study_probability = float(prediction.slice_probabilities[:, 0].max())
    elif prediction.findings:
        prediction.study_probability = max(f.max_probability for f in prediction.findings)
    else:
        prediction.study_probability = 0.0 if segmenters else None
    prediction.timings["total_s"] = time.perf_counter() - started
    prediction.created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    prediction.complete = True
    return prediction


def _keep_inside_body(volume: Volume, indices: np.ndarray, prediction: Prediction,
                      probability_maps: dict[int, np.ndarray]) -> None:
    """Background outside the patient's body outline (:func:`medviewer.ai.body.body_mask`), moved in by
    :data:`BODY_INSET_MM`: the air, table and cushions around a real patient, and the half-air rim of the skin,
    are nothing a chest model can label, whatever it learned from phantoms."""
    spacing = tuple(float(s) for s in volume.spacing_mm[1:])
    for k in indices:
        outside = ~body_mask(volume.voxels[k], spacing, inset_mm=BODY_INSET_MM)
        if outside.any():
            prediction.mask[k][outside] = 0
            for maps in probability_maps.values():
                maps[k][outside] = 0


def _autocast(target: torch.device):
    if target.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _paste(part: torch.Tensor, box: tuple[slice, slice] | None, full: tuple[int, int], fill: torch.Tensor | float
           ) -> torch.Tensor:
    """``part`` (N, C, h, w), the network's output for the crop ``box`` of a (``full``) input, placed in a tensor of
    the whole input's grid (scaled by the output's stride) filled with ``fill`` (a value, or one per channel)."""
    if box is None:
        return part
    ys, xs = box
    scale = (ys.stop - ys.start) // part.shape[-2]
    out = torch.empty(part.shape[:2] + (full[0] // scale, full[1] // scale), dtype=part.dtype, device=part.device)
    out[:] = fill[None, :, None, None] if isinstance(fill, torch.Tensor) else fill
    out[:, :, ys.start // scale:ys.stop // scale, xs.start // scale:xs.stop // scale] = part
    return out


def _classify(net, images, indices, prediction, offset, count, temperature, target, explain, rows, cols,
              cam_weights, box=None, full=None) -> None:
    heatmap = explain and prediction.heatmap is not None and offset == 0
    store: dict[str, torch.Tensor] = {}
    hook = None
    if heatmap and cam_weights is not None:
        hook = feature_layer(net).register_forward_hook(lambda _m, _i, out: store.__setitem__("features", out))
    try:
        with torch.inference_mode(), _autocast(target):
            logits = net(images).float()
    finally:
        if hook is not None:
            hook.remove()
    if logits.ndim == 1:
        logits = logits[:, None]
    probabilities = torch.sigmoid(logits / temperature) if count == 1 else torch.softmax(logits / temperature, 1)
    prediction.slice_probabilities[indices, offset:offset + count] = probabilities[:, :count].cpu().numpy()
    if heatmap:
        if "features" in store:
            with torch.inference_mode():
                features = _paste(store["features"].float(), box, full, 0.0)  # no evidence outside the body
                cam = cam_from_features(features, cam_weights, probabilities[:, 0], (rows, cols))
        else:  # a network whose head is not linear over pooled features: Grad-CAM by its backward pass
            cam = grad_cam(net, images.clone(), class_index=0, output_size=(rows, cols) if box is None else None,
                           temperature=temperature)
            if box is not None:
                cam = F.interpolate(_paste(cam[:, None], box, full, 0.0), size=(rows, cols), mode="bilinear",
                                    align_corners=False)[:, 0]
        prediction.heatmap[indices] = cam.cpu().numpy().astype(np.float16)


# The mirrored pass sees a window around a slice's candidates, this many model pixels wider on each side, in
# steps the U-Net's poolings divide: the networks are trained on 96-pixel crops, and the window costs a
# fraction of the whole slice.
MIRROR_MARGIN, MIRROR_STEP = 32, 16


def _windows(candidates: np.ndarray) -> list[tuple[slice, slice]]:
    """Windows around the groups of candidate pixels (``candidates``: bool, H x W) of at least 3 pixels: each
    group widened by the margin, in whole steps of the U-Net (or the whole axis where the size is not)."""
    height, width = candidates.shape
    groups, count = ndimage.label(candidates, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return []
    sizes = np.bincount(groups.ravel(), minlength=count + 1)
    keep = sizes >= 3
    keep[0] = False
    if not keep.any():
        return []
    near = ndimage.maximum_filter(keep[groups], size=2 * MIRROR_MARGIN + 1)  # groups closer than that share one

    def span(piece: slice, size: int) -> slice:
        lo = piece.start // MIRROR_STEP * MIRROR_STEP
        hi = min(size, -(-piece.stop // MIRROR_STEP) * MIRROR_STEP)
        return slice(lo, hi) if (hi - lo) % MIRROR_STEP == 0 else slice(0, size)

    regions, _ = ndimage.label(near)
    return [(span(ys, height), span(xs, width)) for ys, xs in ndimage.find_objects(regions)]


def label_scales(manifest: Manifest, target: torch.device | str = "cpu") -> torch.Tensor:
    """Per-label thresholds as factors (1, C, 1, 1): a voxel takes the label whose probability is the largest
    multiple of its label's threshold (``argmax(p / threshold)``). All thresholds equal is the plain argmax; a
    finding label's lower threshold lets it win where it is likely enough though not the most likely."""
    thresholds = [label.threshold if label.threshold and label.threshold > 0 else 0.5 for label in manifest.outputs]
    return (1.0 / torch.tensor(thresholds, dtype=torch.float32, device=target))[None, :, None, None]


def _segment(net, images, indices, prediction, manifest, probability_maps, agreement, finding_channels, target,
             rows, cols, cancel=None, box=None, full=None) -> None:
    """Segment a batch. Where a finding's label won on a slice, a window around those pixels is segmented again,
    mirrored left-right, and the two passes averaged there (``finding_channels`` empty: no second pass);
    ``agreement`` marks the voxels where both passes chose the same label (True outside the windows). ``images``
    may be the crop ``box`` of slices of size ``full``: outside it every voxel is background, with certainty."""
    values = torch.tensor([label.value for label in manifest.outputs], device=target)
    scale = label_scales(manifest, target)
    agree = None
    channels_last = images.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), _autocast(target):
        probabilities = torch.softmax(net(images).float(), 1)  # in the model's pixels
        winners = (probabilities * scale).max(1).indices  # argmax(1) took ten times as long on the CPU
        if finding_channels:
            agree = torch.ones_like(winners, dtype=torch.bool)
            candidates = np.isin(winners.cpu().numpy(), finding_channels)
            for n in range(len(indices)):
                windows = _windows(candidates[n]) if candidates[n].any() else []
                if windows and is_cancelled(cancel):
                    raise Cancelled("prediction cancelled")
                for ys, xs in windows:
                    flipped = torch.flip(images[n:n + 1, :, ys, xs], dims=[3])
                    if channels_last:
                        flipped = flipped.contiguous(memory_format=torch.channels_last)
                    mirrored = torch.flip(torch.softmax(net(flipped).float(), 1), dims=[3])[0]
                    first = probabilities[n, :, ys, xs]
                    agree[n, ys, xs] = ((first * scale[0]).max(0).indices
                                        == (mirrored * scale[0]).max(0).indices)
                    probabilities[n, :, ys, xs] = (first + mirrored) / 2
        if box is not None:
            background = torch.tensor([1.0 if label.value == 0 else 0.0 for label in manifest.outputs],
                                      device=probabilities.device)
            probabilities = _paste(probabilities, box, full, background)
            if agree is not None:
                agree = _paste(agree[:, None], box, full, True)[:, 0]
        if probabilities.shape[-2:] != (rows, cols):
            probabilities = F.interpolate(probabilities, size=(rows, cols), mode="bilinear", align_corners=False)
            if agree is not None:
                agree = F.interpolate(agree[:, None].float(), size=(rows, cols), mode="nearest")[:, 0] > 0.5
        winners = (probabilities * scale).max(1).indices
    prediction.mask[indices] = values[winners].to(torch.uint8).cpu().numpy()
    for channel, label in enumerate(manifest.outputs):
        if label.value in probability_maps:
            probability_maps[label.value][indices] = probabilities[:, channel].cpu().numpy().astype(np.float16)
    if agree is not None and agreement is not None:
        agreement[indices] = agree.cpu().numpy()
