"""DICOMweb with a PACS through dicomweb-client: QIDO-RS (search), WADO-RS (retrieve), STOW-RS (store).

The same contract as :mod:`medviewer.net.dimse`: matches as dicts with the same keys, retrieved
instances written whole into the study cache by UIDs, every failure a :class:`NetError` in plain words
(no server, not authorised, not found, timeout), bounded by the settings' timeout.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from medviewer.core.errors import Cancelled, CancelToken, is_cancelled
from medviewer.net.dimse import (
    _FIND_KEYS,
    NetError,
    ProgressCallback,
    RetrieveResult,
    SendResult,
    _text,
    write_instance,
)
from medviewer.net.nodes import NetSettings, Node

_QIDO_KEYS = {"patient_name": "PatientName", "patient_id": "PatientID", "date": "StudyDate",
              "accession": "AccessionNumber", "study_uid": "StudyInstanceUID"}


def _session():
    import requests

    class Session(requests.Session):
        """Sends ``*`` in query values as itself: a legal sub-delimiter in a query, and some servers (Orthanc's
        DICOMweb plugin) match the percent-encoded ``%2A`` that dicomweb-client writes literally."""

        def send(self, request, **kwargs):
            if request.url and "%2A" in request.url:
                request.url = request.url.replace("%2A", "*")
            return super().send(request, **kwargs)

    return Session()


def _wildcards(pattern: str) -> str:
    """A person-name pattern a server can match without percent-decoding: ``^`` and ``?`` widen to ``*``
    (the matches are narrowed again here with :func:`_matches`)."""
    return pattern.replace("^", "*").replace("?", "*")


def _matches(pattern: str, value: str) -> bool:
    from fnmatch import fnmatchcase

    return not pattern or fnmatchcase(value.upper(), pattern.upper())


def _client(node: Node, settings: NetSettings):
    from dicomweb_client import DICOMwebClient

    session = _session()
    if node.user:
        session.auth = (node.user, node.password)
    headers = {"Authorization": f"Bearer {node.token}"} if node.token else None
    client = DICOMwebClient(url=node.url.rstrip("/"), session=session, headers=headers, timeout=settings.timeout_s)
    # One attempt per request: a server that is not there is said at once, not after a minute of backing off.
    client.set_http_retry_params(retry=False)
    return client


def _plain(node: Node, exc: Exception) -> NetError:
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        code = exc.response.status_code
        words = {401: "not authorised: check the user and password or the token",
                 403: "forbidden for this user", 404: "not found on the server",
                 406: "the server cannot send any of the media types asked for",
                 415: "the server does not accept this media type"}.get(code, exc.response.reason or "failed")
        return NetError(str(node), f"HTTP {code}: {words}")
    if isinstance(exc, requests.Timeout):
        return NetError(str(node), "the DICOMweb server did not answer in time")
    if isinstance(exc, requests.ConnectionError):
        return NetError(str(node), f"no DICOMweb server answers at {node.url} (connection failed)")
    return NetError(str(node), f"DICOMweb request failed ({type(exc).__name__}: {exc})")


def echo(node: Node, settings: NetSettings) -> float:
    """A one-study QIDO-RS search as the web counterpart of C-ECHO; returns seconds."""
    started = time.perf_counter()
    try:
        _client(node, settings).search_for_studies(limit=1)
    except Exception as exc:  # noqa: BLE001 - requests and dicomweb-client raise many kinds
        raise _plain(node, exc) from None
    return time.perf_counter() - started


def find(node: Node, settings: NetSettings, level: str = "STUDY", *, patient_name: str = "", patient_id: str = "",
         date: str = "", modality: str = "", accession: str = "", study_uid: str = "",
         cancel: CancelToken | None = None, limit: int = 10_000) -> list[dict]:
    level = level.upper()
    if level not in _FIND_KEYS:
        raise NetError(str(node), f"query level {level!r} is not PATIENT, STUDY or SERIES")
    filters = {key: value for name, key in _QIDO_KEYS.items()
               if (value := {"patient_name": patient_name, "patient_id": patient_id, "date": date,
                             "accession": accession, "study_uid": study_uid}[name])}
    if modality:
        filters["ModalitiesInStudy" if level != "SERIES" else "Modality"] = modality
    if "PatientName" in filters:
        filters["PatientName"] = _wildcards(filters["PatientName"])
    client = _client(node, settings)
    try:
        if level == "SERIES":
            if not study_uid:
                raise NetError(str(node), "a series query needs the study (its StudyInstanceUID)")
            filters.pop("StudyInstanceUID", None)
            found = client.search_for_series(study_uid, search_filters=filters or None, limit=limit,
                                             fields=_FIND_KEYS[level])
        else:
            found = client.search_for_studies(search_filters=filters or None, limit=limit, fields=_FIND_KEYS[level])
    except NetError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _plain(node, exc) from None
    if is_cancelled(cancel):
        raise Cancelled("query cancelled")
    matches = []
    seen_patients = set()
    for item in found:
        ds = Dataset.from_json(item)
        match = {k: _text(ds.get(k)) for k in _FIND_KEYS[level]}
        if level != "SERIES" and not _matches(patient_name, match.get("PatientName", "")):
            continue
        if level == "PATIENT":  # QIDO-RS has no patient level: one row per patient of the matching studies
            if match["PatientID"] in seen_patients:
                continue
            seen_patients.add(match["PatientID"])
        matches.append(match)
    return matches


def get(node: Node, settings: NetSettings, study_uid: str, cache_dir: str | os.PathLike, *,
        series_uid: str | None = None, progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None) -> RetrieveResult:
    """WADO-RS a study or series into the cache, instance by instance as they stream in."""
    client = _client(node, settings)
    result = RetrieveResult()
    total = 0
    try:
        found = (client.search_for_series(study_uid, search_filters={"SeriesInstanceUID": series_uid},
                                          fields=["NumberOfSeriesRelatedInstances"]) if series_uid else
                 client.search_for_studies(search_filters={"StudyInstanceUID": study_uid},
                                           fields=["NumberOfStudyRelatedInstances"]))
        key = "NumberOfSeriesRelatedInstances" if series_uid else "NumberOfStudyRelatedInstances"
        total = sum(int(Dataset.from_json(item).get(key, 0) or 0) for item in found)
        stream = client.iter_series(study_uid, series_uid) if series_uid else client.iter_study(study_uid)
        for ds in stream:
            if is_cancelled(cancel):
                raise Cancelled("WADO-RS retrieve cancelled")
            try:
                result.files.append(write_instance(Path(cache_dir), ds))
                result.completed += 1
            except OSError as exc:
                result.failed += 1
                result.not_stored.append(f"cannot be written to the cache ({exc.strerror or exc})")
            if progress:
                progress(result.completed + result.failed, max(total, result.completed + result.failed))
    except (Cancelled, NetError):
        raise
    except Exception as exc:  # noqa: BLE001
        raise _plain(node, exc) from None
    if result.total == 0:
        raise NetError(str(node), f"the server holds no instances of {series_uid or study_uid}")
    result.files.sort()
    return result


def send(node: Node, settings: NetSettings, paths: Iterable[str | os.PathLike], *,
         progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
         batch: int = 20) -> SendResult:
    """STOW-RS the files in batches; a file that is not DICOM is counted as failed with the reason."""
    result = SendResult()
    readable: list[tuple[Path, Dataset]] = []
    for path in map(Path, paths):
        try:
            readable.append((path, dcmread(path)))
        except Exception as exc:  # noqa: BLE001
            result.failed.append(f"{path}: not a DICOM file that can be sent ({type(exc).__name__})")
    client = _client(node, settings)
    for start in range(0, len(readable), batch):
        if is_cancelled(cancel):
            raise Cancelled("send cancelled")
        chunk = readable[start:start + batch]
        try:
            answer = client.store_instances([ds for _, ds in chunk])
        except Exception as exc:  # noqa: BLE001
            error = _plain(node, exc)
            result.failed += [f"{path}: {error.reason}" for path, _ in chunk]
            continue
        refused = {str(item.get("ReferencedSOPInstanceUID", ""))
                   for item in answer.get("FailedSOPSequence", []) or []}
        for path, ds in chunk:
            if str(ds.SOPInstanceUID) in refused:
                result.failed.append(f"{path}: refused by the server")
            else:
                result.sent.append(str(path))
        if progress:
            progress(min(start + batch, len(readable)), len(readable))
    return result
