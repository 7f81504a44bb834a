"""Multiplanar reformats of a :class:`Volume` along its own array axes, and the mapping between
the three views' image coordinates and voxel indices (the linked crosshair).

A view is a plane perpendicular to one array axis of ``voxels`` (slices, rows, cols):

- axis 0: ``voxels[index]``, image (row, col) = volume (row, col); for an axial acquisition, axial.
- axis 1: ``voxels[:, index, :]``, image (row, col) = (slice, volume col); coronal for axial data.
- axis 2: ``voxels[:, :, index]``, image (row, col) = (slice, volume row); sagittal for axial data.

In the views of axes 1 and 2 the slice axis runs down the image, reversed when needed so that
the patient's head (superior) is at the top, or, when the slice axis has no head-foot component
to speak of (|z| < 0.25), anterior; a slice axis along left-right is never reversed. The
reversal follows ``volume.direction`` whether or not the geometry is known: one rule for the
image, the crosshair and the labels (with unknown geometry the loader's placeholder, the
identity, has its slice axis along x, so nothing is reversed).

Image coordinates are (row, col) in pixels, floats, pixel centres at integers. Voxel indices
are (k, j, i) = (slice, row, col), floats where fractional.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from medviewer.core.orientation import plane_name
from medviewer.core.volume import Volume

VIEWS: tuple[str, str, str] = ("axial", "coronal", "sagittal")
"""Names of the views of array axes 0, 1, 2 for an axially acquired volume."""

MODES = ("mip", "minip", "mean")
"""Thick-slab projections: maximum, minimum, mean intensity."""

_MIN_COMPONENT = 0.25


class ViewGeometry(NamedTuple):
    """What the UI needs to draw a view: pixel aspect and orientation labels.

    ``spacing_yx`` (dy, dx) mm between the image's row centres and column centres; ``row_dir``
    the LPS unit vector of increasing image column, ``col_dir`` of increasing image row (DICOM's
    naming, as in :func:`medviewer.core.orientation.edge_labels`); ``count`` the number of view
    positions (indices) along the view's axis.
    """

    spacing_yx: tuple[float, float]
    row_dir: np.ndarray
    col_dir: np.ndarray
    count: int


def _check_axis(axis: int) -> int:
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    return axis


def rows_flipped(direction: np.ndarray | Sequence[Sequence[float]] | None, axis: int) -> bool:
    """Whether the view of ``axis`` shows the slice axis reversed (last slice in the top row).

    Never for axis 0 or an unknown ``direction``. Otherwise the image row must run towards the
    feet (-z), or, when the slice axis has |z| < 0.25, towards posterior (+y).
    """
    if _check_axis(axis) == 0 or direction is None:
        return False
    d = np.asarray(direction, dtype=float).reshape(3, 3)[0]
    if abs(d[2]) >= _MIN_COMPONENT:
        return bool(d[2] > 0)
    if abs(d[1]) >= _MIN_COMPONENT:
        return bool(d[1] < 0)
    return False


def view_plane_name(volume: Volume, axis: int) -> str:
    """The anatomical name of the view of ``axis``: :func:`plane_name` of its normal
    (the direction of that array axis) when the geometry is known, else ``VIEWS[axis]``."""
    if not volume.geometry_known:
        return VIEWS[_check_axis(axis)]
    return plane_name(volume.direction[_check_axis(axis)])


def _slab_range(index: int, slab: int, count: int) -> tuple[int, int]:
    """Half-open [lo, hi) of ``slab`` positions centred on ``index`` (for an even slab, one more
    after than before), clipped to 0..count."""
    start = index - (slab - 1) // 2
    return max(start, 0), min(start + slab, count)


def reformat(voxels: np.ndarray, axis: int, index: int, slab: int = 1, mode: str = "mip",
             direction: np.ndarray | None = None) -> np.ndarray:
    """The 2D image (rows, cols) or (rows, cols, 3) of the view of ``axis`` at position ``index``.

    ``slab`` > 1 projects that many positions centred on ``index`` (clipped at the edges) with
    ``mode`` "mip" (max), "minip" (min) or "mean" (accumulated in float32, rounded and cast back
    to the input dtype). ``direction`` is ``volume.direction`` and decides the reversal of the
    slice axis for axes 1 and 2, as in :func:`reformat_geometry` and :func:`cursor_to_voxel`;
    None never reverses (raw array order).

    No copy of the volume is made: with ``slab`` == 1 the result is a view (C-contiguous for
    axis 0, strided for axes 1 and 2), with a slab a new array of the image's size only.
    """
    _check_axis(axis)
    if voxels.ndim not in (3, 4):
        raise ValueError(f"voxels must be (slices, rows, cols[, 3]), got {voxels.shape}")
    count = voxels.shape[axis]
    index = int(index)
    if not 0 <= index < count:
        raise IndexError(f"index {index} outside 0..{count - 1} along axis {axis}")
    if slab < 1:
        raise ValueError(f"slab must be at least 1, got {slab}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")

    lead = (slice(None),) * axis
    lo, hi = _slab_range(index, int(slab), count)
    if hi - lo <= 1:
        image = voxels[lead + (index,)]
    else:
        block = voxels[lead + (slice(lo, hi),)]
        if mode == "mip":
            image = block.max(axis=axis)
        elif mode == "minip":
            image = block.min(axis=axis)
        else:
            mean = block.mean(axis=axis, dtype=np.float32)
            if voxels.dtype.kind in "iu":
                np.rint(mean, out=mean)
            image = mean.astype(voxels.dtype, copy=False)
    if rows_flipped(direction, axis):
        image = image[::-1]
    return image


def reformat_geometry(volume: Volume, axis: int) -> ViewGeometry:
    """Pixel spacing, orientation vectors and position count of the view of ``axis``, matching
    :func:`reformat` with ``direction=volume.direction`` (the reversal included)."""
    dz, dy, dx = (float(s) for s in volume.spacing_mm)
    d = np.asarray(volume.direction, dtype=float)
    slices, rows, cols = volume.voxels.shape[:3]
    if _check_axis(axis) == 0:
        return ViewGeometry((dy, dx), d[2].copy(), d[1].copy(), slices)
    down = -d[0] if rows_flipped(volume.direction, axis) else d[0].copy()
    if axis == 1:
        return ViewGeometry((dz, dx), d[2].copy(), down, rows)
    return ViewGeometry((dz, dy), d[1].copy(), down, cols)


def cursor_to_voxel(volume: Volume, axis: int, index: float, row: float, col: float) -> tuple[float, float, float]:
    """Voxel indices (k, j, i), fractional, of image point (``row``, ``col``) in the view of
    ``axis`` at position ``index``. Inverse of :func:`voxel_to_view`."""
    index, row, col = float(index), float(row), float(col)
    if _check_axis(axis) == 0:
        return index, row, col
    k = volume.voxels.shape[0] - 1 - row if rows_flipped(volume.direction, axis) else row
    if axis == 1:
        return k, index, col
    return k, col, index


def voxel_to_view(volume: Volume, axis: int, k: float, j: float, i: float) -> tuple[float, float, float]:
    """(index, row, col) of voxel (k, j, i) in the view of ``axis``: the view position that
    contains it (fractional; round it to pick a slice) and its image point there."""
    k, j, i = float(k), float(j), float(i)
    if _check_axis(axis) == 0:
        return k, j, i
    row = volume.voxels.shape[0] - 1 - k if rows_flipped(volume.direction, axis) else k
    if axis == 1:
        return j, row, i
    return i, row, j


def slice_for_position(volume: Volume, lps_point: Sequence[float] | np.ndarray) -> int | None:
    """The slice (axis 0) index nearest to the LPS point in mm, for synchronised scrolling between
    series that share a frame of reference. None when the geometry is unknown or the point lies
    more than half a slice beyond the first or last slice (its in-plane position is not checked)."""
    if not volume.geometry_known:
        return None
    k = float(volume.lps_to_index(np.asarray(lps_point, dtype=float).reshape(3))[0])
    count = volume.voxels.shape[0]
    if not math.isfinite(k) or k < -0.5 or k > count - 0.5:
        return None
    return min(max(math.floor(k + 0.5), 0), count - 1)
