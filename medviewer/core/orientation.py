"""Patient orientation letters at the edges of a displayed image, and plane names.

Directions are LPS unit vectors (DICOM patient coordinates): +x towards the patient's Left,
+y Posterior, +z Superior (head). An image's ``row_dir`` is the direction of increasing column
(along a row; DICOM's first ImageOrientationPatient triplet) and ``col_dir`` the direction of
increasing row (down a column; the second triplet).

Display transform (the order matters and is the same in :func:`edge_labels` and
:func:`orient_image`): first rotate the image ``rotation`` degrees clockwise on screen, then
mirror in the displayed frame: ``flip_h`` swaps the screen's left and right, ``flip_v`` its top
and bottom.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

_LETTERS = (("L", "R"), ("P", "A"), ("S", "I"))  # (positive, negative) along x, y, z
_MIN_COMPONENT = 0.25
_PLANE_COS = math.cos(math.radians(30.0))


def _unit(vector: Sequence[float] | np.ndarray) -> np.ndarray | None:
    v = np.asarray(vector, dtype=float).reshape(3)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 1e-12 else None


def direction_letters(vector: Sequence[float] | np.ndarray) -> str:
    """Patient letters for an LPS direction: +x "L", -x "R", +y "P", -y "A", +z "S", -z "I".

    Oblique directions give up to three letters, strongest component first, leaving out
    components under 0.25 of the unit vector: (0.7, 0.7, 0) -> "LP", (0.2, -0.9, 0.4) -> "AS".
    Ties keep x, y, z order. The zero vector gives "".
    """
    v = _unit(vector)
    if v is None:
        return ""
    axes = sorted(range(3), key=lambda a: -abs(v[a]))
    return "".join(_LETTERS[a][0 if v[a] > 0 else 1] for a in axes if abs(v[a]) >= _MIN_COMPONENT)


def _check_rotation(rotation: int) -> int:
    if rotation % 90 != 0:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {rotation}")
    return int(rotation) % 360


def screen_directions(row_dir: Sequence[float] | np.ndarray, col_dir: Sequence[float] | np.ndarray,
                      rotation: int = 0, flip_h: bool = False, flip_v: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(right, down): the LPS directions towards the screen's right edge and bottom edge after the
    display transform (rotate ``rotation`` degrees clockwise, then flip in the displayed frame)."""
    right = np.asarray(row_dir, dtype=float).reshape(3)
    down = np.asarray(col_dir, dtype=float).reshape(3)
    for _ in range(_check_rotation(rotation) // 90):
        # Turning the picture clockwise brings what was at the top to the right edge.
        right, down = -down, right
    if flip_h:
        right = -right
    if flip_v:
        down = -down
    return right, down


def edge_labels(row_dir: Sequence[float] | np.ndarray, col_dir: Sequence[float] | np.ndarray,
                rotation: int = 0, flip_h: bool = False, flip_v: bool = False) -> dict[str, str]:
    """Orientation letters for the four edges of the displayed image.

    Keys "left", "right", "top", "bottom". Unrotated, the right edge shows ``row_dir`` (increasing
    column), the bottom ``col_dir`` (increasing row), left and top their opposites. ``rotation`` is
    in degrees clockwise (a multiple of 90), applied first; ``flip_h``/``flip_v`` then mirror the
    displayed frame. Axial (row_dir (1,0,0), col_dir (0,1,0)): left "R", right "L", top "A",
    bottom "P"; rotated 90 degrees clockwise: top "R", right "A", bottom "L", left "P".
    """
    right, down = screen_directions(row_dir, col_dir, rotation, flip_h, flip_v)
    return {
        "left": direction_letters(-right),
        "right": direction_letters(right),
        "top": direction_letters(-down),
        "bottom": direction_letters(down),
    }


def orient_image(image: np.ndarray, rotation: int = 0, flip_h: bool = False, flip_v: bool = False) -> np.ndarray:
    """``image`` (rows, cols[, channels]) as displayed under the same transform as :func:`edge_labels`:
    rotated ``rotation`` degrees clockwise, then mirrored. Returns a view."""
    out = np.rot90(image, k=-(_check_rotation(rotation) // 90), axes=(0, 1))
    if flip_h:
        out = out[:, ::-1]
    if flip_v:
        out = out[::-1]
    return out


def plane_name(normal: Sequence[float] | np.ndarray) -> str:
    """"axial", "coronal" or "sagittal" when the plane's ``normal`` (LPS) is within 30 degrees of
    z, y or x; "oblique" otherwise (and for a zero vector)."""
    n = _unit(normal)
    if n is None:
        return "oblique"
    for axis, name in ((2, "axial"), (1, "coronal"), (0, "sagittal")):
        if abs(n[axis]) >= _PLANE_COS:
            return name
    return "oblique"
