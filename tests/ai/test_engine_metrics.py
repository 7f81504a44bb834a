"""Metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medviewer.ai.metrics import (
    auc,
    classification_report,
    confusion_at,
    dice,
    dice_per_label,
    expected_calibration_error,
    iou,
    iou_per_label,
    youden_threshold,
)


def test_auc_by_hand():
    # positives 0.9, 0.4; negatives 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1) -> 3/4
    assert auc([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1]) == pytest.approx(0.75)
    # a tie between a positive and a negative counts one half: pairs 1, 1, 0.5, 1 -> 3.5/4
    assert auc([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1]) == pytest.approx(0.875)
    assert auc([1, 0], [0.2, 0.8]) == 0.0
    assert math.isnan(auc([1, 1], [0.2, 0.8]))


def test_expected_calibration_error_by_hand():
    # bin [0.1, 0.2): p 0.1, 0.1 with y 0, 1 -> |0.5 - 0.1| = 0.4, share 1/2
    # bin [0.9, 1.0]: p 0.9, 1.0 with y 1, 1 -> |1 - 0.95| = 0.05, share 1/2
    y, p = [0, 1, 1, 1], [0.1, 0.1, 0.9, 1.0]
    assert expected_calibration_error(y, p, bins=10) == pytest.approx(0.5 * 0.4 + 0.5 * 0.05)
    assert expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0


def test_confusion_at_threshold():
    y = [1, 1, 1, 0, 0]
    p = [0.9, 0.6, 0.2, 0.7, 0.1]
    sens, spec, acc = confusion_at(y, p, 0.5)
    assert (sens, spec, acc) == pytest.approx((2 / 3, 1 / 2, 3 / 5))
    assert confusion_at(y, p, 0.6)[0] == pytest.approx(2 / 3)  # p >= threshold is positive


def test_youden_and_report():
    y = [0, 0, 1, 1]
    p = [0.1, 0.3, 0.6, 0.8]
    t = youden_threshold(y, p)
    assert 0.3 < t < 0.6
    report = classification_report(y, p, t)
    assert report["auc"] == 1.0 and report["sensitivity"] == 1.0 and report["specificity"] == 1.0
    assert report["n"] == 4 and report["positives"] == 2


def test_dice_and_iou_by_hand():
    pred = np.array([[1, 1, 0], [0, 0, 0]])
    truth = np.array([[1, 0, 0], [1, 0, 0]])
    assert dice(pred, truth) == pytest.approx(2 * 1 / (2 + 2))
    assert iou(pred, truth) == pytest.approx(1 / 3)
    assert dice(np.zeros(4), np.zeros(4)) == 1.0 and iou(np.zeros(4), np.zeros(4)) == 1.0
    labels_p = np.array([0, 1, 1, 2, 2, 2])
    labels_t = np.array([0, 1, 2, 2, 2, 0])
    assert dice_per_label(labels_p, labels_t, [1, 2]) == pytest.approx({1: 2 / 3, 2: 4 / 6})
    assert iou_per_label(labels_p, labels_t, [1, 2]) == pytest.approx({1: 1 / 2, 2: 2 / 4})
    with pytest.raises(ValueError):
        dice(np.zeros(3), np.zeros(4))
