from __future__ import annotations

import gc
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
import pytest  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402
from PySide6.QtCore import QSettings  # noqa: E402

DISC_DIAMETER_MM = 30.0
DISC_HU = 100
SPACING = (2.0, 0.8, 0.6)  # dz, dy, dx: non-square pixels on purpose
SHAPE = (10, 64, 80)


def write_disc_series(folder, *, shape=SHAPE, spacing=SPACING, seed=1, frame_seed=None):
    """A CT series with a cylinder of known diameter (a disc on every slice), HU 100 in air.

    Returns (folder, centre (row, col) in pixels).
    """
    folder.mkdir(parents=True, exist_ok=True)
    slices, rows, cols = shape
    dz, dy, dx = spacing
    centre = ((rows - 1) / 2, (cols - 1) / 2)
    yy, xx = np.mgrid[:rows, :cols]
    inside = ((yy - centre[0]) * dy) ** 2 + ((xx - centre[1]) * dx) ** 2 <= (DISC_DIAMETER_MM / 2) ** 2
    study, series = (generate_uid(entropy_srcs=[str(seed), name]) for name in ("st", "se"))
    frame = generate_uid(entropy_srcs=[str(seed if frame_seed is None else frame_seed), "for"])
    for k in range(slices):
        hu = np.where(inside, DISC_HU, -1000).astype(np.int16)
        hu[0, 0] = k  # a per-slice marker
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(seed), "sop", str(k)])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.StudyDate = "DISC^PHANTOM", "DISC01", "20240102"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, k + 1
        ds.SeriesDescription = "Disc phantom"
        ds.ImagePositionPatient = [0.0, 0.0, k * dz]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [dy, dx]
        ds.SliceThickness = dz
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = hu.tobytes()
        pydicom.dcmwrite(folder / f"IM{k + 1:03d}.dcm", ds, enforce_file_format=True)
    return folder, centre


@pytest.fixture
def disc_folder(tmp_path):
    return write_disc_series(tmp_path / "disc")


@pytest.fixture(autouse=True)
def _reviews_in_tmp(tmp_path, monkeypatch):
    """Reviews a test makes are kept in its own folder, never in the user's data folder."""
    from medviewer.ai import review_store

    folder = tmp_path / "reviews"
    monkeypatch.setattr(review_store, "reviews_dir", lambda: folder)
    return folder


@pytest.fixture
def window(qtbot, tmp_path):
    from medviewer.ui.app import make_app
    from medviewer.ui.main_window import MainWindow

    make_app()
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings)
    win.resize(1100, 750)
    qtbot.addWidget(win)
    win.show()
    yield win
    win.tasks.shutdown()
    win.close()
    # Collect the window's reference cycles now, while none of its threads runs, rather than at whatever
    # moment a later test happens to trigger the garbage collector.
    from PySide6.QtWidgets import QApplication

    QApplication.processEvents()
    gc.collect()


def open_and_wait(qtbot, win, paths, timeout=20000):
    win.open_paths([str(p) for p in paths])
    qtbot.waitUntil(lambda: bool(win.volumes) and not win.tasks.running, timeout=timeout)
    return win.active
