"""Start a real Orthanc on 127.0.0.1 with a configuration written here (network tests and benchmarks).

Orthanc knows MedViewer's AE (``MEDVIEWER`` on a free port) as a modality, so C-MOVE can send to it,
and rejects unknown calling AE titles. Its HTTP port needs a registered user (DICOMweb tests).
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class OrthancServer:
    aet: str
    dicom_port: int
    http_port: int
    our_aet: str
    our_port: int
    user: str
    password: str
    folder: Path

    def http(self, path: str, method: str = "GET", data: bytes | None = None):
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method)
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = answer.read()
        return json.loads(body) if body else None

    def clear(self) -> None:
        for patient in self.http("/patients"):
            self.http(f"/patients/{patient}", method="DELETE")


class OrthancNotInstalled(RuntimeError):
    pass


def start_orthanc(folder: Path) -> tuple[OrthancServer, subprocess.Popen]:
    """Orthanc with free ports in ``folder``; returns once it answers HTTP (RuntimeError after 60 s)."""
    if not Path(ORTHANC).exists():
        raise OrthancNotInstalled("Orthanc is not installed (Debian package 'orthanc'; .ci/run installs it)")
    server = OrthancServer(aet="ORTHANC", dicom_port=free_port(), http_port=free_port(), our_aet="MEDVIEWER",
                           our_port=free_port(), user="alice", password="wonderland", folder=folder)
    config = {
        "Name": "medviewer-tests", "DicomAet": server.aet, "DicomPort": server.dicom_port,
        "HttpPort": server.http_port, "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "RemoteAccessAllowed": False, "AuthenticationEnabled": True,
        "RegisteredUsers": {server.user: server.password},
        "DicomModalities": {"medviewer": [server.our_aet, "127.0.0.1", server.our_port]},
        "DicomAlwaysAllowEcho": False, "DicomAlwaysAllowStore": False, "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowGet": False, "DicomAlwaysAllowMove": False, "DicomCheckModalityHost": False,
        "DicomScuTimeout": 10, "StableAge": 1, "HttpTimeout": 10,
        "Plugins": [DICOMWEB_PLUGIN] if Path(DICOMWEB_PLUGIN).exists() else [],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "orthanc.json").write_text(json.dumps(config))
    with open(folder / "orthanc.log", "wb") as log:
        process = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            server.http("/system")
            return server, process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"Orthanc did not start: {(folder / 'orthanc.log').read_text()[-2000:]}") from None
            time.sleep(0.2)


def stop_orthanc(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
