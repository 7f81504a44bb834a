"""Window/level: which modality values map to black and white on screen.

A :class:`Window` is (centre, width) in the volume's modality units (HU for CT). Values at or
below ``centre - width/2`` are shown black, at or above ``centre + width/2`` white (inverted for
MONOCHROME1 by the UI's lookup table, not here). The policy of the viewer (ndv's LUT model):
the header's window when the file has one, CT presets by name, or a percentile window computed
once per series from a strided subsample -- never per slice, never on a float64 copy.

The UI hands int16 slices to pyqtgraph as uint16 shifted by :func:`display_offset` (int16 is off
pyqtgraph's fast path); :func:`to_display_levels` and :func:`to_display_pixels` apply the same shift
to the levels and the pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medviewer.core.volume import Volume

MIN_WIDTH = 1.0
"""Narrowest window, in modality units (DICOM's VOI LUT function needs width >= 1)."""

UINT16_OFFSET = 32768
"""int16 value + 32768 = the uint16 value the UI displays."""


@dataclass(frozen=True)
class Window:
    """A display window in modality units. ``width`` is clamped to at least :data:`MIN_WIDTH`."""

    center: float
    width: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "center", float(self.center))
        object.__setattr__(self, "width", max(float(self.width), MIN_WIDTH))

    def levels(self) -> tuple[float, float]:
        """(lo, hi) = (centre - width/2, centre + width/2): the values shown black and white."""
        half = self.width / 2.0
        return self.center - half, self.center + half

    @classmethod
    def from_levels(cls, lo: float, hi: float) -> Window:
        """The window whose black and white levels are ``lo`` and ``hi`` (in either order)."""
        lo, hi = sorted((float(lo), float(hi)))
        return cls((lo + hi) / 2.0, hi - lo)


CT_PRESETS: dict[str, Window] = {
    "brain": Window(40, 80),
    "lung": Window(-600, 1500),
    "mediastinum": Window(40, 400),
    "abdomen": Window(50, 400),
    "bone": Window(400, 1800),
}
"""CT windows in HU, keyed by the names the menus show, in menu order."""


def _strided_sample(voxels: np.ndarray, max_samples: int) -> np.ndarray:
    """A view of ``voxels`` taking every s-th element along each axis, at most ``max_samples`` elements.

    Per-axis strides (rather than a flat stride) so the sample covers every part of each plane
    instead of aliasing onto a few columns.
    """
    shape = voxels.shape
    steps = [1] * len(shape)

    def count() -> int:
        return math.prod(-(-n // s) for n, s in zip(shape, steps))

    while count() > max_samples:
        # Thin the axis that still has the most samples; a colour axis (3) is thinned last.
        axis = max(range(len(shape)), key=lambda a: -(-shape[a] // steps[a]))
        steps[axis] = max(steps[axis] + 1, int(steps[axis] * 1.25))  # geometric: few rounds even for huge arrays
    return voxels[tuple(slice(None, None, s) for s in steps)]


def _sample_values(voxels: np.ndarray, max_samples: int) -> np.ndarray:
    """Flat sample of at most ``max_samples`` finite values, padding removed.

    Padding: when the minimum value makes up more than 20% of the samples it is taken to be
    air or padding outside the field of view and left out (unless nothing else is left).
    """
    sample = np.asarray(_strided_sample(voxels, max(int(max_samples), 1))).ravel()
    if sample.dtype.kind == "f":
        sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return sample
    minimum = sample.min()
    padding = sample == minimum
    if padding.sum() > 0.2 * sample.size and not padding.all():
        sample = sample[~padding]
    return sample


def percentile_window(voxels: np.ndarray, low: float = 0.5, high: float = 99.5,
                      max_samples: int = 1_000_000) -> Window:
    """Window from the ``low``..``high`` percentiles of the values, in modality units.

    Reads a strided subsample of at most ``max_samples`` voxels (a view; only the sample is
    copied). Values equal to the minimum are ignored when they make up more than 20% of the
    sample (padding or air outside the field of view); NaN and infinities are ignored.
    """
    sample = _sample_values(voxels, max_samples)
    if sample.size == 0:
        return Window(0.0, MIN_WIDTH)
    lo, hi = np.percentile(sample, [low, high])
    return Window.from_levels(float(lo), float(hi))


def _is_ct(volume: Volume) -> bool:
    """CT in Hounsfield units (a CT with another RescaleType does not get HU presets)."""
    return volume.modality == "CT" and volume.units in ("HU", "")


def default_window(volume: Volume) -> Window | None:
    """The window a series opens with: the header's first window, else for CT the
    mediastinum preset, else the percentile window. None for colour volumes (no windowing)."""
    if volume.is_color:
        return None
    if volume.windows:
        center, width = volume.windows[0]
        return Window(center, width)
    if _is_ct(volume):
        return CT_PRESETS["mediastinum"]
    return percentile_window(volume.voxels)


def window_presets(volume: Volume) -> dict[str, Window]:
    """Named windows for the menu, in order: "Default" (:func:`default_window`), then the CT presets
    for CT, or "Auto" (percentile) for other grayscale modalities. ``{}`` for colour volumes."""
    if volume.is_color:
        return {}
    if _is_ct(volume):
        default = default_window(volume)
        assert default is not None
        return {"Default": default, **CT_PRESETS}
    auto = percentile_window(volume.voxels)
    default = Window(*volume.windows[0]) if volume.windows else auto
    return {"Default": default, "Auto": auto}


def drag_window(window: Window, dx: float, dy: float, *, sensitivity: float) -> Window:
    """The window after a mouse drag of (``dx``, ``dy``) screen pixels (x right, y down).

    As in RadiAnt and Horos: dragging right widens the window (less contrast), dragging down
    raises the centre (darker image). ``sensitivity`` is modality units per screen pixel.
    """
    return Window(window.center + dy * sensitivity, window.width + dx * sensitivity)


def drag_sensitivity(volume: Volume, max_samples: int = 200_000) -> float:
    """Modality units per screen pixel of window drag: (p99.5 - p0.5) / 512. Reads a subsample of
    the volume: compute it once per series, not per drag event.

    At least 1 for integer data (1 HU per pixel is too slow over a 4000 HU range, but less than a
    unit per pixel is pointless for integers); for float data (PET SUV, maps in 0..1) no floor
    beyond a tiny positive value. 1.0 for colour volumes.
    """
    if volume.is_color:
        return 1.0
    lo, hi = percentile_window(volume.voxels, max_samples=max_samples).levels()
    step = (hi - lo) / 512.0
    if volume.voxels.dtype.kind == "f":
        return max(step, 1e-6)
    return max(step, 1.0)


def display_offset(dtype: np.dtype | type, value_range: tuple[float, float] | None = None) -> int:
    """What the UI adds to stored values to display them as uint16: 32768 for int16, and for wider
    signed integers whose ``value_range`` (min, max) fits int16; 0 for everything else (uint8,
    uint16, float and wide integers that do not fit, which the UI displays as they are)."""
    dtype = np.dtype(dtype)
    if dtype == np.int16:
        return UINT16_OFFSET
    if dtype.kind == "i" and dtype.itemsize > 2 and value_range is not None:
        lo, hi = value_range
        if lo >= np.iinfo(np.int16).min and hi <= np.iinfo(np.int16).max:
            return UINT16_OFFSET
    return 0


def to_display_levels(window: Window, offset: int) -> tuple[float, float]:
    """The window's (lo, hi) levels shifted into the displayed data's values: (lo + offset, hi + offset)."""
    lo, hi = window.levels()
    return lo + offset, hi + offset


def to_display_pixels(pixels: np.ndarray, offset: int, out: np.ndarray | None = None) -> np.ndarray:
    """A slice as the UI hands it to pyqtgraph: ``pixels + offset`` as uint16 when ``offset`` is
    32768 (values must fit int16), else ``pixels`` unchanged. ``out`` (uint16, same shape) is reused
    to avoid a fresh allocation per slice."""
    if offset == 0:
        return pixels
    if offset != UINT16_OFFSET:
        raise ValueError(f"display offset must be 0 or {UINT16_OFFSET}, got {offset}")
    if out is None:
        out = np.empty(pixels.shape, dtype=np.uint16)
    elif out.shape != pixels.shape or out.dtype != np.uint16:
        raise ValueError(f"out must be uint16 {pixels.shape}, got {out.dtype} {out.shape}")
    if pixels.dtype == np.int16:
        # int16 -> uint16 + 32768 is flipping the sign bit of the two's complement.
        np.bitwise_xor(pixels.view(np.uint16), np.uint16(0x8000), out=out)
    else:
        np.add(pixels, UINT16_OFFSET, out=out, casting="unsafe")
    return out


def to_uint8(values: np.ndarray, lo: float, hi: float, *, invert: bool = False) -> np.ndarray:
    """``values`` mapped linearly from [lo, hi] onto 0..255 (clipped, rounded) as uint8; ``invert`` for
    MONOCHROME1, where low values are shown bright."""
    gray = (np.asarray(values, dtype=np.float32) - np.float32(lo)) * np.float32(255.0 / max(hi - lo, 1e-6))
    np.clip(gray, 0, 255, out=gray)
    out = np.rint(gray).astype(np.uint8)
    if invert:
        np.subtract(255, out, out=out)
    return out


def color_to_uint8(values: np.ndarray, bits: int = 8) -> np.ndarray:
    """RGB samples with ``bits`` significant bits (a colour volume's ``color_bits``) shown as uint8:
    their top 8 bits, ``value >> (bits - 8)``. uint8 input comes back as it is (no copy)."""
    values = np.asarray(values)
    if values.dtype == np.uint8:
        return values
    shift = max(0, int(bits) - 8)
    if shift:
        values = values >> np.array(shift, dtype=values.dtype)
    return np.minimum(values, 255).astype(np.uint8)
