"""Multiplanar reformats: shapes, aspect, head at the top, thick slabs, the linked crosshair."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest

from medviewer.core.mpr import (
    VIEWS,
    cursor_to_voxel,
    reformat,
    reformat_geometry,
    rows_flipped,
    slice_for_position,
    view_plane_name,
    voxel_to_view,
)
from medviewer.core.orientation import edge_labels
from medviewer.core.volume import SliceInfo, Volume

SHAPE = (40, 64, 48)
SPACING = (2.5, 0.7, 0.9)
# Rows of direction: LPS unit vectors of (slice, row, col), as the loader builds them:
# (normal = row_dir x col_dir, col_dir, row_dir) with slices sorted along the normal.
AXIAL = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], float)
CORONAL = np.array([[0, 1, 0], [0, 0, -1], [1, 0, 0]], float)  # IOP (1,0,0, 0,0,-1)
SAGITTAL = np.array([[-1, 0, 0], [0, 0, -1], [0, 1, 0]], float)  # IOP (0,1,0, 0,0,-1)
FEET_FIRST = np.array([[0, 0, -1], [0, 1, 0], [-1, 0, 0]], float)  # slices run towards the feet


def make_volume(direction=AXIAL, shape=SHAPE, spacing=SPACING, geometry_known=True, dtype=np.int16) -> Volume:
    voxels = np.random.default_rng(1).integers(-1000, 2000, size=shape).astype(dtype)
    slices = [SliceInfo(f"1.2.3.{k}", f"f{k}.dcm", 0, None, k + 1, 1.0, -1024.0) for k in range(shape[0])]
    return Volume(voxels=voxels, spacing_mm=spacing, origin_lps_mm=np.array([-20.0, -30.0, -50.0]),
                  direction=direction, slices=slices, modality="CT", units="HU",
                  geometry_known=geometry_known, pixel_spacing_known=True)


def show(volume: Volume, axis: int, index: int, **kwargs) -> np.ndarray:
    return reformat(volume.voxels, axis, index, direction=volume.direction, **kwargs)


def test_shapes_and_aspect_of_the_three_views():
    volume = make_volume()
    assert [show(volume, axis, 5).shape for axis in range(3)] == [(64, 48), (40, 48), (40, 64)]
    geometries = [reformat_geometry(volume, axis) for axis in range(3)]
    assert [g.spacing_yx for g in geometries] == [(0.7, 0.9), (2.5, 0.9), (2.5, 0.7)]
    assert [g.count for g in geometries] == [40, 64, 48]
    spacing_yx, row_dir, col_dir, count = geometries[1]  # unpacks like a tuple
    assert count == 64


def test_axial_slice_is_a_view():
    volume = make_volume()
    image = show(volume, 0, 7)
    assert np.shares_memory(image, volume.voxels) and image.flags.c_contiguous
    np.testing.assert_array_equal(image, volume.voxels[7])


def test_head_at_the_top_of_coronal_and_sagittal():
    volume = make_volume()  # slice index increases towards the head
    coronal, sagittal = show(volume, 1, 10), show(volume, 2, 20)
    np.testing.assert_array_equal(coronal, volume.voxels[::-1, 10, :])
    np.testing.assert_array_equal(sagittal, volume.voxels[::-1, :, 20])
    assert np.shares_memory(coronal, volume.voxels)
    assert edge_labels(*reformat_geometry(volume, 1)[1:3]) == {"left": "R", "right": "L", "top": "S", "bottom": "I"}
    assert edge_labels(*reformat_geometry(volume, 2)[1:3]) == {"left": "A", "right": "P", "top": "S", "bottom": "I"}
    assert edge_labels(*reformat_geometry(volume, 0)[1:3]) == {"left": "R", "right": "L", "top": "A", "bottom": "P"}

    feet_first = make_volume(FEET_FIRST)  # already head first along the slice axis: no reversal
    np.testing.assert_array_equal(show(feet_first, 1, 10), feet_first.voxels[:, 10, :])
    assert edge_labels(*reformat_geometry(feet_first, 1)[1:3])["top"] == "S"


def test_non_axial_acquisitions():
    coronal = make_volume(CORONAL)
    assert [view_plane_name(coronal, axis) for axis in range(3)] == ["coronal", "axial", "sagittal"]
    # Axis 1 is an axial plane with the slices (running posterior) down the image: anterior on top.
    assert not rows_flipped(coronal.direction, 1)
    assert edge_labels(*reformat_geometry(coronal, 1)[1:3]) == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    sagittal = make_volume(SAGITTAL)
    assert [view_plane_name(sagittal, axis) for axis in range(3)] == ["sagittal", "axial", "coronal"]
    assert not rows_flipped(sagittal.direction, 1)  # slices along left-right: kept in order
    assert [view_plane_name(make_volume(AXIAL), axis) for axis in range(3)] == list(VIEWS)
    oblique = make_volume(np.array([[0, 0.6, 0.8], [0, 0.8, -0.6], [1, 0, 0]]))
    assert view_plane_name(oblique, 0) == "oblique"
    assert rows_flipped(oblique.direction, 2)


def test_unknown_geometry_keeps_the_slice_order():
    volume = make_volume(np.eye(3), geometry_known=False)  # the loader's placeholder: slice axis along x
    image = show(volume, 1, 3)
    np.testing.assert_array_equal(image, volume.voxels[:, 3, :])
    assert cursor_to_voxel(volume, 1, 3, 2, 5) == (2, 3, 5)
    assert image[2, 5] == volume.voxels[2, 3, 5]
    assert [view_plane_name(volume, axis) for axis in range(3)] == list(VIEWS)
    assert slice_for_position(volume, (0, 0, 0)) is None
    np.testing.assert_array_equal(reformat(volume.voxels, 1, 3), volume.voxels[:, 3, :])  # no direction: raw order


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("mode, reduce", [("mip", np.max), ("minip", np.min), ("mean", np.mean)])
def test_thick_slabs(axis, mode, reduce):
    volume = make_volume()
    index, slab = 12, 5
    image = show(volume, axis, index, slab=slab, mode=mode)
    block = np.take(volume.voxels, range(index - 2, index + 3), axis=axis)
    expected = reduce(block, axis=axis)
    if mode == "mean":
        expected = np.rint(expected).astype(np.int16)
    if rows_flipped(volume.direction, axis):
        expected = expected[::-1]
    assert image.dtype == np.int16
    np.testing.assert_array_equal(image, expected)


def test_slab_is_clipped_at_the_edges():
    volume = make_volume()
    np.testing.assert_array_equal(reformat(volume.voxels, 0, 0, slab=5), volume.voxels[:3].max(axis=0))
    np.testing.assert_array_equal(reformat(volume.voxels, 0, 39, slab=4), volume.voxels[38:].max(axis=0))
    np.testing.assert_array_equal(reformat(volume.voxels, 0, 10, slab=4), volume.voxels[9:13].max(axis=0))


def test_slabs_keep_dtype_and_allocate_only_an_image():
    for dtype in (np.int16, np.uint8, np.float32):
        volume = make_volume(dtype=dtype)
        for axis, mode in itertools.product(range(3), ("mip", "minip", "mean")):
            assert show(volume, axis, 10, slab=7, mode=mode).dtype == dtype
    colour = np.random.default_rng(2).integers(0, 256, size=(6, 8, 10, 3), dtype=np.uint8)
    assert reformat(colour, 2, 4).shape == (6, 8, 3)
    assert reformat(colour, 1, 4, slab=3, mode="mean").shape == (6, 10, 3)
    big = make_volume(shape=(80, 128, 128))
    tracemalloc.start()
    try:
        for axis in range(3):
            show(big, axis, 40, slab=15, mode="mean")
            show(big, axis, 40, slab=15, mode="mip")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < big.voxels.nbytes / 8


def test_bad_arguments():
    volume = make_volume()
    with pytest.raises(IndexError):
        reformat(volume.voxels, 1, 64)
    with pytest.raises(ValueError):
        reformat(volume.voxels, 3, 0)
    with pytest.raises(ValueError):
        reformat(volume.voxels, 0, 0, slab=0)
    with pytest.raises(ValueError):
        reformat(volume.voxels, 0, 0, slab=3, mode="avg")


@pytest.mark.parametrize("direction", [AXIAL, CORONAL, SAGITTAL, FEET_FIRST], ids=["axial", "coronal", "sagittal", "feet"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_crosshair_round_trip(direction, axis):
    volume = make_volume(direction)
    for k, j, i in [(0, 0, 0), (39, 63, 47), (12.25, 40.5, 7.75), (3, 60, 30)]:
        index, row, col = voxel_to_view(volume, axis, k, j, i)
        assert cursor_to_voxel(volume, axis, index, row, col) == pytest.approx((k, j, i))
        # The image at (row, col) of that view shows that voxel.
        if float(k).is_integer() and float(j).is_integer() and float(i).is_integer():
            image = show(volume, axis, int(index))
            assert image[int(row), int(col)] == volume.voxels[int(k), int(j), int(i)]


def test_crosshair_clicks_in_coronal_move_the_other_views():
    volume = make_volume()
    k, j, i = cursor_to_voxel(volume, 1, 20, 0, 30)  # top row of the coronal view: the last (highest) slice
    assert (k, j, i) == (39, 20, 30)
    assert voxel_to_view(volume, 0, k, j, i)[0] == 39
    assert voxel_to_view(volume, 2, k, j, i) == (30, 0, 20)
    # The point is the same in patient space whichever view it was clicked in.
    np.testing.assert_allclose(volume.index_to_lps(cursor_to_voxel(volume, 2, *voxel_to_view(volume, 2, k, j, i))),
                               volume.index_to_lps((k, j, i)))


def test_geometry_vectors_match_the_image():
    """Moving one pixel along a view's image axes moves along row_dir / col_dir by the spacing."""
    for direction, axis in itertools.product([AXIAL, CORONAL, FEET_FIRST], range(3)):
        volume = make_volume(direction)
        (dy, dx), row_dir, col_dir, _ = reformat_geometry(volume, axis)
        p = volume.index_to_lps(cursor_to_voxel(volume, axis, 5, 10, 10))
        np.testing.assert_allclose(volume.index_to_lps(cursor_to_voxel(volume, axis, 5, 10, 11)) - p, dx * row_dir)
        np.testing.assert_allclose(volume.index_to_lps(cursor_to_voxel(volume, axis, 5, 11, 10)) - p, dy * col_dir)


def test_slice_for_position():
    volume = make_volume()
    assert slice_for_position(volume, volume.index_to_lps((17, 30, 20))) == 17
    assert slice_for_position(volume, volume.index_to_lps((17.4, 300, -50))) == 17  # in-plane position ignored
    assert slice_for_position(volume, volume.index_to_lps((-0.4, 0, 0))) == 0
    assert slice_for_position(volume, volume.index_to_lps((39.45, 0, 0))) == 39
    assert slice_for_position(volume, volume.index_to_lps((-0.6, 0, 0))) is None
    assert slice_for_position(volume, volume.index_to_lps((39.6, 0, 0))) is None
    other = make_volume(FEET_FIRST)
    assert slice_for_position(other, other.index_to_lps((5, 3, 3))) == 5
