"""Training loops: a classifier (BCE / cross-entropy) here and a segmenter (Dice + cross-entropy, in
:mod:`medviewer.ai.train_segment`), both with Adam.

Both take a training and a validation :class:`~medviewer.ai.data.SliceDataset` (split by patient with
:func:`~medviewer.ai.data.split_by_group`), augment batches on the device (:func:`~medviewer.ai.preprocess.augment`),
evaluate on validation after every epoch and keep the best epoch's weights.  The classifier is then calibrated
(:func:`~medviewer.ai.calibration.fit_temperature`; the temperature and bias become the network's
``calibration_temperature``/``calibration_bias`` arguments, applied in its forward) and its operating threshold
chosen on validation (Youden's J).

Determinism: one ``seed`` drives ``torch.manual_seed`` (initial weights, dropout), a numpy generator (sampling,
crops) and a torch generator (augmentation); deterministic algorithms are switched on while training.  Two runs
with one seed on one device give identical weights.  ``progress(epoch, epochs, metrics)`` is called after each
epoch; ``cancel`` (callable or ``threading.Event``) stops between batches with :class:`Cancelled`.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medviewer.ai.augment import DomainRandomisation, randomise_domain
from medviewer.ai.calibration import fit_temperature
from medviewer.ai.data import SliceDataset
from medviewer.ai.evaluation import dataset_logits, probabilities
from medviewer.ai.metrics import auc, classification_report, expected_calibration_error, youden_threshold
from medviewer.ai.networks import build
from medviewer.ai.preprocess import augment
from medviewer.ai.train_loop import (
    UNIFORM,
    EpochProgress,
    StepProgress,
    TrainLoop,
    TrainResult,
    crop_origins,
    deterministic,
    settings_record,
    setup_device,
    subsample,
)
from medviewer.ai.train_segment import train_segmenter
from medviewer.core.errors import CancelToken

__all__ = ["TrainResult", "train_classifier", "train_segmenter"]


def _balanced_pairs(pairs: np.ndarray, y: np.ndarray, n: int, rng: np.random.Generator, balance: bool,
                    weights: np.ndarray) -> np.ndarray:
    """``n`` training slices: classes drawn equally often (``balance``), slices within a class in proportion to
    ``weights``."""
    if not balance:
        return pairs[rng.choice(len(pairs), n, p=weights / weights.sum())]
    classes = np.unique(y)
    pick = rng.integers(0, len(classes), n)
    out = np.empty((n, 2), dtype=np.int64)
    for i, c in enumerate(classes):
        members = np.flatnonzero(y == c)
        sel = pick == i
        w = weights[members]
        out[sel] = pairs[members[rng.choice(len(members), int(sel.sum()), p=w / w.sum())]]
    return out


def train_classifier(train: SliceDataset, val: SliceDataset, *, channels: int, architecture: str = "NoduleCNN",
                     arguments: dict | None = None, epochs: int = 10, batch_size: int = 32, lr: float = 1e-3,
                     weight_decay: float = 1e-4, steps_per_epoch: int | None = None, balance: bool = True,
                     augmentation: dict | None = None, domain: DomainRandomisation | None = None,
                     dense_supervision: float = 0.0,
                     crop: int | None = None, crop_min_area_mm2: float | None = None,
                     val_max_slices: int | None = None, seed: int = 0, device: str | torch.device = "auto",
                     threads: int | None = None, progress: EpochProgress | None = None,
                     on_step: StepProgress | None = None, cancel: CancelToken | None = None) -> TrainResult:
    """Train a per-slice classifier on ``train`` (targets >= 0), choose the best epoch by validation AUC
    (then loss), calibrate it and pick the threshold on ``val``.  Targets 0..K-1; two classes train one logit
(class 1 is "present"), more a softmax over K.

    ``channels``: slices per input (the input spec's channels).  ``arguments``: the network's (``in_channels`` and
    ``classes`` are filled in).  ``steps_per_epoch``: batches per epoch (default: one pass over the training
    slices).  ``balance``: draw classes equally often; within a class, slices are drawn in proportion to
    ``meta["sample_weight"]`` where the dataset has it.  ``dense_supervision``: weight of an auxiliary loss that
    teaches the network's ``features`` map where the finding is (a 1x1 convolution on ``features``, trained against
    the dataset's masks max-pooled to the map's size, used only while training and not saved); needs masks of 0/1
    (see :func:`~medviewer.ai.data.phantom_entry`).  ``crop``: train a one-logit classifier on ``crop`` x ``crop``
    windows of the slices (a window of a positive slice is centred near the mask), each labelled positive when its
    mask covers at least ``crop_min_area_mm2`` (pixel areas from ``meta["pixel_area_mm2"]``); validation, selection
    and calibration use whole slices, so use a size-independent head (``head_pool="max"``).  ``val_max_slices``:
    per-epoch validation on every positive slice and random negatives up to this many (calibration and the
    returned metrics always use the whole validation set).  Returns metrics as in :func:`classification_report`
    (binary) or accuracy/AUC per class (several classes), all on validation with calibrated probabilities.
    """
    dev = setup_device(device, threads)
    pairs = train.slices()
    y = train.slice_targets(pairs)
    val_pairs = val.slices()
    val_y = val.slice_targets(val_pairs)
    if len(pairs) == 0 or len(val_pairs) == 0:
        raise ValueError("training and validation sets must both hold labelled slices")
    n_classes = max(int(y.max()), int(val_y.max())) + 1
    args = dict(arguments or {})
    args.update(in_channels=channels, classes=1 if n_classes <= 2 else n_classes)
    args.pop("calibration_temperature", None)
    args.pop("calibration_bias", None)
    steps = steps_per_epoch or max(1, math.ceil(len(pairs) / batch_size))
    aug = dict(augmentation or {})
    history: list[dict] = []
    started = time.perf_counter()
    dense = dense_supervision > 0
    if (dense or crop) and any(m is None for m in train.masks):
        raise ValueError("dense supervision and crops need a mask for every training volume")
    if crop and (args["classes"] != 1 or crop_min_area_mm2 is None
                 or any("pixel_area_mm2" not in m for m in train.meta)):
        raise ValueError("crops need a one-logit classifier, crop_min_area_mm2 and meta['pixel_area_mm2']")
    epoch_pairs, epoch_y = subsample(val_pairs, val_y, val_max_slices, seed)
    weights = train.slice_weights(pairs)
    with deterministic(seed):
        model = build(architecture, args)
        aux, hook, seen = None, None, {}
        if dense:
            aux = nn.Conv2d(_feature_channels(model, channels, train), 1, 1).to(dev)
            hook = model.features.register_forward_hook(lambda _m, _i, out: seen.__setitem__("map", out))
        loop = TrainLoop(model, dev, seed, lr, weight_decay, epochs * steps, cancel, on_step, extra=aux)
        best, best_key = None, None
        for epoch in range(1, epochs + 1):
            model.train()
            losses = []
            for s in range(steps):
                batch = _balanced_pairs(pairs, y, batch_size, loop.rng, balance, weights)
                target = torch.from_numpy(train.slice_targets(batch))
                origins = None if not crop else crop_origins(train, batch, crop, np.where(target.numpy() > 0, 1, UNIFORM),
                                                               loop.rng)
                images, masks = train.batch(batch, channels, origins, crop)
                if crop:
                    area = torch.tensor([train.meta[v]["pixel_area_mm2"] for v, _ in batch])
                    target = ((masks > 0).sum(dim=(1, 2)) * area >= crop_min_area_mm2).long()
                if domain is not None:
                    images, masks = randomise_domain(images.to(dev), None if masks is None else masks.to(dev),
                                                     loop.gen, domain)
                    if masks is not None:  # a nodule moved out of the crop is no longer shown
                        target = target * (masks > 0).flatten(1).any(1).long().cpu()
                    masks = masks if dense else None
                else:
                    images, masks = augment(images.to(dev), masks.to(dev) if dense else None, loop.gen, **aug)
                target = target.to(dev)
                logits = model(images)
                if args["classes"] == 1:
                    loss = F.binary_cross_entropy_with_logits(logits[:, 0], target.float())
                else:
                    loss = F.cross_entropy(logits, target)
                if dense:
                    fmap = seen.pop("map")
                    where = F.adaptive_max_pool2d(masks[:, None].float(), fmap.shape[-2:])
                    loss = loss + dense_supervision * F.binary_cross_entropy_with_logits(aux(fmap), where)
                losses.append(loop.update(loss, s, steps))
            t_val = time.perf_counter()
            logits = dataset_logits(model, val, epoch_pairs, channels, device=dev)
            val_loss, val_auc = _classifier_scores(logits, epoch_y)
            row = {"epoch": epoch, "loss": float(np.mean(losses)), "val_loss": val_loss, "val_auc": val_auc,
                   "validation_seconds": round(time.perf_counter() - t_val, 1),
                   "seconds": round(time.perf_counter() - started, 1)}
            history.append(row)
            key = (np.nan_to_num(val_auc, nan=0.0), -val_loss)
            if best_key is None or key > best_key:
                best_key, best = key, copy.deepcopy(model.state_dict())
            if progress is not None:
                progress(epoch, epochs, row)
    if hook is not None:
        hook.remove()
    model.load_state_dict(best)
    model = model.to("cpu").eval()
    logits = dataset_logits(model, val, val_pairs, channels)
    temperature, bias = fit_temperature(logits[:, 0] if args["classes"] == 1 else logits, val_y)
    args.update(calibration_temperature=temperature, calibration_bias=bias)
    model.calibration_temperature, model.calibration_bias = temperature, bias
    p = probabilities(logits / temperature + (bias if args["classes"] == 1 else 0.0))  # what forward now returns
    if args["classes"] == 1:
        threshold = youden_threshold(val_y, p)
        metrics = classification_report(val_y, p, threshold)
    else:
        threshold = 0.5
        metrics = {"accuracy": float((p.argmax(1) == val_y).mean()),
                   "auc_per_class": {str(c): auc(val_y == c, p[:, c]) for c in range(n_classes)},
                   "ece": expected_calibration_error(p.argmax(1) == val_y, p.max(1)), "n": int(len(val_y))}
    metrics["raw_ece_before_calibration"] = expected_calibration_error(
        val_y == 1, probabilities(logits)) if args["classes"] == 1 else None
    settings = settings_record(dev, seed, epochs, steps, batch_size, lr, weight_decay,
                               aug if domain is None else {"domain_randomisation": domain.to_dict()}, started, best_key,
                         history, balance=balance, dense_supervision=dense_supervision, crop=crop,
                         crop_min_area_mm2=crop_min_area_mm2)
    return TrainResult(model, architecture, args, metrics, threshold, history, settings)


def _feature_channels(model: nn.Module, channels: int, data: SliceDataset) -> int:
    """Channels of ``model.features``' output, found by running one small input through it."""
    seen = {}
    hook = model.features.register_forward_hook(lambda _m, _i, out: seen.__setitem__("map", out))
    try:
        was = model.training
        model.eval()
        with torch.no_grad():
            h, w = data.images[0].shape[1:]
            model(torch.zeros(1, channels, h, w))
        model.train(was)
    finally:
        hook.remove()
    return int(seen["map"].shape[1])


def _classifier_scores(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    z = torch.from_numpy(logits).double()
    t = torch.from_numpy(y)
    if z.shape[1] == 1:
        loss = float(F.binary_cross_entropy_with_logits(z[:, 0], t.double()))
        return loss, auc(y, torch.sigmoid(z[:, 0]).numpy())
    loss = float(F.cross_entropy(z, t))
    p = torch.softmax(z, dim=1).numpy()
    return loss, float(np.nanmean([auc(y == c, p[:, c]) for c in range(z.shape[1])]))
