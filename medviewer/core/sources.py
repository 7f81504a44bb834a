"""Where image files come from: plain files, folders (recursive), ZIP archives and DICOMDIR.

A :class:`Source` names one file, possibly a member of a ZIP archive, and opens it for
reading. :func:`iter_sources` expands what a user gave (paths, folders, archives) into
sources, and reports what it could not reach as :class:`Refused` entries instead of raising.
"""

from __future__ import annotations

import atexit
import errno
import io
import os
import re
import stat
import threading
import warnings
import zipfile
import zlib
from collections import OrderedDict
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
        """A seekable binary file object; the caller closes it.

        Only regular files are opened (a named pipe would block, a device never ends): the
        check is made on the open descriptor, so a file swapped for a pipe after the scan is
        refused too. A ZIP member is streamed, never read whole.
        """
        if self.member is None:
            return open_regular(self.path)
        info = _member_info(self.path, self.member)
        reason = member_refusal(info)
        if reason:
            raise OSError(reason)
        try:
            return _MemberFile(_archive(self.path).open(info))
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError, RuntimeError) as exc:
            # A bad CRC, corrupt deflate data, a cut-off member or an unsupported compression
            # method (Deflate64): an unreadable file like any other, not a crash of the scan.
            raise OSError(f"damaged ZIP member ({exc})") from None

    def read_bytes(self) -> bytes:
        with self.open() as fp:
            try:
                return fp.read()
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                raise OSError(f"damaged ZIP member ({exc})") from None

    def size(self) -> int:
        if self.member is None:
            info = os.stat(self.path)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(not_regular_reason(info.st_mode))
            return info.st_size
        return _member_info(self.path, self.member).file_size


_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)


class _MemberFile(io.RawIOBase):
    """A ZIP member streamed (seekable: backwards by reading again from its start), whose
    damage (bad CRC, corrupt deflate data) surfaces as ``OSError("damaged ZIP member ...")``."""

    def __init__(self, stream):
        super().__init__()
        self._stream = stream

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self._stream.read(size)
        except _ZIP_ERRORS as exc:
            raise OSError(f"damaged ZIP member ({exc})") from None

    def readinto(self, buffer) -> int:
        data = self.read(len(memoryview(buffer).cast("B")))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        return self.read(-1)

    def seek(self, offset: int, whence: int = 0) -> int:
        try:
            return self._stream.seek(offset, whence)
        except _ZIP_ERRORS as exc:
            raise OSError(f"damaged ZIP member ({exc})") from None

    def tell(self) -> int:
        return self._stream.tell()

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            super().close()


def not_regular_reason(mode: int) -> str:
    """Why a path that is neither a regular file nor a folder is skipped, unopened."""
    what = ("a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    return f"not a regular file ({what}), skipped without opening it" if what != "not a regular file" else (
        "not a regular file, skipped without opening it")


def open_regular(path: str) -> BinaryIO:
    """``open(path, "rb")`` for a regular file only: never blocks on a pipe or reads a device."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(not_regular_reason(mode))
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


# Caps on ZIP archives: what a member may claim, and how much it may expand.
MAX_ZIP_MEMBERS = 200_000
MAX_MEMBER_BYTES = 4 << 30
MAX_ARCHIVE_BYTES = 64 << 30
# A large member expanding more than this is a bomb (deflate's own limit is ~1032:1; honest
# images, even blank masks, stay far below it). Over a whole archive even deflate's limit is
# checked: members that share their compressed bytes (the overlapping-file bomb) claim more.
MAX_MEMBER_RATIO = 500
MAX_ARCHIVE_RATIO = 1100
RATIO_CHECKED_ABOVE = 64 << 20

_archives_lock = threading.Lock()
_archives: OrderedDict[str, tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo]]] = OrderedDict()
_ARCHIVES_KEPT = 4


def _archive_entry(path: str) -> tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo]]:
    """The archive at ``path``, opened once and kept (its central directory read once, not per
    member: an archive of 100,000 members would otherwise take hours)."""
    with _archives_lock:
        entry = _archives.get(path)
        if entry is not None:
            _archives.move_to_end(path)
            return entry
    fp = open_regular(path)
    try:
        archive = zipfile.ZipFile(fp)
    except BaseException:
        fp.close()
        raise
    entry = (archive, {info.filename: info for info in archive.infolist()})
    with _archives_lock:
        if path in _archives:  # another thread opened it meanwhile
            archive.close()
            return _archives[path]
        _archives[path] = entry
        while len(_archives) > _ARCHIVES_KEPT:
            _, (old, _) = _archives.popitem(last=False)
            old.close()
    return entry


def close_archives() -> None:
    """Close the archives kept open (at exit, and for tests)."""
    with _archives_lock:
        while _archives:
            _, (archive, _) = _archives.popitem()
            archive.close()


atexit.register(close_archives)


def _archive(path: str) -> zipfile.ZipFile:
    try:
        return _archive_entry(path)[0]
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError) as exc:
        raise OSError(f"damaged ZIP archive ({exc})") from None


def _member_info(path: str, member: str) -> zipfile.ZipInfo:
    try:
        infos = _archive_entry(path)[1]
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError) as exc:
        raise OSError(f"damaged ZIP archive ({exc})") from None
    info = infos.get(member)
    if info is None:
        raise KeyError(member)
    return info


def member_refusal(info: zipfile.ZipInfo) -> str | None:
    """Why a ZIP member is not read, from what the archive's directory claims; None if it may be."""
    if info.file_size > MAX_MEMBER_BYTES:
        return f"ZIP member too large ({info.file_size / 2**30:.1f} GB uncompressed), not read"
    if info.file_size > RATIO_CHECKED_ABOVE and info.file_size > MAX_MEMBER_RATIO * max(info.compress_size, 1):
        return (f"ZIP member expands {info.file_size // max(info.compress_size, 1)}-fold "
                f"({info.compress_size} bytes to {info.file_size}): a ZIP bomb, not read")
    return None


def unsafe_member_name(name: str) -> bool:
    """True for a member name that would escape the folder it is unpacked into."""
    if not name or "\x00" in name:
        return True
    normal = name.replace("\\", "/")
    if normal.startswith("/") or re.match(r"^[A-Za-z]:", normal):
        return True
    return any(part == ".." for part in normal.split("/"))


@dataclass(frozen=True)
class Refused:
    """A file or folder that was not taken, with the reason in plain words."""

    path: str
    reason: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", one_line(self.reason))

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


_UNPRINTABLE = re.compile(r"[^\x20-\x7e\u00a0-\u024f\u2010-\u2026]+")


def one_line(text: str, limit: int = 300) -> str:
    """``text`` as one printable line (a damaged file's bytes quoted in an error message are
    replaced by '?'), cut to ``limit`` characters."""
    text = _UNPRINTABLE.sub("?", " ".join(str(text).split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
    # Everything is decided on stat results: nothing that is not a regular file is opened (a
    # named pipe would block the scan, /dev/zero never ends).
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            yield Refused(path, "broken symbolic link (its target does not exist)")
        else:
            yield Refused(path, "no such file or folder")
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            yield Refused(path, "symbolic link loop, not followed")
        elif isinstance(exc, PermissionError):
            yield Refused(path, "cannot be read: permission denied")
        else:
            yield Refused(path, f"cannot be read: {exc.strerror or exc}")
        return
    except ValueError:  # a NUL byte in the name
        yield Refused(path, "invalid file name")
        return
    if stat.S_ISDIR(info.st_mode):
        yield from _walk(path)
        return
    if not stat.S_ISREG(info.st_mode):
        yield Refused(path, not_regular_reason(info.st_mode))
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
        with open_regular(path) as fp:
            return fp.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _zip(path: str) -> Iterator[Source | Refused]:
    try:
        _, by_name = _archive_entry(path)
        infos = list(by_name.values())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, zlib.error) as exc:
        yield Refused(path, f"damaged or unreadable ZIP archive ({exc})")
        return
    if len(infos) > MAX_ZIP_MEMBERS:
        yield Refused(path, f"ZIP archive has {len(infos)} members, more than {MAX_ZIP_MEMBERS} are not read")
        return
    claimed = sum(info.file_size for info in infos)
    if claimed > MAX_ARCHIVE_BYTES:
        yield Refused(path, f"ZIP archive claims {claimed / 2**30:.0f} GB uncompressed, more than "
                            f"{MAX_ARCHIVE_BYTES >> 30} GB are not read")
        return
    try:
        archive_size = os.stat(path).st_size
    except OSError:
        archive_size = 0
    if claimed > RATIO_CHECKED_ABOVE and claimed > MAX_ARCHIVE_RATIO * max(archive_size, 1):
        yield Refused(path, f"ZIP archive claims {claimed} bytes from {archive_size}, more than compression "
                            f"allows: members share their data (a ZIP bomb), not read")
        return
    members = []
    for info in infos:
        name = info.filename
        parts = name.split("/")
        if unsafe_member_name(name):
            yield Refused(f"{path}!/{name}", "unsafe path in ZIP archive (absolute or with '..'), not read")
            continue
        if info.is_dir() or "__MACOSX" in parts or any(_is_system_file(p) for p in parts if p):
            continue
        if info.flag_bits & 0x1:
            yield Refused(f"{path}!/{name}", "encrypted ZIP member")
            continue
        if _is_dicomdir_name(name):
            continue
        reason = member_refusal(info)
        if reason:
            yield Refused(f"{path}!/{name}", reason)
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
            fd = os.open(source.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            continue
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                continue
            size = info.st_size
            if size > remaining:
                break
            remaining -= size
            advise(fd, 0, size, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)
