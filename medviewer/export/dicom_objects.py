"""The assistant's results as DICOM objects in the source study: a Segmentation and a TID 1500 report.

* :func:`write_segmentation` — a BINARY DICOM Segmentation (SEG) of the prediction's label mask, one
  segment per non-background label of ``prediction.labels`` (segment numbers 1, 2, ... in increasing label
  value; a label without voxels keeps its segment, with no frames). Frames are paired with the source
  slices by position: mask slice ``k`` goes with the source header whose Image Position (Patient) is slice
  ``k``'s position (checked), whatever the file or instance order; frames are stored in increasing
  position along the slice normal and empty frames are left out. A volume the loader resampled
  (gantry tilt, gaps: ``Volume.resampled``) is not made of the source images: its mask is mapped
  back onto each acquired slice's own pixel grid (the label of the voxel nearest each pixel's
  patient position) and the frames reference the acquired images.
* :func:`write_measurement_report` — a Comprehensive 3D SR holding a TID 1500 Measurement Report. Per
  finding a TID 1411 volumetric ROI group: tracking identifier and UID, the finding's label segment in the
  SEG (the whole segment: TID 1411 allows no frame list) with the slices the finding spans as its source
  images, Volume (SCT 118565006) in ``ml``, Long axis (SCT 103339001) = the longest axial diameter in
  ``mm``, Probability (DCM 122157) maximum and mean, unit ``1``, and, where measured, the test-time
  agreement as Certainty of Finding (DCM 111012) in ``%``. Without a SEG the findings are TID 1501 groups
  with the same content and no region. One TID 1501 group holds the study classification: Probability,
  unit ``1``, and the verdict as ``<class code> = Present / Absent`` (e.g. Nodule = Present).
* :func:`write_dicom_objects` — both (``seg.dcm``, ``sr.dcm``), serialized first, then written
  all-or-nothing.

Review rule: findings the clinician rejected are left out of the report (the SEG stays the model's raw
output). The report is VERIFIED (verifying observer ``MedViewer user``, organisation ``MedViewer``) only
when there is at least one finding and none is still pending, i.e. every finding the report holds was
accepted; otherwise, and always when nothing was found, it is UNVERIFIED. The device observer is the
segmentation model (else the first model): name = model id, model name = ``"<name> <version>"``, UID
derived from id, version and weights sha256, so one model always has the same device UID.

New objects get new series (SEG 9901, SR 9902) in the source study, new random UIDs, Manufacturer
``MedViewer`` and the software version. All files go through :func:`medviewer.core.safe.write_files`;
every refusal is an :class:`~medviewer.core.safe.ExportError` naming the target file.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes
from pydicom.uid import SegmentationStorage, generate_uid

from medviewer.ai.prediction import Finding, Prediction, label_rgb
from medviewer.core.safe import ExportError, check_targets, write_files
from medviewer.core.volume import Volume
from medviewer.version import __version__

__all__ = [
    "SEG_SERIES_NUMBER", "SR_SERIES_NUMBER", "VERIFYING_OBSERVER", "VERIFYING_ORGANIZATION",
    "build_measurement_report", "build_segmentation", "is_verified", "label_codes",
    "write_dicom_objects", "write_measurement_report", "write_segmentation",
]

MANUFACTURER = "MedViewer"
SEG_SERIES_NUMBER = 9901
SR_SERIES_NUMBER = 9902
SEG_DESCRIPTION = "MedViewer AI segmentation"
SR_DESCRIPTION = "MedViewer AI measurements"
VERIFYING_OBSERVER = "MedViewer user"
VERIFYING_ORGANIZATION = "MedViewer"
POSITION_TOLERANCE_MM = 0.01

_ML = hd.sr.CodedConcept("ml", "UCUM", "milliliter")
_NO_UNITS = codes.UCUM.NoUnits  # '1'
# label name -> (segmented property category, segmented property type, finding site or None)
_LABEL_CODES = {
    "lung": (codes.SCT.AnatomicalStructure, codes.SCT.Lung, None),
    "nodule": (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Nodule, codes.SCT.Lung),
}
_UNKNOWN_LABEL = (codes.SCT.Tissue, codes.SCT.Tissue, None)


def label_codes(name: str) -> tuple:
    """(category, type, finding site or None) for a label name; unknown names are coded as Tissue."""
    return _LABEL_CODES.get(name.strip().lower(), _UNKNOWN_LABEL)


def is_verified(prediction: Prediction) -> bool:
    """The report's verification rule: there are findings and none is still pending, so every finding the
    report holds was accepted (rejected ones are left out)."""
    return bool(prediction.findings) and all(f.review in ("accepted", "rejected") for f in prediction.findings)


# ---------------------------------------------------------------------------------------------- checks


# Type 2 attributes of the patient and study modules that the new objects copy from their source: a source
# that left one out (as many do) gets it empty, which is what Type 2 allows.
_COPIED_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                 "ReferringPhysicianName", "StudyID", "AccessionNumber")


def source_for_export(header: Dataset) -> Dataset:
    """A copy of ``header`` (sharing its element values) that highdicom accepts as the source of a new object in
    its study: missing Type 2 patient and study attributes added empty, a Patient's Sex other than M, F or O
    emptied. The header itself is not changed."""
    source = Dataset()  # a new dataset: Dataset(header) and copy.copy would share the header's elements dict
    for element in header:
        source.add(element)
    if hasattr(header, "file_meta"):
        source.file_meta = header.file_meta
    for keyword in _COPIED_TYPE2:
        if keyword not in source:
            setattr(source, keyword, None)
    if str(source.get("PatientSex", "") or "").upper() not in ("", "M", "F", "O"):
        del source.PatientSex  # a new element: the shared one belongs to the header
        source.PatientSex = None
    return source


def _check(volume: Volume, prediction: Prediction, where: str) -> list[Dataset]:
    """The source headers in volume order, after checking that volume and prediction belong together."""
    if not volume.sources or volume.header(0) is None:
        raise ExportError(where, "DICOM objects need a DICOM series (this volume has no DICOM headers)")
    n = volume.voxels.shape[0]
    if len(prediction.sop_instance_uids) != n:
        raise ExportError(where, f"the prediction covers {len(prediction.sop_instance_uids)} slices, the series {n}")
    if list(prediction.sop_instance_uids) != volume.sop_instance_uids:
        raise ExportError(where, "the prediction's SOP Instance UIDs differ from the series' (another series or order)")
    if prediction.series_uid and volume.series_uid and prediction.series_uid != volume.series_uid:
        raise ExportError(where, "the prediction belongs to another series")
    if prediction.mask is not None and prediction.mask.shape != volume.voxels.shape[:3]:
        raise ExportError(where, f"mask shape {prediction.mask.shape} differs from the series {volume.voxels.shape[:3]}")
    if volume.resampled:
        return _check_resampled(volume, prediction, where)
    if len(set(volume.sop_instance_uids)) != n:
        raise ExportError(where, "multi-frame source images are not supported for DICOM export")
    headers = [volume.header(k) for k in range(n)]
    if any(h is None for h in headers):
        raise ExportError(where, "some slices have no DICOM header")
    if volume.geometry_known:
        if prediction.positions_lps_mm is not None and not np.allclose(
                np.asarray(prediction.positions_lps_mm, dtype=float), volume.positions_lps_mm,
                atol=POSITION_TOLERANCE_MM):
            raise ExportError(where, "the prediction's slice positions differ from the series'")
        stated = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
        expected = np.array([s.position_lps_mm for s in volume.slices], dtype=float)
        if not np.allclose(stated, expected, atol=POSITION_TOLERANCE_MM):
            raise ExportError(where, "a source header's Image Position (Patient) differs from its slice's")
    return [source_for_export(h) for h in headers]


def _acquired_headers(volume: Volume, where: str) -> list[Dataset]:
    """The headers of a resampled volume's acquired slices, in acquired order, checked against
    their recorded positions."""
    sources = volume.acquired_sources
    if not sources or len({getattr(s, "sop_instance_uid", None) for s in sources}) != len(sources):
        raise ExportError(where, "multi-frame source images are not supported for DICOM export")
    headers = [getattr(s, "header", None) for s in sources]
    if any(h is None for h in headers):
        raise ExportError(where, "some slices have no DICOM header")
    stated = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
    expected = np.array([s.position_lps_mm for s in volume.acquired], dtype=float)
    if not np.allclose(stated, expected, atol=POSITION_TOLERANCE_MM):
        raise ExportError(where, "a source header's Image Position (Patient) differs from its slice's")
    return headers


def _check_resampled(volume: Volume, prediction: Prediction, where: str) -> list[Dataset]:
    """Per volume slice, the header of the nearest acquired slice (a resampled volume's slices
    are not the source images; :func:`_mask_on_acquired` maps masks back onto them)."""
    if prediction.positions_lps_mm is not None and not np.allclose(
            np.asarray(prediction.positions_lps_mm, dtype=float), volume.positions_lps_mm, atol=POSITION_TOLERANCE_MM):
        raise ExportError(where, "the prediction's slice positions differ from the series'")
    _acquired_headers(volume, where)
    headers = [volume.header(k) for k in range(volume.voxels.shape[0])]
    if any(h is None for h in headers):
        raise ExportError(where, "some slices have no DICOM header")
    return [source_for_export(h) for h in headers]


def _unique(headers: Sequence[Dataset]) -> list[Dataset]:
    seen: dict[str, Dataset] = {}
    for h in headers:
        seen.setdefault(str(h.SOPInstanceUID), h)
    return list(seen.values())


def _mask_on_acquired(volume: Volume, mask: np.ndarray) -> np.ndarray:
    """A resampled volume's label mask on each acquired slice's own pixel grid (nearest voxel):
    acquired pixel (j, i) takes the label of the volume voxel nearest its patient position."""
    rows, cols = volume.acquired_sources[0].rows, volume.acquired_sources[0].columns
    out = np.zeros((len(volume.acquired), rows, cols), dtype=mask.dtype)
    count, vrows, vcols = mask.shape
    for a, info in enumerate(volume.acquired):
        k, j, i = volume.lps_to_index(np.asarray(info.position_lps_mm, dtype=float))
        kk = int(np.floor(k + 0.5))
        if not 0 <= kk < count:
            continue
        jj = np.floor(np.arange(rows) + j + 0.5).astype(int)
        ii = np.floor(np.arange(cols) + i + 0.5).astype(int)
        rj, ri = (jj >= 0) & (jj < vrows), (ii >= 0) & (ii < vcols)
        out[a][np.ix_(rj, ri)] = mask[kk][np.ix_(jj[rj], ii[ri])]
    return out


def _segment_labels(prediction: Prediction) -> list[int]:
    """Label values that become segments, in segment-number order (background 0 excluded)."""
    return sorted(v for v in prediction.labels if int(v) != 0)


def _model(prediction: Prediction, task: str) -> dict[str, Any] | None:
    return next((m for m in prediction.models if m.get("task") == task), None)


def _algorithm(model: dict[str, Any] | None) -> tuple[str, str]:
    if model is None:
        return "medviewer", __version__
    return str(model.get("id") or model.get("name") or "model"), str(model.get("version") or "unknown")


# ---------------------------------------------------------------------------------------------- SEG


def build_segmentation(volume: Volume, prediction: Prediction, *, where: str = "segmentation") -> hd.seg.Segmentation:
    """The SEG dataset (not written). ``where`` names the target in error messages."""
    headers = _check(volume, prediction, where)
    if prediction.mask is None:
        raise ExportError(where, "the prediction has no segmentation mask")
    values = _segment_labels(prediction)
    if not values:
        raise ExportError(where, "the prediction names no labels to segment")
    mask = np.asarray(prediction.mask)
    unknown = sorted(set(np.unique(mask).tolist()) - {0, *values})
    if unknown:
        raise ExportError(where, f"the mask holds label values {unknown} that the prediction does not name")
    if not mask.any():
        raise ExportError(where, "the mask is empty: nothing to segment")

    if volume.resampled:
        # The volume was resampled (tilt, gaps): the mask goes back onto the acquired slices.
        headers = [source_for_export(h) for h in _acquired_headers(volume, where)]
        mask = _mask_on_acquired(volume, mask)
        if not mask.any():
            raise ExportError(where, "the mask falls outside the acquired slices: nothing to segment")
    # Pair mask slices with source headers by position, sorted along the slice normal.
    order = list(range(len(headers)))
    if volume.geometry_known:
        iop = np.array([float(v) for v in headers[0].ImageOrientationPatient])
        normal = np.cross(iop[:3], iop[3:])
        order.sort(key=lambda k: float(np.dot([float(v) for v in headers[k].ImagePositionPatient], normal)))
    stacked = np.stack([mask[order] == value for value in values], axis=-1).astype(np.uint8)

    model = _model(prediction, "segmentation") or (prediction.models[0] if prediction.models else None)
    name, version = _algorithm(model)
    parameters = {"weights_sha256": str(model["sha256"])} if model and model.get("sha256") else None
    algorithm = hd.AlgorithmIdentificationSequence(name=name, family=codes.DCM.ArtificialIntelligence,
                                                   version=version, parameters=parameters)
    descriptions = []
    for number, value in enumerate(values, start=1):
        spec = prediction.labels[value]
        category, kind, _ = label_codes(str(spec.get("name", "")))
        color = _cielab(spec.get("color"))
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=str(spec.get("name") or f"label {value}")[:64],
            segmented_property_category=category, segmented_property_type=kind,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
            display_color=color))
    try:
        return hd.seg.Segmentation(
            source_images=[headers[k] for k in order], pixel_array=stacked,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
            series_instance_uid=hd.UID(), series_number=SEG_SERIES_NUMBER, sop_instance_uid=hd.UID(),
            instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name="MedViewer",
            software_versions=__version__, device_serial_number="0", series_description=SEG_DESCRIPTION,
            content_label="AI_SEG", content_description=f"{name} {version}"[:64],
        )
    except (ValueError, AttributeError) as exc:  # a source header highdicom cannot use
        raise ExportError(where, f"cannot build the segmentation ({exc})") from None


def _cielab(color: Any) -> hd.color.CIELabColor | None:
    """A label colour ('#rrggbb' or [r, g, b] 0-255) as the segment's display colour."""
    rgb = label_rgb(color)
    return hd.color.CIELabColor.from_rgb(*rgb) if rgb is not None else None


# ---------------------------------------------------------------------------------------------- SR


def _person_name(name: str) -> str:
    """A one-component person name (the family name component), written with its caret."""
    return name if "^" in name else f"{name}^"


def _finding_content(finding: Finding, algorithm: hd.sr.AlgorithmIdentification) -> dict[str, Any]:
    """The measurements and codes shared by both kinds of finding group."""
    category, kind, site = label_codes(finding.label)
    measurements = [
        hd.sr.Measurement(name=codes.SCT.Volume, value=float(finding.volume_ml), unit=_ML, algorithm_id=algorithm),
        hd.sr.Measurement(name=codes.SCT.LongAxis, value=float(finding.diameter_mm), unit=codes.UCUM.Millimeter,
                          algorithm_id=algorithm),
        hd.sr.Measurement(name=codes.DCM.Probability, value=float(finding.max_probability), unit=_NO_UNITS,
                          derivation=codes.SCT.Maximum, algorithm_id=algorithm),
        hd.sr.Measurement(name=codes.DCM.Probability, value=float(finding.mean_probability), unit=_NO_UNITS,
                          derivation=codes.SCT.Mean, algorithm_id=algorithm),
    ]
    if finding.confidence is not None:
        measurements.append(hd.sr.Measurement(name=codes.DCM.CertaintyOfFinding, value=100.0 * finding.confidence,
                                              unit=codes.UCUM.Percent, algorithm_id=algorithm))
    return {
        "tracking_identifier": hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{finding.label} {finding.id}"),
        "finding_type": kind, "finding_category": category, "algorithm_id": algorithm,
        "finding_sites": [hd.sr.FindingSite(site)] if site is not None else None,
        "measurements": measurements,
    }


def build_measurement_report(volume: Volume, prediction: Prediction, *, segmentation: Dataset | None = None,
                             where: str = "measurement report") -> hd.sr.Comprehensive3DSR:
    """The SR dataset (not written); ``segmentation`` is the SEG its findings point into (or None)."""
    headers = _check(volume, prediction, where)
    if segmentation is not None and (segmentation.get("SOPClassUID") != SegmentationStorage
                                     or segmentation.get("StudyInstanceUID") != headers[0].StudyInstanceUID):
        raise ExportError(where, "the segmentation given is not a DICOM SEG of this study")
    segmenter = _model(prediction, "segmentation")
    classifier = _model(prediction, "classification")
    observer = segmenter or classifier or (prediction.models[0] if prediction.models else None)
    name, version = _algorithm(observer)
    device_uid = generate_uid(entropy_srcs=["medviewer-model", name, version, str((observer or {}).get("sha256", ""))])
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid, name=name[:64], manufacturer_name=MANUFACTURER,
            model_name=f"{(observer or {}).get('name') or name} {version}"[:64]))
    verified = is_verified(prediction)
    person = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
            name=_person_name(VERIFYING_OBSERVER), organization_name=VERIFYING_ORGANIZATION)) if verified else None
    context = hd.sr.ObservationContext(observer_person_context=person, observer_device_context=device)

    seg_algorithm = hd.sr.AlgorithmIdentification(*_algorithm(segmenter or observer),
                                                  family=codes.DCM.ArtificialIntelligence)
    segment_of = {str(item.SegmentLabel): int(item.SegmentNumber)
                  for item in (segmentation.SegmentSequence if segmentation is not None else [])}

    groups: list = []
    for finding in prediction.findings:
        if finding.review == "rejected":
            continue
        content = _finding_content(finding, seg_algorithm)
        number = segment_of.get(finding.label)
        if number is not None:
            # The whole segment (TID 1411 allows no frame list); the finding's slices as its source images.
            spanned = _unique([headers[k] for k in range(finding.slices[0], finding.slices[1] + 1)])
            reference = hd.sr.ReferencedSegment(
                sop_class_uid=segmentation.SOPClassUID, sop_instance_uid=segmentation.SOPInstanceUID,
                segment_number=number, source_images=[
                    hd.sr.SourceImageForSegmentation(h.SOPClassUID, h.SOPInstanceUID) for h in spanned])
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                referenced_segment=reference, **content))
        else:
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(**content))

    if prediction.study_probability is not None:
        cls_algorithm = hd.sr.AlgorithmIdentification(*_algorithm(classifier or observer),
                                                      family=codes.DCM.ArtificialIntelligence)
        class_name = prediction.classes[0] if prediction.classes else "finding"
        category, kind, site = label_codes(class_name)
        verdict = {"positive": codes.SCT.Present, "negative": codes.SCT.Absent}.get(prediction.verdict)
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"study classification: {class_name}"),
            finding_type=kind, finding_category=category, algorithm_id=cls_algorithm,
            measurements=[hd.sr.Measurement(name=codes.DCM.Probability, value=float(prediction.study_probability),
                                            unit=_NO_UNITS, algorithm_id=cls_algorithm)],
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(kind, verdict)] if verdict else None))

    if volume.resampled:
        headers = [source_for_export(h) for h in _acquired_headers(volume, where)]
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=codes.SCT.ImagingProcedure,
                                     imaging_measurements=groups or None, referenced_images=headers)
    evidence = [*headers, segmentation] if segmentation is not None else headers
    try:
        return hd.sr.Comprehensive3DSR(
            evidence=evidence, content=report[0], series_instance_uid=hd.UID(), series_number=SR_SERIES_NUMBER,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER, is_complete=True,
            is_final=verified, is_verified=verified,
            verifying_observer_name=_person_name(VERIFYING_OBSERVER) if verified else None,
            verifying_organization=VERIFYING_ORGANIZATION if verified else None,
            series_description=SR_DESCRIPTION, software_versions=__version__,
        )
    except (ValueError, AttributeError) as exc:
        raise ExportError(where, f"cannot build the report ({exc})") from None


# ---------------------------------------------------------------------------------------------- writing


def _encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _write(items: Sequence[tuple[Path, bytes]], force: bool) -> list[Path]:
    return write_files({path: (lambda fp, data=data: fp.write(data)) for path, data in items}, force=force)


def write_segmentation(volume: Volume, prediction: Prediction, path: str | os.PathLike, *,
                       force: bool = False) -> Path:
    """Write the prediction's mask as a DICOM SEG at ``path``; returns the path."""
    path = Path(path)
    check_targets([path], force)  # before the work; write_files checks again
    return _write([(path, _encode(build_segmentation(volume, prediction, where=str(path))))], force)[0]


def write_measurement_report(volume: Volume, prediction: Prediction, path: str | os.PathLike, *,
                             segmentation: Dataset | str | os.PathLike | None = None, force: bool = False) -> Path:
    """Write the TID 1500 report at ``path``; ``segmentation`` (a SEG dataset or file, as written by
    :func:`write_segmentation`) is what the findings' ROIs point into. Returns the path."""
    path = Path(path)
    check_targets([path], force)
    if segmentation is not None and not isinstance(segmentation, Dataset):
        try:
            segmentation = pydicom.dcmread(segmentation)
        except (OSError, InvalidDicomError) as exc:
            raise ExportError(str(segmentation), f"cannot read the segmentation ({exc})") from None
    report = build_measurement_report(volume, prediction, segmentation=segmentation, where=str(path))
    return _write([(path, _encode(report))], force)[0]


def write_dicom_objects(volume: Volume, prediction: Prediction, out_dir: str | os.PathLike, *,
                        force: bool = False) -> list[Path]:
    """Write ``seg.dcm`` and ``sr.dcm`` into ``out_dir``, both or neither; returns the written paths.

    A prediction without a mask (a classifier only), or whose mask is empty, gives the report alone.
    """
    out = Path(out_dir)
    check_targets(dicom_object_targets(prediction, out), force)
    return _write(build_dicom_objects(volume, prediction, out), force)


def dicom_object_targets(prediction: Prediction, out: Path) -> list[Path]:
    segmented = prediction.mask is not None and bool(np.asarray(prediction.mask).any())
    return [out / "seg.dcm", out / "sr.dcm"] if segmented else [out / "sr.dcm"]


def build_dicom_objects(volume: Volume, prediction: Prediction, out: Path) -> list[tuple[Path, bytes]]:
    """The encoded SEG (when the mask holds anything) and SR, with the paths they go to in ``out``."""
    seg = None
    items = []
    if len(dicom_object_targets(prediction, out)) == 2:
        seg = build_segmentation(volume, prediction, where=str(out / "seg.dcm"))
        items.append((out / "seg.dcm", _encode(seg)))
    report = build_measurement_report(volume, prediction, segmentation=seg, where=str(out / "sr.dcm"))
    items.append((out / "sr.dcm", _encode(report)))
    return items
