"""Small DICOM series written with pydicom into tmp_path, for the core tests.

``write_slice`` writes one classic single-frame image; ``write_series`` a stack of them along
the normal of an orientation. Pixel values encode the slice so a test can tell slices apart
after the loader has sorted them: every pixel of slice ``k`` (in geometric order) is
``base + k * 10 + (row + col) % 7``, before the rescale.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

# Fixed UID root so names are deterministic in messages; the suffixes come from a counter.
_ROOT = "1.2.826.0.1.3680043.8.498."
_counter = iter(range(1, 10**9))


def uid() -> str:
    return generate_uid(prefix=_ROOT, entropy_srcs=[str(next(_counter)), str(os.getpid())])


def slice_pixels(k: int, rows: int = 16, cols: int = 16, base: int = 100, dtype=np.int16) -> np.ndarray:
    j, i = np.mgrid[0:rows, 0:cols]
    return (base + k * 10 + (j + i) % 7).astype(dtype)


def make_dataset(
    pixels: np.ndarray,
    *,
    study: str,
    series: str,
    frame_of_reference: str | None,
    position: Sequence[float] | None,
    orientation: Sequence[float] | None = (1, 0, 0, 0, 1, 0),
    pixel_spacing: Sequence[float] | None = (0.7, 0.8),
    instance_number: int | None = None,
    intercept: float | None = -1024,
    slope: float | None = 1,
    modality: str = "CT",
    photometric: str = "MONOCHROME2",
    thickness: float | None = None,
    sop_uid: str | None = None,
    series_number: int = 1,
    description: str = "test series",
) -> Dataset:
    """A classic single-frame grayscale image data set (uint16/int16 pixels)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid or uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    if frame_of_reference:
        ds.FrameOfReferenceUID = frame_of_reference
    ds.PatientName = "Test^Patient"
    ds.PatientID = "TEST-1"
    ds.StudyDate = "20240102"
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    if instance_number is not None:
        ds.InstanceNumber = instance_number
    if position is not None:
        ds.ImagePositionPatient = [float(v) for v in position]
    if orientation is not None:
        ds.ImageOrientationPatient = [float(v) for v in orientation]
    if pixel_spacing is not None:
        ds.PixelSpacing = [float(v) for v in pixel_spacing]
    if thickness is not None:
        ds.SliceThickness = thickness
    if intercept is not None:
        ds.RescaleIntercept = intercept
    if slope is not None:
        ds.RescaleSlope = slope
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<")).tobytes()
    return ds


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


class SeriesWriter:
    """Writes a stack of slices; remembers what it wrote for the assertions."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.study = uid()

    def write(
        self,
        count: int = 5,
        *,
        name: str = "ct",
        spacing: float = 2.5,
        origin: Sequence[float] = (-10.0, -20.0, 30.0),
        orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
        distances: Sequence[float] | None = None,
        file_order: Sequence[int] | None = None,
        instance_numbers: Sequence[int | None] | None = None,
        folder: Path | None = None,
        series: str | None = None,
        frame_of_reference: str | None = None,
        positions: bool = True,
        dtype=np.int16,
        **kwargs,
    ) -> dict:
        """Write ``count`` slices at ``distances`` (default k*spacing) along the normal.

        Slice k (geometric order) goes to file ``{name}_{file_order[k]:03d}.dcm``; its
        InstanceNumber is ``instance_numbers[k]`` (default k+1, None to leave it out).
        """
        folder = folder or self.folder
        series = series or uid()
        frame_of_reference = frame_of_reference or uid()
        orientation = tuple(float(v) for v in orientation)
        normal = np.cross(orientation[:3], orientation[3:])
        distances = list(distances) if distances is not None else [k * spacing for k in range(count)]
        file_order = list(file_order) if file_order is not None else list(range(count))
        numbers = list(instance_numbers) if instance_numbers is not None else [k + 1 for k in range(count)]
        written = []
        for k in range(count):
            position = np.asarray(origin, dtype=float) + distances[k] * normal
            pixels = slice_pixels(k, dtype=dtype)
            ds = make_dataset(
                pixels, study=self.study, series=series, frame_of_reference=frame_of_reference,
                position=position if positions else None, orientation=orientation, instance_number=numbers[k],
                **kwargs)
            path = save(ds, folder / f"{name}_{file_order[k]:03d}.dcm")
            written.append({"path": str(path), "position": position, "pixels": pixels, "ds": ds})
        return {"series": series, "frame_of_reference": frame_of_reference, "slices": written, "normal": normal,
                "folder": folder}


@pytest.fixture
def writer(tmp_path: Path) -> SeriesWriter:
    return SeriesWriter(tmp_path / "series")


@pytest.fixture
def pydicom_file():
    """Path of a file bundled with pydicom (skips where this pydicom does not bundle it)."""
    folder = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")

    def get(name: str) -> str:
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            pytest.skip(f"{name} is not bundled with this pydicom")
        return path

    return get


class _Helpers:
    """The module's helpers, handed to tests as a fixture (tests never import conftest)."""

    uid = staticmethod(uid)
    slice_pixels = staticmethod(slice_pixels)
    make_dataset = staticmethod(make_dataset)
    save = staticmethod(save)
    unit = staticmethod(unit)


@pytest.fixture
def dicom() -> type[_Helpers]:
    return _Helpers
