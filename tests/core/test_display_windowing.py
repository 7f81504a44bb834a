"""Window/level policy: presets, header default, percentile window, drags, uint16 display shift."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from medviewer.core.volume import SliceInfo, Volume
from medviewer.core.windowing import (
    CT_PRESETS,
    Window,
    default_window,
    display_offset,
    drag_sensitivity,
    drag_window,
    percentile_window,
    to_display_levels,
    to_display_pixels,
    window_presets,
)


def make_volume(voxels: np.ndarray, modality: str = "CT", units: str = "HU", windows=(), photometric="MONOCHROME2"):
    slices = [SliceInfo(f"1.2.3.{k}", f"f{k}.dcm", 0, (0.0, 0.0, float(k)), k + 1, 1.0, 0.0)
              for k in range(voxels.shape[0])]
    return Volume(voxels=voxels, spacing_mm=(1.0, 1.0, 1.0), origin_lps_mm=np.zeros(3), direction=np.eye(3)[::-1],
                  slices=slices, modality=modality, units=units, photometric=photometric,
                  windows=list(windows), geometry_known=True, pixel_spacing_known=True)


def ramp(shape=(4, 32, 32), lo=0, hi=1000, dtype=np.int16) -> np.ndarray:
    return np.linspace(lo, hi, int(np.prod(shape))).astype(dtype).reshape(shape)


def test_window_levels_and_from_levels():
    w = Window(40, 400)
    assert w.levels() == (-160.0, 240.0)
    assert Window.from_levels(-160, 240) == w
    assert Window.from_levels(240, -160) == w
    assert Window(10, 0).width == 1.0
    assert Window(10, -50).levels() == (9.5, 10.5)
    assert Window.from_levels(5, 5).width == 1.0


def test_ct_presets_in_menu_order():
    assert list(CT_PRESETS) == ["brain", "lung", "mediastinum", "abdomen", "bone"]
    assert CT_PRESETS["brain"] == Window(40, 80)
    assert CT_PRESETS["lung"] == Window(-600, 1500)
    assert CT_PRESETS["mediastinum"] == Window(40, 400)
    assert CT_PRESETS["abdomen"] == Window(50, 400)
    assert CT_PRESETS["bone"] == Window(400, 1800)


def test_default_window_prefers_header_then_ct_then_percentile():
    voxels = ramp()
    assert default_window(make_volume(voxels, windows=[(35, 350), (500, 2000)])) == Window(35, 350)
    assert default_window(make_volume(voxels)) == CT_PRESETS["mediastinum"]
    mr = make_volume(voxels, modality="MR", units="")
    assert default_window(mr) == percentile_window(voxels)
    colour = make_volume(np.zeros((2, 8, 8, 3), np.uint8), modality="XC", units="")
    assert default_window(colour) is None


def test_window_presets():
    voxels = ramp()
    ct = window_presets(make_volume(voxels, windows=[(35, 350)]))
    assert list(ct) == ["Default", *CT_PRESETS]
    assert ct["Default"] == Window(35, 350)
    mr = window_presets(make_volume(voxels, modality="MR", units=""))
    assert list(mr) == ["Default", "Auto"]
    assert mr["Auto"] == percentile_window(voxels)
    colour = make_volume(np.zeros((2, 8, 8, 3), np.uint8), modality="XC", units="")
    assert window_presets(colour) == {}


def test_percentile_window_of_a_ramp():
    voxels = ramp(lo=0, hi=1000)
    lo, hi = percentile_window(voxels, 0, 100).levels()
    assert (lo, hi) == (0, 1000)
    lo, hi = percentile_window(voxels).levels()
    assert lo == pytest.approx(5, abs=1.5) and hi == pytest.approx(995, abs=1.5)


def test_percentile_window_ignores_padding():
    voxels = ramp(lo=0, hi=100)
    voxels[:, :, :12] = -2000  # ~37% padding outside the field of view
    lo, hi = percentile_window(voxels, 0, 100).levels()
    assert lo >= 0 and hi == 100
    # A minimum that is a small fraction of the samples is real data and stays.
    voxels = ramp(lo=0, hi=100)
    voxels[0, 0, :5] = -2000
    assert percentile_window(voxels, 0, 100).levels()[0] == -2000


def test_percentile_window_uniform_and_empty():
    assert percentile_window(np.full((2, 4, 4), 7, np.int16)).levels() == (6.5, 7.5)
    assert percentile_window(np.zeros((0, 4, 4), np.int16)).width == 1.0
    floats = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 8, 8)
    floats[0, 0, 0] = np.nan
    assert np.isfinite(percentile_window(floats).center)


def test_percentile_window_subsamples_without_big_copies():
    voxels = np.random.default_rng(0).integers(-1000, 3001, size=(64, 256, 256), dtype=np.int16)
    tracemalloc.start()
    try:
        window = percentile_window(voxels, max_samples=100_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < voxels.nbytes / 4  # 8 MiB volume: only the sample is copied
    lo, hi = window.levels()
    assert lo == pytest.approx(-980, abs=40) and hi == pytest.approx(2980, abs=40)


def test_drag_directions():
    w = Window(40, 400)
    right = drag_window(w, 10, 0, sensitivity=2)
    assert right.width == 420 and right.center == 40
    down = drag_window(w, 0, 10, sensitivity=2)
    assert down.center == 60 and down.width == 400
    up_left = drag_window(w, -1000, -5, sensitivity=1)
    assert up_left.center == 35 and up_left.width == 1.0


def test_drag_sensitivity():
    ct = make_volume(ramp(lo=-1024, hi=3071))
    assert drag_sensitivity(ct) == pytest.approx(4095 * 0.99 / 512, rel=0.02)
    narrow = make_volume(ramp(lo=0, hi=100), modality="MR", units="")
    assert drag_sensitivity(narrow) == 1.0
    suv = make_volume(ramp(lo=0, hi=10, dtype=np.float32), modality="PT", units="")
    assert 0 < drag_sensitivity(suv) < 0.05
    assert drag_sensitivity(make_volume(np.zeros((1, 4, 4, 3), np.uint8), modality="XC", units="")) == 1.0


def test_display_offset_and_levels():
    assert display_offset(np.int16) == 32768
    assert display_offset(np.dtype("int32"), (-1024, 3071)) == 32768
    assert display_offset(np.int32) == 0
    assert display_offset(np.int32, (0, 70000)) == 0
    assert display_offset(np.uint16) == 0
    assert display_offset(np.uint8) == 0
    assert display_offset(np.float32) == 0
    assert to_display_levels(Window(40, 400), 32768) == (32608.0, 33008.0)
    assert to_display_levels(Window(40, 400), 0) == (-160.0, 240.0)


def test_to_display_pixels_shifts_int16_to_uint16():
    pixels = np.array([[-32768, -1024, 0], [40, 3071, 32767]], np.int16)
    shown = to_display_pixels(pixels, 32768)
    assert shown.dtype == np.uint16
    np.testing.assert_array_equal(shown, pixels.astype(np.int32) + 32768)
    out = np.empty((2, 3), np.uint16)
    assert to_display_pixels(pixels, 32768, out=out) is out
    # A strided (reformatted) view and wider integers work too.
    np.testing.assert_array_equal(to_display_pixels(pixels[:, ::-1], 32768), pixels[:, ::-1].astype(np.int32) + 32768)
    np.testing.assert_array_equal(to_display_pixels(pixels.astype(np.int32), 32768), shown)
    lo, hi = to_display_levels(Window.from_levels(-1024, 40), 32768)
    assert (shown[0, 1], shown[1, 0]) == (lo, hi)
    plain = np.zeros((2, 2), np.uint8)
    assert to_display_pixels(plain, 0) is plain
