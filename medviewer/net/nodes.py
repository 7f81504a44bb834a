"""PACS nodes and MedViewer's own network identity, kept in one small JSON file.

The file (``pacs.json`` in the user's configuration folder unless a path is given) holds MedViewer's
own AE title and listening port (the port a PACS sends C-MOVE results to) and the list of nodes::

    {"ae_title": "MEDVIEWER", "port": 11112, "timeout_s": 10,
     "nodes": [{"name": "pacs", "ae_title": "ORTHANC", "host": "10.0.0.5", "port": 4242},
               {"name": "web", "url": "https://pacs.example/dicom-web", "user": "alice", "password": "..."}]}

The GUI keeps the same settings in QSettings and converts with :meth:`NetSettings.to_json` /
:meth:`NetSettings.from_json`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medviewer.core.errors import MedViewerError

_AE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # 16 characters of the default repertoire, no backslash


class SettingsError(MedViewerError):
    """The node settings file (or a value given for a node) cannot be used."""


@dataclass
class Node:
    """A PACS: an AE title with host and port (DIMSE), or a DICOMweb base URL."""

    name: str
    ae_title: str = ""
    host: str = ""
    port: int = 104
    url: str = ""
    user: str = ""
    password: str = ""
    token: str = ""

    @property
    def is_dicomweb(self) -> bool:
        return bool(self.url)

    def __str__(self) -> str:
        if self.is_dicomweb:
            return f"{self.name} ({self.url})"
        return f"{self.name} ({self.ae_title}@{self.host}:{self.port})"

    def check(self) -> Node:
        where = f"PACS node {self.name or '(unnamed)'}"
        if self.is_dicomweb:
            if not re.match(r"^https?://", self.url):
                raise SettingsError(where, f"DICOMweb URL {self.url!r} does not start with http:// or https://")
            return self
        check_ae(self.ae_title, where)
        if not self.host:
            raise SettingsError(where, "no host")
        check_port(self.port, where)
        return self


def check_ae(title: str, where: str) -> str:
    if not _AE.match(title or "") or not title.strip():
        raise SettingsError(where, f"AE title {title!r} is not 1 to 16 plain characters")
    return title


def check_port(port, where: str) -> int:
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise SettingsError(where, f"port {port!r} is not a number from 1 to 65535")
    return port


@dataclass
class NetSettings:
    ae_title: str = "MEDVIEWER"
    port: int = 11112
    timeout_s: float = 10.0
    nodes: list[Node] = field(default_factory=list)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes) or "none"
        raise SettingsError(f"PACS node {name}", f"not configured (configured: {known})")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict, where: str = "PACS settings") -> NetSettings:
        if not isinstance(data, dict):
            raise SettingsError(where, "is not a JSON object")
        try:
            nodes = [Node(**item) for item in data.get("nodes", [])]
            settings = cls(ae_title=str(data.get("ae_title", "MEDVIEWER")), port=data.get("port", 11112),
                           timeout_s=float(data.get("timeout_s", 10.0)), nodes=nodes)
        except (TypeError, ValueError) as exc:
            raise SettingsError(where, f"unexpected content ({exc})") from None
        check_ae(settings.ae_title, where)
        check_port(settings.port, where)
        for node in nodes:
            node.check()
        return settings


def default_settings_path() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir("medviewer", appauthor=False)) / "pacs.json"


def load_settings(path: str | os.PathLike | None = None) -> NetSettings:
    """The settings at ``path`` (default :func:`default_settings_path`); defaults when that file is missing."""
    path = Path(path) if path is not None else default_settings_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return NetSettings()
    except OSError as exc:
        raise SettingsError(str(path), f"cannot be read ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise SettingsError(str(path), f"is not valid JSON ({exc})") from None
    return NetSettings.from_json(data, str(path))


def save_settings(settings: NetSettings, path: str | os.PathLike | None = None) -> Path:
    from medviewer.core.safe import write_bytes

    path = Path(path) if path is not None else default_settings_path()
    return write_bytes(path, json.dumps(settings.to_json(), indent=2).encode(), force=True)
