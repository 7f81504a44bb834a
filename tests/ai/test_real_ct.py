"""The built-in chest models on real CT they were never trained on: pydicom's and pydicom-data's CT files
(a cropped chest, heads, an abdomen below the lungs, a neck, and DICOMDIR thumbnails), through ``medviewer
predict``. Where a slice holds lung, the lung mask must match a classical threshold-and-fill lung mask
(Dice >= 0.9); where it holds none, the mask must stay near empty; nowhere may a finding lie outside the lungs.

Which files hold lung was decided by looking at them, not by the model: CT_small is a crop around a thoracic
vertebra with both lungs cut by the field of view; the others are heads, an abdomen at the kidneys, and a
neck."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from scipy import ndimage as ndi

from medviewer.cli import main as cli_main

# name, whether it holds lung, whether the field of view is cropped inside the body
REAL_CT = [
    ("CT_small.dcm", True, True),
    ("693_J2KI.dcm", False, False),
    ("J2K_pixelrep_mismatch.dcm", False, False),
    ("693_UNCI.dcm", False, False),  # pydicom-data from here on
    ("explicit_VR-UN.dcm", False, False),
    ("bad_sequence.dcm", False, True),
]
DICOMDIR_CT = ["77654033/CT2", "98892001/CT2N", "98892001/CT5N"]


def _hu(path: str) -> tuple[np.ndarray, tuple[float, float]]:
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    return hu, tuple(float(v) for v in ds.PixelSpacing)


def classical_lungs(hu: np.ndarray, spacing: tuple[float, float], cropped: bool, min_mm2: float = 100.0) -> np.ndarray:
    """Threshold (-400 HU) and fill: air pieces of at least ``min_mm2`` (1 cm²), less those touching the image border (the
    air around the patient) unless the field of view is cropped inside the body, holes (vessels) filled."""
    air = hu < -400
    labels, count = ndi.label(air)
    keep = np.zeros(count + 1, dtype=bool)
    sizes = np.bincount(labels.ravel(), minlength=count + 1) * spacing[0] * spacing[1]
    keep[1:] = sizes[1:] >= min_mm2
    if not cropped:
        keep[np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))] = False
    keep[0] = False
    return ndi.binary_fill_holes(keep[labels])


def _predict(path: str, out: Path) -> tuple[dict, np.ndarray]:
    assert cli_main(["predict", path, "--out", str(out), "--no-explain"]) == 0
    return json.loads((out / "predictions.json").read_text()), np.load(out / "mask.npy")


def _file(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data)")
    return path


@pytest.mark.parametrize(("name", "has_lung", "cropped"), REAL_CT)
def test_lung_mask_on_real_ct(name, has_lung, cropped, tmp_path):
    path = _file(name)
    hu, spacing = _hu(path)
    prediction, mask = _predict(path, tmp_path / "out")
    lung = mask[0] > 0  # lung with whatever the model found inside it
    reference = classical_lungs(hu, spacing, cropped)
    profile_warnings = [w for w in prediction["warnings"] if "of the body, where the CTs it was trained on" in w]
    if has_lung:
        assert profile_warnings == [], profile_warnings
        dice = 2 * (lung & reference).sum() / (lung.sum() + reference.sum())
        assert dice >= 0.9, f"{name}: lung Dice {dice:.3f} against threshold-and-fill"
    else:
        # No lung here: what the model calls lung must be air enclosed by the patient (sinuses, mastoid cells,
        # bowel gas: the classical mask without its size limit, widened by 2 pixels for partial volume), never
        # the room air, table or tissue, and little of the slice.
        enclosed = ndi.binary_dilation(classical_lungs(hu, spacing, cropped, min_mm2=0.0), iterations=2)
        # and the input check says the study is not like the chest CTs the models know (air, bone or fat)
        assert profile_warnings, f"{name}: no HU-profile warning in {prediction['warnings']}"
        assert lung.mean() <= 0.05, f"{name}: {lung.mean():.1%} of a slice with no lung called lung"
        if lung.any():
            assert enclosed[lung].mean() >= 0.9, f"{name}: lung outside enclosed air: {1 - enclosed[lung].mean():.1%}"
    for finding in prediction["findings"]:
        # a finding must lie in the lungs: its voxels within the classical lung mask, widened by 5 mm
        widened = ndi.binary_dilation(reference, iterations=max(1, round(5 / min(spacing))))
        assert has_lung and widened[mask[0] == finding.get("label_value", 2)].mean() > 0.9, f"{name}: {finding}"


@pytest.mark.parametrize("series", DICOMDIR_CT)
def test_dicomdir_thumbnails_report_nothing_and_say_why(series, tmp_path):
    """16 x 16 CT thumbnails (heads, and one series without a chest's values): no finding, and the input
    check names what is off."""
    folder = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests" / series
    prediction, mask = _predict(str(folder), tmp_path / "out")
    assert prediction["findings"] == []
    assert any("pixel spacing" in w or "Hounsfield" in w for w in prediction["warnings"])


def test_body_outline_keeps_cropped_lung_and_drops_room_air():
    from medviewer.ai.body import body_mask

    hu, spacing = _hu(get_testdata_file("CT_small.dcm"))
    assert body_mask(hu, spacing).all()  # a crop inside the chest: lung on the border is inside
    head, spacing = _hu(get_testdata_file("693_J2KI.dcm"))
    inside = body_mask(head, spacing)
    assert 0.2 < inside.mean() < 0.5 and not inside[0].any() and not inside[:, 0].any()
    assert inside[head.shape[0] // 2, head.shape[1] // 2]  # the brain is inside
    assert not body_mask(np.full((64, 64), -1000.0)).any()


