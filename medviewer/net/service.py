"""One entry point per operation for either kind of node: DIMSE (AE title, host, port) or DICOMweb (URL).

The GUI and the CLI call these; C-MOVE exists only for DIMSE nodes (DICOMweb retrieves with WADO-RS).
"""

from __future__ import annotations

from medviewer.net import dimse, web
from medviewer.net.dimse import NetError, RetrieveResult, SendResult
from medviewer.net.nodes import NetSettings, Node

__all__ = ["NetError", "RetrieveResult", "SendResult", "echo", "find", "get", "move", "retrieve", "send",
           "study_series"]


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


def study_series(node: Node, settings: NetSettings, study_uid: str, cancel=None) -> list[tuple[str, int]]:
    """The study's series as (SeriesInstanceUID, instance count), the largest first (the series the viewer
    shows first); [] when the node does not answer a series-level query."""
    try:
        matches = find(node, settings, "SERIES", study_uid=study_uid, cancel=cancel)
    except NetError:
        return []
    series = []
    for match in matches:
        uid = match.get("SeriesInstanceUID", "")
        try:
            count = int(match.get("NumberOfSeriesRelatedInstances") or 0)
        except ValueError:
            count = 0
        if uid:
            series.append((uid, count))
    return sorted(series, key=lambda item: -item[1])


def retrieve(node: Node, settings: NetSettings, study_uid: str, cache_dir, *, method: str = "C-GET",
             series_uid: str | None = None, on_series=None, progress=None, cancel=None) -> RetrieveResult:
    """Retrieve a study series by series (largest first), calling ``on_series(folder, files)`` as each one
    is complete so that a viewer can open it while the rest arrive; progress counts instances over the whole
    study. ``method`` is "C-GET" or "C-MOVE" (a DICOMweb node always uses WADO-RS). A node that does not
    answer the series query is retrieved in one operation, the study opened at the end."""
    from pathlib import Path

    operation = get if method == "C-GET" else move
    cache = Path(cache_dir)
    plan = [(series_uid, 0)] if series_uid else study_series(node, settings, study_uid, cancel) or [(None, 0)]
    total = sum(count for _, count in plan)
    overall = RetrieveResult()
    for uid, count in plan:
        before = overall.total

        def step(done: int, of: int, before=before, count=count) -> None:
            if progress:
                progress(before + done, max(total, before + max(of, count)))

        result = operation(node, settings, study_uid, cache, series_uid=uid, progress=step, cancel=cancel)
        overall.completed += result.completed
        overall.failed += result.failed
        overall.warning += result.warning
        overall.files += result.files
        overall.not_stored += result.not_stored
        if on_series is not None and result.files:
            on_series(str(cache / dimse._name(study_uid) / dimse._name(uid)) if uid else
                      str(cache / dimse._name(study_uid)), result.files)
    overall.files.sort()
    return overall
