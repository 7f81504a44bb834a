"""One entry point per operation for either kind of node: DIMSE (AE title, host, port) or DICOMweb (URL).

The GUI and the CLI call these; C-MOVE exists only for DIMSE nodes (DICOMweb retrieves with WADO-RS).
"""

from __future__ import annotations

from medviewer.net import dimse, web
from medviewer.net.dimse import NetError, RetrieveResult, SendResult
from medviewer.net.nodes import NetSettings, Node

__all__ = ["NetError", "RetrieveResult", "SendResult", "echo", "find", "get", "move", "send"]


def _of(node: Node):
    return web if node.is_dicomweb else dimse


def echo(node: Node, settings: NetSettings) -> float:
    return _of(node).echo(node, settings)


def find(node: Node, settings: NetSettings, level: str = "STUDY", **filters) -> list[dict]:
    return _of(node).find(node, settings, level, **filters)


def get(node: Node, settings: NetSettings, study_uid: str, cache_dir, **options) -> RetrieveResult:
    """C-GET from a DIMSE node, WADO-RS from a DICOMweb node."""
    return _of(node).get(node, settings, study_uid, cache_dir, **options)


def move(node: Node, settings: NetSettings, study_uid: str, cache_dir, **options) -> RetrieveResult:
    if node.is_dicomweb:
        return web.get(node, settings, study_uid, cache_dir, **{k: v for k, v in options.items()
                                                                   if k != "destination"})
    return dimse.move(node, settings, study_uid, cache_dir, **options)


def send(node: Node, settings: NetSettings, paths, **options) -> SendResult:
    return _of(node).send(node, settings, paths, **options)
