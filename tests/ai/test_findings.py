"""Findings measured from masks, and the prediction files (no torch needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medviewer.ai.findings import find_findings, longest_axial_diameter_mm
from medviewer.ai.prediction import Finding, Prediction, read_prediction, write_prediction
from medviewer.core.volume import SliceInfo, Volume


def make_volume(shape=(40, 80, 90), spacing=(1.5, 0.7, 0.8), origin=(-30.0, -20.0, 100.0)):
    voxels = np.full(shape, -1000, dtype=np.int16)
    slices = [SliceInfo(f"1.2.3.{k}", f"IM{k}", 0, (origin[0], origin[1], origin[2] + k * spacing[0]), k + 1, 1.0, 0.0)
              for k in range(shape[0])]
    return Volume(voxels=voxels, spacing_mm=spacing, origin_lps_mm=np.array(origin), direction=np.eye(3)[[2, 1, 0]],
                  slices=slices, modality="CT", units="HU", series_uid="1.2.3", geometry_known=True,
                  pixel_spacing_known=True)


def sphere_mask(volume, centre_lps, diameter_mm, value=2):
    k, j, i = np.indices(volume.shape)
    lps = volume.index_to_lps(np.stack([k, j, i], -1).reshape(-1, 3)).reshape(volume.shape + (3,))
    inside = np.linalg.norm(lps - np.asarray(centre_lps), axis=-1) <= diameter_mm / 2
    mask = np.zeros(volume.shape, dtype=np.uint8)
    mask[inside] = value
    return mask


def test_sphere_is_measured_in_patient_units():
    volume = make_volume()
    centre = (10.0, 8.0, 130.0)
    mask = sphere_mask(volume, centre, 12.0)
    mask[:2, :2, :2] = 1  # another label: ignored
    probability = np.where(mask == 2, 0.9, 0.1).astype(np.float16)
    (finding,) = find_findings(mask, volume, label_value=2, label_name="nodule", probability=probability)
    assert finding.centroid_lps_mm == pytest.approx(centre, abs=0.5)
    assert finding.diameter_mm == pytest.approx(12.0, abs=0.8)  # within about a pixel
    assert finding.volume_ml == pytest.approx(4 / 3 * np.pi * 6.0**3 / 1000, rel=0.1)
    first, last = finding.slices
    assert (last - first + 1) * 1.5 == pytest.approx(12.0, abs=3.0)
    assert finding.max_probability == pytest.approx(0.9, abs=1e-3) and finding.confidence is None


def test_separate_regions_and_noise():
    volume = make_volume()
    mask = sphere_mask(volume, (0.0, 0.0, 120.0), 8.0) | sphere_mask(volume, (15.0, 15.0, 140.0), 6.0)
    mask[30, 70, 80] = 2  # a single voxel: noise
    agreement = np.ones(volume.shape, dtype=bool)
    agreement[:, :, :45] = False
    findings = find_findings(mask, volume, label_value=2, label_name="nodule", agreement=agreement)
    assert [f.id for f in findings] == [1, 2]
    assert findings[0].slices[0] < findings[1].slices[0]
    assert 0.0 <= findings[0].confidence <= 1.0


def test_diameter_of_a_line_and_a_pixel():
    mask = np.zeros((20, 20), dtype=bool)
    mask[5, 2:12] = True
    assert longest_axial_diameter_mm(mask, (1.0, 0.5)) == pytest.approx(5.0)
    single = np.zeros((5, 5), dtype=bool)
    single[2, 2] = True
    assert longest_axial_diameter_mm(single, (0.7, 0.9)) == pytest.approx(0.7)


def _prediction(volume):
    mask = sphere_mask(volume, (0.0, 0.0, 120.0), 8.0)
    findings = find_findings(mask, volume, label_value=2, label_name="nodule")
    return Prediction(series_uid=volume.series_uid, sop_instance_uids=volume.sop_instance_uids,
                      positions_lps_mm=[tuple(p) for p in volume.positions_lps_mm], classes=["nodule"],
                      slice_probabilities=np.linspace(0, 1, volume.shape[0], dtype=np.float32)[:, None],
                      study_probability=1.0, mask=mask, labels={1: {"name": "lung", "color": "#00ff00"}},
                      heatmap=np.zeros(volume.shape, dtype=np.float16), findings=findings,
                      models=[{"id": "m", "version": "1", "sha256": "ab" * 32, "task": "classification",
                               "threshold": 0.5}], device="CPU", complete=True)


def test_prediction_files_round_trip(tmp_path):
    volume = make_volume()
    prediction = _prediction(volume)
    written = write_prediction(prediction, tmp_path)
    assert sorted(p.name for p in written) == ["heatmap.npy", "mask.npy", "predictions.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heatmap.npy", "mask.npy", "predictions.json"]
    data = json.loads((tmp_path / "predictions.json").read_text())
    assert data["slices"][3]["sop_instance_uid"] == "1.2.3.3"
    assert data["verdict"] == "positive" and data["models"][0]["sha256"] == "ab" * 32
    back = read_prediction(tmp_path)
    assert np.array_equal(back.mask, prediction.mask) and back.heatmap.dtype == np.float16
    assert back.findings[0].to_dict() == prediction.findings[0].to_dict()
    assert np.allclose(back.slice_probabilities, prediction.slice_probabilities, atol=1e-6)


def test_existing_files_are_not_overwritten(tmp_path):
    volume = make_volume()
    write_prediction(_prediction(volume), tmp_path)
    before = (tmp_path / "predictions.json").read_bytes()
    from medviewer.core.safe import ExistsError

    with pytest.raises(ExistsError):
        write_prediction(_prediction(volume), tmp_path)
    assert (tmp_path / "predictions.json").read_bytes() == before
    write_prediction(_prediction(volume), tmp_path, force=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_finding_review_fields_round_trip():
    finding = Finding(7, "nodule", 2, (3, 5), (4.0, 1.0, 2.0), None, 10, 0.1, 5.0, 0.9, 0.8, 0.95, "accepted", "ok")
    assert Finding.from_dict(json.loads(json.dumps(finding.to_dict()))) == finding
