"""Key images, the PDF report and the DICOM secondary captures, on a tiny phantom study."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import warnings
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from medviewer.ai.demo_data import write_phantom_dicom
from medviewer.ai.findings import find_findings
from medviewer.ai.phantom import PhantomConfig, generate_phantom
from medviewer.ai.prediction import Prediction
from medviewer.core.annotations import Annotation
from medviewer.core.load import load
from medviewer.core.safe import ExistsError, ExportError
from medviewer.core.scan import scan
from medviewer.export.images import key_slices, render_slice
from medviewer.export.report import DISCLAIMER, build_report, write_report
from medviewer.export.secondary_capture import SERIES_DESCRIPTION, write_secondary_captures

PATIENT_NAME = "Müller^Zoë"
PATIENT_ID = "PID-REPORT-42"
NODULE_COLOR = (255, 60, 60)
LUNG_COLOR = (0, 160, 255)
SHA_CLASSIFIER = "0123456789abcdef" * 4
SHA_SEGMENTER = "fedcba9876543210" * 4


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A 12-slice 64x64 CT phantom with one 25 mm nodule, as DICOM, and its volume."""
    config = PhantomConfig(slices=12, size=64, slice_thickness_mm=5.0, nodule_count=(1, 1),
                           nodule_diameter_mm=(25, 25), vessel_generations=2)
    phantom = generate_phantom(config, 0)
    folder = write_phantom_dicom(phantom, tmp_path_factory.mktemp("report"), study_name="study",
                                 patient_id=PATIENT_ID, patient_name=PATIENT_NAME)
    volume = load(scan([folder]).series[0])
    assert volume.voxels.shape == phantom.labels.shape
    return volume, np.ascontiguousarray(phantom.labels)


def _prediction(volume, labels, heatmap=True):
    nodule = labels == 2
    heat = None
    if heatmap:
        heat = ndimage.gaussian_filter(nodule.astype(np.float32), 2.0)
        heat = (heat / heat.max()).astype(np.float16)
    findings = find_findings(labels, volume, label_value=2, label_name="nodule",
                             probability=None if heat is None else heat.astype(np.float32))
    return Prediction(
        series_uid=volume.series_uid,
        sop_instance_uids=volume.sop_instance_uids,
        positions_lps_mm=[tuple(p) for p in volume.positions_lps_mm],
        classes=["nodule"],
        slice_probabilities=nodule.any(axis=(1, 2)).astype(np.float32)[:, None] * 0.9,
        study_probability=0.87,
        mask=labels,
        labels={1: {"name": "lung", "color": list(LUNG_COLOR), "threshold": 0.5},
                2: {"name": "nodule", "color": list(NODULE_COLOR), "threshold": 0.5}},
        heatmap=heat,
        findings=findings,
        models=[
            {"id": "chest-ct-nodule", "name": "Nodule classifier", "version": "1.0.0", "sha256": SHA_CLASSIFIER,
             "task": "classification", "threshold": 0.5},
            {"id": "chest-ct-nodule-seg", "name": "Nodule segmenter", "version": "1.0.0", "sha256": SHA_SEGMENTER,
             "task": "segmentation", "threshold": 0.5},
        ],
        device="cpu",
        timings={"classify": 0.4, "segment": 0.6},
        warnings=["slice spacing 5.0 mm differs from the training data (2.5 mm)"],
        complete=True,
    )


@pytest.fixture(scope="module")
def prediction(study):
    return _prediction(*study)


def _nodule_slice(labels):
    return int(np.argmax((labels == 2).sum(axis=(1, 2))))


def _pdftotext(path):
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout


def _has_color(image, color):
    return bool(np.all(image == np.array(color, dtype=np.uint8), axis=-1).any())


# --- images ------------------------------------------------------------------------------------------------


def test_render_slice_draws_contours_in_label_colours(study, prediction):
    volume, labels = study
    k = _nodule_slice(labels)
    plain = render_slice(volume, k)
    assert plain.shape == (64, 64, 3) and plain.dtype == np.uint8
    assert np.array_equal(plain[..., 0], plain[..., 1]) and np.array_equal(plain[..., 0], plain[..., 2])

    image = render_slice(volume, k, prediction=prediction, heatmap=False)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert _has_color(image, NODULE_COLOR) and _has_color(image, LUNG_COLOR)
    # a contour, not a fill: the nodule's inside keeps the grey image
    inside = ndimage.binary_erosion(labels[k] == 2)
    assert inside.any() and np.array_equal(image[inside], plain[inside])

    only_nodule = render_slice(volume, k, prediction=prediction, heatmap=False, labels_to_show=["nodule"])
    assert _has_color(only_nodule, NODULE_COLOR) and not _has_color(only_nodule, LUNG_COLOR)
    filled = render_slice(volume, k, prediction=prediction, heatmap=False, mask_style="fill", labels_to_show=[2])
    assert not np.array_equal(filled[inside], plain[inside])

    with_heat = render_slice(volume, k, prediction=prediction, labels_to_show=[2])
    assert not np.array_equal(with_heat, only_nodule)  # the heatmap is blended in

    big = render_slice(volume, k, prediction=prediction, min_size=256)
    assert big.shape == (256, 256, 3) and _has_color(big, NODULE_COLOR)


def test_render_slice_windows_and_inverts(study):
    volume, labels = study
    k = _nodule_slice(labels)
    lung = render_slice(volume, k, window=(-600, 1500))
    narrow = render_slice(volume, k, window=(40, 400))
    assert not np.array_equal(lung, narrow)
    inverted = render_slice(dataclasses.replace(volume, photometric="MONOCHROME1"), k, window=(40, 400))
    assert np.array_equal(inverted.astype(int), 255 - narrow.astype(int))
    with pytest.raises(IndexError):
        render_slice(volume, 12)


def test_render_slice_draws_annotations(study):
    volume, labels = study
    k = _nodule_slice(labels)
    line = Annotation("distance", k, [(10, 10), (10, 50)])
    image = render_slice(volume, k, annotations=[line, Annotation("distance", k + 1, [(40, 5), (40, 60)])])
    yellow = (image[..., 0] > 200) & (image[..., 1] > 180) & (image[..., 2] < 80)
    assert yellow[10, 20:40].all()  # the line on this slice
    assert not yellow[40, 10:50].any()  # not the one on the next slice


def test_key_slices_picks_the_most_probable_slice_and_bookmarks(study, prediction):
    volume, labels = study
    finding = prediction.findings[0]
    first, last = finding.slices
    centre = int(round(finding.centroid_index[0]))
    assert key_slices(prediction) == [(centre, "finding 1 (nodule)")]  # symmetric heatmap: peak at the centroid

    heat = np.array(prediction.heatmap)
    heat[last][labels[last] == 2] = 1.0
    heat[centre] *= np.float16(0.5)
    skewed = dataclasses.replace(prediction, heatmap=heat)
    assert key_slices(skewed, bookmarks=[0, last, 0]) == [(0, "bookmark"), (last, "finding 1 (nodule); bookmark")]

    probabilities = np.zeros((12, 1), dtype=np.float32)
    probabilities[first] = 0.99
    by_probability = dataclasses.replace(prediction, heatmap=None, slice_probabilities=probabilities)
    assert key_slices(by_probability) == [(first, "finding 1 (nodule)")]

    nothing = dataclasses.replace(prediction, heatmap=None, slice_probabilities=None)
    assert key_slices(nothing) == [(centre, "finding 1 (nodule)")]
    assert key_slices(None, bookmarks=[5, 2]) == [(2, "bookmark"), (5, "bookmark")]


# --- the PDF report ----------------------------------------------------------------------------------------


def test_report_renders_with_patient_findings_provenance_and_disclaimer(study, prediction, tmp_path):
    volume, labels = study
    k = _nodule_slice(labels)
    note = dataclasses.replace(prediction.findings[0], note="Zoë: check growth", review="accepted")
    reviewed = dataclasses.replace(prediction, findings=[note])
    annotations = [Annotation("distance", k, [(20, 20), (20, 40)])]
    path = write_report(tmp_path / "report.pdf", volume, reviewed, bookmarks=[1], annotations=annotations)
    assert path.read_bytes().startswith(b"%PDF")

    rendered = subprocess.run(["pdftoppm", "-png", "-r", "30", str(path), str(tmp_path / "page")],
                              capture_output=True, text=True)
    assert rendered.returncode == 0, rendered.stderr
    pages = sorted(tmp_path.glob("page-*.png"))
    assert pages

    text = _pdftotext(path)
    assert PATIENT_ID in text
    assert "Müller, Zoë" in text
    header = volume.header(0)
    assert header.AccessionNumber in text
    assert "positive" in text and "87.0%" in text
    f = note
    row = [str(f.id), "nodule", f"{f.slices[0] + 1}\u2013{f.slices[1] + 1}", f"{f.diameter_mm:.1f}",
           f"{f.volume_ml:.2f}", f"{100 * f.max_probability:.1f}%", "accepted", "Zoë: check growth"]
    row_line = next(line for line in text.splitlines() if "accepted" in line)
    for cell in row:
        assert cell in row_line, (cell, row_line)
    assert SHA_CLASSIFIER in text and SHA_SEGMENTER in text
    assert "chest-ct-nodule-seg" in text
    assert f"Slice {k + 1} of 12" in text and "Slice 2 of 12" in text
    spacing = volume.spacing_mm[2]
    assert f"{20 * spacing:.1f} mm" in text  # the measurement
    assert "differs from the training data" in text  # the warning
    page_texts = [p for p in text.split("\f") if p.strip()]
    assert len(page_texts) == len(pages)
    for number, page in enumerate(page_texts, start=1):
        assert DISCLAIMER in page
        assert f"Page {number} of {len(page_texts)}" in page


def test_anonymised_report_has_no_identifying_values(study, prediction, tmp_path):
    volume, _ = study
    header = volume.header(0)
    path = tmp_path / "anon.pdf"
    path.write_bytes(build_report(volume, prediction, bookmarks=[2], anonymize=True))
    text = _pdftotext(path)
    assert "anonymised" in text
    for secret in (PATIENT_ID, "Müller", "Zoë", "Muller", header.AccessionNumber, header.PatientBirthDate,
                   f"{header.PatientBirthDate[:4]}-{header.PatientBirthDate[4:6]}"):
        assert secret not in text, secret
    assert SHA_CLASSIFIER in text and DISCLAIMER in text


def test_report_without_prediction(study, tmp_path):
    volume, _ = study
    annotations = [Annotation("text", 3, [(5, 5)], text="see here"),
                   Annotation("ellipse", 3, [(20, 20), (40, 40)])]
    path = write_report(tmp_path / "viewer.pdf", volume, bookmarks=[6], annotations=annotations)
    text = _pdftotext(path)
    assert PATIENT_ID in text and DISCLAIMER in text
    assert "not run" in text
    assert "Slice 4 of 12" in text and "Slice 7 of 12" in text
    assert "see here" in text and "HU" in text
    assert "Page 1 of" in text


def test_report_is_not_overwritten_without_force(study, tmp_path):
    volume, _ = study
    target = tmp_path / "report.pdf"
    target.write_bytes(b"old")
    with pytest.raises(ExistsError, match="already exists"):
        write_report(target, volume, bookmarks=[0])
    assert target.read_bytes() == b"old"
    write_report(target, volume, bookmarks=[0], force=True)
    assert target.read_bytes().startswith(b"%PDF")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.pdf"]


def test_report_in_readonly_folder_fails_cleanly(study, readonly_dir):
    volume, _ = study
    with pytest.raises(ExportError, match="readonly"):
        write_report(readonly_dir / "report.pdf", volume, bookmarks=[0])
    assert list(readonly_dir.iterdir()) == []


def test_report_refuses_a_bookmark_outside_the_series(study):
    volume, _ = study
    with pytest.raises(ValueError, match="outside"):
        build_report(volume, bookmarks=[12])


# --- secondary captures ------------------------------------------------------------------------------------


def test_secondary_captures_in_the_source_study(study, prediction, tmp_path):
    volume, labels = study
    k = _nodule_slice(labels)
    paths = write_secondary_captures(volume, prediction, tmp_path / "sc", bookmarks=[0])
    keys = key_slices(prediction, [0])
    assert [p.name for p in paths] == [f"SC{n:04d}.dcm" for n in range(1, len(keys) + 1)]
    series = set()
    for path, (key, _) in zip(paths, keys):
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
        assert ds.StudyInstanceUID == volume.study_uid
        assert ds.SeriesInstanceUID != volume.series_uid
        assert ds.SeriesDescription == SERIES_DESCRIPTION
        assert ds.PatientID == PATIENT_ID
        assert ds.PhotometricInterpretation == "RGB" and ds.SamplesPerPixel == 3
        assert (ds.Rows, ds.Columns) == (64, 64)
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == volume.slices[key].sop_instance_uid
        assert ds.pixel_array.shape == (64, 64, 3)
        series.add(ds.SeriesInstanceUID)
    assert len(series) == 1
    nodule_image = pydicom.dcmread(paths[[key for key, _ in keys].index(next(
        key for key, reason in keys if "finding" in reason))]).pixel_array
    assert _has_color(nodule_image, NODULE_COLOR)
    assert k in [key for key, _ in keys]

    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy is not installed")
    for path in paths:
        done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], errors


def test_secondary_captures_all_or_nothing(study, prediction, tmp_path, readonly_dir):
    volume, _ = study
    with pytest.raises(ExportError, match="readonly"):
        write_secondary_captures(volume, prediction, readonly_dir / "sc", bookmarks=[0])
    assert list(readonly_dir.iterdir()) == []

    out = tmp_path / "sc"
    first = write_secondary_captures(volume, prediction, out)
    before = {p: p.read_bytes() for p in first}
    with pytest.raises(ExistsError):
        write_secondary_captures(volume, prediction, out, bookmarks=[0])
    assert sorted(out.iterdir()) == sorted(first)
    assert all(p.read_bytes() == data for p, data in before.items())
    again = write_secondary_captures(volume, prediction, out, bookmarks=[0], force=True)
    assert len(again) == len(first) + 1
    assert write_secondary_captures(volume, None, tmp_path / "none") == []


def test_report_without_dejavu_falls_back_to_helvetica(study, monkeypatch, tmp_path):
    from medviewer.export import report

    monkeypatch.setattr(report, "find_font", lambda: None)
    monkeypatch.setattr(report, "_FONT_CACHE", {})
    fonts = report._register_fonts()
    assert fonts.regular == "Helvetica"
    assert report.printable("Müller^Zoë Łukasz 李", fonts) == "Müller^Zoë Lukasz ?"
    volume, _ = study
    path = tmp_path / "helvetica.pdf"
    path.write_bytes(build_report(volume, bookmarks=[0], annotations=[Annotation("text", 0, [(5, 5)], text="Łódź 李")]))
    text = _pdftotext(path)
    assert "Müller, Zoë" in text and "Lódz ?" in text and DISCLAIMER in text


def test_secondary_captures_tolerate_an_odd_patient_sex(study, prediction, tmp_path, monkeypatch):
    volume, _ = study
    header = volume.header(0)
    odd = pydicom.Dataset()
    for element in header:
        if element.keyword != "PatientSex":
            odd.add(element)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's doubts about the value, which is the point
        odd.PatientSex = "Male"
    monkeypatch.setattr(type(volume), "header", lambda self, k: odd)
    paths = write_secondary_captures(volume, prediction, tmp_path / "sc")
    ds = pydicom.dcmread(paths[0])
    assert ds.PatientSex == "" and ds.PatientID == PATIENT_ID
    assert odd.PatientSex == "Male" and header.PatientSex in ("M", "F")  # the source headers are untouched


def test_label_colours_in_the_manifests_hex_form():
    from medviewer.export.images import label_color

    prediction = SimpleNamespace(labels={2: {"name": "nodule", "color": "#ff3030"}, 3: {"color": "bad"}})
    assert label_color(prediction, 2) == (255, 48, 48)
    assert len(label_color(prediction, 3)) == 3
