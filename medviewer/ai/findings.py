"""From label masks and probability maps to findings measured in patient units.

Connected components of a label (26-connected in 3D) become findings: the slice range, the
centroid (voxel indices and LPS mm), the volume in mL, the longest axial diameter in mm, the
maximum and mean probability over the region and, where two test-time passes were run, their
agreement as a confidence. numpy and scipy only: no torch, no Qt.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from medviewer.ai.prediction import Finding
from medviewer.core.volume import Volume

_STRUCTURE = np.ones((3, 3, 3), dtype=bool)


def longest_axial_diameter_mm(mask2d: np.ndarray, spacing_yx: tuple[float, float]) -> float:
    """Longest distance between two pixels of a 2D mask, edge to edge, in mm.

    Pixel centres are compared (on the convex hull for large regions) and one pixel's extent
    along that direction is added, so a single pixel measures one pixel across.
    """
    rows, cols = np.nonzero(mask2d)
    if rows.size == 0:
        return 0.0
    dy, dx = spacing_yx
    points = np.column_stack([rows * dy, cols * dx]).astype(np.float64)
    if len(points) > 64:
        try:
            points = points[ConvexHull(points).vertices]
        except QhullError:  # all points on a line
            pass
    if len(points) == 1:
        return float(min(dy, dx))
    diffs = points[:, None, :] - points[None, :, :]
    distances = np.sqrt((diffs ** 2).sum(-1))
    a, b = np.unravel_index(np.argmax(distances), distances.shape)
    direction = diffs[a, b] / max(distances[a, b], 1e-9)
    # One pixel's size along the measured direction, for edge-to-edge rather than centre-to-centre.
    extent = float(np.hypot(direction[0] * dy, direction[1] * dx))
    return float(distances[a, b] + extent)


def _ball(radius_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """A ball of ``radius_mm`` in voxels of ``spacing`` (dz, dy, dx): anisotropic, at least the centre voxel."""
    half = [int(np.floor(radius_mm / s)) for s in spacing]
    zz, yy, xx = np.ogrid[-half[0]:half[0] + 1, -half[1]:half[1] + 1, -half[2]:half[2] + 1]
    return (zz * spacing[0]) ** 2 + (yy * spacing[1]) ** 2 + (xx * spacing[2]) ** 2 <= radius_mm**2 + 1e-9


def compactness_of(voxels: int, voxel_ml: float, diameter_mm: float, depth_mm: float) -> float | None:
    """Volume over that of a ball as wide as the region's largest extent (axial diameter or depth): 1 for a
    ball, near 0 for a tube."""
    extent = max(diameter_mm, depth_mm)
    if extent <= 0:
        return None
    return min(1.0, voxels * voxel_ml * 1000.0 / (np.pi / 6.0 * extent**3))


def find_findings(
    mask: np.ndarray,
    volume: Volume,
    *,
    label_value: int,
    label_name: str,
    probability: np.ndarray | None = None,
    agreement: np.ndarray | None = None,
    min_voxels: int = 3,
    first_id: int = 1,
    split_below: float | None = None,
    split_radius_mm: float = 3.0,
) -> list[Finding]:
    """Findings for every connected region of ``mask == label_value``.

    ``probability`` (same shape, float) gives the region's max and mean probability;
    ``agreement`` (bool, same shape) marks voxels where the test-time passes agreed and gives
    the confidence as the agreeing fraction of the region. Regions under ``min_voxels`` are
    dropped as noise. Findings are numbered from ``first_id`` in order of slice, then size.

    ``split_below``: a region less compact than this (a nodule with a vessel attached, or a vessel alone)
    is opened with a ball of ``split_radius_mm``, which cuts away parts thinner than the ball; what
    remains of it in separate pieces is measured instead (nothing, for a thin vessel alone).
    """
    if mask.shape != volume.voxels.shape[:3]:
        raise ValueError(f"mask shape {mask.shape} does not match the volume {volume.voxels.shape[:3]}")
    components, count = ndimage.label(mask == label_value, structure=_STRUCTURE)
    if count == 0:
        return []
    dz, dy, dx = volume.spacing_mm
    voxel_ml = dz * dy * dx / 1000.0

    def measure(region: np.ndarray, box: tuple[slice, ...]) -> Finding | None:
        size = int(region.sum())
        if size < min_voxels:
            return None
        first, last = np.nonzero(region.any(axis=(1, 2)))[0][[0, -1]]
        offset = np.array([s.start for s in box], dtype=float)
        centroid = np.array(ndimage.center_of_mass(region)) + offset
        diameter = max(longest_axial_diameter_mm(region[z], (dy, dx)) for z in range(first, last + 1))
        if probability is not None:
            values = np.asarray(probability[box], dtype=np.float32)[region]
            p_max, p_mean = float(values.max()), float(values.mean())
        else:
            p_max = p_mean = 1.0
        confidence = float(np.asarray(agreement[box])[region].mean()) if agreement is not None else None
        lps = tuple(float(v) for v in volume.index_to_lps(centroid)) if volume.geometry_known else None
        return Finding(
            id=0, label=label_name, label_value=label_value,
            slices=(int(box[0].start + first), int(box[0].start + last)),
            centroid_index=tuple(float(v) for v in centroid), centroid_lps_mm=lps,
            voxels=size, volume_ml=size * voxel_ml, diameter_mm=diameter,
            max_probability=p_max, mean_probability=p_mean, confidence=confidence,
            compactness=compactness_of(size, voxel_ml, diameter, (last - first + 1) * dz),
        )

    ball = _ball(split_radius_mm, (dz, dy, dx)) if split_below is not None else None
    findings = []
    for number, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        region = components[box] == number
        finding = measure(region, box)
        if finding is None:
            continue
        if ball is None or finding.compactness is None or finding.compactness >= split_below:
            findings.append(finding)
            continue
        # pad so the opening sees background around the region, then measure each remaining piece
        pad = [(h, h) for h in (np.array(ball.shape) // 2)]
        opened = ndimage.binary_opening(np.pad(region, pad), structure=ball)
        opened = opened[tuple(slice(h, h + n) for (h, _), n in zip(pad, region.shape))]
        pieces, piece_count = ndimage.label(opened, structure=_STRUCTURE)
        for piece, sub in enumerate(ndimage.find_objects(pieces), start=1):
            if sub is None:
                continue
            sub_box = tuple(slice(b.start + s.start, b.start + s.stop) for b, s in zip(box, sub))
            part = measure(pieces[sub] == piece, sub_box)
            if part is not None:
                findings.append(part)
    findings.sort(key=lambda f: (f.slices[0], -f.voxels))
    for offset_id, finding in enumerate(findings):
        finding.id = first_id + offset_id
    return findings
