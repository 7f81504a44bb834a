"""Anonymised copies (PS3.15 Annex E Basic Profile): nothing identifying left, UIDs replaced consistently,
geometry and pixels kept, originals untouched, bad input reported, all-or-nothing writing."""

import copy
import re
import shutil
import subprocess
import threading
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import UID_dictionary

from medviewer.ai.demo_data import write_phantom_dicom
from medviewer.ai.phantom import PhantomConfig, generate_phantom
from medviewer.core.errors import Cancelled
from medviewer.core.safe import ExistsError, ExportError
from medviewer.core.scan import scan
from medviewer.core.sources import Source
from medviewer.export.anonymize import BASIC_PROFILE, anonymize

# Identifying values put into the study; none may survive anywhere in the copies, not even as raw bytes.
SECRETS = {
    "PatientName": "Doe^Jane",
    "PatientID": "PID-4711",
    "AccessionNumber": "ACC998877",
    "InstitutionName": "St Elsewhere Hospital",
    "InstitutionAddress": "12 Harbour Road",
    "ReferringPhysicianName": "House^Gregory",
    "PatientBirthDate": "19610203",
    "OtherPatientIDs": "OTHER-1234",
    "DeviceSerialNumber": "SN-778899",
    "StationName": "CTROOM7",
    "OperatorsName": "Ratched^Mildred",
    "StudyDescription": "Chest CT for Jane",
    "ImageComments": "call Jane at home",
}
NESTED_OPERATOR = "Secret^Operator"
PRIVATE_VALUE = "PRIVATE-NOTE-Doe"
GEOMETRY = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "Rows", "Columns",
            "SpacingBetweenSlices", "RescaleSlope", "RescaleIntercept", "BitsAllocated", "BitsStored",
            "PhotometricInterpretation", "InstanceNumber", "SeriesNumber", "Modality", "SOPClassUID")

# Bundled with pydicom's wheel (pydicom/data/test_files); get_testdata_file finds them without downloading.
TEST_FILES = ["CT_small.dcm", "MR_small.dcm", "examples_rgb_color.dcm", "SC_rgb_small_odd.dcm",
              "examples_overlay.dcm", "test-SR.dcm", "liver_1frame.dcm"]


def _code(value, scheme, meaning):
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two CT series of one study (4 + 2 slices) with identifying attributes, private tags and references."""
    root = tmp_path_factory.mktemp("originals")
    phantom = generate_phantom(PhantomConfig(slices=4, size=32, nodule_count=(0, 0), vessel_generations=1), 0)
    folder = write_phantom_dicom(phantom, root, study_name="case", patient_name=SECRETS["PatientName"],
                                 patient_id=SECRETS["PatientID"])
    first = sorted((folder / "CT").glob("*.dcm"))
    second_dir = folder / "CT2"
    second_dir.mkdir()
    second_series = pydicom.uid.generate_uid()
    second = []
    for index, source in enumerate(first[2:], start=1):
        ds = pydicom.dcmread(source)
        ds.SeriesInstanceUID = second_series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.SeriesNumber = 3
        ds.InstanceNumber = index
        ds.save_as(second_dir / f"IM{index:04d}.dcm", enforce_file_format=True)
        second.append(second_dir / f"IM{index:04d}.dcm")
    files = first + second
    datasets = [pydicom.dcmread(p) for p in files]
    for index, (path, ds) in enumerate(zip(files, datasets)):
        for keyword, value in SECRETS.items():
            setattr(ds, keyword, value)
        ds.PatientAge = "063Y"
        block = ds.private_block(0x0009, "ACME 1.0", create=True)
        block.add_new(0x01, "LO", PRIVATE_VALUE)
        referenced = datasets[(index + 1) % len(datasets)]
        reference = Dataset()
        reference.ReferencedSOPClassUID = referenced.SOPClassUID
        reference.ReferencedSOPInstanceUID = referenced.SOPInstanceUID
        reference.private_block(0x0011, "ACME 1.0", create=True).add_new(0x01, "LO", PRIVATE_VALUE)
        ds.ReferencedImageSequence = [reference]
        equipment = Dataset()
        equipment.PurposeOfReferenceCodeSequence = [_code("109102", "DCM", "Processing Equipment")]
        equipment.Manufacturer = "ACME"
        equipment.InstitutionName = SECRETS["InstitutionName"]
        equipment.OperatorsName = NESTED_OPERATOR
        ds.ContributingEquipmentSequence = [equipment]
        ds.save_as(path, enforce_file_format=True)
    snapshot = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
    return {"folder": folder, "files": files, "series": [first, second], "snapshot": snapshot}


@pytest.fixture(scope="module")
def anon(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "anon"
    result = anonymize(study["files"], out)
    return result, [pydicom.dcmread(p) for p in result.files]


def _all_elements(ds):
    yield from ds.file_meta.iterall()
    yield from ds.iterall()


def _original_uids(paths):
    uids = set()
    for path in paths:
        for elem in _all_elements(pydicom.dcmread(path)):
            if elem.VR == "UI" and elem.value:
                values = elem.value if isinstance(elem.value, list | pydicom.multival.MultiValue) else [elem.value]
                uids.update(str(v) for v in values if str(v) not in UID_dictionary
                            and "ClassUID" not in elem.keyword)
    return uids


def test_no_identifying_value_survives(study, anon):
    result, outputs = anon
    assert len(outputs) == len(study["files"]) and not result.refused
    identifying = set()
    for path in study["files"]:
        for elem in _all_elements(pydicom.dcmread(path)):
            if BASIC_PROFILE.get(elem.tag, "U") != "U" and elem.VR != "SQ" and elem.value not in (None, ""):
                identifying.add((elem.tag, str(elem.value)))
    assert len(identifying) > 20
    needles = [*SECRETS.values(), NESTED_OPERATOR, PRIVATE_VALUE, "ACME 1.0"]
    for path, ds in zip(result.files, outputs):
        for elem in _all_elements(ds):
            assert (elem.tag, str(elem.value)) not in identifying, (path, elem)
            if isinstance(elem.value, str | pydicom.valuerep.PersonName):
                assert not any(n.lower() in str(elem.value).lower() for n in needles), (path, elem)
        data = path.read_bytes()
        for needle in needles:
            assert needle.encode() not in data, (path, needle)
        assert data[:128] == b"\0" * 128


def test_pseudonyms_markers_and_dates(study, anon):
    _, outputs = anon
    ids = {str(ds.PatientID) for ds in outputs}
    assert len(ids) == 1 and ids.pop().startswith("ANON")
    for ds in outputs:
        assert str(ds.PatientName) == "ANONYMOUS"
        assert ds.PatientIdentityRemoved == "YES"
        assert "Basic Application Confidentiality Profile" in str(ds.DeidentificationMethod)
        code = ds.DeidentificationMethodCodeSequence[0]
        assert (code.CodeValue, code.CodingSchemeDesignator) == ("113100", "DCM")
        assert ds.LongitudinalTemporalInformationModified == "REMOVED"
        # Type 2 attributes are emptied (Z), not removed; the others go (X) or get dummies (D)
        for keyword in ("StudyDate", "StudyTime", "PatientBirthDate", "AccessionNumber", "ReferringPhysicianName",
                        "StudyID", "PatientSex"):
            assert keyword in ds and ds[keyword].value in (None, ""), keyword
        for keyword in ("PatientAge", "OtherPatientIDs", "InstitutionAddress", "StudyDescription",
                        "SeriesDescription", "ImageComments"):
            assert keyword not in ds, keyword
        assert ds.InstitutionName == "ANONYMIZED" and ds.ContributingEquipmentSequence[0].OperatorsName == "ANONYMIZED"
        assert ds.ContributingEquipmentSequence[0].Manufacturer == "ACME"  # not in the table: kept


def test_private_tags_removed_everywhere(anon):
    _, outputs = anon
    for ds in outputs:
        assert not [e.tag for e in _all_elements(ds) if e.tag.is_private]


def test_uids_replaced_consistently(study, anon):
    result, outputs = anon
    originals = [pydicom.dcmread(p) for p in study["files"]]
    old_uids = _original_uids(study["files"])
    new_sop = {str(o.SOPInstanceUID): str(n.SOPInstanceUID) for o, n in zip(originals, outputs)}
    for original, ds in zip(originals, outputs):
        for elem in _all_elements(ds):
            if elem.VR == "UI":
                assert str(elem.value) not in old_uids, elem
        assert ds.SOPClassUID == original.SOPClassUID
        assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        reference = ds.ReferencedImageSequence[0]
        assert reference.ReferencedSOPInstanceUID == new_sop[str(original.ReferencedImageSequence[0]
                                                                 .ReferencedSOPInstanceUID)]
        assert reference.ReferencedSOPClassUID == original.ReferencedImageSequence[0].ReferencedSOPClassUID
    assert len({ds.StudyInstanceUID for ds in outputs}) == 1
    assert len({ds.FrameOfReferenceUID for ds in outputs}) == 1
    assert len(set(new_sop.values())) == len(outputs)
    # series grouping: one new Series UID per original series, one folder per series
    first, second = len(study["series"][0]), len(study["series"][1])
    assert len({ds.SeriesInstanceUID for ds in outputs[:first]}) == 1
    assert len({ds.SeriesInstanceUID for ds in outputs[first:]}) == 1
    assert outputs[0].SeriesInstanceUID != outputs[-1].SeriesInstanceUID
    folders = [p.parent.name for p in result.files]
    assert folders == ["S001"] * first + ["S002"] * second
    assert result.uid_count == len(old_uids)


def test_geometry_and_pixels_identical(study, anon):
    _, outputs = anon
    for path, ds in zip(study["files"], outputs):
        original = pydicom.dcmread(path)
        for keyword in GEOMETRY:
            assert ds.get(keyword) == original.get(keyword), keyword
        assert ds.PixelData == original.PixelData
        assert np.array_equal(ds.pixel_array, original.pixel_array)


def test_originals_untouched(study, anon):
    for path, (data, mtime) in study["snapshot"].items():
        assert path.read_bytes() == data and path.stat().st_mtime_ns == mtime


def _iod_errors(path) -> set[str]:
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (done.stdout + done.stderr).splitlines()
    # UIDs and numbers differ between original and copy; the kind of error does not
    return {re.sub(r"\d+(\.\d+)+", "#", line) for line in lines if line.startswith("Error")}


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_no_new_iod_errors(study, anon, tmp_path):
    sources = [Path(get_testdata_file(name)) for name in TEST_FILES]
    result = anonymize(sources, tmp_path / "anon")
    assert not result.refused
    pairs = [*zip(sources, result.files), *zip(study["files"], anon[0].files)]
    for source, copy_ in pairs:
        new = _iod_errors(copy_) - _iod_errors(source)
        assert not new, (source.name, sorted(new))


def test_pydicom_samples_anonymised(tmp_path):
    sources = [Path(get_testdata_file(name)) for name in TEST_FILES]
    result = anonymize(sources, tmp_path / "anon", patient_name="CASE^7", patient_id="CASE7")
    for source, path in zip(sources, result.files):
        original, ds = pydicom.dcmread(source), pydicom.dcmread(path)
        name = str(original.get("PatientName") or "")
        if len(name) > 3:
            assert name.encode() not in path.read_bytes(), source.name
        assert str(ds.PatientName) == "CASE^7" and ds.PatientID == "CASE7"
        assert not [e.tag for e in _all_elements(ds) if e.tag.is_private]
        assert ds.StudyInstanceUID != original.StudyInstanceUID and ds.SOPClassUID == original.SOPClassUID
        assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert ds.PixelData == original.PixelData if "PixelData" in original else "PixelData" not in ds
    overlay = pydicom.dcmread(result.files[TEST_FILES.index("examples_overlay.dcm")])
    assert not [t for t in overlay.keys() if 0x6000 <= t.group <= 0x601E]  # Overlay Data (X) takes its group


def test_burned_in_annotation_warnings(tmp_path):
    names = ["CT_small.dcm", "MR_small.dcm", "examples_rgb_color.dcm", "SC_rgb_small_odd.dcm"]
    sources = [Path(get_testdata_file(name)) for name in names]
    marked = pydicom.dcmread(sources[0])
    marked.BurnedInAnnotation = "YES"
    marked.SOPInstanceUID = marked.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    marked_path = tmp_path / "ct_with_text.dcm"
    marked.save_as(marked_path)
    result = anonymize([*sources, marked_path], tmp_path / "anon")
    assert len(result.warnings) == 3
    assert all("\n" not in line for line in result.warnings)
    warned = " ".join(result.warnings)
    for name in ("examples_rgb_color.dcm", "SC_rgb_small_odd.dcm", "ct_with_text.dcm"):
        assert name in warned
    assert "CT_small.dcm" not in warned and "MR_small.dcm" not in warned
    assert "US image" in warned and "secondary capture" in warned and "Burned In Annotation is YES" in warned


def test_bad_input_reported_and_skipped(study, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty.dcm").write_bytes(b"")
    data = study["files"][0].read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:-500])
    bad = [tmp_path / "notes.txt", tmp_path / "empty.dcm", tmp_path / "cut.dcm", tmp_path / "missing.dcm"]
    result = anonymize([study["folder"], *bad], tmp_path / "anon")
    assert len(result.files) == len(study["files"])
    refused = {Path(r.path).name: r.reason for r in result.refused}
    # The phantom's ground truth (in the study's hidden .truth folder) is never scanned, so never refused.
    assert set(refused) == {"notes.txt", "empty.dcm", "cut.dcm", "missing.dcm"}
    assert refused["notes.txt"] == "not a DICOM file"
    assert "truncated" in refused["cut.dcm"] and refused["missing.dcm"] == "no such file or folder"  # the scanner's words
    assert all(str(r).count("\n") == 0 and str(r).startswith(r.path) for r in result.refused)


def test_nothing_usable_raises_and_leaves_nothing(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    with pytest.raises(ExportError, match="nothing could be anonymised.*notes.txt: not a DICOM file"):
        anonymize([tmp_path / "in" / "notes.txt"], tmp_path / "out" / "anon")
    assert list((tmp_path / "out").iterdir()) == []


def test_readonly_folder_fails_cleanly(study, readonly_dir):
    with pytest.raises(ExportError, match="readonly"):
        anonymize(study["files"], readonly_dir / "anon")
    assert list(readonly_dir.iterdir()) == []


def test_existing_target_kept_unless_forced(study, tmp_path):
    target = tmp_path / "anon"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    with pytest.raises(ExistsError):
        anonymize(study["files"][:1], target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    result = anonymize(study["files"][:1], target, force=True)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*.dcm")) == ["S001/IM0001.dcm"]
    assert result.files == [target / "S001" / "IM0001.dcm"]
    assert [p.name for p in tmp_path.iterdir()] == ["anon"]


def test_salt_makes_uids_and_pseudonym_repeatable(study, tmp_path):
    def run(name, **kwargs):
        result = anonymize(study["files"][:2], tmp_path / name, **kwargs)
        return [(str(d.SOPInstanceUID), str(d.StudyInstanceUID), str(d.PatientID))
                for d in map(pydicom.dcmread, result.files)]

    assert run("a", salt="secret") == run("b", salt="secret")
    assert run("c", salt="secret") != run("d", salt="other")
    assert run("e") != run("f")
    named = anonymize(study["files"][:1], tmp_path / "g", patient_name="SUBJECT^01", patient_id="S01")
    ds = pydicom.dcmread(named.files[0])
    assert (str(ds.PatientName), ds.PatientID) == ("SUBJECT^01", "S01")


def test_scanned_series_and_zip_members(study, tmp_path):
    scanned = scan([study["folder"]], parallel=False)
    sources = [instance.source for series in scanned.series for instance in series.instances]
    result = anonymize(sources, tmp_path / "from_scan")
    assert len(result.files) == len(study["files"]) and not result.refused
    assert sorted({p.parent.name for p in result.files}) == ["S001", "S002"]

    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(study["files"][0], "case/IM1.dcm")
        zf.writestr("case/readme.txt", "not an image")
    members = [Source(str(archive), "case/IM1.dcm"), Source(str(archive), "case/readme.txt")]
    result = anonymize(members, tmp_path / "from_zip")
    assert len(result.files) == 1
    assert [str(r) for r in result.refused] == [f"{archive}!/case/readme.txt: not a DICOM file"]
    assert SECRETS["PatientName"].encode() not in result.files[0].read_bytes()


def test_datasets_in_memory_not_changed(study, tmp_path):
    datasets = [pydicom.dcmread(p) for p in study["files"][:2]]
    before = [copy.deepcopy(ds) for ds in datasets]
    result = anonymize(datasets, tmp_path / "anon")
    assert len(result.files) == 2
    assert datasets == before and str(datasets[0].PatientName) == SECRETS["PatientName"]
    assert str(pydicom.dcmread(result.files[0]).PatientName) == "ANONYMOUS"


def test_cancel_leaves_nothing_and_progress_counts(study, tmp_path):
    calls = []
    stop = threading.Event()

    def progress(done, total):
        calls.append((done, total))
        if done == 2:
            stop.set()

    with pytest.raises(Cancelled):
        anonymize(study["files"], tmp_path / "anon", progress=progress, cancel=stop)
    assert list(tmp_path.iterdir()) == []
    assert calls == [(0, 6), (1, 6), (2, 6)]


def test_profile_table():
    assert len(BASIC_PROFILE) > 600
    assert set(BASIC_PROFILE.values()) == {"X", "Z", "D", "U", "X/Z", "X/D", "X/Z/D", "Z/D", "X/Z/U*"}
    expected = {"PatientName": "Z", "PatientID": "Z/D", "PatientBirthDate": "Z", "AccessionNumber": "Z",
                "StudyInstanceUID": "U", "SOPInstanceUID": "U", "FrameOfReferenceUID": "U",
                "InstitutionName": "X/Z/D", "OtherPatientIDs": "X", "ReferencedImageSequence": "X/Z/U*",
                "ContentDate": "Z/D", "SeriesDate": "X/D", "PatientAge": "X", "MediaStorageSOPInstanceUID": "U"}
    for keyword, action in expected.items():
        assert BASIC_PROFILE[pydicom.datadict.tag_for_keyword(keyword)] == action, keyword
    for keyword in ("SOPClassUID", "ImagePositionPatient", "PixelSpacing", "Modality", "BurnedInAnnotation"):
        assert pydicom.datadict.tag_for_keyword(keyword) not in BASIC_PROFILE


def test_a_zip_archive_is_anonymised_like_its_folder(study, tmp_path):
    import zipfile

    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in study["files"]:
            zf.write(path, path.relative_to(study["folder"]).as_posix())
    result = anonymize([archive], tmp_path / "anon")
    assert len(result.files) == len(study["files"]) and not result.refused
