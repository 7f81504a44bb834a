"""Resample a loaded stack of acquired slices onto the even orthogonal grid its series planned
(:class:`~medviewer.core.series.GridPlan`): tilt correction and even slice spacing, as
dcm2niix's ``_Tilt`` and ``_Eq`` volumes.

Acquired slice ``a`` is shifted in its plane by ``plan.shifts[a]`` pixels (bilinear, computed
in float32 one slice at a time); output slice ``k`` is the linear blend of the two acquired
slices around its distance along the normal. A slice that needs neither shift nor blend is
copied as it is. Voxels that no acquired slice covers get the volume's minimum (0 for colour).
The result is rounded and clipped back to the volume's dtype.
"""

from __future__ import annotations

import math

import numpy as np

from medviewer.core.series import GridPlan, Series
from medviewer.core.volume import SliceInfo, Volume


def _place(image: np.ndarray, shift: tuple[float, float], shape: tuple[int, int], fill: float) -> np.ndarray:
    """``image`` (rows, cols[, 3]) on a ``shape`` grid, its pixel (j, i) at (j, i) + ``shift``: float32."""
    out = np.full(shape + image.shape[2:], fill, dtype=np.float32)
    sj, si = float(shift[0]), float(shift[1])
    j0, i0 = math.floor(sj), math.floor(si)
    fj, fi = sj - j0, si - i0
    taps = [(j0, i0, (1 - fj) * (1 - fi)), (j0 + 1, i0, fj * (1 - fi)), (j0, i0 + 1, (1 - fj) * fi),
            (j0 + 1, i0 + 1, fj * fi)]
    taps = [t for t in taps if t[2] > 1e-6]
    if len(taps) == 1:
        j, i, _ = taps[0]
        _paste(out, image, j, i, 1.0, replace=True)
        return out
    acc = np.zeros_like(out)
    cover = np.zeros(shape, dtype=np.float32)
    ones = np.ones(image.shape[:2], dtype=np.float32)
    for j, i, w in taps:
        _paste(acc, image, j, i, w, replace=False)
        _paste(cover, ones, j, i, w, replace=False)
    # Where some taps fall outside the slice the missing weight goes to the fill value.
    extra = (1.0 - cover)
    if acc.ndim == 3:
        extra = extra[..., None]
    return acc + extra * np.float32(fill)


def _paste(out: np.ndarray, image: np.ndarray, j: int, i: int, weight: float, *, replace: bool) -> None:
    rows, cols = out.shape[:2]
    h, w = image.shape[:2]
    oj0, oi0 = max(j, 0), max(i, 0)
    oj1, oi1 = min(j + h, rows), min(i + w, cols)
    if oj1 <= oj0 or oi1 <= oi0:
        return
    src = image[oj0 - j:oj1 - j, oi0 - i:oi1 - i]
    if replace:
        out[oj0:oj1, oi0:oi1] = src
    else:
        out[oj0:oj1, oi0:oi1] += np.float32(weight) * src.astype(np.float32, copy=False)


def _store(values: np.ndarray, dtype: np.dtype, out: np.ndarray) -> None:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        np.rint(values, out=values)
        np.clip(values, info.min, info.max, out=values)
    np.copyto(out, values, casting="unsafe")


def resample_to_grid(voxels: np.ndarray, plan: GridPlan, fill: float) -> np.ndarray:
    """The acquired stack ``voxels`` (slices, rows, cols[, 3]) resampled as ``plan`` says."""
    shape = (plan.rows, plan.cols)
    out = np.empty((plan.count,) + shape + voxels.shape[3:], dtype=voxels.dtype)
    for k in range(plan.count):
        a, b, w = int(plan.lower[k]), int(plan.upper[k]), float(plan.weight[k])
        sa = plan.shifts[a]
        if w <= 1e-6 and shape == voxels.shape[1:3] and not np.any(sa):
            out[k] = voxels[a]
            continue
        blend = _place(voxels[a], sa, shape, fill)
        if w > 1e-6:
            blend *= np.float32(1 - w)
            blend += np.float32(w) * _place(voxels[b], plan.shifts[b], shape, fill)
        _store(blend, voxels.dtype, out[k])
    return out


def apply_grid(volume: Volume, series: Series) -> None:
    """Resample ``volume`` (loaded from ``series.frames`` in order) in place onto ``series.grid``.

    The acquired slices stay in ``volume.acquired`` and their headers in ``volume.acquired_sources``;
    slice k's record names the acquired slice it was copied from (``interpolated`` False) or, for
    a slice blended between two, none (empty SOP Instance UID and source, ``interpolated``)."""
    plan = series.grid
    if plan is None:
        return
    voxels = volume.voxels
    if volume.is_color:
        fill = 0.0
    else:
        fill = float(voxels.min()) if voxels.size else 0.0
    acquired, acquired_sources = list(volume.slices), list(volume.sources)
    volume.voxels = resample_to_grid(voxels, plan, fill)
    volume.spacing_mm = tuple(float(v) for v in series.spacing_mm)
    volume.origin_lps_mm = np.asarray(series.origin_lps_mm, dtype=float)
    volume.direction = np.asarray(series.direction, dtype=float)
    slices, sources = [], []
    positions = volume.positions_lps_mm
    for k in range(plan.count):
        a, w = int(plan.lower[k]), float(plan.weight[k])
        nearest = a if w <= 0.5 else int(plan.upper[k])
        src = acquired[a]
        position = tuple(float(v) for v in positions[k])
        if plan.exact[k]:
            slices.append(SliceInfo(src.sop_instance_uid, src.source, src.frame, position, src.instance_number,
                                    src.slope, src.intercept, interpolated=bool(np.any(plan.shifts[a]))))
        else:
            slices.append(SliceInfo("", "", 0, position, None, src.slope, src.intercept, interpolated=True))
        sources.append(acquired_sources[nearest] if acquired_sources else None)
    volume.slices = slices
    volume.sources = sources if acquired_sources else []
    volume.acquired = acquired
    volume.acquired_sources = acquired_sources
    volume.resampled = plan.reason
    if volume.missing_slices:
        missing = set(volume.missing_slices)
        volume.missing_slices = [k for k in range(plan.count)
                                 if int(plan.lower[k]) in missing or (plan.weight[k] > 0 and int(plan.upper[k]) in missing)]
