"""The :class:`Volume`: decoded voxels with their geometry and per-slice metadata.

Contract (DESIGN.md): ``voxels`` is C-contiguous ``(slices, rows, cols)`` in modality units
(the modality LUT applied: HU for CT), or ``(slices, rows, cols, 3)`` for colour, at the stored
depth: uint8 for 8-bit RGB and palette colour, uint16 or uint32 for 16- and 32-bit RGB, with
``color_bits`` significant bits (:func:`medviewer.core.windowing.color_to_uint8` for display). It is
int16 where the values fit, uint8 for plain 8-bit pictures, wider integers where they must
be, float32 only for non-integer values. ``spacing_mm`` is (dz, dy, dx). ``direction``'s rows
are the LPS unit vectors of the array axes in order (slice, row, column) and
``origin_lps_mm`` is the centre of voxel [0, 0, 0], so that

    position_lps_mm(k, j, i) = origin + (k*dz, j*dy, i*dx) @ direction

holds for every voxel, with orthogonal ``direction`` rows and an even ``dz``. A series whose
slices do not lie on such a grid (gantry tilt, gaps, irregular spacing) is resampled onto one
by the loader (``resampled`` names why, and ``warnings`` say so); the slices as acquired are
then in ``acquired`` (their own positions) with their headers in ``acquired_sources``, in the
same order, for export back to the source images. ``sources[k]`` is then the header of the
acquired slice nearest to slice k.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset


@dataclass(frozen=True)
class SliceInfo:
    """Where slice k came from and where it lies (the centre of its first voxel).

    In a resampled volume (``Volume.resampled``) a slice blended between two acquired slices
    names none (empty ``sop_instance_uid`` and ``source``); ``interpolated`` is True for it
    and for an acquired slice shifted in plane (tilt correction)."""

    sop_instance_uid: str
    source: str
    frame: int
    position_lps_mm: tuple[float, float, float] | None
    instance_number: int | None
    slope: float
    intercept: float
    interpolated: bool = False


@dataclass(frozen=True)
class VoiLut:
    """A VOI LUT from the header: input values ``first_mapped``.. map through ``table``."""

    first_mapped: int
    table: np.ndarray
    explanation: str = ""


@dataclass(eq=False)
class Volume:
    voxels: np.ndarray
    spacing_mm: tuple[float, float, float]
    origin_lps_mm: np.ndarray
    direction: np.ndarray
    slices: list[SliceInfo]
    modality: str = "OT"
    units: str = ""
    photometric: str = "MONOCHROME2"
    color_bits: int = 0
    windows: list[tuple[float, float]] = field(default_factory=list)
    voi_lut: VoiLut | None = None
    series_uid: str = ""
    study_uid: str = ""
    frame_of_reference_uid: str = ""
    description: str = ""
    geometry_known: bool = False
    pixel_spacing_known: bool = False
    sources: list = field(default_factory=list, repr=False)
    warnings: list[str] = field(default_factory=list)
    missing_slices: list[int] = field(default_factory=list)
    resampled: str = ""
    acquired: list[SliceInfo] = field(default_factory=list)
    acquired_sources: list = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.origin_lps_mm = np.asarray(self.origin_lps_mm, dtype=float).reshape(3)
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if len(self.slices) != self.voxels.shape[0]:
            raise ValueError(f"{len(self.slices)} slice records for {self.voxels.shape[0]} slices")
        if self.voxels.ndim not in (3, 4) or (self.voxels.ndim == 4 and self.voxels.shape[3] != 3):
            raise ValueError(f"voxels must be (slices, rows, cols) or (slices, rows, cols, 3), got {self.voxels.shape}")
        if self.voxels.ndim == 4 and not self.color_bits:
            self.color_bits = self.voxels.dtype.itemsize * 8

    @property
    def shape(self) -> tuple[int, ...]:
        return self.voxels.shape

    @property
    def is_color(self) -> bool:
        return self.voxels.ndim == 4

    @property
    def invert(self) -> bool:
        """MONOCHROME1: low values are shown bright."""
        return self.photometric == "MONOCHROME1"

    @property
    def sop_instance_uids(self) -> list[str]:
        return [s.sop_instance_uid for s in self.slices]

    @property
    def positions_lps_mm(self) -> np.ndarray:
        """(slices, 3) positions of each slice's first voxel, from the geometry."""
        k = np.arange(self.voxels.shape[0], dtype=float)
        return self.origin_lps_mm + np.outer(k * self.spacing_mm[0], self.direction[0])

    @property
    def default_window(self) -> tuple[float, float] | None:
        """(centre, width) the header suggests, if any."""
        return self.windows[0] if self.windows else None

    def index_to_lps(self, index) -> np.ndarray:
        """LPS mm of fractional voxel indices (..., 3) in (k, j, i) order."""
        index = np.asarray(index, dtype=float)
        return self.origin_lps_mm + (index * np.asarray(self.spacing_mm)) @ self.direction

    def lps_to_index(self, point) -> np.ndarray:
        """Fractional (k, j, i) indices of LPS points (..., 3); inverse of :meth:`index_to_lps`."""
        point = np.asarray(point, dtype=float) - self.origin_lps_mm
        return np.linalg.solve(self.direction.T, point.T).T / np.asarray(self.spacing_mm) if point.ndim == 1 else (
            np.linalg.solve(self.direction.T, point.reshape(-1, 3).T).T.reshape(point.shape) / np.asarray(self.spacing_mm))

    def header(self, k: int) -> Dataset | None:
        """The source header (no pixel data) of slice ``k``, for export and the tag browser;
        None for pictures and NIfTI. Read on first use."""
        if not self.sources:
            return None
        return self.sources[k].header

    @property
    def bytes_per_voxel(self) -> float:
        return self.voxels.itemsize * (3 if self.is_color else 1)

    def __repr__(self) -> str:
        return (f"Volume({self.modality} {self.shape} {self.voxels.dtype}, spacing {tuple(round(s, 3) for s in self.spacing_mm)} mm, "
                f"{len(self.warnings)} warning(s))")
