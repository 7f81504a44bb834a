"""The first door every file goes through: which reader a file needs, and never an exception.

Decides from the name and the first bytes, without decoding, whether a file is a NIfTI volume
(:mod:`medviewer.core.raster`), a plain picture (PNG, JPEG, TIFF, BMP, also ``raster``) or DICOM
(:mod:`medviewer.core.header`), and refuses the rest with a plain reason.
"""

from __future__ import annotations

from medviewer.core.header import (
    _GZIP_MAGIC,
    _RASTER_MAGIC,
    NIFTI_SUFFIXES,
    NON_IMAGE_SUFFIXES,
    RASTER_SUFFIXES,
    Instance,
    _os_reason,
    _read_dicom,
    _short,
)
from medviewer.core.raster import read_nifti_header, read_raster_header
from medviewer.core.sources import Refused, Source

__all__ = ["read_instance"]


def read_instance(source: Source, keep_header: bool = True) -> Instance | Refused:
    """Read ``source``'s header and describe it, or say in plain words why it is refused.

    Never raises for a bad file: whatever reading it throws (pydicom, numpy, Pillow, nibabel,
    a codec) becomes its refusal reason. Warnings and what native code writes to stderr while
    it is read become the file's notes (its warnings), or the tail of its refusal reason.
    """
    from medviewer.core.capture import captured

    with captured() as messages:
        try:
            result = _read_instance(source, keep_header)
        except (KeyboardInterrupt, SystemExit):
            raise
        except RecursionError:
            result = Refused(source.name, "nesting too deep (sequences within sequences), not read")
        except MemoryError:
            result = Refused(source.name, "file too large to read")
        except BaseException as exc:  # noqa: BLE001 - any failure is this file's, not the scan's
            # (pyo3's PanicException from the Rust codecs is a BaseException)
            result = Refused(source.name, f"could not be read ({type(exc).__name__}: {_short(exc)})")
    if messages:
        if isinstance(result, Instance):
            result.notes.extend(m for m in messages if m not in result.notes)
    return result


def _read_instance(source: Source, keep_header: bool = True) -> Instance | Refused:
    try:
        size = source.size()
    except (OSError, KeyError) as exc:
        return Refused(source.name, _os_reason(exc))
    if size == 0:
        return Refused(source.name, "empty file")
    try:
        with source.open() as fp:
            head = fp.read(132)
            fp.seek(0)
            if source.suffix in NIFTI_SUFFIXES or (head.startswith(_GZIP_MAGIC) and ".nii" in source.basename.lower()):
                return read_nifti_header(source, fp)
            if head[128:132] != b"DICM" and source.suffix in NON_IMAGE_SUFFIXES:
                return Refused(source.name, f"not an image ({source.suffix} file)")
            if head[128:132] != b"DICM" and (source.suffix in RASTER_SUFFIXES or head.startswith(_RASTER_MAGIC)):
                return read_raster_header(source, fp)
            try:
                return _read_dicom(source, fp, head, size, keep_header)
            except (OSError, MemoryError, RecursionError):
                raise
            except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on damaged elements
                return Refused(source.name, f"damaged DICOM header ({_short(exc)})")
    except OSError as exc:
        return Refused(source.name, _os_reason(exc))
    except MemoryError:
        return Refused(source.name, "file too large to read")
