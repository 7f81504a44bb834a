"""Measurements on a displayed slice: distances, angles, ROI statistics, the value under the cursor.

Image coordinates are (row, col) in pixels, floats, with pixel centres at integers (pixel (j, i)
covers rows j-0.5..j+0.5 and cols i-0.5..i+0.5). ``spacing_yx`` is (dy, dx) in mm: the distance
between row centres and between column centres. Values are in the volume's modality units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medviewer.core.volume import Volume

Point = Sequence[float]
"""(row, col) in pixels."""

# ITU-R BT.601 luma weights: ROI statistics of colour images are taken over luminance.
_LUMA = np.array([0.299, 0.587, 0.114])


def _mm(p: Point, spacing_yx: Sequence[float]) -> np.ndarray:
    return np.array([float(p[0]) * spacing_yx[0], float(p[1]) * spacing_yx[1]])


def distance_mm(p0: Point, p1: Point, spacing_yx: Sequence[float]) -> float:
    """Physical distance in mm between image points ``p0`` and ``p1`` (row, col)."""
    return float(np.hypot(*(_mm(p1, spacing_yx) - _mm(p0, spacing_yx))))


def angle_deg(a: Point, vertex: Point, b: Point, spacing_yx: Sequence[float]) -> float:
    """Physical angle a-vertex-b in degrees, 0..180, measured in mm (so anisotropic pixels give
    the true angle, not the angle on screen in pixels). NaN when an arm has zero length."""
    v = _mm(vertex, spacing_yx)
    u, w = _mm(a, spacing_yx) - v, _mm(b, spacing_yx) - v
    if not np.any(u) or not np.any(w):
        return math.nan
    cross = u[0] * w[1] - u[1] * w[0]
    return float(math.degrees(math.atan2(abs(cross), float(u @ w))))


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return "–"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.1f}" if abs(value) >= 1 else f"{value:.3g}"


@dataclass(frozen=True)
class RoiStats:
    """Statistics of the pixels of a region of interest.

    ``mean``, ``sd`` (population standard deviation, ddof=0), ``minimum``, ``maximum`` in ``units``
    (the modality units, e.g. "HU"); ``area_mm2`` = pixel_count x dy x dx. NaN statistics when
    the region holds no pixel.
    """

    mean: float
    sd: float
    minimum: float
    maximum: float
    area_mm2: float
    pixel_count: int
    units: str = ""

    def text(self) -> str:
        """One line for the overlay, e.g. "mean 40.2 HU, SD 3.1, min 12, max 66, area 153.9 mm²"."""
        if self.pixel_count == 0:
            return "no pixels"
        unit = f" {self.units}" if self.units else ""
        return (f"mean {self.mean:.1f}{unit}, SD {self.sd:.1f}, min {_fmt(self.minimum)}, "
                f"max {_fmt(self.maximum)}, area {self.area_mm2:.1f} mm²")


def _box(slice2d: np.ndarray, corner0: Point, corner1: Point) -> tuple[int, int, int, int]:
    """(j0, j1, i0, i1): half-open index ranges of the pixels whose centres lie in the box, clipped."""
    if not (slice2d.ndim == 2 or (slice2d.ndim == 3 and slice2d.shape[2] == 3)):
        raise ValueError(f"slice must be (rows, cols) or (rows, cols, 3), got {slice2d.shape}")
    rows, cols = slice2d.shape[:2]
    r_lo, r_hi = sorted((float(corner0[0]), float(corner1[0])))
    c_lo, c_hi = sorted((float(corner0[1]), float(corner1[1])))
    j0, j1 = max(math.ceil(r_lo), 0), min(math.floor(r_hi) + 1, rows)
    i0, i1 = max(math.ceil(c_lo), 0), min(math.floor(c_hi) + 1, cols)
    return j0, max(j1, j0), i0, max(i1, i0)


def _as_values(region: np.ndarray, colour: bool) -> np.ndarray:
    """The region's pixels as flat float64 (luminance for colour, trailing axis of 3): a copy of
    the ROI only, never of the slice."""
    if colour:
        return (region.astype(np.float64) @ _LUMA).ravel()
    return region.astype(np.float64).ravel()


def _stats(values: np.ndarray, spacing_yx: Sequence[float], units: str) -> RoiStats:
    count = int(values.size)
    area = count * float(spacing_yx[0]) * float(spacing_yx[1])
    if count == 0:
        return RoiStats(math.nan, math.nan, math.nan, math.nan, 0.0, 0, units)
    return RoiStats(float(values.mean()), float(values.std(ddof=0)), float(values.min()), float(values.max()),
                    area, count, units)


def rect_stats(slice2d: np.ndarray, corner0: Point, corner1: Point, spacing_yx: Sequence[float],
               units: str = "") -> RoiStats:
    """Statistics of the pixels of ``slice2d`` (rows, cols[, 3]) whose centres lie inside the
    rectangle with opposite corners ``corner0`` and ``corner1`` (row, col; any order; clipped to
    the image). Colour slices: statistics of the BT.601 luminance."""
    j0, j1, i0, i1 = _box(slice2d, corner0, corner1)
    return _stats(_as_values(slice2d[j0:j1, i0:i1], slice2d.ndim == 3), spacing_yx, units)


def ellipse_mask(corner0: Point, corner1: Point, j0: int, j1: int, i0: int, i1: int) -> np.ndarray:
    """Boolean mask over rows j0..j1-1 and cols i0..i1-1: pixel centres inside the ellipse
    inscribed in the box with corners ``corner0`` and ``corner1`` (boundary included)."""
    cr, cc = (float(corner0[0]) + float(corner1[0])) / 2, (float(corner0[1]) + float(corner1[1])) / 2
    a, b = abs(float(corner1[0]) - float(corner0[0])) / 2, abs(float(corner1[1]) - float(corner0[1])) / 2
    j = np.arange(j0, j1, dtype=float)[:, None] - cr
    i = np.arange(i0, i1, dtype=float)[None, :] - cc
    # A zero semi-axis leaves the segment through the centre (only centres exactly on it).
    tj = (j / a) ** 2 if a > 0 else np.where(j == 0, 0.0, np.inf)
    ti = (i / b) ** 2 if b > 0 else np.where(i == 0, 0.0, np.inf)
    return (tj + ti) <= 1.0 + 1e-12


def ellipse_stats(slice2d: np.ndarray, corner0: Point, corner1: Point, spacing_yx: Sequence[float],
                  units: str = "") -> RoiStats:
    """Like :func:`rect_stats` over the pixels whose centres lie inside the ellipse inscribed in
    the rectangle (axes along rows and columns)."""
    j0, j1, i0, i1 = _box(slice2d, corner0, corner1)
    mask = ellipse_mask(corner0, corner1, j0, j1, i0, i1)
    return _stats(_as_values(slice2d[j0:j1, i0:i1][mask], slice2d.ndim == 3), spacing_yx, units)


def value_at(volume: Volume, k: float, row: float, col: float
             ) -> tuple[int | float | tuple[int, int, int] | None, np.ndarray | None]:
    """(value, position_lps_mm) under image point (``row``, ``col``) of slice ``k``.

    ``value`` is that of the nearest voxel (pixel centres at integers; ``k`` is rounded too, so
    the fractional output of :func:`medviewer.core.mpr.cursor_to_voxel` can be passed as is):
    int or float in modality units, an (R, G, B) tuple for colour. ``position_lps_mm`` is the LPS
    position in mm of the point itself (fractional row and col, not snapped to the voxel
    centre), or None when the volume's geometry is unknown. (None, None) outside the volume.
    """
    slices, rows, cols = volume.voxels.shape[:3]
    kk, jj, ii = (math.floor(float(v) + 0.5) for v in (k, row, col))
    if not (0 <= kk < slices and 0 <= jj < rows and 0 <= ii < cols):
        return None, None
    voxel = volume.voxels[kk, jj, ii]
    value = tuple(int(c) for c in voxel) if volume.is_color else voxel.item()
    position = volume.index_to_lps((float(k), float(row), float(col))) if volume.geometry_known else None
    return value, position
