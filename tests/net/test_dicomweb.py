"""DICOMweb against the real Orthanc's DICOMweb plugin: STOW-RS, QIDO-RS, WADO-RS through the module and the
CLI, with the same contract as DIMSE; a wrong password and a missing server in plain words."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pydicom
import pytest

from medviewer.cli import main as cli_main
from medviewer.net import service
from medviewer.net.dimse import NetError
from medviewer.net.nodes import NetSettings, Node
from tests.net.test_dimse import make_series


@pytest.fixture
def web(orthanc) -> Node:
    if not orthanc.http("/plugins").count("dicom-web"):
        pytest.skip("Orthanc's DICOMweb plugin (Debian package orthanc-dicomweb) is not installed")
    return Node("web", url=f"http://127.0.0.1:{orthanc.http_port}/dicom-web", user=orthanc.user,
                password=orthanc.password)


@pytest.fixture
def settings() -> NetSettings:
    return NetSettings(timeout_s=10)


def test_stow_qido_wado_round_trip(orthanc, web, settings, tmp_path):
    orthanc.clear()
    paths = make_series(tmp_path / "series", 3, patient="WEB^TEST")
    text = tmp_path / "readme.txt"
    text.write_text("not an image")
    sent = service.send(web, settings, [*paths, text])
    assert len(sent.sent) == 3 and len(sent.failed) == 1 and "not a DICOM file" in sent.failed[0]
    assert service.echo(web, settings) > 0
    (study,) = service.find(web, settings, "STUDY", patient_name="WEB*")
    first = pydicom.dcmread(paths[0])
    assert study["StudyInstanceUID"] == first.StudyInstanceUID and study["NumberOfStudyRelatedInstances"] == "3"
    (series,) = service.find(web, settings, "SERIES", study_uid=study["StudyInstanceUID"])
    assert series["SeriesInstanceUID"] == first.SeriesInstanceUID
    assert [p["PatientID"] for p in service.find(web, settings, "PATIENT", patient_id="WEBTEST")] == ["WEBTEST"]
    seen = []
    result = service.get(web, settings, study["StudyInstanceUID"], tmp_path / "cache",
                         progress=lambda d, t: seen.append((d, t)))
    assert result.completed == 3 and seen[-1] == (3, 3)
    got = {str(pydicom.dcmread(p).SOPInstanceUID): pydicom.dcmread(p).PixelData for p in result.files}
    want = {str(pydicom.dcmread(p).SOPInstanceUID): pydicom.dcmread(p).PixelData for p in paths}
    assert got == want
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_cli_with_a_url(orthanc, web, tmp_path, capsys):
    orthanc.clear()
    paths = make_series(tmp_path / "series", 2, patient="CLIWEB^TEST")
    base = ["--url", web.url, "--user", web.user, "--password", web.password]
    assert cli_main(["pacs", "send", *base, str(tmp_path / "series")]) == 0
    assert cli_main(["pacs", "find", *base, "--json"]) == 0
    out = capsys.readouterr().out
    study = json.loads(out[out.index("["):])[0]["StudyInstanceUID"]
    assert study == pydicom.dcmread(paths[0]).StudyInstanceUID
    assert cli_main(["pacs", "get", *base, "--study", study, "--out", str(tmp_path / "cache")]) == 0
    assert len(list(Path(tmp_path / "cache").rglob("*.dcm"))) == 2


def test_wrong_password_and_no_server(orthanc, web, settings, capsys):
    bad = Node("web", url=web.url, user=web.user, password="wrong")
    with pytest.raises(NetError, match=r"HTTP 401: not authorised: check the user and password or the token"):
        service.find(bad, settings, "STUDY")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        gone = Node("gone", url=f"http://127.0.0.1:{port}/dicom-web")
        with pytest.raises(NetError, match=r"no DICOMweb server answers at .* \(connection failed\)"):
            service.echo(gone, settings)
        code = cli_main(["pacs", "echo", "--url", gone.url])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_study_arrives_series_by_series_over_wado(orthanc, web, settings, tmp_path):
    """The viewer's retrieve: QIDO-RS lists the series, WADO-RS brings them largest first, each handed over
    as soon as it is whole; progress counts over the whole study."""
    orthanc.clear()
    big = make_series(tmp_path / "a", 3, patient="WEB^SERIES")
    study = pydicom.dcmread(big[0]).StudyInstanceUID
    small = make_series(tmp_path / "b", 1, patient="WEB^SERIES", study=study)
    assert len(service.send(web, settings, big + small).sent) == 4
    arrivals, seen = [], []
    result = service.retrieve(web, settings, study, tmp_path / "cache", method="C-MOVE",
                              on_series=lambda folder, files: arrivals.append((Path(folder).name, len(files))),
                              progress=lambda d, t: seen.append((d, t)))
    assert arrivals == [(pydicom.dcmread(big[0]).SeriesInstanceUID, 3), (pydicom.dcmread(small[0]).SeriesInstanceUID, 1)]
    assert result.completed == 4 and len(result.files) == 4
    assert seen[-1] == (4, 4) and all(t == 4 for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
