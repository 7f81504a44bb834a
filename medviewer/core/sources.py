"""Where image files come from: plain files, folders (recursive), ZIP archives and DICOMDIR.

A :class:`Source` names one file, possibly a member of a ZIP archive, and opens it for
reading. :func:`iter_sources` expands what a user gave (paths, folders, archives) into
sources, and reports what it could not reach as :class:`Refused` entries instead of raising.
"""

from __future__ import annotations

import io
import os
import re
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# Names that file managers and operating systems drop into folders; never images.
_SYSTEM_FILES = {"thumbs.db", "desktop.ini", ".ds_store"}


@dataclass(frozen=True, order=True)
class Source:
    """One file to read: ``path`` on disk, or ``member`` inside the ZIP archive at ``path``."""

    path: str
    member: str | None = None

    @property
    def name(self) -> str:
        """What the user sees: the path, or ``archive.zip!/member``."""
        return self.path if self.member is None else f"{self.path}!/{self.member}"

    @property
    def basename(self) -> str:
        return os.path.basename(self.member if self.member is not None else self.path)

    @property
    def suffix(self) -> str:
        name = self.basename.lower()
        if name.endswith(".nii.gz"):
            return ".nii.gz"
        return os.path.splitext(name)[1]

    def open(self) -> BinaryIO:
        """A seekable binary file object; the caller closes it."""
        if self.member is None:
            return open(self.path, "rb")
        try:
            with zipfile.ZipFile(self.path) as archive:
                return io.BytesIO(archive.read(self.member))
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            # A bad CRC, corrupt deflate data, a cut-off member or an unsupported compression
            # method (Deflate64): an unreadable file like any other, not a crash of the scan.
            raise OSError(f"damaged ZIP member ({exc})") from None

    def read_bytes(self) -> bytes:
        with self.open() as fp:
            return fp.read()

    def size(self) -> int:
        if self.member is None:
            return os.path.getsize(self.path)
        with zipfile.ZipFile(self.path) as archive:
            return archive.getinfo(self.member).file_size


@dataclass(frozen=True)
class Refused:
    """A file or folder that was not taken, with the reason in plain words."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def natural_key(text: str) -> list:
    """Sort key that orders ``IM2`` before ``IM10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _is_system_file(name: str) -> bool:
    return name.startswith(".") or name.lower() in _SYSTEM_FILES


def _is_dicomdir_name(name: str) -> bool:
    return os.path.basename(name).upper() == "DICOMDIR"


def iter_sources(paths: Iterable[str | os.PathLike]) -> Iterator[Source | Refused]:
    """Expand files, folders (recursively), ZIP archives and DICOMDIR files into sources.

    Folders are walked in natural name order; hidden and system files are skipped. A
    DICOMDIR given explicitly is followed to the files it references; one met while walking a
    folder is skipped, since the walk reaches the same files. Nothing here raises for bad
    input: unreachable paths come back as :class:`Refused`.
    """
    seen: set[Source] = set()
    for raw in paths:
        path = os.fspath(raw)
        for item in _expand(path, explicit=True):
            if isinstance(item, Source):
                if item in seen:
                    continue
                seen.add(item)
            yield item


def _expand(path: str, explicit: bool) -> Iterator[Source | Refused]:
    if not os.path.exists(path):
        yield Refused(path, "no such file or folder")
        return
    if os.path.isdir(path):
        yield from _walk(path)
        return
    if not os.access(path, os.R_OK):
        yield Refused(path, "cannot be read: permission denied")
        return
    if _is_dicomdir_name(path):
        if explicit:
            yield from _dicomdir(path)
        return
    if path.lower().endswith(".zip") or _looks_like_zip(path):
        yield from _zip(path)
        return
    yield Source(path)


def _walk(folder: str) -> Iterator[Source | Refused]:
    errors: list[OSError] = []
    for root, dirs, files in os.walk(folder, onerror=errors.append):
        dirs[:] = sorted((d for d in dirs if not d.startswith(".") and d != "__MACOSX"), key=natural_key)
        for name in sorted(files, key=natural_key):
            if _is_system_file(name):
                continue
            yield from _expand(os.path.join(root, name), explicit=False)
    for error in errors:
        reason = "folder cannot be read: permission denied" if isinstance(error, PermissionError) else (
            f"folder cannot be read: {error.strerror or error}")
        yield Refused(error.filename or folder, reason)


def _looks_like_zip(path: str) -> bool:
    try:
        with open(path, "rb") as fp:
            return fp.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _zip(path: str) -> Iterator[Source | Refused]:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        yield Refused(path, f"damaged or unreadable ZIP archive ({exc})")
        return
    members = []
    for info in infos:
        name = info.filename
        parts = name.split("/")
        if info.is_dir() or "__MACOSX" in parts or any(_is_system_file(p) for p in parts if p):
            continue
        if info.flag_bits & 0x1:
            yield Refused(f"{path}!/{name}", "encrypted ZIP member")
            continue
        if _is_dicomdir_name(name):
            continue
        members.append(name)
    for name in sorted(members, key=natural_key):
        yield Source(path, name)


def _dicomdir(path: str) -> Iterator[Source | Refused]:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.fileset import FileSet

    try:
        # pydicom warns (on stderr) about DICOMDIRs in other transfer syntaxes; the files are read anyway.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fileset = FileSet(pydicom.dcmread(path))
    except (InvalidDicomError, ValueError, KeyError, AttributeError, OSError) as exc:
        yield Refused(path, f"unreadable DICOMDIR ({exc})")
        return
    found = False
    for instance in fileset:
        found = True
        target = Path(instance.path)
        if target.exists():
            yield Source(str(target))
        else:
            yield Refused(str(target), f"listed in {path} but missing")
    if not found:
        yield Refused(path, "DICOMDIR lists no files")


def prefetch(sources: Iterable[Source], budget_bytes: int = 1 << 30) -> None:
    """Ask the OS to start reading these files now, in the background (Linux ``fadvise``).

    Reading a folder from disk is otherwise one file at a time per worker; with the whole
    list queued, the disk works at its own pace while headers are parsed. At most
    ``budget_bytes`` are asked for, so a huge folder does not push everything else out of
    the page cache. Does nothing where the OS has no ``posix_fadvise``.
    """
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    remaining = budget_bytes
    for source in sources:
        if source.member is not None:
            continue
        try:
            fd = os.open(source.path, os.O_RDONLY)
        except OSError:
            continue
        try:
            size = os.fstat(fd).st_size
            if size > remaining:
                break
            remaining -= size
            advise(fd, 0, size, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)
