"""Safe writing for every export and every prediction: all or nothing, never an unasked overwrite.

Each file is written to a temporary name in its target folder and renamed into place only when every
file of the export is complete, so a failure (a full disk, a read-only folder, a bug in a writer) leaves
nothing behind. An existing target is replaced only with ``force`` (the CLI's ``--force``; the GUI asks
first). Folders (an anonymised copy) are filled in a hidden staging folder beside the target and renamed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

from medviewer.core.errors import MedViewerError


class ExportError(MedViewerError):
    """An export could not be written; ``str()`` names the file and the reason."""


class ExistsError(ExportError):
    """The target exists and ``force`` was not given."""


FileWriter = Callable[[BinaryIO], None]


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux), else set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as fp:
            for line in fp:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_targets(targets: list[Path], force: bool) -> None:
    """Raise :class:`ExistsError` for the first target that exists, unless ``force``."""
    if force:
        return
    for target in targets:
        if target.exists() or target.is_symlink():
            raise ExistsError(str(target), "already exists (use --force to replace it)")


def write_files(files: Mapping[str | os.PathLike, FileWriter], *, force: bool = False) -> list[Path]:
    """Write a group of files, each by its ``writer(fp)`` into an open binary file; all or none land.

    Parent folders are created. Returns the written paths in the order given.
    """
    targets = [Path(p) for p in files]
    check_targets(targets, force)
    temporaries: list[tuple[Path, Path]] = []
    try:
        for target, writer in zip(targets, files.values()):
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
            except OSError as exc:
                raise ExportError(str(target.parent), f"cannot write here ({_reason(exc)})") from None
            temp = Path(name)
            temporaries.append((temp, target))
            try:
                # mkstemp creates 0600; an export gets the permissions of any file the user creates
                os.chmod(temp, 0o666 & ~_umask())
                with os.fdopen(fd, "wb") as fp:
                    writer(fp)
            except OSError as exc:
                raise ExportError(str(target), f"writing failed ({_reason(exc)})") from None
        for temp, target in temporaries:
            try:
                os.replace(temp, target)
            except OSError as exc:
                raise ExportError(str(target), f"cannot put the file in place ({_reason(exc)})") from None
    finally:
        for temp, _ in temporaries:
            if temp.exists():
                temp.unlink()
    return targets


def write_bytes(path: str | os.PathLike, data: bytes, *, force: bool = False) -> Path:
    """One file from bytes, safely."""
    return write_files({path: lambda fp: fp.write(data)}, force=force)[0]


def write_folder(target: str | os.PathLike, fill: Callable[[Path], None], *, force: bool = False) -> Path:
    """Create folder ``target`` by ``fill(staging)`` in a hidden staging folder beside it, then rename it in.

    With ``force`` an existing ``target`` is replaced (only after ``fill`` succeeded). On any failure the
    staging folder is removed and ``target`` is as it was.
    """
    target = Path(target)
    check_targets([target], force)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    except OSError as exc:
        raise ExportError(str(target.parent), f"cannot write here ({_reason(exc)})") from None
    try:
        try:
            os.chmod(staging, 0o777 & ~_umask())  # mkdtemp creates 0700
            fill(staging)
        except OSError as exc:
            raise ExportError(str(target), f"writing failed ({_reason(exc)})") from None
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        try:
            os.replace(staging, target)
        except OSError as exc:
            if old is not None:
                os.replace(old, target)
            raise ExportError(str(target), f"cannot put the folder in place ({_reason(exc)})") from None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
