"""The patient's body outline on a CT slice, from HU alone: what a segmentation of anatomy inside the body may
cover. Outside it (room air, the table, cushions and blankets apart from the body) every label is background.

Classical and model-free, so it holds on scanners the networks never saw: real CT has a table, pads, clothes
and noisy air around the patient where our training phantoms had almost none, and a network trained on
phantoms can call that air lung.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

DENSE_HU = -500.0  # skin, muscle, fat, bone, and the table
OUTSIDE_AIR_HU = -950.0  # room air (about -1000, lower outside the scan circle); lung is about -850
GAP_MM = 4.0  # border air thinner than this (half-width) is a gap around the body, not cropped lung
CONTACT_MM = 2.0  # pieces joined to the body by less than twice this (a pad, a table edge) are cut off


def _disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


GRID_MM = 1.5  # the outline is found on a grid at least this coarse (block means of the slice), then scaled back


def body_mask(hu: np.ndarray, spacing_mm: tuple[float, float] = (1.0, 1.0), inset_mm: float = 0.0) -> np.ndarray:
    """True inside the body on one slice ``hu`` (rows, cols): :func:`outline` on a grid of about
    :data:`GRID_MM` (a 512 x 512 slice in a few milliseconds), each coarse pixel standing for its block.
    ``inset_mm`` moves the outline that far inwards, except where the body runs off the image (a cropped
    field of view): the skin's partial-volume rim, half air, is then outside."""
    hu = np.asarray(hu, dtype=np.float32)
    step = max(1, int(np.ceil(GRID_MM / max(min(spacing_mm), 1e-3) - 0.05)))
    rows, cols = hu.shape
    if step > 1:
        padded = np.pad(hu, ((0, -rows % step), (0, -cols % step)), mode="edge")
        hu = padded.reshape(padded.shape[0] // step, step, padded.shape[1] // step, step).mean((1, 3))
    coarse = (spacing_mm[0] * step, spacing_mm[1] * step)
    mask = outline(hu, coarse)
    radius = int(round(inset_mm / min(coarse)))
    if radius > 0 and mask.any():
        mask = ndi.binary_erosion(mask, _disk(radius), border_value=1)
    if step == 1:
        return mask
    return np.repeat(np.repeat(mask, step, 0), step, 1)[:rows, :cols]


def outline(hu: np.ndarray, spacing_mm: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """True inside the body on one slice ``hu`` (rows, cols), holes (lungs, airways, bowel gas) included.

    The body is the largest connected piece denser than :data:`DENSE_HU` after an opening that cuts thin
    contacts (a cushion or the table touching the back). Air on the image border is outside unless it is
    denser than room air (:data:`OUTSIDE_AIR_HU`): in a field of view cropped inside the chest, lung touching
    the border stays inside. Nothing dense at all: an empty mask."""
    dense = np.asarray(hu) > DENSE_HU
    if not dense.any():
        return np.zeros(dense.shape, dtype=bool)
    radius = max(1, int(round(CONTACT_MM / max(min(spacing_mm), 1e-3))))
    structure = _disk(radius)
    opened = ndi.binary_opening(dense, structure)
    labels, count = ndi.label(opened if opened.any() else dense)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    trunk = labels == int(sizes.argmax())
    trunk = ndi.binary_dilation(trunk, structure) & dense  # the skin the opening took back
    # Air on the border, in connected pieces: outside unless it is denser than room air (its mean) and
    # thicker than a gap (lung cut by a cropped field of view is both; the air between the back and the
    # table is neither). Then everything the body and that air enclose is inside.
    air, pieces = ndi.label(~dense)
    border = np.unique(np.concatenate([air[0], air[-1], air[:, 0], air[:, -1]]))
    border = border[border > 0]
    kept = np.zeros(pieces + 1, dtype=bool)
    if len(border):
        sizes = np.bincount(air.ravel(), minlength=pieces + 1)
        means = np.bincount(air.ravel(), weights=np.asarray(hu, dtype=np.float64).ravel(), minlength=pieces + 1)
        means = means / np.maximum(sizes, 1)
        denser = border[means[border] >= OUTSIDE_AIR_HU]
        if len(denser):
            candidates = np.isin(air, denser)
            depth = ndi.distance_transform_edt(candidates, sampling=spacing_mm)
            thickness = np.asarray(ndi.maximum(depth, air, denser))
            kept[denser[thickness >= GAP_MM]] = True
    return ndi.binary_fill_holes(trunk | kept[air])


def body_masks(volume_hu: np.ndarray, spacing_mm: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """:func:`body_mask` of each slice of ``volume_hu`` (slices, rows, cols)."""
    return np.stack([body_mask(s, spacing_mm) for s in volume_hu]) if len(volume_hu) else \
        np.zeros(volume_hu.shape, dtype=bool)


# Bands of the HU histogram inside the body that tell one kind of CT from another: air-filled lung (and
# airways, bowel gas), fat, soft tissue and blood, bone (and contrast, metal).
HU_BANDS = {"air": (-1100.0, -400.0), "fat": (-200.0, -50.0), "soft": (-50.0, 150.0), "bone": (300.0, 4000.0)}


def hu_profile(volume_hu: np.ndarray, spacing_mm: tuple[float, float] = (1.0, 1.0),
               max_slices: int = 24) -> dict[str, float] | None:
    """The fraction of the body's voxels in each of :data:`HU_BANDS`, over up to ``max_slices`` evenly spread
    slices; None where no slice holds a body. A chest CT is a fifth or more air inside the body; a head or an
    abdomen below the lungs almost none."""
    volume_hu = np.asarray(volume_hu)
    if volume_hu.ndim != 3 or not len(volume_hu):
        return None
    step = max(1, len(volume_hu) // max_slices)
    counts = dict.fromkeys(HU_BANDS, 0)
    total = 0
    for hu in volume_hu[::step]:
        inside = body_mask(hu, spacing_mm)
        values = np.asarray(hu, dtype=np.float32)[inside]
        total += values.size
        for band, (lo, hi) in HU_BANDS.items():
            counts[band] += int(((values >= lo) & (values < hi)).sum())
    if total == 0:
        return None
    return {band: count / total for band, count in counts.items()}
