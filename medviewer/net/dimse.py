"""DIMSE with a PACS through pynetdicom: C-ECHO, C-FIND, C-GET, C-MOVE (to our own storage SCP) and C-STORE.

Every call is bounded by the settings' timeout (connection, association, each DIMSE message), so a
PACS that never answers costs seconds, never a hang. Every failure is a :class:`NetError` in plain
words naming the node: no listener, association rejected (with the PACS's reason), no answer,
no accepted presentation context, a refused or failed move destination (0xA801 and friends).
Sub-operations are counted in a :class:`RetrieveResult`.

Retrieved instances go into a study cache, one file per instance named by its UIDs
(``CACHE/StudyUID/SeriesUID/SOPInstanceUID.dcm``), each written to a temporary name and renamed into
place, so a cancelled or broken retrieve leaves only whole files. pynetdicom calls our handlers on
its own threads: callers that show progress (the GUI) must hand it to their own thread (Qt signals).
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from medviewer.core.errors import Cancelled, CancelToken, MedViewerError, is_cancelled
from medviewer.net.nodes import NetSettings, Node

ProgressCallback = Callable[[int, int], object]

# Status codes of C-MOVE/C-GET failures, in words (PS3.4 C.4.2.1.5 and C.4.3.1.4).
_RETRIEVE_FAILURES = {
    0xA701: "the PACS is out of resources to count the matches",
    0xA702: "the PACS is out of resources to perform the sub-operations",
    0xA801: "the PACS does not know the destination AE title",
    0xA900: "the identifier does not match the query model",
    0xAA00: "none of the sub-operations could be performed",
    0xC000: "the PACS could not process the request",
    0x0122: "the PACS does not support this query model",
    0x0124: "the PACS refused the request (not authorised)",
    0xFE00: "the retrieve was cancelled",
}

_FIND_KEYS = {
    "PATIENT": ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "NumberOfPatientRelatedStudies"],
    "STUDY": ["PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyDescription",
              "AccessionNumber", "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"],
    "SERIES": ["StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
               "NumberOfSeriesRelatedInstances"],
}


class NetError(MedViewerError):
    """A network operation failed; ``str()`` names the node and the reason in one line."""


@dataclass
class RetrieveResult:
    """What a C-GET or C-MOVE brought: sub-operations as the PACS counted them, the files we wrote."""

    completed: int = 0
    failed: int = 0
    warning: int = 0
    files: list[Path] = field(default_factory=list)
    not_stored: list[str] = field(default_factory=list)  # instances received but not written, with why

    @property
    def total(self) -> int:
        return self.completed + self.failed + self.warning


@dataclass
class SendResult:
    sent: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "path: reason"


# --- associations --------------------------------------------------------------------------------


def _reach(node: Node, timeout: float) -> None:
    """Fail fast and plainly when nothing listens, before pynetdicom's own (log-only) connection errors."""
    try:
        with socket.create_connection((node.host, node.port), timeout=timeout):
            pass
    except ConnectionRefusedError:
        raise NetError(str(node), f"no DICOM listener at {node.host}:{node.port} (connection refused)") from None
    except TimeoutError:
        raise NetError(str(node), f"{node.host}:{node.port} did not accept a connection within {timeout:g} s") from None
    except socket.gaierror as exc:
        raise NetError(str(node), f"unknown host {node.host!r} ({exc.strerror or exc})") from None
    except OSError as exc:
        raise NetError(str(node), f"{node.host}:{node.port} cannot be reached ({exc.strerror or exc})") from None


def _application_entity(settings: NetSettings) -> AE:
    ae = AE(ae_title=settings.ae_title)
    ae.acse_timeout = settings.timeout_s
    ae.dimse_timeout = settings.timeout_s
    ae.network_timeout = settings.timeout_s
    ae.connection_timeout = settings.timeout_s
    ae.maximum_pdu_size = 0  # no limit: large frames arrive in fewer PDUs
    return ae


@contextmanager
def association(node: Node, settings: NetSettings, contexts: Iterable[tuple[str, list[str]]], *,
                ext_neg=None, handlers=None):
    """An established association with ``node`` proposing ``contexts`` ((abstract syntax, transfer
    syntaxes) pairs); released (or aborted) on leaving. Raises :class:`NetError` in plain words."""
    if node.is_dicomweb:
        raise NetError(str(node), "is a DICOMweb node: DIMSE operations need an AE title, host and port")
    contexts = list(contexts)
    _reach(node, settings.timeout_s)
    ae = _application_entity(settings)
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, syntaxes)
    answer: dict[str, str] = {}

    def on_acse(event) -> None:
        primitive = getattr(event, "primitive", None)
        if getattr(primitive, "result", None) == 0x00:
            answer["accepted"] = "yes"
        if getattr(primitive, "result", None) in (0x01, 0x02):
            answer["reason"] = f"{primitive.reason_str} ({primitive.source_str}, {primitive.result_str})"

    assoc = ae.associate(node.host, node.port, ae_title=node.ae_title, ext_neg=ext_neg,
                         evt_handlers=list(handlers or []) + [(evt.EVT_ACSE_RECV, on_acse)])
    if assoc.is_rejected:
        reason = answer.get("reason", "no reason given")
        raise NetError(str(node), f"association rejected: {reason}; is {settings.ae_title} configured in the PACS, "
                                  f"and is {node.ae_title} its AE title?")
    if not assoc.is_established and answer.get("accepted"):
        from pydicom.uid import UID

        names = ", ".join(dict.fromkeys(UID(abstract).name for abstract, _ in contexts))
        raise NetError(str(node), f"the PACS does not support {names} (no accepted presentation context)")
    if not assoc.is_established:
        raise NetError(str(node), f"no answer to the association request within {settings.timeout_s:g} s "
                                  f"(is {node.host}:{node.port} a DICOM service?)")
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def _accepted(assoc, abstract: str, node: Node) -> None:
    if not any(cx.abstract_syntax == abstract for cx in assoc.accepted_contexts):
        from pydicom.uid import UID

        raise NetError(str(node), f"the PACS does not support {UID(abstract).name} (no accepted presentation context)")


def _status(node: Node, status: Dataset | None, settings: NetSettings) -> int:
    if status is None or "Status" not in status:
        raise NetError(str(node), f"the PACS stopped answering (no response within {settings.timeout_s:g} s, "
                                  "or the association was aborted)")
    return int(status.Status)


# --- C-ECHO --------------------------------------------------------------------------------------


def echo(node: Node, settings: NetSettings) -> float:
    """C-ECHO; returns the round trip in seconds (association included)."""
    started = time.perf_counter()
    with association(node, settings, [(Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]) as assoc:
        code = _status(node, assoc.send_c_echo(), settings)
    if code != 0:
        raise NetError(str(node), f"C-ECHO answered with status 0x{code:04X}")
    return time.perf_counter() - started


# --- C-FIND --------------------------------------------------------------------------------------


def find(node: Node, settings: NetSettings, level: str = "STUDY", *, patient_name: str = "", patient_id: str = "",
         date: str = "", modality: str = "", accession: str = "", study_uid: str = "",
         cancel: CancelToken | None = None, limit: int = 10_000) -> list[dict]:
    """C-FIND at PATIENT, STUDY or SERIES level. ``date`` is DICOM date matching: ``20240101``,
    ``20240101-20240131``, ``-20240131``. Wildcards (``*``, ``?``) go to the PACS as typed. Returns one
    dict per match with the level's keys (strings; missing values empty)."""
    level = level.upper()
    if level not in _FIND_KEYS:
        raise NetError(str(node), f"query level {level!r} is not PATIENT, STUDY or SERIES")
    model = PatientRootQueryRetrieveInformationModelFind if level == "PATIENT" else StudyRootQueryRetrieveInformationModelFind
    query = Dataset()
    query.QueryRetrieveLevel = level
    for keyword in _FIND_KEYS[level]:
        setattr(query, keyword, "")
    filters = {"PatientName": patient_name, "PatientID": patient_id, "AccessionNumber": accession,
               "StudyInstanceUID": study_uid}
    if level != "PATIENT":
        filters["StudyDate"] = date
        filters["ModalitiesInStudy" if level == "STUDY" else "Modality"] = modality
    for keyword, value in filters.items():
        if value:
            setattr(query, keyword, value)
    if level == "SERIES" and not study_uid:
        raise NetError(str(node), "a series query needs the study (its StudyInstanceUID)")
    matches: list[dict] = []
    with association(node, settings, [(model, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]) as assoc:
        _accepted(assoc, model, node)
        for status, identifier in assoc.send_c_find(query, model):
            code = _status(node, status, settings)
            if code in (0xFF00, 0xFF01) and identifier is not None:
                matches.append({k: _text(identifier.get(k)) for k in _FIND_KEYS[level]})
                if is_cancelled(cancel) or len(matches) >= limit:
                    assoc.abort()
                    if is_cancelled(cancel):
                        raise Cancelled("query cancelled")
                    break
            elif code != 0:
                raise NetError(str(node), f"C-FIND failed with status 0x{code:04X}"
                                          f"{' (' + _RETRIEVE_FAILURES[code] + ')' if code in _RETRIEVE_FAILURES else ''}")
    return matches


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


# --- the study cache and our storage SCP ---------------------------------------------------------


_UID_SAFE = re.compile(r"[^0-9A-Za-z.]")


def _name(uid: str) -> str:
    return (_UID_SAFE.sub("_", str(uid or "unknown")) or "unknown")[:64]


def write_instance(root: Path, ds: Dataset, encoded: bytes | None = None) -> Path:
    """``ds`` (or its ``encoded`` bytes, as received) as ``root/StudyUID/SeriesUID/SOPInstanceUID.dcm``,
    written to a temporary name and renamed into place: a reader never sees half a file."""
    folder = root / _name(ds.get("StudyInstanceUID")) / _name(ds.get("SeriesInstanceUID"))
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{_name(ds.get('SOPInstanceUID'))}.dcm"
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fp:
            if encoded is not None:
                fp.write(encoded)
            else:
                if not getattr(ds, "file_meta", None) or "TransferSyntaxUID" not in ds.file_meta:
                    from pydicom.dataset import FileMetaDataset

                    meta = FileMetaDataset()
                    meta.TransferSyntaxUID = ExplicitVRLittleEndian
                    ds.file_meta = meta
                ds.save_as(fp, enforce_file_format=True)
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return target


class _Cache:
    """Writes each received instance whole under the cache folder (see :func:`write_instance`)."""

    def __init__(self, root: Path, progress: ProgressCallback | None, cancel: CancelToken | None):
        self.root = root
        self.progress = progress
        self.cancel = cancel
        self.files: list[Path] = []
        self.not_stored: list[str] = []
        self.lock = threading.Lock()

    def on_store(self, event) -> int:
        if is_cancelled(self.cancel):
            return 0xA700  # refuse further instances: the user cancelled
        try:
            target = write_instance(self.root, event.dataset, event.encoded_dataset(include_meta=True))
        except OSError as exc:
            with self.lock:
                self.not_stored.append(f"cannot be written to the cache ({exc.strerror or exc})")
            return 0xA700
        except Exception as exc:  # noqa: BLE001 - a damaged instance is refused, the retrieve goes on
            with self.lock:
                self.not_stored.append(f"could not be stored ({type(exc).__name__}: {exc})")
            return 0xC210
        with self.lock:
            self.files.append(target)
        return 0x0000


def _storage_contexts(classes: Iterable[str] | None) -> list[tuple[str, list[str]]]:
    """The storage classes to accept (those the study holds when known, else pynetdicom's common 120),
    each with every transfer syntax (compressed included: files are stored as they come)."""
    uids = list(dict.fromkeys(c for c in classes or [] if c)) or [cx.abstract_syntax for cx in StoragePresentationContexts]
    return [(uid, list(ALL_TRANSFER_SYNTAXES)) for uid in uids[:126]]


def _study_classes(node: Node, settings: NetSettings, study_uid: str) -> list[str]:
    """SOPClassesInStudy from a study-level C-FIND (Orthanc, dcm4chee and others answer it); [] if not."""
    model = StudyRootQueryRetrieveInformationModelFind
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    query.SOPClassesInStudy = ""
    try:
        with association(node, settings, [(model, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]) as assoc:
            classes: list[str] = []
            for status, identifier in assoc.send_c_find(query, model):
                if status and status.get("Status") in (0xFF00, 0xFF01) and identifier is not None:
                    value = identifier.get("SOPClassesInStudy")
                    classes += [str(v) for v in (value if isinstance(value, (list, tuple)) or
                                                 type(value).__name__ == "MultiValue" else [value]) if v]
            return classes
    except NetError:
        return []


def _retrieve_query(study_uid: str, series_uid: str | None) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES" if series_uid else "STUDY"
    query.StudyInstanceUID = study_uid
    if series_uid:
        query.SeriesInstanceUID = series_uid
    return query


def _follow(node: Node, settings: NetSettings, responses, result: RetrieveResult, cache: _Cache,
            assoc, cancel: CancelToken | None, progress: ProgressCallback | None, what: str,
            destination: str = "") -> None:
    for status, _identifier in responses:
        code = _status(node, status, settings)
        counts = [int(status.get(k, 0) or 0) for k in ("NumberOfCompletedSuboperations",
                                                       "NumberOfFailedSuboperations",
                                                       "NumberOfWarningSuboperations",
                                                       "NumberOfRemainingSuboperations")]
        result.completed, result.failed, result.warning = counts[0], counts[1], counts[2]
        if code in (0xFF00, 0xFF01):
            if progress:
                progress(sum(counts[:3]), sum(counts))
            if is_cancelled(cancel):
                assoc.abort()
                raise Cancelled(f"{what} cancelled")
            continue
        if code in (0x0000, 0xB000):
            if progress:
                progress(result.total, result.total)
            return
        if code == 0xA801:
            if destination and destination != settings.ae_title:
                raise NetError(str(node), f"the PACS does not know the destination AE {destination} (0xA801)")
            raise NetError(str(node), f"the PACS does not know the destination AE {settings.ae_title} (0xA801): add "
                                      f"{settings.ae_title} with this computer's address and port {settings.port} to its "
                                      "modalities")
        words = _RETRIEVE_FAILURES.get(code, "failed")
        if what == "C-MOVE" and code == 0xC000 and not result.total:
            words += f"; most often the destination AE {destination or settings.ae_title} is not among its modalities"
        raise NetError(str(node), f"{what} failed with status 0x{code:04X} ({words}); sub-operations: "
                                  f"{result.completed} completed, {result.failed} failed, {result.warning} warnings")


# --- C-GET ---------------------------------------------------------------------------------------


def get(node: Node, settings: NetSettings, study_uid: str, cache_dir: str | os.PathLike, *,
        series_uid: str | None = None, progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None) -> RetrieveResult:
    """C-GET a study (or one series) into ``cache_dir``; storage roles are negotiated for the study's
    SOP classes (asked with C-FIND first) or pynetdicom's common storage classes."""
    cache = _Cache(Path(cache_dir), progress, cancel)
    contexts = _storage_contexts(_study_classes(node, settings, study_uid))
    model = StudyRootQueryRetrieveInformationModelGet
    roles = [build_role(uid, scp_role=True) for uid, _ in contexts]
    result = RetrieveResult()
    with association(node, settings, [(model, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])] + contexts,
                     ext_neg=roles, handlers=[(evt.EVT_C_STORE, cache.on_store)]) as assoc:
        _accepted(assoc, model, node)
        responses = assoc.send_c_get(_retrieve_query(study_uid, series_uid), model)
        _follow(node, settings, responses, result, cache, assoc, cancel, progress, "C-GET")
    result.files, result.not_stored = sorted(cache.files), cache.not_stored
    return result


# --- C-MOVE to our own storage SCP ---------------------------------------------------------------


class StorageListener:
    """MedViewer's storage SCP on ``settings.port`` (all interfaces), started for as long as it is needed;
    every instance a PACS sends goes into the cache."""

    def __init__(self, settings: NetSettings, cache: _Cache):
        self.settings = settings
        self.cache = cache
        self.server = None

    def __enter__(self) -> StorageListener:
        ae = _application_entity(self.settings)
        for uid, syntaxes in _storage_contexts(None) + [(Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]:
            ae.add_supported_context(uid, syntaxes)
        ae.require_called_aet = False
        try:
            self.server = ae.start_server(("", self.settings.port), block=False,
                                          evt_handlers=[(evt.EVT_C_STORE, self.cache.on_store)])
        except OSError as exc:
            raise NetError(f"{self.settings.ae_title} (port {self.settings.port})",
                           f"cannot listen for C-MOVE results ({exc.strerror or exc}): choose another port") from None
        return self

    def __exit__(self, *exc) -> None:
        if self.server is not None:
            self.server.shutdown()


def move(node: Node, settings: NetSettings, study_uid: str, cache_dir: str | os.PathLike, *,
         series_uid: str | None = None, destination: str | None = None, progress: ProgressCallback | None = None,
         cancel: CancelToken | None = None) -> RetrieveResult:
    """C-MOVE a study (or series) to MedViewer's own AE (``settings.ae_title`` listening on
    ``settings.port``, which the PACS must know); the instances land in ``cache_dir``.

    With ``destination`` another AE (a workstation, an archive) receives them instead and nothing is
    cached here; the counts say how the PACS fared."""
    cache = _Cache(Path(cache_dir), progress, cancel)
    model = StudyRootQueryRetrieveInformationModelMove
    result = RetrieveResult()
    target = destination or settings.ae_title
    listener = StorageListener(settings, cache) if destination in (None, settings.ae_title) else nullcontext()
    with listener, association(node, settings, [(model, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]) as assoc:
        _accepted(assoc, model, node)
        responses = assoc.send_c_move(_retrieve_query(study_uid, series_uid), target, model)
        _follow(node, settings, responses, result, cache, assoc, cancel, progress, "C-MOVE", target)
    result.files, result.not_stored = sorted(cache.files), cache.not_stored
    return result


# --- C-STORE -------------------------------------------------------------------------------------


def send(node: Node, settings: NetSettings, paths: Iterable[str | os.PathLike], *,
         progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> SendResult:
    """C-STORE DICOM files (each as it is on disk: its own transfer syntax) to ``node``.
    A file that is not DICOM or that the PACS refuses is counted as failed, with the reason."""
    result = SendResult()
    files: list[tuple[Path, str, str]] = []
    for path in map(Path, paths):
        try:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
            syntax = str(ds.file_meta.TransferSyntaxUID)
            files.append((path, str(ds.SOPClassUID), syntax))
        except Exception as exc:  # noqa: BLE001 - what cannot be read is not sent, and says why
            result.failed.append(f"{path}: not a DICOM file that can be sent ({type(exc).__name__})")
    by_class: dict[str, set[str]] = {}
    for _, sop_class, syntax in files:
        by_class.setdefault(sop_class, {str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)}).add(syntax)
    classes = sorted(by_class)
    done = 0
    for start in range(0, len(classes), 120):  # an association holds at most 128 presentation contexts
        chunk = set(classes[start:start + 120])
        contexts = [(uid, sorted(by_class[uid])) for uid in sorted(chunk)]
        with association(node, settings, contexts) as assoc:
            for path, sop_class, _syntax in files:
                if sop_class not in chunk:
                    continue
                if is_cancelled(cancel):
                    raise Cancelled("send cancelled")
                note = ""
                try:
                    status = assoc.send_c_store(path)
                except ValueError:  # the PACS does not take this compressed syntax: send it decompressed
                    status, note = _send_decompressed(assoc, path, sop_class)
                    if status is None:
                        result.failed.append(f"{path}: the PACS accepts neither its SOP class nor its transfer "
                                             f"syntax ({note})")
                if status is not None:
                    code = _status(node, status, settings)
                    if code == 0 and not note:
                        result.sent.append(str(path))
                    elif code == 0:
                        result.sent.append(str(path))
                        result.warnings.append(f"{path}: {note}")
                    elif code in (0xB000, 0xB007, 0xB006):
                        result.warnings.append(f"{path}: stored with warning 0x{code:04X}")
                    else:
                        result.failed.append(f"{path}: refused by the PACS (status 0x{code:04X})")
                done += 1
                if progress:
                    progress(done, len(files))
    return result


def _send_decompressed(assoc, path: Path, sop_class: str) -> tuple[Dataset | None, str]:
    """C-STORE ``path`` in Explicit VR Little Endian when the PACS took the class but not the file's syntax."""
    uncompressed = [cx for cx in assoc.accepted_contexts
                    if cx.abstract_syntax == sop_class and cx.transfer_syntax[0] in (ExplicitVRLittleEndian,
                                                                                      ImplicitVRLittleEndian)]
    if not uncompressed:
        return None, "no presentation context accepted for its SOP class"
    try:
        ds = dcmread(path)
        original = ds.file_meta.TransferSyntaxUID.name
        ds.decompress()
    except Exception as exc:  # noqa: BLE001 - a file we cannot decompress is not sent
        return None, f"it could not be decompressed to send ({type(exc).__name__}: {exc})"
    return assoc.send_c_store(ds), f"sent decompressed: the PACS does not accept {original}"
