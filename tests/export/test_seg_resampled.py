"""DICOM SEG and SR from a volume the loader resampled (gantry tilt, gaps): the mask is mapped back
onto the acquired slices, so every SEG frame references a real source image and each segmented
pixel lies, in the patient, where the mask said (within one voxel of the sphere's surface)."""

from __future__ import annotations

import importlib.util
import os
import sys

import highdicom as hd
import numpy as np
import pydicom
import pytest

import medviewer
from medviewer.ai.findings import find_findings
from medviewer.ai.prediction import Prediction
from medviewer.export.dicom_objects import write_dicom_objects

_spec = importlib.util.spec_from_file_location(
    "geometry_reference", os.path.join(os.path.dirname(__file__), "..", "core", "test_geometry_reference.py"))
reference = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("geometry_reference", reference)
_spec.loader.exec_module(reference)

LABELS = {0: {"name": "background", "color": "#000000", "threshold": 0.5},
          2: {"name": "nodule", "color": [255, 48, 48], "threshold": 0.5}}
MODELS = [{"id": "test-seg", "name": "Test segmentation", "version": "1.0.0", "sha256": "ab" * 32,
           "task": "segmentation"}]
RADIUS_MM = 4.0


def _sphere_prediction(volume: medviewer.Volume, centre: np.ndarray) -> Prediction:
    k, j, i = np.indices(volume.voxels.shape[:3])
    points = volume.index_to_lps(np.stack([k, j, i], axis=-1).reshape(-1, 3).astype(float))
    inside = (np.linalg.norm(points - centre, axis=1) <= RADIUS_MM).reshape(volume.voxels.shape[:3])
    mask = np.where(inside, 2, 0).astype(np.uint8)
    findings = find_findings(mask, volume, label_value=2, label_name="nodule")
    return Prediction(series_uid=volume.series_uid, sop_instance_uids=volume.sop_instance_uids,
                      positions_lps_mm=[tuple(p) for p in volume.positions_lps_mm], classes=["nodule"],
                      slice_probabilities=np.full((volume.shape[0], 1), 0.5, np.float32), study_probability=0.5,
                      mask=mask, labels=dict(LABELS), findings=findings, models=[dict(m) for m in MODELS],
                      device="cpu", complete=True)


@pytest.mark.parametrize("name", ["tilted", "gapped", "oblique_tilted_gapped"])
def test_seg_of_a_resampled_volume_lands_on_the_acquired_slices(name, tmp_path):
    case = reference._case(name)
    written = reference.write_case(case, tmp_path / "series")
    volume = medviewer.load(medviewer.scan(tmp_path / "series", parallel=False).series[0], parallel=False)
    assert volume.resampled
    centre = volume.index_to_lps((np.array(volume.shape[:3]) - 1) / 2)
    prediction = _sphere_prediction(volume, centre)
    paths = write_dicom_objects(volume, prediction, tmp_path / "out")
    seg = hd.seg.segread(str(tmp_path / "out" / "seg.dcm"))
    sources = {item["uid"]: item for item in written}
    voxel = float(np.linalg.norm(volume.spacing_mm))
    marked = 0
    for f, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert uid in sources, "a SEG frame references an image that is not a source slice"
        position = np.array([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient])
        np.testing.assert_allclose(position, sources[uid]["position"], atol=1e-4)
        pixels = seg.pixel_array[f] if seg.pixel_array.ndim == 3 else seg.pixel_array
        jj, ii = np.nonzero(pixels)
        points = (position + jj[:, None] * reference.SPACING[0] * case.col_dir
                  + ii[:, None] * reference.SPACING[1] * case.row_dir)
        distance = np.linalg.norm(points - centre, axis=1)
        assert distance.max() <= RADIUS_MM + voxel / 2 + 1e-6
        marked += len(jj)
    assert marked > 0
    # Every acquired pixel well inside the sphere is segmented.
    expected = 0
    for item in written:
        if item["duplicate"]:
            continue
        grid = reference._pixel_positions(item["position"], case.row_dir, case.col_dir)
        expected += int((np.linalg.norm(grid - centre, axis=-1) <= RADIUS_MM - voxel / 2).sum())
    assert marked >= expected
    sr = pydicom.dcmread(tmp_path / "out" / "sr.dcm")
    evidence = {item.ReferencedSOPInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    assert {item["uid"] for item in written} <= evidence
    assert len(paths) == 2
