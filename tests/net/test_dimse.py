"""DIMSE against a real Orthanc: echo, find at each level, get, move, send, through the module and the CLI,
and the failures users meet (rejected AE, no listener, a silent peer, an unsupported service, 0xA801,
an unknown destination, a busy listening port), plus cancel mid-retrieve."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from medviewer.cli import main as cli_main
from medviewer.core.errors import Cancelled
from medviewer.net import dimse
from medviewer.net.dimse import NetError
from medviewer.net.nodes import NetSettings, Node, SettingsError, load_settings, save_settings


def make_series(folder: Path, count: int, patient: str = "NET^TEST", date: str = "20240315",
                study: str | None = None) -> list[Path]:
    """``count`` CT slices (CT_small's header and pixels, each with its own UIDs, position and pixel offset),
    a new series in ``study`` (a new study by default)."""
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    study, series = study or generate_uid(), generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        ds = source.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientName, ds.PatientID, ds.StudyDate = patient, patient.replace("^", ""), date
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0, 0, 5.0 * k]
        pixels = ds.pixel_array.astype(np.int16) + k
        ds.PixelData = pixels.tobytes()
        path = folder / f"{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture
def settings(orthanc) -> NetSettings:
    return NetSettings(ae_title=orthanc.our_aet, port=orthanc.our_port, timeout_s=5)


@pytest.fixture
def node(orthanc) -> Node:
    return Node("orthanc", orthanc.aet, "127.0.0.1", orthanc.dicom_port)


@pytest.fixture
def nodes_file(tmp_path, orthanc, settings, node) -> Path:
    settings.nodes = [node]
    return save_settings(settings, tmp_path / "pacs.json")


@pytest.fixture
def stored(orthanc, tmp_path, settings, node) -> list[Path]:
    orthanc.clear()
    paths = make_series(tmp_path / "series", 6)
    result = dimse.send(node, settings, paths)
    assert len(result.sent) == 6 and not result.failed
    return paths


def _uids(paths) -> dict[str, bytes]:
    out = {}
    for path in paths:
        ds = pydicom.dcmread(path)
        out[str(ds.SOPInstanceUID)] = ds.PixelData
    return out


def test_echo(node, settings, nodes_file, capsys):
    assert dimse.echo(node, settings) > 0
    assert cli_main(["pacs", "echo", "--nodes", str(nodes_file), "--node", "orthanc"]) == 0
    assert "C-ECHO answered" in capsys.readouterr().out


def test_send_then_find_at_every_level(stored, node, settings, nodes_file, capsys):
    (study,) = dimse.find(node, settings, "STUDY", patient_name="NET^*", date="20240301-20240331", modality="CT")
    source = pydicom.dcmread(stored[0])
    assert study["StudyInstanceUID"] == source.StudyInstanceUID
    assert study["NumberOfStudyRelatedInstances"] == "6"
    assert dimse.find(node, settings, "STUDY", date="20250101-") == []
    (series,) = dimse.find(node, settings, "SERIES", study_uid=study["StudyInstanceUID"])
    assert series["SeriesInstanceUID"] == source.SeriesInstanceUID and series["Modality"] == "CT"
    (patient,) = dimse.find(node, settings, "PATIENT", patient_id="NETTEST")
    assert patient["PatientName"] == "NET^TEST"
    code = cli_main(["pacs", "find", "--nodes", str(nodes_file), "--node", "orthanc", "--patient-name", "NET*",
                     "--json"])
    assert code == 0
    assert [m["StudyInstanceUID"] for m in json.loads(capsys.readouterr().out)] == [source.StudyInstanceUID]


def test_get_brings_every_instance_whole(stored, node, settings, tmp_path, nodes_file, capsys):
    study = str(pydicom.dcmread(stored[0]).StudyInstanceUID)
    seen = []
    result = dimse.get(node, settings, study, tmp_path / "cache", progress=lambda d, t: seen.append((d, t)))
    assert (result.completed, result.failed, result.warning) == (6, 0, 0)
    assert _uids(result.files) == _uids(stored)
    assert seen[-1] == (6, 6)
    assert not list((tmp_path / "cache").rglob("*.part"))
    assert cli_main(["pacs", "get", "--nodes", str(nodes_file), "--node", "orthanc", "--study", study,
                     "--out", str(tmp_path / "cli-cache")]) == 0
    assert "6 completed, 0 failed" in capsys.readouterr().out


def test_move_to_our_own_listener(stored, node, settings, tmp_path):
    first = pydicom.dcmread(stored[0])
    result = dimse.move(node, settings, str(first.StudyInstanceUID), tmp_path / "cache",
                        series_uid=str(first.SeriesInstanceUID))
    assert result.completed == 6 and _uids(result.files) == _uids(stored)
    folder = tmp_path / "cache" / str(first.StudyInstanceUID) / str(first.SeriesInstanceUID)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{u}.dcm" for u in _uids(stored))


def test_send_decompresses_what_the_pacs_does_not_take_and_counts_what_is_not_dicom(
        orthanc, node, settings, tmp_path, nodes_file, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    result = dimse.send(node, settings, [get_testdata_file("MR_small_RLE.dcm"), text])
    assert len(result.sent) == 1 and len(result.failed) == 1 and "not a DICOM file" in result.failed[0]
    if result.warnings:  # Orthanc builds differ in the compressed syntaxes they accept
        assert "sent decompressed" in result.warnings[0]
    code = cli_main(["pacs", "send", "--nodes", str(nodes_file), "--node", "orthanc", str(text)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "not sent" in err and "Traceback" not in err


# --- failures, in plain words ---------------------------------------------------------------------


def test_unknown_calling_ae_is_rejected_in_plain_words(node, orthanc):
    stranger = NetSettings(ae_title="STRANGER", port=orthanc.our_port, timeout_s=5)
    with pytest.raises(NetError, match=r"association rejected: Calling AE title not recognised.*is STRANGER "
                                       r"configured in the PACS"):
        dimse.echo(node, stranger)


def test_no_listener(settings, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(NetError, match=r"no DICOM listener at 127\.0\.0\.1:\d+ \(connection refused\)"):
            dimse.echo(Node("gone", "GONE", "127.0.0.1", port), settings)
        code = cli_main(["pacs", "echo", "--aet", "GONE", "--host", "127.0.0.1", "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 1 and err.strip().splitlines() == [
        f"medviewer: GONE (GONE@127.0.0.1:{port}): no DICOM listener at 127.0.0.1:{port} (connection refused)"]


def test_a_peer_that_never_answers_times_out(settings):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        settings.timeout_s = 1
        started = time.monotonic()
        with pytest.raises(NetError, match=r"no answer to the association request within 1 s"):
            dimse.echo(Node("mute", "MUTE", "127.0.0.1", port), settings)
        assert time.monotonic() - started < 30  # bounded, not a hang (a generous bound, not a timing figure)


@pytest.fixture
def fake_pacs():
    """A pynetdicom SCP that answers echo and C-MOVE (destination always unknown: 0xA801), and supports no C-FIND."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove, Verification

    def on_move(event):
        yield None, None  # the destination is unknown here: pynetdicom answers 0xA801

    ae = AE(ae_title="FAKE")
    ae.add_supported_context(Verification)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelMove)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_MOVE, on_move)])
    yield Node("fake", "FAKE", "127.0.0.1", server.server_address[1])
    server.shutdown()


def test_move_destination_unknown_0xA801(fake_pacs, tmp_path):
    settings = NetSettings(ae_title="MEDVIEWER", port=_free_port(), timeout_s=5)
    with pytest.raises(NetError, match=r"does not know the destination AE MEDVIEWER \(0xA801\): add MEDVIEWER "
                                       r"with this computer's address and port \d+"):
        dimse.move(fake_pacs, settings, "1.2.3", tmp_path / "cache")


def test_a_service_the_pacs_does_not_offer(fake_pacs):
    with pytest.raises(NetError, match=r"does not support Study Root Query/Retrieve .*FIND.*no accepted "
                                       r"presentation context"):
        dimse.find(fake_pacs, NetSettings(timeout_s=5), "STUDY")


def test_move_to_a_destination_the_pacs_does_not_know(stored, node, settings, tmp_path):
    study = str(pydicom.dcmread(stored[0]).StudyInstanceUID)
    with pytest.raises(NetError, match=r"C-MOVE failed with status 0x[0-9A-F]{4} .*NOBODY"):
        dimse.move(node, settings, study, tmp_path / "cache", destination="NOBODY")


def test_listening_port_in_use(stored, node, settings, tmp_path):
    settings.port = _free_port()
    with socket.socket() as busy:
        busy.bind(("", settings.port))
        busy.listen(1)
        with pytest.raises(NetError, match=r"cannot listen for C-MOVE results .*choose another port"):
            dimse.move(node, settings, "1.2.3", tmp_path / "cache")


def test_cancel_mid_retrieve_leaves_only_whole_files(stored, node, settings, tmp_path):
    cancel = threading.Event()
    study = str(pydicom.dcmread(stored[0]).StudyInstanceUID)

    def progress(done, total):
        if done >= 2:
            cancel.set()

    with pytest.raises(Cancelled):
        dimse.get(node, settings, study, tmp_path / "cache", progress=progress, cancel=cancel)
    files = list((tmp_path / "cache").rglob("*"))
    assert not [p for p in files if p.name.endswith(".part")]
    for path in (p for p in files if p.is_file()):
        assert pydicom.dcmread(path).PixelData  # every file there is whole
    # the association was given up cleanly: the next operation works
    assert dimse.echo(node, settings) > 0


# --- settings -------------------------------------------------------------------------------------


def test_settings_round_trip_and_bad_files(tmp_path):
    settings = NetSettings(ae_title="WS1", port=11113, nodes=[Node("pacs", "PACS", "10.0.0.5", 4242),
                                                              Node("web", url="https://pacs.example/dicom-web")])
    path = save_settings(settings, tmp_path / "pacs.json")
    assert load_settings(path) == settings
    assert load_settings(tmp_path / "missing.json") == NetSettings()
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SettingsError, match="is not valid JSON"):
        load_settings(tmp_path / "bad.json")
    (tmp_path / "ae.json").write_text(json.dumps({"ae_title": "A" * 17}))
    with pytest.raises(SettingsError, match="is not 1 to 16 plain characters"):
        load_settings(tmp_path / "ae.json")
    with pytest.raises(SettingsError, match="not configured"):
        settings.node("nope")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
