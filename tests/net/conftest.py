"""A real Orthanc on 127.0.0.1 for the network tests (see tests/net/orthanc.py): it knows MedViewer's AE
(``MEDVIEWER`` on a free port) as a modality, so C-MOVE can send to it, and rejects unknown calling AE
titles; its HTTP port needs a registered user."""

from __future__ import annotations

import pytest

from tests.net.orthanc import OrthancNotInstalled, OrthancServer, start_orthanc, stop_orthanc


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory) -> OrthancServer:
    try:
        server, process = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    except OrthancNotInstalled as exc:
        pytest.skip(str(exc))
    yield server
    stop_orthanc(process)
