"""Evaluation metrics for classifiers (AUC, calibration, confusion at a threshold) and segmenters (Dice, IoU).

``y``: 0/1 truths, ``p``: probabilities in [0, 1], 1-D arrays of one length.  Masks: integer label arrays of
one shape.  Empty cases are defined rather than NaN where a convention exists (Dice of two empty masks is 1).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "auc",
    "confusion_at",
    "dice",
    "dice_per_label",
    "expected_calibration_error",
    "iou",
    "iou_per_label",
    "label_counts",
    "classification_report",
    "youden_threshold",
]


def _pair(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(bool).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y and p must have one length, got {y.size} and {p.size}")
    return y, p


def auc(y, p) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula; tied scores count one half.
    NaN when only one class is present."""
    y, p = _pair(y, p)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(p)  # average ranks for ties
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def expected_calibration_error(y, p, bins: int = 10) -> float:
    """ECE: sum over ``bins`` equal-width probability bins of (bin share) x |mean(y) - mean(p)| in the bin.
    A probability of exactly 1 falls in the last bin."""
    y, p = _pair(y, p)
    if y.size == 0:
        return float("nan")
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = index == b
        if sel.any():
            total += sel.mean() * abs(y[sel].mean() - p[sel].mean())
    return float(total)


def confusion_at(y, p, threshold: float) -> tuple[float, float, float]:
    """``(sensitivity, specificity, accuracy)`` when ``p >= threshold`` is called positive (NaN for an absent class)."""
    y, p = _pair(y, p)
    called = p >= threshold
    tp, tn = int((called & y).sum()), int((~called & ~y).sum())
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    sens = tp / n_pos if n_pos else float("nan")
    spec = tn / n_neg if n_neg else float("nan")
    acc = (tp + tn) / y.size if y.size else float("nan")
    return float(sens), float(spec), float(acc)


def _masks(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred).astype(bool), np.asarray(truth).astype(bool)
    if pred.shape != truth.shape:
        raise ValueError(f"pred and truth must have one shape, got {pred.shape} and {truth.shape}")
    return pred, truth


def dice(pred, truth) -> float:
    """Dice ``2|P∩T| / (|P| + |T|)`` of two boolean masks; 1.0 when both are empty."""
    pred, truth = _masks(pred, truth)
    both = int(np.count_nonzero(pred & truth))
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(truth))
    return 1.0 if total == 0 else 2.0 * both / total


def iou(pred, truth) -> float:
    """Intersection over union ``|P∩T| / |P∪T|`` of two boolean masks; 1.0 when both are empty."""
    pred, truth = _masks(pred, truth)
    union = int(np.count_nonzero(pred | truth))
    return 1.0 if union == 0 else int(np.count_nonzero(pred & truth)) / union


def label_counts(pred, truth, labels: Iterable[int]) -> dict[int, tuple[int, int, int]]:
    """Per label: (|P∩T|, |P|, |T|) voxel counts, for pooling Dice/IoU over many volumes."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"pred and truth must have one shape, got {pred.shape} and {truth.shape}")
    out = {}
    for v in labels:
        p, t = pred == v, truth == v
        out[int(v)] = (int(np.count_nonzero(p & t)), int(np.count_nonzero(p)), int(np.count_nonzero(t)))
    return out


def dice_per_label(pred, truth, labels: Iterable[int]) -> dict[int, float]:
    """Dice of each label value in integer masks ``pred`` and ``truth``."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    return {int(v): dice(pred == v, truth == v) for v in labels}


def iou_per_label(pred, truth, labels: Iterable[int]) -> dict[int, float]:
    """IoU of each label value in integer masks ``pred`` and ``truth``."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    return {int(v): iou(pred == v, truth == v) for v in labels}


def youden_threshold(y, p) -> float:
    """The probability cut-off maximising sensitivity + specificity - 1 (Youden's J), midway between the two
    neighbouring scores; 0.5 when only one class is present."""
    y, p = _pair(y, p)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return 0.5
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    tpr = np.cumsum(ys) / n_pos
    fpr = np.cumsum(~ys) / n_neg
    last = np.r_[ps[1:] != ps[:-1], True]  # only cut between distinct scores
    j = np.where(last, tpr - fpr, -np.inf)
    i = int(np.argmax(j))
    below = ps[i + 1] if i + 1 < ps.size else 0.0
    return float((ps[i] + below) / 2)


def classification_report(y, p, threshold: float, bins: int = 10) -> dict:
    """Held-out metrics of a binary classifier as plain floats: AUC, accuracy, sensitivity and specificity at
    ``threshold``, expected calibration error, and the counts."""
    y, p = _pair(y, p)
    sens, spec, acc = confusion_at(y, p, threshold)
    return {
        "auc": auc(y, p),
        "accuracy": acc,
        "sensitivity": sens,
        "specificity": spec,
        "ece": expected_calibration_error(y, p, bins),
        "threshold": float(threshold),
        "n": int(y.size),
        "positives": int(y.sum()),
    }
