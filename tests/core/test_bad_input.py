"""Bad input is refused with one plain reason naming the file, never an exception or a traceback.

Also: the command line on bad and mixed input, writing nothing anywhere; and the load
contract for cancel, progress and ``on_slice``.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import RLELossless

import medviewer
from medviewer.cli import main as cli_main
from medviewer.core.info import describe


def refused_one(path):
    """Scan ``path``: nothing taken, exactly one refusal naming it, with a one-line reason."""
    result = medviewer.scan(path, parallel=False)
    assert result.series == [], result.series
    assert len(result.refused) == 1, [str(r) for r in result.refused]
    refused = result.refused[0]
    assert refused.path == str(path)
    assert refused.reason and "\n" not in refused.reason and "Traceback" not in refused.reason
    assert str(refused) == f"{path}: {refused.reason}"
    return refused


def first_fragment(data: bytes) -> tuple[int, int]:
    """(offset, length) of the first compressed fragment of an encapsulated little-endian file."""
    tag = data.rfind(b"\xe0\x7f\x10\x00")
    assert data[tag + 8:tag + 12] == b"\xff\xff\xff\xff"
    item = tag + 12
    assert data[item:item + 4] == b"\xfe\xff\x00\xe0"
    (offsets,) = struct.unpack("<I", data[item + 4:item + 8])
    item += 8 + offsets
    assert data[item:item + 4] == b"\xfe\xff\x00\xe0"
    (length,) = struct.unpack("<I", data[item + 4:item + 8])
    return item + 8, length


def corrupt(data: bytes, where: str) -> bytes:
    """Overwrite part of the first fragment with fixed pseudo-random bytes."""
    start, length = first_fragment(data)
    rng = np.random.default_rng(1)
    at, count = (start, 64) if where == "head" else (start + length // 3, 200)
    out = bytearray(data)
    out[at:at + count] = rng.integers(0, 256, count, dtype=np.uint8).tobytes()
    return bytes(out)


# --- files refused at scan time -----------------------------------------------------------------


def test_empty_file(tmp_path):
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    assert refused_one(path).reason == "empty file"


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.dcm"
    data = np.random.default_rng(7).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    assert data[:2] not in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")
    path.write_bytes(data)
    assert "not a DICOM file" in refused_one(path).reason


def test_text_file_named_dcm(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("Patient notes\nThis is not an image.\n" * 20)
    assert "not a DICOM file" in refused_one(path).reason


def test_header_cut_in_half(tmp_path, pydicom_file):
    data = Path(pydicom_file("CT_small.dcm")).read_bytes()
    pixels_at = data.rfind(b"\xe0\x7f\x10\x00")
    path = tmp_path / "cut_header.dcm"
    path.write_bytes(data[: pixels_at // 2])
    reason = refused_one(path).reason
    assert "truncated" in reason, reason


def test_pixel_data_cut_short(tmp_path, pydicom_file):
    data = Path(pydicom_file("CT_small.dcm")).read_bytes()
    path = tmp_path / "cut_pixels.dcm"
    path.write_bytes(data[: len(data) - 1000])
    reason = refused_one(path).reason
    assert "truncated pixel data" in reason and "32768" in reason


def test_pydicom_truncated_file(pydicom_file):
    path = pydicom_file("MR_truncated.dcm")
    reason = refused_one(path).reason
    assert reason == "truncated pixel data (expected 8192 bytes, found 8130)"


def test_missing_rows(tmp_path, dicom):
    ds = dicom.make_dataset(dicom.slice_pixels(0), study=dicom.uid(), series=dicom.uid(),
                            frame_of_reference=dicom.uid(), position=(0, 0, 0))
    del ds.Rows
    path = dicom.save(ds, tmp_path / "norows.dcm")
    reason = refused_one(path).reason
    assert "missing Rows" in reason and "(0028,0010)" in reason


def test_unknown_transfer_syntax_jpeg_xl(tmp_path, pydicom_file):
    """A JPEG XL file (unknown to this pydicom): refused at scan with the syntax's name."""
    source = pydicom_file("SC_rgb_jpeg_dcmtk.dcm")
    data = Path(source).read_bytes()
    (group_length,) = struct.unpack("<I", data[140:144])
    body = data[144 + group_length:]
    meta = pydicom.dcmread(source, stop_before_pixels=True).file_meta
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.110"
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_file_meta_info(fp, meta, enforce_standard=True)
    path = tmp_path / "jpegxl.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + fp.getvalue() + body)
    assert refused_one(path).reason == "no decoder for JPEG XL Lossless"


@pytest.mark.parametrize("name", ["reportsi.dcm", "test-SR.dcm"])
def test_structured_report_has_no_image(pydicom_file, name):
    reason = refused_one(pydicom_file(name)).reason
    assert reason.startswith("no image") and "SR" in reason


def test_dicom_without_pixel_module_or_image(tmp_path, pydicom_file):
    """An RT plan copied into a folder beside images: refused, the images still open."""
    shutil.copy(pydicom_file("rtplan.dcm"), tmp_path / "plan.dcm")
    shutil.copy(pydicom_file("CT_small.dcm"), tmp_path / "ct.dcm")
    result = medviewer.scan(tmp_path, parallel=False)
    assert len(result.series) == 1
    assert [(os.path.basename(r.path), r.reason) for r in result.refused] == [
        ("plan.dcm", "no image in this DICOM file (RT Plan Storage)")]


def test_missing_path(tmp_path):
    path = tmp_path / "nowhere"
    assert refused_one(path).reason == "no such file or folder"


def _chmod_000(path: Path) -> None:
    path.chmod(0)
    if os.access(path, os.R_OK):
        path.chmod(0o755)
        pytest.skip("running with privileges that read any file (root)")


def test_unreadable_file(tmp_path, pydicom_file):
    path = tmp_path / "locked.dcm"
    shutil.copy(pydicom_file("CT_small.dcm"), path)
    _chmod_000(path)
    try:
        assert "permission denied" in refused_one(path).reason
        result = medviewer.scan(tmp_path, parallel=False)
        assert [r.path for r in result.refused] == [str(path)]
    finally:
        path.chmod(0o644)


def test_unreadable_folder(tmp_path, pydicom_file):
    locked = tmp_path / "locked"
    locked.mkdir()
    shutil.copy(pydicom_file("CT_small.dcm"), locked / "ct.dcm")
    shutil.copy(pydicom_file("MR_small.dcm"), tmp_path / "mr.dcm")
    _chmod_000(locked)
    try:
        result = medviewer.scan(tmp_path, parallel=False)
        assert len(result.series) == 1
        assert len(result.refused) == 1
        assert result.refused[0].path == str(locked)
        assert "permission denied" in result.refused[0].reason
    finally:
        locked.chmod(0o755)


def test_unreadable_file_and_folder_simulated(tmp_path, pydicom_file, monkeypatch):
    """The same refusals where the tests run as root (which reads anything): permissions faked."""
    locked_file = tmp_path / "locked.dcm"
    locked_folder = tmp_path / "locked"
    locked_folder.mkdir()
    shutil.copy(pydicom_file("CT_small.dcm"), locked_file)
    shutil.copy(pydicom_file("CT_small.dcm"), locked_folder / "ct.dcm")
    shutil.copy(pydicom_file("MR_small.dcm"), tmp_path / "mr.dcm")
    real_access, real_scandir = os.access, os.scandir

    def access(path, mode, *args, **kwargs):
        return False if os.fspath(path) == str(locked_file) else real_access(path, mode, *args, **kwargs)

    def scandir(path="."):
        if os.fspath(path) == str(locked_folder):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(os, "scandir", scandir)
    assert refused_one(locked_file).reason == "cannot be read: permission denied"
    result = medviewer.scan(tmp_path, parallel=False)
    assert [s.modality for s in result.series] == ["MR"]
    assert [(r.path, r.reason) for r in result.refused] == [
        (str(locked_folder), "folder cannot be read: permission denied"),
        (str(locked_file), "cannot be read: permission denied"),
    ]


def test_picture_too_large_to_open(tmp_path):
    """A PNG whose header claims 600 megapixels (Pillow's decompression-bomb guard raises an
    Exception that is not an OSError): refused, and the rest of the folder still opens."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path = tmp_path / "huge.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 20000, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    assert refused_one(path).reason.startswith("picture too large to open")
    from PIL import Image

    Image.fromarray(np.zeros((4, 5), dtype=np.uint8)).save(tmp_path / "small.png")
    result = medviewer.scan(tmp_path, parallel=False)
    assert len(result.series) == 1 and [r.path for r in result.refused] == [str(path)]


@pytest.mark.parametrize("damage", ["crc", "deflate64"])
def test_damaged_zip_member(tmp_path, pydicom_file, damage):
    """One member of a ZIP archive unreadable (bad CRC; a compression method Python's zipfile
    lacks, as Windows writes for large archives): that member is refused, the others open."""
    import zipfile

    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.write(pydicom_file("CT_small.dcm"), "study/ct.dcm")
        zf.write(pydicom_file("MR_small.dcm"), "study/mr.dcm")
    data = bytearray(archive.read_bytes())
    if damage == "crc":
        at = data.find(b"DICM") + 3000  # inside the first member's stored bytes
        data[at:at + 10] = b"X" * 10
    else:
        local = data.find(b"PK\x03\x04")
        central = data.find(b"PK\x01\x02")
        data[local + 8:local + 10] = struct.pack("<H", 9)  # Deflate64
        data[central + 10:central + 12] = struct.pack("<H", 9)
    archive.write_bytes(bytes(data))
    result = medviewer.scan(archive, parallel=False)
    assert [s.modality for s in result.series] == ["MR"]
    (refused,) = result.refused
    assert refused.path == f"{archive}!/study/ct.dcm"
    assert "damaged ZIP member" in refused.reason and "\n" not in refused.reason
    assert medviewer.load(result.series[0], parallel=False).shape == (1, 64, 64)


def test_five_good_and_three_bad(writer, tmp_path):
    written = writer.write(5)
    folder = writer.folder
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "readme.dcm").write_text("not an image")
    data = Path(written["slices"][0]["path"]).read_bytes()
    (folder / "half.dcm").write_bytes(data[: len(data) - 100])
    result = medviewer.scan(folder, parallel=False)
    assert len(result.series) == 1 and len(result.series[0]) == 5
    assert sorted(os.path.basename(r.path) for r in result.refused) == ["empty.dcm", "half.dcm", "readme.dcm"]
    volume = medviewer.load(result.series[0], parallel=False)
    assert volume.shape == (5, 16, 16)
    assert volume.warnings == []


# --- files that scan but do not decode -------------------------------------------------------------


@pytest.mark.parametrize("name", ["SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_jpeg_gdcm.dcm", "JPGExtended.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"])
@pytest.mark.parametrize("where", ["head", "middle"])
def test_corrupted_fragment(tmp_path, pydicom_file, name, where):
    """Compressed bytes overwritten: the scan takes the file; loading gives a LoadError naming
    it, or a volume (a codec may decode damaged data to wrong values), never another exception.

    The RLE file corrupted in the middle makes pylibjpeg-rle panic (pyo3's PanicException is
    a BaseException), which used to escape ``load`` altogether.
    """
    path = tmp_path / f"corrupt_{name}"
    path.write_bytes(corrupt(Path(pydicom_file(name)).read_bytes(), where))
    result = medviewer.scan(path, parallel=False)
    assert result.refused == [] and len(result.series) == 1
    for parallel in (False, True):
        try:
            volume = medviewer.load(result.series[0], parallel=parallel)
        except medviewer.LoadError as exc:
            assert exc.path == str(path)
            assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
            if where == "head":
                assert "could not be decoded" in exc.reason
        else:
            assert where == "middle", "a file whose codestream header is destroyed cannot load"
            assert volume.shape[0] == 1
    document = describe(result)
    if where == "head":
        assert [r["path"] for r in document["refused"]] == [str(path)]


def test_corrupted_slice_in_series_is_blank_with_warning(writer):
    written = writer.write(4, intercept=-1024)
    bad = written["slices"][2]
    for item in written["slices"]:
        ds = pydicom.dcmread(item["path"])
        ds.compress(RLELossless)
        ds.save_as(item["path"])
    path = Path(bad["path"])
    path.write_bytes(corrupt(path.read_bytes(), "head"))
    series = medviewer.scan(writer.folder, parallel=False).series[0]
    assert len(series) == 4
    for parallel in (False, True):
        volume = medviewer.load(series, parallel=parallel)
        assert volume.missing_slices == [2]
        assert len(volume.warnings) == 1
        assert "could not be decoded" in volume.warnings[0] and bad["path"] in volume.warnings[0]
        for k in (0, 1, 3):
            np.testing.assert_array_equal(volume.voxels[k], written["slices"][k]["pixels"] - 1024)
        assert np.all(volume.voxels[2] == volume.voxels[[0, 1, 3]].min())


# --- command line ------------------------------------------------------------------------------------


def listing(root: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


@pytest.fixture
def bad_folder(tmp_path, pydicom_file, monkeypatch) -> Path:
    # Run from inside tmp_path, so that a stray write to the working folder shows in the listing.
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "notes.dcm").write_text("not an image")
    shutil.copy(pydicom_file("MR_truncated.dcm"), folder / "truncated.dcm")
    shutil.copy(pydicom_file("reportsi.dcm"), folder / "report.dcm")
    return folder


def _no_traceback(captured) -> None:
    assert "Traceback" not in captured.out and "Traceback" not in captured.err


def test_cli_info_on_bad_input_only(bad_folder, tmp_path, capsys):
    before = listing(tmp_path)
    code = cli_main(["info", str(bad_folder)])
    captured = capsys.readouterr()
    assert code == 1
    _no_traceback(captured)
    lines = captured.err.strip().splitlines()
    for name in ("empty.dcm", "notes.dcm", "truncated.dcm", "report.dcm"):
        mentions = [line for line in lines if os.path.join(str(bad_folder), name) in line]
        assert len(mentions) == 1, (name, lines)
    # One line per refused file and one summary line naming what was given.
    assert len(lines) == 5
    assert "nothing could be opened" in lines[-1]
    assert listing(tmp_path) == before


def test_cli_info_on_missing_path(tmp_path, capsys):
    code = cli_main(["info", str(tmp_path / "absent.dcm")])
    captured = capsys.readouterr()
    assert code == 1
    _no_traceback(captured)
    assert "no such file or folder" in captured.err


def test_cli_info_on_mixed_input(bad_folder, tmp_path, pydicom_file, capsys):
    shutil.copy(pydicom_file("CT_small.dcm"), bad_folder / "good.dcm")
    before = listing(tmp_path)
    code = cli_main(["info", str(bad_folder)])
    captured = capsys.readouterr()
    assert code == 0
    _no_traceback(captured)
    assert "CT" in captured.out
    assert len(captured.err.strip().splitlines()) == 4
    assert listing(tmp_path) == before


def test_cli_info_json(bad_folder, tmp_path, pydicom_file, capsys):
    shutil.copy(pydicom_file("CT_small.dcm"), bad_folder / "good.dcm")
    before = listing(tmp_path)
    code = cli_main(["info", "--json", str(bad_folder)])
    captured = capsys.readouterr()
    assert code == 0
    _no_traceback(captured)
    document = json.loads(captured.out)
    refused = {os.path.basename(r["path"]): r["reason"] for r in document["refused"]}
    assert set(refused) == {"empty.dcm", "notes.dcm", "truncated.dcm", "report.dcm"}
    assert refused["empty.dcm"] == "empty file"
    assert document["summary"]["refused"] == 4 and document["summary"]["series"] == 1
    (image,) = document["studies"][0]["series"][0]["images"]
    assert len(image["pixels"]["sha256"]) == 64
    assert listing(tmp_path) == before


def test_cli_info_json_on_bad_input_only(bad_folder, capsys):
    code = cli_main(["info", "--json", str(bad_folder)])
    captured = capsys.readouterr()
    assert code == 1
    _no_traceback(captured)
    document = json.loads(captured.out)
    assert len(document["refused"]) == 4 and document["studies"] == []


def test_cli_info_on_image_without_finite_values(tmp_path, capsys):
    """An all-NaN float NIfTI has no min/max: the text report must not fail on it."""
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.full((4, 3, 2), np.nan, dtype=np.float32), np.eye(4)), tmp_path / "nan.nii")
    code = cli_main(["info", str(tmp_path / "nan.nii")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "unexpected error" not in captured.err
    _no_traceback(captured)
    assert cli_main(["info", "--json", str(tmp_path / "nan.nii")]) == 0
    document = json.loads(capsys.readouterr().out)
    pixels = document["studies"][0]["series"][0]["images"][0]["pixels"]
    assert pixels["min"] is None and pixels["max"] is None


# --- cancel, progress, on_slice ---------------------------------------------------------------------


@pytest.mark.parametrize("parallel", [False, True])
def test_load_cancel(writer, parallel):
    writer.write(6)
    series = medviewer.scan(writer.folder, parallel=False).series[0]
    with pytest.raises(medviewer.Cancelled):
        medviewer.load(series, cancel=lambda: True, parallel=parallel)
    event = threading.Event()
    event.set()
    with pytest.raises(medviewer.Cancelled):
        medviewer.load(series, cancel=event, parallel=parallel)


def test_scan_cancel(writer):
    writer.write(3)
    with pytest.raises(medviewer.Cancelled):
        medviewer.scan(writer.folder, cancel=lambda: True, parallel=False)


@pytest.mark.parametrize("parallel", [False, True])
def test_load_progress_and_on_slice(writer, parallel):
    writer.write(9)
    series = medviewer.scan(writer.folder, parallel=False).series[0]
    progress: list[tuple[int, int]] = []
    seen: list[int] = []

    def on_slice(volume, k):
        assert isinstance(volume, medviewer.Volume)
        seen.append(k)
        assert volume.voxels[k].min() >= 100 - 1024  # the slice holds its final values

    volume = medviewer.load(series, progress=lambda done, total: progress.append((done, total)),
                            on_slice=on_slice, parallel=parallel)
    assert progress[0] == (0, 9) and progress[-1] == (9, 9)
    assert all(total == 9 for _, total in progress)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    assert sorted(seen) == list(range(9))
    assert volume.shape[0] == 9


def test_scan_progress(writer):
    writer.write(5)
    progress: list[tuple[int, int]] = []
    medviewer.scan(writer.folder, progress=lambda done, total: progress.append((done, total)), parallel=False)
    assert progress[0] == (0, 5) and progress[-1] == (5, 5)


def test_on_slice_first_for_middle_slice_when_caller_is_busy(writer):
    """The middle slice is decoded first; ``on_slice`` must also report it first, even when the
    calling thread is slow to collect results (a busy GUI thread): here the first cancel check
    sleeps until every slice has been decoded."""
    count = 31
    writer.write(count)
    series = medviewer.scan(writer.folder, parallel=False).series[0]
    for _ in range(5):
        assert _first_reported(series)[0] == count // 2


def _first_reported(series) -> list[int]:
    """Slices in the order ``on_slice`` reports them, with a caller busy at its first cancel check."""
    seen: list[int] = []
    calls = {"n": 0}

    def busy_cancel():
        calls["n"] += 1
        if calls["n"] == 1:
            time.sleep(0.05)
        return False

    medviewer.load(series, on_slice=lambda volume, k: seen.append(k), cancel=busy_cancel, parallel=False)
    assert sorted(seen) == list(range(len(series)))
    return seen


# --- one bad file never loses the others (any exception, any codec chatter, a dead worker) -------


def bad_vr(data: bytes) -> bytes:
    """An element's VR bytes replaced by '0x55 0x00' (unknown to pydicom) in (0008,0016)."""
    at = data.find(b"\x08\x00\x16\x00UI")
    assert at > 0
    return data[:at + 4] + b"\x55\x00" + data[at + 6:]


@pytest.fixture
def damaged_and_intact(tmp_path, pydicom_file) -> Path:
    """60 files with an unknown VR (enough for the process pool) and 5 intact slices."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    source = pydicom_file("CT_small.dcm")
    damaged = bad_vr(Path(source).read_bytes())
    for k in range(60):
        (folder / f"bad{k:03d}.dcm").write_bytes(damaged)
    for k in range(5):
        ds = pydicom.dcmread(source)
        ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[f"intact{k}"])
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0, 0, 5 * k]
        ds.save_as(folder / f"good{k}.dcm")
    return folder


@pytest.mark.parametrize("parallel", [False, True])
def test_unknown_vr_refuses_that_file_and_the_scan_goes_on(damaged_and_intact, parallel):
    result = medviewer.scan(damaged_and_intact, parallel=parallel)
    assert [len(s.instances) for s in result.series] == [5]
    assert len(result.refused) == 60
    for refused in result.refused:
        assert refused.reason.startswith("damaged DICOM header (Unknown Value Representation '0x55 0x00'")
        assert "\n" not in refused.reason


def test_cli_info_json_reports_the_intact_files(damaged_and_intact, capfd):
    code = cli_main(["info", "--json", str(damaged_and_intact)])
    captured = capfd.readouterr()
    assert code == 0
    _no_traceback(captured)
    document = json.loads(captured.out)
    assert document["summary"]["images"] == 5 and document["summary"]["refused"] == 60
    assert len(captured.err.strip().splitlines()) == 60  # one line per refused file
    assert "unexpected error" not in captured.err


def test_only_frame_fails_to_decode_is_refused_in_one_line(pydicom_file, capfd):
    path = pydicom_file("JPEG2000-embedded-sequence-delimiter.dcm")
    code = cli_main(["info", path])
    captured = capfd.readouterr()
    assert code == 1
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"medviewer: {path}: frame 1 could not be decoded")
    # OpenJPEG's own stderr lines are captured, never shown.
    assert "Invalid number of tiles" not in captured.err + captured.out
    code = cli_main(["info", "--json", path])
    document = json.loads(capfd.readouterr().out)
    assert code == 1 and document["studies"] == [] and document["summary"]["images"] == 0
    assert document["refused"][0]["path"] == path


def test_pydicom_warnings_become_the_files_warnings(pydicom_file, capfd):
    # pydicom reads this file with a UserWarning ("Expected explicit VR, but found implicit VR").
    path = pydicom_file("SC_rgb_jpeg.dcm")
    code = cli_main(["info", "--json", path])
    captured = capfd.readouterr()
    assert code == 0
    assert captured.err == "", captured.err
    document = json.loads(captured.out)
    series = document["studies"][0]["series"][0]
    expected = "Expected explicit VR, but found implicit VR - using implicit VR for reading"
    assert expected in series["images"][0]["warnings"]
    assert expected in series["warnings"]
    (scanned,) = medviewer.scan(path, parallel=False).series
    assert expected in scanned.warnings  # what the GUI's panel shows


def _abort_decode_job(instance, frames):
    """Stands in for the decoder in a pool process: dies as a native codec abort would."""
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.abort()


def _abort_on_bad_reads(sources):
    """Stands in for the header reader: aborts the pool process on a file named crash*."""
    from medviewer.core.reader import read_instance

    if any(os.path.basename(s.path).startswith("crash") for s in sources):
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.abort()
    return [read_instance(s, keep_header=False) for s in sources]


needs_pool = pytest.mark.skipif(
    __import__("medviewer.core.pool", fromlist=["worker_count"]).worker_count() < 2,
    reason="needs a process pool (2 or more cores)")


@needs_pool
def test_decoder_crash_in_a_worker_marks_the_file_and_is_not_retried_here(pydicom_file, monkeypatch):
    load_module = importlib.import_module("medviewer.core.load")
    from medviewer.core.errors import LoadError

    result = medviewer.scan(pydicom_file("MR_small_RLE.dcm"), parallel=False)
    (series,) = result.series
    calls = []
    real_decode_frames = load_module.decode_frames
    # Had the crashed decode been retried in this process, it would have come through here.
    monkeypatch.setattr(load_module, "decode_frames", lambda *a: calls.append(a) or real_decode_frames(*a))
    monkeypatch.setattr(load_module, "decode_job", _abort_decode_job)
    with pytest.raises(LoadError) as caught:
        medviewer.load(series)
    assert caught.value.reason == "could not be decoded (decoder crashed)"
    assert calls == []
    monkeypatch.undo()
    # The dead worker was replaced: the next load decodes in fresh processes.
    volume = medviewer.load(series)
    assert volume.voxels.shape == (1, 64, 64)


@needs_pool
def test_decoder_crash_in_info_refuses_that_file(pydicom_file, monkeypatch, capfd):
    load_module = importlib.import_module("medviewer.core.load")

    monkeypatch.setattr(load_module, "decode_job", _abort_decode_job)
    path = pydicom_file("MR_small_RLE.dcm")
    code = cli_main(["info", path])
    captured = capfd.readouterr()
    assert code == 1
    assert captured.err.strip().splitlines() == [f"medviewer: {path}: could not be decoded (decoder crashed)"]


@needs_pool
def test_reader_crash_in_a_worker_refuses_only_that_file(damaged_and_intact, pydicom_file, monkeypatch):
    scan_module = importlib.import_module("medviewer.core.scan")

    shutil.copy(pydicom_file("CT_small.dcm"), damaged_and_intact / "crash.dcm")
    monkeypatch.setattr(scan_module, "read_instances", _abort_on_bad_reads)
    result = medviewer.scan(damaged_and_intact, parallel=True)
    assert [len(s.instances) for s in result.series] == [5]
    reasons = {os.path.basename(r.path): r.reason for r in result.refused}
    assert reasons.pop("crash.dcm") == "could not be read (the reader crashed on this file)"
    assert len(reasons) == 60


# --- what is not a regular file is never opened -------------------------------------------------


def test_pipes_sockets_devices_and_link_loops_are_skipped_unopened(tmp_path, pydicom_file, monkeypatch, capfd):
    import socket

    folder = tmp_path / "odd"
    folder.mkdir()
    shutil.copy(pydicom_file("CT_small.dcm"), folder / "good.dcm")
    os.mkfifo(folder / "pipe.dcm")  # opening it would block the scan for ever
    os.mkfifo(folder / "pipe.zip")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "sock.dcm"))
    os.symlink("/dev/zero", folder / "zero.dcm")  # reading it never ends
    os.symlink(folder / "loop_a", folder / "loop_b")
    os.symlink(folder / "loop_b", folder / "loop_a")
    os.symlink(folder / "absent", folder / "broken.dcm")
    try:
        result = medviewer.scan(folder, parallel=False)
        code = cli_main(["info", str(folder)])
    finally:
        server.close()
    assert [s.modality for s in result.series] == ["CT"]
    reasons = {os.path.basename(r.path): r.reason for r in result.refused}
    assert reasons == {
        "pipe.dcm": "not a regular file (a named pipe), skipped without opening it",
        "pipe.zip": "not a regular file (a named pipe), skipped without opening it",
        "sock.dcm": "not a regular file (a socket), skipped without opening it",
        "zero.dcm": "not a regular file (a device), skipped without opening it",
        "loop_a": "symbolic link loop, not followed",
        "loop_b": "symbolic link loop, not followed",
        "broken.dcm": "broken symbolic link (its target does not exist)",
    }
    assert code == 0 and len(capfd.readouterr().err.strip().splitlines()) == 7


def test_a_file_swapped_for_a_pipe_after_the_scan_is_not_opened(tmp_path, pydicom_file):
    from medviewer.core.sources import Source, prefetch

    path = tmp_path / "later.dcm"
    os.mkfifo(path)
    prefetch([Source(str(path))])  # returns: never opens a pipe for reading
    with pytest.raises(OSError, match="named pipe"):
        Source(str(path)).open()
    from medviewer.core.reader import read_instance
    from medviewer.core.sources import Refused

    result = read_instance(Source(str(path)))
    assert isinstance(result, Refused) and "named pipe" in result.reason


# --- claims are checked against the bytes present, before anything is allocated ----------------


def _claiming(pydicom_file, tmp_path, name: str, **changes) -> Path:
    ds = pydicom.dcmread(pydicom_file(name))
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    path = tmp_path / f"claim-{name}"
    ds.save_as(path)
    return path


def test_number_of_frames_beyond_what_a_small_compressed_file_holds(tmp_path, pydicom_file):
    path = _claiming(pydicom_file, tmp_path, "MR_small_jp2klossless.dcm", NumberOfFrames=999999999)
    refused = refused_one(path)
    assert refused.reason.startswith("NumberOfFrames 999999999 is more than the ")
    assert "refused before reading" in refused.reason


def test_rows_columns_frames_claiming_400_gb(tmp_path, pydicom_file):
    path = _claiming(pydicom_file, tmp_path, "CT_small.dcm", Rows=50000, Columns=50000, NumberOfFrames=80)
    refused = refused_one(path)
    assert refused.reason.startswith("truncated pixel data: the header claims 400.0 GB (50000 x 50000 pixels x "
                                     "80 frame(s)) but the file holds")
    compressed = _claiming(pydicom_file, tmp_path, "MR_small_RLE.dcm", Rows=65535, Columns=65535)
    assert "more than any codec packs" in refused_one(compressed).reason


def _nifti2(shape, data: bytes = b"", gzipped: bool = False, name: str = "claim.nii") -> bytes:
    import gzip

    import nibabel as nib

    header = nib.Nifti2Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header.set_data_offset(544)
    raw = header.binaryblock + b"\0" * 4 + data
    return gzip.compress(raw) if gzipped else raw


@pytest.mark.parametrize("gzipped", [False, True])
def test_nifti2_claiming_10_to_the_11_voxels_is_refused_in_plain_words(tmp_path, gzipped):
    path = tmp_path / ("huge.nii.gz" if gzipped else "huge.nii")
    path.write_bytes(_nifti2((1, 1, 10**11), b"\0" * 64, gzipped))
    refused = refused_one(path)
    assert refused.reason.startswith("the header claims 200.0 GB of voxels (1 x 1 x 100000000000)")
    assert "refused before reading" in refused.reason


def test_nifti_refusals_have_a_reason(tmp_path):
    for name, data in (("garbage.nii", b"garbage" * 60), ("cut.nii", _nifti2((4, 4, 4))[:200]),
                       ("badgz.nii.gz", b"\x1f\x8b" + b"\0" * 100)):
        (tmp_path / name).write_bytes(data)
        refused = refused_one(tmp_path / name)
        assert refused.reason.strip() and "()" not in refused.reason, (name, refused.reason)
        (tmp_path / name).unlink()


def test_gzipped_nifti_is_streamed_and_matches_nibabel(tmp_path):
    import nibabel as nib

    values = (np.arange(7 * 6 * 5 * 2).reshape(7, 6, 5, 2) % 301).astype(np.int16)
    nib.save(nib.Nifti1Image(values, np.diag([0.7, 0.8, 2.0, 1.0])), tmp_path / "ok.nii.gz")
    (series,) = medviewer.scan(tmp_path / "ok.nii.gz", parallel=False).series
    volume = medviewer.load(series, parallel=False)
    assert volume.voxels.shape == (5, 6, 7)
    assert np.array_equal(volume.voxels, values[..., 0].transpose(2, 1, 0))
    assert "4D NIfTI (7, 6, 5, 2): showing the first volume" in series.warnings


def test_tiff_page_count_is_capped(tmp_path, monkeypatch):
    from PIL import Image

    import medviewer.core.raster as raster

    pages = [Image.fromarray(np.full((8, 8), k, dtype=np.uint8)) for k in range(6)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    (series,) = medviewer.scan(tmp_path / "stack.tif", parallel=False).series
    assert series.first.frames == 6
    monkeypatch.setattr(raster, "MAX_PAGES", 5)
    refused = refused_one(tmp_path / "stack.tif")
    assert refused.reason == "picture has 6 pages, more than 5 are not read"


def test_tiff_pages_claiming_more_than_the_file_can_hold(tmp_path):
    from PIL import Image

    page = Image.fromarray(np.zeros((12000, 12000), dtype=np.uint8))
    page.save(tmp_path / "bomb.tif", save_all=True, append_images=[page] * 3, compression="tiff_adobe_deflate")
    refused = refused_one(tmp_path / "bomb.tif")
    assert refused.reason.startswith("picture claims ") and "refused before decoding" in refused.reason


# --- ZIP archives: streamed, capped, names checked -----------------------------------------------


def test_zip_bomb_member_is_refused_unread(tmp_path, pydicom_file):
    import zipfile

    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(pydicom_file("CT_small.dcm"), "ct.dcm")
        with zf.open("bomb.dcm", "w", force_zip64=True) as member:
            block = b"\0" * (1 << 20)
            for _ in range(200):  # 200 MB of zeros in ~200 kB
                member.write(block)
    result = medviewer.scan(archive, parallel=False)
    assert [s.modality for s in result.series] == ["CT"]
    (refused,) = result.refused
    assert refused.path == f"{archive}!/bomb.dcm"
    assert "a ZIP bomb, not read" in refused.reason


def test_zip_names_that_escape_are_refused(tmp_path, pydicom_file):
    import zipfile

    archive = tmp_path / "traversal.zip"
    data = Path(pydicom_file("CT_small.dcm")).read_bytes()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/ct.dcm", data)
        zf.writestr("../../evil.dcm", data)
        zf.writestr("/etc/evil.dcm", data)
        zf.writestr("a/../../evil2.dcm", data)
    result = medviewer.scan(archive, parallel=False)
    assert len(result.series) == 1 and len(result.series[0].instances) == 1
    assert sorted(r.path.split("!/")[1] for r in result.refused) == ["../../evil.dcm", "/etc/evil.dcm",
                                                                     "a/../../evil2.dcm"]
    assert all("unsafe path in ZIP archive" in r.reason for r in result.refused)


def test_zip_of_many_members_is_read_once_not_per_member(tmp_path, pydicom_file, monkeypatch):
    import zipfile

    import medviewer.core.sources as sources

    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ct.dcm", Path(pydicom_file("CT_small.dcm")).read_bytes())
        for k in range(3000):
            zf.writestr(f"junk/{k:05d}.txt", b"x")
    opened = []
    real = zipfile.ZipFile
    monkeypatch.setattr(sources.zipfile, "ZipFile", lambda *a, **k: opened.append(a) or real(*a, **k))
    sources._archives.clear()
    result = medviewer.scan(archive, parallel=False)
    assert [s.modality for s in result.series] == ["CT"] and len(result.refused) == 3000
    assert len(opened) == 1  # the central directory is read once, not once per member
    monkeypatch.setattr(sources, "MAX_ZIP_MEMBERS", 1000)
    sources._archives.clear()
    (refused,) = medviewer.scan(archive, parallel=False).refused
    assert refused.reason == "ZIP archive has 3001 members, more than 1000 are not read"


# --- nesting is bounded --------------------------------------------------------------------------


def nested_sequences(depth: int) -> bytes:
    """``depth`` sequences each holding one item holding the next, explicit VR little endian."""
    sq = b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff"
    item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    ends = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    return (sq + item) * depth + ends * depth


@pytest.mark.parametrize("parallel", [False, True])
def test_ten_thousand_nested_sequences_are_a_refusal_not_a_recursion_error(tmp_path, pydicom_file, parallel):
    data = Path(pydicom_file("CT_small.dcm")).read_bytes()
    at = data.find(b"\x08\x00\x20\x00DA")  # before StudyDate, in tag order
    folder = tmp_path / "nested"
    folder.mkdir()
    for k in range(1 if not parallel else 50):
        (folder / f"nested{k}.dcm").write_bytes(data[:at] + nested_sequences(10_000) + data[at:])
    shutil.copy(pydicom_file("CT_small.dcm"), folder / "good.dcm")
    result = medviewer.scan(folder, parallel=parallel)
    assert [s.modality for s in result.series] == ["CT"]
    assert {r.reason for r in result.refused} == {"nesting too deep (sequences within sequences), not read"}


def test_unknown_vr_inside_the_voi_lut_sequence_still_opens_the_image(tmp_path, capfd):
    """The VOI LUT is read only at load time, after the header scan: a bad VR there drops the LUT, not the file."""
    from pydicom.data import get_testdata_file

    data = Path(get_testdata_file("vlut_04.dcm")).read_bytes()  # pydicom-data's wheel holds it
    at = data.find(b"\x28\x00\x02\x30US")  # (0028,3002) LUT Descriptor
    assert at > 0
    path = tmp_path / "bad-lut-vr.dcm"
    path.write_bytes(data[:at + 4] + b"ZZ" + data[at + 6:])
    result = medviewer.scan(path, parallel=False)
    (series,) = result.series
    volume = medviewer.load(series, parallel=False)
    assert volume.voi_lut is None and volume.voxels.shape[-2:] == (512, 512)
    assert cli_main(["info", str(path)]) == 0
    _no_traceback(capfd.readouterr())


def test_a_header_that_breaks_only_when_loaded_refuses_that_series(writer, monkeypatch):
    from medviewer.core.errors import LoadError

    load_module = importlib.import_module("medviewer.core.load")

    writer.write(2)
    series = medviewer.scan(writer.folder, parallel=False).series[0]

    def broken(*args, **kwargs):
        raise NotImplementedError("Unknown Value Representation 'ZZ' in tag (0028,1050)")

    monkeypatch.setattr(load_module, "_make_volume", broken)
    with pytest.raises(LoadError, match=r"header could not be read \(NotImplementedError: Unknown Value"):
        medviewer.load(series, parallel=False)


def _hang_decode_job(instance, frames):
    """Stands in for the pool's decode job: stuck, as a codec looping in native code would be."""
    time.sleep(3600)


def _hang_on_bad_reads(sources):
    from medviewer.core.reader import read_instance

    if any(os.path.basename(s.path).startswith("hang") for s in sources):
        time.sleep(3600)
    return [read_instance(s, keep_header=False) for s in sources]


@needs_pool
def test_a_hung_decoder_is_killed_and_the_file_refused_in_plain_words(pydicom_file, monkeypatch, capfd):
    load_module = importlib.import_module("medviewer.core.load")
    from medviewer.core.errors import LoadError

    monkeypatch.setenv("MEDVIEWER_TASK_TIMEOUT", "1.5")
    (series,) = medviewer.scan(pydicom_file("MR_small_RLE.dcm"), parallel=False).series
    monkeypatch.setattr(load_module, "decode_job", _hang_decode_job)
    started = time.monotonic()
    with pytest.raises(LoadError) as caught:
        medviewer.load(series)
    assert caught.value.reason == "could not be decoded (the decoder did not finish within 1.5 s)"
    assert time.monotonic() - started < 60  # not a hang (a generous bound, not a timing figure)
    path = pydicom_file("MR_small_RLE.dcm")
    assert cli_main(["info", path]) == 1
    assert capfd.readouterr().err.strip().splitlines() == [
        f"medviewer: {path}: could not be decoded (the decoder did not finish within 1.5 s)"]
    monkeypatch.undo()
    assert medviewer.load(series).voxels.shape == (1, 64, 64)  # fresh processes decode again


@needs_pool
def test_a_file_that_hangs_the_reader_is_refused_and_the_scan_goes_on(damaged_and_intact, pydicom_file, monkeypatch):
    scan_module = importlib.import_module("medviewer.core.scan")

    monkeypatch.setenv("MEDVIEWER_TASK_TIMEOUT", "1.5")
    shutil.copy(pydicom_file("CT_small.dcm"), damaged_and_intact / "hang.dcm")
    monkeypatch.setattr(scan_module, "read_instances", _hang_on_bad_reads)
    result = medviewer.scan(damaged_and_intact)
    assert [len(s.instances) for s in result.series] == [5]
    hung = [r for r in result.refused if r.path.endswith("hang.dcm")]
    assert [r.reason for r in hung] == ["could not be read (the reader did not finish within 1.5 s on this file)"]
    assert len(result.refused) == 61
