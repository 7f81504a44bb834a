"""Scale bar: nice lengths, labels, unknown spacing."""

from __future__ import annotations

import math

import pytest

from medviewer.core.scalebar import length_label, scale_bar


@pytest.mark.parametrize("mm_per_px, length_mm, label", [
    (1.0, 100.0, "10 cm"),
    (0.7, 50.0, "5 cm"),
    (0.5, 50.0, "5 cm"),
    (0.3, 20.0, "2 cm"),
    (0.15, 10.0, "1 cm"),
    (0.08, 5.0, "5 mm"),
    (0.02, 2.0, "2 mm"),
    (0.01, 1.0, "1 mm"),
    (0.009, 0.5, "500 µm"),
    (0.0025, 0.2, "200 µm"),
    (4.0, 200.0, "20 cm"),
    (12.0, 1000.0, "1 m"),
])
def test_scale_bar_nice_lengths(mm_per_px, length_mm, label):
    got_mm, got_px, got_label = scale_bar(mm_per_px)
    assert got_mm == pytest.approx(length_mm)
    assert got_px == pytest.approx(length_mm / mm_per_px)
    assert 40 <= got_px <= 100
    assert got_label == label


def test_scale_bar_target_size():
    length_mm, length_px, label = scale_bar(0.5, target_px=250)
    assert (length_mm, label) == (100.0, "10 cm") and length_px == pytest.approx(200)


@pytest.mark.parametrize("spacing", [None, 0.0, -1.0, math.nan])
def test_scale_bar_unknown_spacing_measures_pixels(spacing):
    assert scale_bar(spacing) == (None, 100.0, "100 px")
    assert scale_bar(spacing, target_px=80) == (None, 50.0, "50 px")


def test_length_labels():
    assert length_label(30.0) == "3 cm"
    assert length_label(15.0) == "15 mm"
    assert length_label(0.001) == "1 µm"
    assert length_label(2e-4) == "200 nm"


def test_scale_bar_rejects_bad_target():
    with pytest.raises(ValueError):
        scale_bar(1.0, target_px=0)
