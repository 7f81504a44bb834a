"""Distances, angles and ROI statistics in mm on anisotropic pixels; the value under the cursor."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medviewer.core.measure import RoiStats, angle_deg, distance_mm, ellipse_stats, rect_stats, value_at
from medviewer.core.volume import SliceInfo, Volume

SPACING = (0.5, 0.8)  # (dy, dx) mm: anisotropic on purpose


def make_volume(voxels: np.ndarray, geometry_known: bool = True) -> Volume:
    slices = [SliceInfo(f"1.2.3.{k}", f"f{k}.dcm", 0, None, k + 1, 1.0, 0.0) for k in range(voxels.shape[0])]
    direction = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], float)
    return Volume(voxels=voxels, spacing_mm=(3.0, *SPACING), origin_lps_mm=np.array([-100.0, -50.0, 20.0]),
                  direction=direction, slices=slices, modality="CT", units="HU", geometry_known=geometry_known)


def disc(radius_mm: float, spacing_yx=SPACING, shape=(141, 91)) -> tuple[np.ndarray, tuple[float, float]]:
    centre = ((shape[0] - 1) / 2, (shape[1] - 1) / 2)  # on a pixel centre: the disc is symmetric
    j, i = np.mgrid[0:shape[0], 0:shape[1]]
    inside = ((j - centre[0]) * spacing_yx[0]) ** 2 + ((i - centre[1]) * spacing_yx[1]) ** 2 <= radius_mm**2
    return inside, centre


@pytest.mark.parametrize("degrees", [0, 30, 45, 90, 120])
def test_distance_across_a_disc(degrees):
    radius = 25.0
    inside, _ = disc(radius)
    points = np.argwhere(inside).astype(float)  # (row, col) pixel centres inside the disc
    u = np.array([math.sin(math.radians(degrees)), math.cos(math.radians(degrees))])  # (y, x) in mm
    along = (points * SPACING) @ u
    p0, p1 = points[np.argmin(along)], points[np.argmax(along)]
    pixel_mm = math.hypot(*SPACING)
    assert distance_mm(p0, p1, SPACING) == pytest.approx(2 * radius, abs=pixel_mm)
    assert distance_mm(p0, p1, SPACING) == distance_mm(p1, p0, SPACING)


def test_distance_in_mm_not_pixels():
    assert distance_mm((0, 0), (10, 0), SPACING) == pytest.approx(5.0)
    assert distance_mm((0, 0), (0, 10), SPACING) == pytest.approx(8.0)
    assert distance_mm((1.5, 2.5), (4.5, 6.5), (1.0, 1.0)) == pytest.approx(5.0)


def test_right_angle_with_anisotropic_pixels():
    spacing = (0.5, 2.0)
    vertex = (50.0, 50.0)
    a, b = (90.0, 60.0), (90.0, 40.0)  # (20, 20) mm and (20, -20) mm from the vertex: 90 degrees
    assert angle_deg(a, vertex, b, spacing) == pytest.approx(90.0)
    # On screen in pixels the same arms make about 28 degrees.
    assert angle_deg(a, vertex, b, (1.0, 1.0)) == pytest.approx(2 * math.degrees(math.atan(10 / 40)))
    assert angle_deg((50, 60), vertex, (50, 40), spacing) == pytest.approx(180.0)
    assert angle_deg((60, 50), vertex, (70, 50), spacing) == pytest.approx(0.0)
    sixty = (50 + 20 * math.sin(math.radians(60)) / 0.5, 50 + 20 * math.cos(math.radians(60)) / 2.0)
    assert angle_deg((50, 55), vertex, sixty, spacing) == pytest.approx(60.0)
    assert math.isnan(angle_deg(vertex, vertex, b, spacing))


def test_rect_stats_over_a_known_region():
    image = np.zeros((20, 30), np.int16)
    image[3:8, 4:10] = 100  # rows 3..7, cols 4..9
    stats = rect_stats(image, (7.4, 9.0), (2.5, 3.6), SPACING, "HU")  # centres inside, corners in any order
    assert stats == RoiStats(100.0, 0.0, 100.0, 100.0, 30 * 0.5 * 0.8, 30, "HU")
    ramp = (np.arange(20)[:, None] * 10 + np.arange(30)[None, :]).astype(np.int16)
    stats = rect_stats(ramp, (2, 3), (6, 8), SPACING)
    region = ramp[2:7, 3:9].astype(float)
    assert stats.pixel_count == 30
    assert (stats.mean, stats.minimum, stats.maximum) == (region.mean(), 23, 68)
    assert stats.sd == pytest.approx(region.std(ddof=0))


def test_rect_stats_clipped_and_empty():
    image = np.ones((10, 10), np.int16)
    assert rect_stats(image, (-5, -5), (2.2, 3.9), SPACING).pixel_count == 3 * 4
    assert rect_stats(image, (20, 20), (30, 30), SPACING).pixel_count == 0
    empty = rect_stats(image, (2.2, 2.2), (2.8, 2.8), SPACING)
    assert empty.pixel_count == 0 and empty.area_mm2 == 0 and math.isnan(empty.mean)
    assert empty.text() == "no pixels"


def test_ellipse_area_and_mean():
    a_px, b_px = 30, 20  # semi-axes in pixels along rows and columns
    centre = (50.0, 40.0)
    image = np.broadcast_to(np.arange(100, dtype=np.int16)[:, None], (100, 90)).copy()  # value = row
    corner0, corner1 = (centre[0] - a_px, centre[1] - b_px), (centre[0] + a_px, centre[1] + b_px)
    stats = ellipse_stats(image, corner1, corner0, SPACING, "HU")
    expected = math.pi * (a_px * SPACING[0]) * (b_px * SPACING[1])
    assert stats.area_mm2 == pytest.approx(expected, rel=0.05)
    assert stats.mean == pytest.approx(centre[0])  # symmetric about the centre row
    assert (stats.minimum, stats.maximum) == (20, 80)
    assert stats.pixel_count < rect_stats(image, corner0, corner1, SPACING).pixel_count


def test_ellipse_degenerate_and_clipped():
    image = np.ones((10, 10), np.uint8)
    assert ellipse_stats(image, (5, 2), (5, 6), SPACING).pixel_count == 5  # a segment along row 5
    assert ellipse_stats(image, (5.5, 2), (5.5, 6), SPACING).pixel_count == 0
    assert ellipse_stats(image, (-10, -10), (10, 10), SPACING).pixel_count > 0


def test_colour_stats_use_luminance():
    image = np.zeros((4, 4, 3), np.uint8)
    image[..., 0] = 255
    stats = rect_stats(image, (0, 0), (3, 3), SPACING)
    assert stats.mean == pytest.approx(0.299 * 255) and stats.pixel_count == 16
    assert ellipse_stats(image, (0, 0), (3, 3), SPACING).mean == pytest.approx(0.299 * 255)
    with pytest.raises(ValueError):
        rect_stats(np.zeros((2, 3, 4)), (0, 0), (1, 1), SPACING)


def test_roi_text():
    stats = RoiStats(40.24, 3.12, 12.0, 66.0, 153.94, 385, "HU")
    assert stats.text() == "mean 40.2 HU, SD 3.1, min 12, max 66, area 153.9 mm²"
    assert RoiStats(0.5, 0.01, 0.25, 1.5, 2.0, 5).text() == "mean 0.5, SD 0.0, min 0.25, max 1.5, area 2.0 mm²"


def test_roi_stats_do_not_copy_the_slice_as_float64():
    import tracemalloc

    image = np.zeros((1024, 1024), np.int16)
    tracemalloc.start()
    try:
        rect_stats(image, (10, 10), (40, 40), SPACING)
        ellipse_stats(image, (10, 10), (40, 40), SPACING)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < image.nbytes / 10


def test_value_at():
    voxels = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    volume = make_volume(voxels)
    value, position = value_at(volume, 1, 2.4, 3.6)
    assert value == voxels[1, 2, 4] and isinstance(value, int)
    np.testing.assert_allclose(position, volume.index_to_lps((1, 2.4, 3.6)))
    np.testing.assert_allclose(position, [-100 + 3.6 * 0.8, -50 + 2.4 * 0.5, 20 + 3.0])
    assert value_at(volume, 0, -0.4, 4.4)[0] == voxels[0, 0, 4]
    assert value_at(volume, 2.2, 0, 0)[0] == voxels[2, 0, 0]
    for outside in [(0, -0.6, 0), (0, 0, 4.6), (3, 0, 0), (-1, 0, 0), (0, 3.5, 0)]:
        assert value_at(volume, *outside) == (None, None)
    assert value_at(make_volume(voxels, geometry_known=False), 0, 1, 1) == (voxels[0, 1, 1], None)


def test_value_at_colour_and_float():
    colour = np.zeros((1, 2, 2, 3), np.uint8)
    colour[0, 1, 0] = (10, 20, 30)
    value, _ = value_at(make_volume(colour), 0, 1, 0)
    assert value == (10, 20, 30)
    floats = np.full((1, 2, 2), 0.25, np.float32)
    assert value_at(make_volume(floats), 0, 0, 0)[0] == 0.25
