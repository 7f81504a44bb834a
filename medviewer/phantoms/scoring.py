"""Scores of the assistant's output on held-out studies with truth: per-slice AUC and calibration, lung and
nodule Dice, and FROC detection (LUNA16 style), overall and per nodule size, kind, attachment and margin.

Pure numpy: the inputs are the truth (:func:`medviewer.phantoms.heldout.read_heldout_truth`) and what
``medviewer predict`` wrote (:func:`medviewer.ai.prediction.read_prediction`), already aligned slice by slice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from medviewer.ai.metrics import auc, classification_report, expected_calibration_error, label_counts

__all__ = [
    "FP_RATES",
    "SIZE_BINS_MM",
    "SLICE_AREA_MM2",
    "align_slices",
    "froc",
    "score_study",
    "slice_truth",
    "summarise",
]

SLICE_AREA_MM2 = 20.0  # a slice shows a nodule from this cross-section on (the classifier's label rule)
SIZE_BINS_MM = ((3.0, 6.0), (6.0, 10.0), (10.0, 20.0), (20.0, 30.01))
FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
MIN_DICE_DIAMETER_MM = 6.0
_IGNORE_MARGIN_MM = 3.0  # around nodules < 6 mm, left out of the pooled nodule Dice
_BOX_MARGIN_MM = 5.0  # per-nodule Dice inside a box of the radius + this


def slice_truth(nodule_labels: np.ndarray, spacing_mm: Sequence[float]) -> np.ndarray:
    """Per slice: True where the nodule cross-section is at least :data:`SLICE_AREA_MM2`."""
    area = np.count_nonzero(nodule_labels.reshape(nodule_labels.shape[0], -1), axis=1) * spacing_mm[1] * spacing_mm[2]
    return area >= SLICE_AREA_MM2


def align_slices(positions_lps_mm: Sequence[Sequence[float]], origin_lps_mm: Sequence[float], dz: float,
                 slices: int) -> np.ndarray:
    """For each predicted slice (its position), the truth slice ``k``; ValueError when one has no truth slice."""
    z = np.array([p[2] for p in positions_lps_mm], dtype=np.float64)
    k = np.rint((z - origin_lps_mm[2]) / dz).astype(np.int64)
    if k.size != slices or (k < 0).any() or (k >= slices).any() or np.unique(k).size != k.size:
        raise ValueError(f"the prediction's {k.size} slices do not match the truth's {slices}")
    return k


def _distance_mm(shape, spacing, centre_index, box):
    c = centre_index
    axes = [(np.arange(s.start, s.stop) - c[a]) * spacing[a] for a, s in enumerate(box)]
    return np.sqrt(axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2)


def _box(shape, spacing, centre_index, reach_mm):
    return tuple(slice(max(0, int(math.floor(c - reach_mm / s))), min(n, int(math.ceil(c + reach_mm / s)) + 1))
                 for c, s, n in zip(centre_index, spacing, shape))


def score_study(truth: dict, labels: np.ndarray, nodule_labels: np.ndarray, pred_mask: np.ndarray | None,
                slice_probabilities: np.ndarray | None, findings: list[dict], *, lung_value: int = 1,
                nodule_value: int = 2) -> dict:
    """One study: voxel counts for pooled Dice, per-nodule Dice, per-slice truth and probabilities, and the
    findings as ``(score, hit nodule label or 0, hits an uncounted nodule)``.

    ``pred_mask`` and ``slice_probabilities`` are aligned to the truth (``k`` order).  ``findings``: dicts with
    ``centroid_lps_mm`` and ``max_probability`` (as predictions.json has them).  A finding hits a nodule when
    its centroid lies within the nodule's radius (LUNA16); nodules with no voxel on any slice are not counted
    (they lie between slices), and findings on them are neither hits nor false findings.
    """
    spacing = tuple(truth["spacing_mm"])
    shape = labels.shape
    nodules = truth["nodules"]
    visible = {n["label"] for n in nodules if (nodule_labels == n["label"]).any()}
    out = {"seed": truth.get("seed"), "slices": int(shape[0]), "nodules": [], "findings": []}
    out["slice_truth"] = slice_truth(nodule_labels, spacing).tolist()
    out["slice_probability"] = None if slice_probabilities is None else [float(p) for p in slice_probabilities]
    if pred_mask is not None:
        pred_mask = np.asarray(pred_mask)
        ignore = np.zeros(shape, bool)
        big = np.zeros(shape, bool)
        for n in nodules:
            if n["diameter_mm"] < MIN_DICE_DIAMETER_MM:
                reach = n["diameter_mm"] / 2 + _IGNORE_MARGIN_MM
                box = _box(shape, spacing, n["center_index"], reach)
                ignore[box] |= _distance_mm(shape, spacing, n["center_index"], box) <= reach
            else:
                big |= nodule_labels == n["label"]
        keep = ~ignore
        pn = (pred_mask == nodule_value) & keep
        lung = label_counts((pred_mask == lung_value).view(np.uint8), (labels == 1).view(np.uint8), [1])[1]
        nod = label_counts(pn.view(np.uint8), (big & keep).view(np.uint8), [1])[1]
        out["lung_counts"], out["nodule_counts"] = list(lung), list(nod)
    for n in nodules:
        entry = {k: n[k] for k in ("label", "diameter_mm", "kind", "attachment", "margin")}
        entry["visible"] = n["label"] in visible
        if pred_mask is not None:
            reach = n["diameter_mm"] / 2 + _BOX_MARGIN_MM
            box = _box(shape, spacing, n["center_index"], reach)
            t = nodule_labels[box] == n["label"]
            p = (pred_mask[box] == nodule_value) & ((nodule_labels[box] == 0) | t)  # not another nodule's
            total = int(t.sum()) + int(p.sum())
            entry["dice"] = 1.0 if total == 0 else 2.0 * int((t & p).sum()) / total
        out["nodules"].append(entry)
    centres = {n["label"]: np.asarray(n["center_lps_mm"], float) for n in nodules}
    radii = {n["label"]: n["diameter_mm"] / 2 for n in nodules}
    for f in findings:
        c = f.get("centroid_lps_mm")
        score = float(f.get("max_probability", 1.0))
        if c is None:
            out["findings"].append((score, 0, False))
            continue
        hits = [lab for lab in centres if np.linalg.norm(np.asarray(c, float) - centres[lab]) <= radii[lab]]
        counted = [lab for lab in hits if lab in visible]
        out["findings"].append((score, counted[0] if counted else 0, bool(hits) and not counted))
    return out


def froc(studies: list[dict], rates: Sequence[float] = FP_RATES) -> dict:
    """Sensitivity at each rate of false findings per study, sweeping the finding score (LUNA16: a second
    finding on a detected nodule is neither hit nor false; findings on uncounted nodules are ignored).

    Also, per rate, which nodules are detected there (``detected[rate]``: set of ``(study index, label)``), and
    the operating point with every finding kept.  The curve stops at the lowest score the engine reports.
    """
    events = []
    for s_idx, s in enumerate(studies):
        for score, label, ignored in s["findings"]:
            if not ignored:
                events.append((score, s_idx, label))
    events.sort(key=lambda e: -e[0])
    total = sum(n["visible"] for s in studies for n in s["nodules"])
    n_studies = max(1, len(studies))
    found: set = set()
    fps = 0
    curve = [(0.0, 0.0, math.inf, frozenset())]  # (fp per study, sensitivity, threshold, detected)
    i = 0
    while i < len(events):
        score = events[i][0]
        while i < len(events) and events[i][0] == score:  # one threshold takes all findings of one score
            _, s_idx, label = events[i]
            if label:
                found.add((s_idx, label))
            else:
                fps += 1
            i += 1
        curve.append((fps / n_studies, len(found) / total if total else math.nan, score, frozenset(found)))
    out = {"nodules": total, "studies": len(studies), "sensitivity": {}, "detected": {},
           "all_findings": {"sensitivity": curve[-1][1], "false_findings_per_study": curve[-1][0],
                            "false_findings": fps}}
    for r in rates:
        best = max((c for c in curve if c[0] <= r + 1e-12), key=lambda c: (c[1] if not math.isnan(c[1]) else -1))
        out["sensitivity"][r] = best[1]
        out["detected"][r] = best[3]
    usable = [out["sensitivity"][r] for r in FP_RATES if r in out["sensitivity"]]
    out["cpm"] = float(np.mean(usable)) if usable and len(usable) == len(FP_RATES) else None
    return out


def _group_rows(studies: list[dict], detected: dict, key, names) -> dict:
    rows = {}
    for name in names:
        members = [(s_idx, n) for s_idx, s in enumerate(studies) for n in s["nodules"]
                   if n["visible"] and key(n) == name]
        if not members:
            continue
        row = {"nodules": len(members)}
        for r in (1.0, 2.0, 4.0):
            hits = sum((s_idx, n["label"]) in detected[r] for s_idx, n in members)
            row[f"sensitivity_at_{r:g}_fp"] = hits / len(members)
        dices = [n["dice"] for _, n in members if "dice" in n]
        row["dice_mean"] = float(np.mean(dices)) if dices else None
        rows[name] = row
    return rows


def _size_name(d: float) -> str:
    for lo, hi in SIZE_BINS_MM:
        if lo <= d < hi:
            return f"{lo:g}-{min(hi, 30.0):g} mm"
    return "other"


def summarise(studies: list[dict], threshold: float | None = None) -> dict:
    """The headline figures over all ``studies`` (records of :func:`score_study`)."""
    out: dict = {"studies": len(studies), "slices": sum(s["slices"] for s in studies)}
    probs = [s for s in studies if s["slice_probability"] is not None]
    if probs:
        y = np.concatenate([np.asarray(s["slice_truth"], bool) for s in probs])
        p = np.concatenate([np.asarray(s["slice_probability"], float) for s in probs])
        report = classification_report(y, p, threshold if threshold is not None else 0.5)
        out["slice"] = {"auc": auc(y, p), "ece_10_bins": expected_calibration_error(y, p, 10),
                        "sensitivity": report["sensitivity"], "specificity": report["specificity"],
                        "threshold": report["threshold"], "slices": int(y.size), "positive_slices": int(y.sum())}
    masks = [s for s in studies if "lung_counts" in s]
    if masks:
        def pooled(key):
            inter, p, t = np.sum([s[key] for s in masks], axis=0)
            return 1.0 if p + t == 0 else 2.0 * inter / (p + t)

        def each(key):
            vals = []
            for s in masks:
                inter, p, t = s[key]
                vals.append(1.0 if p + t == 0 else 2.0 * inter / (p + t))
            return vals

        lung_each = each("lung_counts")
        per_nodule = [n["dice"] for s in masks for n in s["nodules"]
                      if n["visible"] and n["diameter_mm"] >= MIN_DICE_DIAMETER_MM]
        out["dice"] = {"lung": pooled("lung_counts"), "lung_per_study_min": float(min(lung_each)),
                       "nodule_ge_6mm": pooled("nodule_counts"),
                       "nodule_ge_6mm_per_nodule_mean": float(np.mean(per_nodule)) if per_nodule else None,
                       "nodules_ge_6mm": len(per_nodule)}
    det = froc(studies)
    out["froc"] = {"nodules": det["nodules"], "sensitivity": {f"{r:g}": v for r, v in det["sensitivity"].items()},
                   "cpm": det["cpm"], "all_findings": det["all_findings"],
                   "rule": "a finding hits a nodule when its centroid lies within the nodule's radius; nodules with "
                           "no voxel on any slice are not counted"}
    out["nodules_not_visible"] = sum(not n["visible"] for s in studies for n in s["nodules"])
    detected = det["detected"]
    out["by_size"] = _group_rows(studies, detected, lambda n: _size_name(n["diameter_mm"]),
                                 [_size_name((lo + hi) / 2) for lo, hi in SIZE_BINS_MM])
    out["by_kind"] = _group_rows(studies, detected, lambda n: n["kind"],
                                 ["solid", "part-solid", "ground-glass", "calcified"])
    out["by_attachment"] = _group_rows(studies, detected, lambda n: n["attachment"], ["none", "pleural", "vascular"])
    out["by_margin"] = _group_rows(studies, detected, lambda n: n["margin"], ["smooth", "lobulated", "spiculated"])
    return out
