"""DICOM SEG and TID 1500 SR export of a prediction, read back with highdicom and pydicom and checked by dciodvfy.

The prediction is built straight from a small phantom's ground-truth labels (no model runs), aligned to the
loaded volume by slice position.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from medviewer import __version__
from medviewer.ai.demo_data import write_phantom_dicom
from medviewer.ai.findings import find_findings
from medviewer.ai.phantom import PhantomConfig, generate_phantom
from medviewer.ai.prediction import Finding, Prediction
from medviewer.core.load import load
from medviewer.core.safe import ExistsError, ExportError
from medviewer.core.scan import scan
from medviewer.core.volume import SliceInfo, Volume
from medviewer.export.dicom_objects import (
    SEG_SERIES_NUMBER,
    SR_SERIES_NUMBER,
    VERIFYING_OBSERVER,
    build_segmentation,
    is_verified,
    write_dicom_objects,
    write_measurement_report,
    write_segmentation,
)

CONFIG = PhantomConfig(slices=12, size=64, slice_thickness_mm=5.0, nodule_count=(1, 1),
                       nodule_diameter_mm=(15.0, 15.0), vessel_generations=2)
LABELS = {0: {"name": "background", "color": "#000000", "threshold": 0.5},
          1: {"name": "lung", "color": "#3080ff", "threshold": 0.5},
          2: {"name": "nodule", "color": [255, 48, 48], "threshold": 0.5}}
MODELS = [
    {"id": "chest-ct-lung-nodule-seg", "name": "Chest CT lung and nodule segmentation", "version": "1.0.0",
     "sha256": "ab" * 32, "task": "segmentation"},
    {"id": "chest-ct-nodule", "name": "Chest CT nodule finder", "version": "1.0.0", "sha256": "cd" * 32,
     "task": "classification", "threshold": 0.5},
]
DCIODVFY = shutil.which("dciodvfy")


@pytest.fixture(scope="module")
def phantom():
    phantom = generate_phantom(CONFIG, seed=0)
    assert len(phantom.nodules) == 1
    return phantom


@pytest.fixture(scope="module")
def study(tmp_path_factory, phantom):
    """The phantom as written: IM0001 / instance 1 is the most superior slice."""
    return write_phantom_dicom(phantom, tmp_path_factory.mktemp("dicom-objects"), study_name="seg-sr",
                               patient_id="SEG0001") / "CT"


def renumbered(folder, out):
    """A copy whose instance numbers and file names count up with z instead of down."""
    out.mkdir()
    files = sorted(folder.glob("*.dcm"))
    for path in files:
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = len(files) + 1 - int(ds.InstanceNumber)
        ds.save_as(out / f"IM{int(ds.InstanceNumber):04d}.dcm")
    return out


def reversed_volume(volume: Volume) -> Volume:
    """The same slices in descending z: slice order opposite to the geometric sort."""
    direction = volume.direction.copy()
    direction[0] = -direction[0]
    return dataclasses.replace(volume, voxels=np.ascontiguousarray(volume.voxels[::-1]), slices=volume.slices[::-1],
                               sources=volume.sources[::-1], origin_lps_mm=volume.positions_lps_mm[-1],
                               direction=direction)


@pytest.fixture(scope="module", params=["scanner", "renumbered", "reversed"])
def case(request, study, phantom, tmp_path_factory):
    """(volume, prediction) for three slice orders; the volume's order differs from the instance order
    ('scanner', 'reversed') or from the geometric order ('reversed')."""
    folder = study
    if request.param == "renumbered":
        folder = renumbered(study, tmp_path_factory.mktemp("renumbered") / "CT")
    volume = load(scan([folder]).series[0])
    if request.param == "reversed":
        volume = reversed_volume(volume)
    numbers = [s.instance_number for s in volume.slices]
    z = [s.position_lps_mm[2] for s in volume.slices]
    expected = {"scanner": (numbers == sorted(numbers, reverse=True), z == sorted(z)),
                "renumbered": (numbers == sorted(numbers), z == sorted(z)),
                "reversed": (numbers == sorted(numbers), z == sorted(z, reverse=True))}[request.param]
    assert expected == (True, True)
    return volume, make_prediction(volume, phantom)


@pytest.fixture(scope="module")
def exported(case, tmp_path_factory):
    """(volume, prediction, seg path, sr path) written once per slice order by :func:`write_dicom_objects`."""
    volume, prediction = case
    seg_path, sr_path = write_dicom_objects(volume, prediction, tmp_path_factory.mktemp("exported"))
    assert (seg_path.name, sr_path.name) == ("seg.dcm", "sr.dcm")
    return volume, prediction, seg_path, sr_path


@pytest.fixture(scope="module")
def loaded(study, phantom):
    volume = load(scan([study]).series[0])
    return volume, make_prediction(volume, phantom)


def make_prediction(volume: Volume, phantom) -> Prediction:
    """Ground-truth labels as a prediction, slice k taken from the phantom slice at slice k's position."""
    dz = phantom.spacing_mm[0]
    ks = [round((s.position_lps_mm[2] - phantom.origin_lps_mm[2]) / dz) for s in volume.slices]
    assert sorted(ks) == list(range(phantom.labels.shape[0]))
    mask = np.ascontiguousarray(phantom.labels[ks])
    findings = find_findings(mask, volume, label_value=2, label_name="nodule")
    assert len(findings) == 1
    per_slice = (mask == 2).any(axis=(1, 2)).astype(np.float32)[:, None] * 0.9 + 0.05
    return Prediction(series_uid=volume.series_uid, sop_instance_uids=volume.sop_instance_uids,
                      positions_lps_mm=[tuple(p) for p in volume.positions_lps_mm], classes=["nodule"],
                      slice_probabilities=per_slice, study_probability=0.8, mask=mask, labels=dict(LABELS),
                      findings=findings, models=[dict(m) for m in MODELS], device="cpu", complete=True)


def dciodvfy(path) -> tuple[list[str], list[str]]:
    """(errors, warnings) lines of dciodvfy's report on ``path``."""
    done = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    lines = (done.stdout + done.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")], [line for line in lines if line.startswith("Warning")]


def code_of(item) -> tuple[str, str]:
    return (item.CodeValue, item.CodingSchemeDesignator)


# ---------------------------------------------------------------------------------------------- SEG


def test_segmentation_is_a_new_series_of_the_source_study(exported):
    volume, prediction, path, _ = exported
    seg = hd.seg.segread(path)
    source = volume.header(0)
    assert seg.StudyInstanceUID == volume.study_uid == source.StudyInstanceUID
    assert seg.SeriesInstanceUID != volume.series_uid and seg.PatientID == source.PatientID
    assert seg.FrameOfReferenceUID == volume.frame_of_reference_uid
    assert (seg.Modality, seg.SeriesNumber, seg.SeriesDescription) == ("SEG", SEG_SERIES_NUMBER,
                                                                      "MedViewer AI segmentation")
    assert seg.Manufacturer == "MedViewer" and __version__ in list(np.atleast_1d(seg.SoftwareVersions))
    assert seg.SegmentationType == "BINARY"
    segments = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert [segments[n].SegmentLabel for n in sorted(segments)] == ["lung", "nodule"]
    lung, nodule = segments[1], segments[2]
    assert code_of(lung.SegmentedPropertyCategoryCodeSequence[0]) == ("91723000", "SCT")
    assert code_of(lung.SegmentedPropertyTypeCodeSequence[0]) == ("39607008", "SCT")
    assert code_of(nodule.SegmentedPropertyCategoryCodeSequence[0]) == ("49755003", "SCT")
    assert code_of(nodule.SegmentedPropertyTypeCodeSequence[0]) == ("27925004", "SCT")
    for segment in (lung, nodule):
        assert segment.SegmentAlgorithmType == "AUTOMATIC"
        algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("chest-ct-lung-nodule-seg", "1.0.0")
        assert code_of(algorithm.AlgorithmFamilyCodeSequence[0]) == ("123110", "DCM")
        assert "ab" * 32 in algorithm.AlgorithmParameters
        assert len(segment.RecommendedDisplayCIELabValue) == 3


def test_segmentation_frames_match_the_source_slices_by_position(exported):
    volume, prediction, path, _ = exported
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array.reshape(-1, *volume.shape[1:])
    k_of = {uid: k for k, uid in enumerate(volume.sop_instance_uids)}
    seen = set()
    for frame, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        segment = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        k = k_of[source.ReferencedSOPInstanceUID]
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        assert position == pytest.approx(volume.slices[k].position_lps_mm, abs=1e-3)
        assert position == pytest.approx([float(v) for v in volume.header(k).ImagePositionPatient], abs=1e-3)
        np.testing.assert_array_equal(pixels[frame], prediction.mask[k] == segment)
        seen.add((k, segment))
    # Every non-empty (slice, label) pair is a frame; empty ones are left out.
    expected = {(k, v) for k in range(volume.shape[0]) for v in (1, 2) if (prediction.mask[k] == v).any()}
    assert seen == expected
    # highdicom's own reading of the frames by source instance gives the mask back.
    seg = hd.seg.segread(path)
    labelmap = seg.get_pixels_by_source_instance(volume.sop_instance_uids, combine_segments=True)
    np.testing.assert_array_equal(labelmap, prediction.mask)


def test_empty_label_keeps_its_segment_and_unknown_values_are_refused(loaded):
    volume, prediction = loaded
    without_nodule = dataclasses.replace(prediction, mask=np.where(prediction.mask == 2, 0, prediction.mask)
                                         .astype(np.uint8), findings=[])
    seg = build_segmentation(volume, without_nodule)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["lung", "nodule"]
    assert {int(i.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            for i in seg.PerFrameFunctionalGroupsSequence} == {1}
    stray = prediction.mask.copy()
    stray[0, 0, 0] = 7
    with pytest.raises(ExportError, match=r"label values \[7\]"):
        build_segmentation(volume, dataclasses.replace(prediction, mask=stray))


# ---------------------------------------------------------------------------------------------- SR


def report_parts(sr_path):
    sr = hd.sr.srread(sr_path)
    return sr, sr.content.get_volumetric_roi_measurement_groups()


def test_measurement_report_tid1500(exported):
    volume, prediction, seg_path, sr_path = exported
    seg = pydicom.dcmread(seg_path)
    sr, groups = report_parts(sr_path)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert sr.StudyInstanceUID == volume.study_uid and sr.SeriesInstanceUID not in (volume.series_uid,
                                                                                  seg.SeriesInstanceUID)
    assert (sr.SeriesNumber, sr.Manufacturer) == (SR_SERIES_NUMBER, "MedViewer")
    assert (sr.VerificationFlag, sr.CompletionFlag) == ("UNVERIFIED", "COMPLETE")
    assert "VerifyingObserverSequence" not in sr

    (finding,) = prediction.findings
    (group,) = groups
    assert group.tracking_uid and group.finding_type == codes.SCT.Nodule
    assert [site.value for site in group.finding_sites] == [codes.SCT.Lung]
    (volume_ml,) = group.get_measurements(name=codes.SCT.Volume)
    (diameter,) = group.get_measurements(name=codes.SCT.LongAxis)
    assert volume_ml.value == pytest.approx(finding.volume_ml, rel=1e-6) and volume_ml.unit.value == "ml"
    assert diameter.value == pytest.approx(finding.diameter_mm, rel=1e-6) and diameter.unit.value == "mm"
    probabilities = {m.derivation.meaning: m.value for m in group.get_measurements(name=codes.DCM.Probability)}
    assert probabilities == pytest.approx({"Maximum": finding.max_probability, "Mean": finding.mean_probability})
    # The ROI is the SEG's nodule segment, with the slices the finding spans as its source images.
    reference = group.referenced_segment
    (segment_item,) = [i for i in reference if i.name == codes.DCM.ReferencedSegment]
    referenced = segment_item.ReferencedSOPSequence[0]
    assert referenced.ReferencedSOPInstanceUID == seg.SOPInstanceUID
    assert int(referenced.ReferencedSegmentNumber) == 2 and "ReferencedFrameNumber" not in referenced
    sources = [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in reference
               if i.name == codes.DCM.SourceImageForSegmentation]
    first, last = finding.slices
    assert sources == volume.sop_instance_uids[first:last + 1]

    # The classifier's verdict: a TID 1501 group with the study probability and Nodule = Present.
    (study_group,) = sr.content.get_image_measurement_groups()
    (probability,) = study_group.get_measurements(name=codes.DCM.Probability)
    assert probability.value == pytest.approx(0.8) and probability.unit.value == "1"
    (verdict,) = study_group.get_qualitative_evaluations(name=codes.SCT.Nodule)
    assert verdict.value == codes.SCT.Present

    # Observer: the segmentation model as the device.
    (device,) = sr.content.get_observer_contexts(observer_type=codes.DCM.Device)
    attributes = device.observer_identifying_attributes
    assert attributes.name == "chest-ct-lung-nodule-seg"
    assert attributes.model_name == "Chest CT lung and nodule segmentation 1.0.0"
    # Evidence: every source image and the SEG.
    evidence = {i.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
                for r in s.ReferencedSeriesSequence for i in r.ReferencedSOPSequence}
    assert evidence == set(volume.sop_instance_uids) | {seg.SOPInstanceUID}


def test_verification_follows_the_review(loaded, tmp_path):
    volume, prediction = loaded
    (finding,) = prediction.findings
    accepted = dataclasses.replace(prediction, findings=[dataclasses.replace(finding, review="accepted")])
    sr, groups = report_parts(write_dicom_objects(volume, accepted, tmp_path / "accepted")[1])
    assert (sr.VerificationFlag, sr.PreliminaryFlag) == ("VERIFIED", "FINAL") and len(groups) == 1
    observer = sr.VerifyingObserverSequence[0]
    assert (observer.VerifyingObserverName.family_name, observer.VerifyingOrganization) == (VERIFYING_OBSERVER,
                                                                                           "MedViewer")
    assert sr.content.get_observer_contexts(observer_type=codes.DCM.Person)
    # A rejected finding is left out of the report; the review is complete, so the report is verified.
    rejected = dataclasses.replace(prediction, findings=[dataclasses.replace(finding, review="rejected")])
    sr, groups = report_parts(write_dicom_objects(volume, rejected, tmp_path / "rejected")[1])
    assert sr.VerificationFlag == "VERIFIED" and groups == []


def test_verification_rule():
    def finding(review):
        return Finding(1, "nodule", 2, (0, 1), (0.0, 0.0, 0.0), None, 5, 0.1, 5.0, 0.9, 0.8, review=review)

    assert not is_verified(Prediction("1.2", [], None))
    assert not is_verified(Prediction("1.2", [], None, findings=[finding("accepted"), finding("pending")]))
    assert is_verified(Prediction("1.2", [], None, findings=[finding("accepted"), finding("accepted")]))
    assert is_verified(Prediction("1.2", [], None, findings=[finding("accepted"), finding("rejected")]))


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (dicom3tools) is not installed")
def test_dciodvfy_finds_no_errors(exported):
    for path in exported[2:]:
        errors, _warnings = dciodvfy(path)
        assert errors == [], f"{path.name}: " + "\n".join(errors)


# ---------------------------------------------------------------------------------------------- refusals and safety


def test_single_writers_reference_each_other(loaded, tmp_path):
    volume, prediction = loaded
    seg_path = write_segmentation(volume, prediction, tmp_path / "seg.dcm")
    sr_path = write_measurement_report(volume, prediction, tmp_path / "sr.dcm", segmentation=seg_path)
    (group,) = report_parts(sr_path)[1]
    (item,) = [i for i in group.referenced_segment if i.name == codes.DCM.ReferencedSegment]
    assert item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == pydicom.dcmread(seg_path).SOPInstanceUID
    # Without a SEG the finding is still reported, as a group without a region.
    alone = write_measurement_report(volume, prediction, tmp_path / "alone.dcm")
    sr, groups = report_parts(alone)
    assert groups == [] and len(sr.content.get_image_measurement_groups()) == 2
    with pytest.raises(ExportError, match="cannot read the segmentation"):
        write_measurement_report(volume, prediction, tmp_path / "x.dcm", segmentation=tmp_path / "missing.dcm")
    with pytest.raises(ExportError, match="not a DICOM SEG of this study"):
        write_measurement_report(volume, prediction, tmp_path / "x.dcm", segmentation=volume.header(0))


def test_non_dicom_volume_is_refused(tmp_path):
    slices = [SliceInfo(f"1.2.3.{k}", f"IM{k}.png", 0, (0.0, 0.0, float(k)), k + 1, 1.0, 0.0) for k in range(3)]
    volume = Volume(voxels=np.zeros((3, 8, 8), np.int16), spacing_mm=(1.0, 1.0, 1.0), origin_lps_mm=np.zeros(3),
                    direction=np.eye(3)[[2, 1, 0]], slices=slices)
    prediction = Prediction("", volume.sop_instance_uids, None, mask=np.ones((3, 8, 8), np.uint8),
                            labels={1: {"name": "lung"}})
    with pytest.raises(ExportError, match="no DICOM headers"):
        write_dicom_objects(volume, prediction, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_mismatched_prediction_is_refused(loaded, tmp_path):
    volume, prediction = loaded
    other_order = dataclasses.replace(prediction, sop_instance_uids=prediction.sop_instance_uids[::-1])
    with pytest.raises(ExportError, match="SOP Instance UIDs differ"):
        write_dicom_objects(volume, other_order, tmp_path)
    n = len(prediction.sop_instance_uids)
    shorter = dataclasses.replace(prediction, sop_instance_uids=prediction.sop_instance_uids[:-1],
                                  positions_lps_mm=None, mask=prediction.mask[:-1],
                                  slice_probabilities=prediction.slice_probabilities[:-1])
    with pytest.raises(ExportError, match=f"covers {n - 1} slices, the series {n}"):
        write_segmentation(volume, shorter, tmp_path / "seg.dcm")
    other_series = dataclasses.replace(prediction, series_uid="1.2.3.4")
    with pytest.raises(ExportError, match="another series"):
        write_measurement_report(volume, other_series, tmp_path / "sr.dcm")
    assert list(tmp_path.iterdir()) == []


def test_classifier_only_prediction_gives_the_report_alone(loaded, tmp_path):
    volume, prediction = loaded
    classified = dataclasses.replace(prediction, mask=None, labels={}, findings=[],
                                     models=[dict(MODELS[1])])
    with pytest.raises(ExportError, match="no segmentation mask"):
        write_segmentation(volume, classified, tmp_path / "seg.dcm")
    (path,) = write_dicom_objects(volume, classified, tmp_path / "out")
    sr, groups = report_parts(path)
    assert path.name == "sr.dcm" and groups == [] and sr.VerificationFlag == "UNVERIFIED"
    (device,) = sr.content.get_observer_contexts(observer_type=codes.DCM.Device)
    assert device.observer_identifying_attributes.name == "chest-ct-nodule"
    if DCIODVFY:
        assert dciodvfy(path)[0] == []


def test_read_only_folder_fails_cleanly(loaded, readonly_dir):
    volume, prediction = loaded
    with pytest.raises(ExportError) as caught:
        write_dicom_objects(volume, prediction, readonly_dir)
    assert str(readonly_dir) in str(caught.value) and "\n" not in str(caught.value)
    assert os.listdir(readonly_dir) == []


def test_existing_files_are_kept_unless_forced(loaded, tmp_path):
    volume, prediction = loaded
    seg_path, sr_path = write_dicom_objects(volume, prediction, tmp_path)
    before = {p: p.read_bytes() for p in (seg_path, sr_path)}
    with pytest.raises(ExistsError):
        write_dicom_objects(volume, prediction, tmp_path)
    with pytest.raises(ExistsError):
        write_segmentation(volume, prediction, seg_path)
    assert {p: p.read_bytes() for p in before} == before
    # All or nothing: with only the report in the way, the SEG is not written either.
    seg_path.unlink()
    with pytest.raises(ExistsError):
        write_dicom_objects(volume, prediction, tmp_path)
    assert not seg_path.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["sr.dcm"]
    write_dicom_objects(volume, prediction, tmp_path, force=True)
    assert seg_path.exists() and sr_path.read_bytes() != before[sr_path]
