"""Read one file's header (never its pixels) and describe it as an :class:`Instance`.

This is the first door every file goes through. It decides, without decoding, whether a file
is a DICOM image, a plain picture (PNG, JPEG, TIFF, BMP) or a NIfTI volume, and refuses the
rest with a plain reason: empty, not an image, truncated pixel data, no decoder for its
compression, missing attributes.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from medviewer.core.sources import Refused, Source

RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
NIFTI_SUFFIXES = {".nii", ".nii.gz"}
# Files that sit beside images in study folders and are never images themselves.
NON_IMAGE_SUFFIXES = {".json", ".txt", ".csv", ".tsv", ".xml", ".md", ".html", ".htm", ".pdf", ".npy", ".npz",
                      ".log", ".ini", ".cfg", ".yaml", ".yml", ".py", ".sh", ".bat", ".exe", ".dll", ".so"}

_RASTER_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM")
_GZIP_MAGIC = b"\x1f\x8b"

# Transfer syntaxes newer than the installed pydicom knows by name.
_EXTRA_SYNTAX_NAMES = {
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
}

NATIVE_LITTLE_ENDIAN = {ImplicitVRLittleEndian, ExplicitVRLittleEndian}
UNCOMPRESSED = {ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian}

_PIXEL_TAGS = {0x7FE00010: "PixelData", 0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData"}
_EXPLICIT_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"}


def display_date(value: str) -> str:
    """A DICOM date (DA, or the date part of a DT) as YYYY-MM-DD; anything else as it is."""
    value = str(value or "").strip()
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) >= 8 and value[:8].isdigit() else value


def syntax_name(uid: str) -> str:
    if uid in _EXTRA_SYNTAX_NAMES:
        return _EXTRA_SYNTAX_NAMES[uid]
    # Looked up, not built as a UID: a damaged UID would make pydicom warn on stderr.
    from pydicom.uid import UID_dictionary

    entry = UID_dictionary.get(str(uid))
    return entry[0] if entry else f"transfer syntax {uid}"


@dataclass(frozen=True)
class FrameGeometry:
    """What one frame's header says about where it lies and how to map its values.

    Positions are LPS millimetres of the centre of the first pixel; ``orientation`` is the
    six direction cosines (row direction, then column direction); ``pixel_spacing`` is
    (between rows, between columns) in mm.
    """

    position: tuple[float, float, float] | None = None
    orientation: tuple[float, ...] | None = None
    pixel_spacing: tuple[float, float] | None = None
    thickness: float | None = None
    slope: float = 1.0
    intercept: float = 0.0
    windows: tuple[tuple[float, float], ...] = ()


@dataclass
class Instance:
    """One file as the scanner found it: its header and how its pixels are stored.

    ``kind`` is ``"dicom"``, ``"image"`` (PNG, JPEG, TIFF, BMP) or ``"nifti"``.
    ``pixel_offset`` is the byte offset of native little-endian pixel data in the file, for
    reading the bytes straight into a volume; None where a decoder is needed.
    """

    source: Source
    kind: str
    rows: int
    columns: int
    frames: int = 1
    samples_per_pixel: int = 1
    photometric: str = "MONOCHROME2"
    bits_allocated: int = 8
    bits_stored: int = 8
    pixel_representation: int = 0
    planar_configuration: int = 0
    float_pixels: bool = False
    transfer_syntax: str = ""
    pixel_offset: int | None = None
    geometry: list[FrameGeometry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    dataset: Dataset | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict:
        # Pool processes get and return instances without the parsed header: pickling a
        # pydicom Dataset costs more than parsing it. ``header`` re-reads it on demand.
        state = dict(self.__dict__)
        state["dataset"] = None
        return state

    @property
    def header(self) -> Dataset | None:
        """The full header (no pixel data) for DICOM files, read again on first use if needed."""
        if self.kind != "dicom":
            return None
        if self.dataset is None:
            with self.source.open() as fp, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.dataset = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
            _apply_defaults(self.dataset, self)
        return self.dataset

    def get(self, keyword: str, default: Any = None) -> Any:
        """A header attribute as a plain Python value (str, int, float, list), or ``default``.

        The attributes a browser and the grouping need are kept from the first read; others
        come from :attr:`header`.
        """
        if keyword in self.attrs or self.kind != "dicom":
            value = self.attrs.get(keyword)
        else:
            header = self.header
            value = _plain(header.get(keyword)) if header is not None else None
        return default if value is None or value == "" else value

    @property
    def sop_instance_uid(self) -> str:
        return str(self.get("SOPInstanceUID", self.source.name))

    @property
    def is_color(self) -> bool:
        return self.samples_per_pixel == 3 or self.photometric == "PALETTE COLOR"

    @property
    def frame_bytes(self) -> int:
        return self.rows * self.columns * self.samples_per_pixel * self.bits_allocated // 8

    @property
    def syntax_name(self) -> str:
        if self.kind != "dicom":
            return self.kind
        return syntax_name(self.transfer_syntax)


_TEXT_VRS = {"AE", "AS", "CS", "DA", "DT", "TM", "UI"}
_CHARSET_VRS = {"LO", "SH", "PN", "LT", "ST", "UT", "UC"}
_BINARY_VRS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
_TAGS: dict[str, int] = {}


class FastHeader:
    """Plain values of a header's attributes, converted straight from the raw bytes.

    pydicom converts a raw element through several layers (about 30 µs each); reading a
    series of hundreds of files asks for dozens of attributes per file, so the common value
    representations are converted here and everything else is left to pydicom.
    """

    def __init__(self, ds: Dataset):
        self.ds = ds
        charset = ds.get_item(0x00080005)
        self.plain_text = charset is None or not getattr(charset, "value", None) or (
            getattr(charset, "value", b"") in (b"ISO_IR 6", b"ISO_IR 6 ", "ISO_IR 6"))

    def __contains__(self, keyword: str) -> bool:
        return _tag(keyword) in self.ds

    def get(self, keyword: str, default: Any = None) -> Any:
        tag = _tag(keyword)
        raw = self.ds.get_item(tag)
        if raw is None:
            return default
        try:
            value = self._convert(tag, raw)
        except (ValueError, struct.error, UnicodeDecodeError, KeyError):
            try:
                value = _plain(self.ds[tag].value)
            except Exception:  # noqa: BLE001 - an unreadable value is an absent one
                value = None
        return default if value is None or value == "" else value

    def _convert(self, tag: int, raw) -> Any:
        if not isinstance(raw, pydicom.dataelem.RawDataElement):
            return _plain(raw.value)
        vr = raw.VR or pydicom.datadict.dictionary_VR(tag)
        data = raw.value
        if data is None or len(data) == 0:
            return None
        if vr == "DS" or vr == "IS":
            parts = [p.strip(" \0") for p in data.decode("ascii").split("\\")]
            numbers = [float(p) if vr == "DS" else int(float(p)) for p in parts if p]
            return numbers[0] if len(numbers) == 1 else numbers
        if vr in _TEXT_VRS or (vr in _CHARSET_VRS and self.plain_text):
            parts = [p.strip(" \0") for p in data.decode("ascii" if vr in _TEXT_VRS else "latin-1").split("\\")]
            if vr in ("LT", "ST", "UT"):
                return data.decode("latin-1").rstrip(" \0")
            return parts[0] if len(parts) == 1 else parts
        if vr in _BINARY_VRS:
            code = _BINARY_VRS[vr]
            count = len(data) // struct.calcsize(code)
            values = struct.unpack(("<" if raw.is_little_endian else ">") + code * count, data[: count * struct.calcsize(code)])
            return values[0] if count == 1 else list(values)
        return _plain(self.ds[tag].value)


def _tag(keyword: str) -> int:
    tag = _TAGS.get(keyword)
    if tag is None:
        tag = pydicom.datadict.tag_for_keyword(keyword)
        if tag is None:
            raise KeyError(keyword)
        _TAGS[keyword] = tag
    return tag


# Attributes kept from the first read (what browsing, grouping and info need).
KEPT_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyDescription", "AccessionNumber", "StudyID",
    "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "SeriesDate", "Modality", "BodyPartExamined",
    "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "AcquisitionNumber", "FrameOfReferenceUID",
    "ImageType", "Manufacturer", "ManufacturerModelName", "InstitutionName",
    "SliceThickness", "SpacingBetweenSlices", "RescaleType", "BurnedInAnnotation", "Laterality",
    "PixelPaddingValue", "ContentDate", "ContentTime",
)


def _plain(value: Any) -> Any:
    """A pydicom value as plain, cheaply picklable Python data."""
    if value is None or isinstance(value, (str, int, float)) and type(value) in (str, int, float):
        return value
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [_plain(v) for v in value]
    if isinstance(value, pydicom.sequence.Sequence):
        return None
    if isinstance(value, bytes):
        return None
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        return int(value)
    return str(value)


def _apply_defaults(ds: Dataset, instance: Instance) -> None:
    """Write the attributes the first read had to assume back into a re-read header."""
    for keyword, value in (("PhotometricInterpretation", instance.photometric),
                           ("SamplesPerPixel", instance.samples_per_pixel),
                           ("BitsStored", instance.bits_stored),
                           ("HighBit", instance.bits_stored - 1),
                           ("PixelRepresentation", instance.pixel_representation)):
        if ds.get(keyword) in (None, ""):
            setattr(ds, keyword, value)
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        ds.file_meta = meta = pydicom.dataset.FileMetaDataset()
    if not str(meta.get("TransferSyntaxUID", "") or "").strip():
        meta.TransferSyntaxUID = UID(instance.transfer_syntax)


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return "cannot be read: permission denied"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, KeyError):
        return "missing from its archive"
    strerror = getattr(exc, "strerror", None)
    return f"cannot be read: {strerror or exc}"


def _plausible_raw_dicom(head: bytes) -> bool:
    """True for a DICOM data set without preamble or meta header (older files)."""
    if len(head) < 8:
        return False
    group_le = struct.unpack("<H", head[:2])[0]
    group_be = struct.unpack(">H", head[:2])[0]
    return group_le in (0x0002, 0x0008) or group_be in (0x0002, 0x0008)


def _read_dicom(source: Source, fp, head: bytes, size: int, keep_header: bool = True) -> Instance | Refused:
    has_preamble = head[128:132] == b"DICM"
    if not has_preamble and not _plausible_raw_dicom(head):
        return Refused(source.name, "not a DICOM file")
    if has_preamble:
        reason = _deflate_bomb(fp, size)
        if reason:
            return Refused(source.name, reason)
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=not has_preamble)
    except InvalidDicomError:
        return Refused(source.name, "not a DICOM file")
    except (EOFError, struct.error, ValueError, TypeError, KeyError, IndexError, OverflowError,
            NotImplementedError, UnicodeError, AttributeError) as exc:
        if not has_preamble:
            return Refused(source.name, "not a DICOM file")
        return Refused(source.name, f"damaged or truncated DICOM header ({_short(exc)})")
    pixel_tag_at = fp.tell()

    values = FastHeader(ds)
    sop_class = values.get("SOPClassUID") or values.get("MediaStorageSOPClassUID") or (
        ds.file_meta.get("MediaStorageSOPClassUID") if hasattr(ds, "file_meta") else None)
    if str(sop_class or "") == "1.2.840.10008.1.3.10":
        return Refused(source.name, "DICOMDIR index, not an image (open it or its folder to read its files)")
    if not has_preamble and "Rows" not in ds and "SOPInstanceUID" not in ds:
        return Refused(source.name, "not a DICOM file")

    syntax = _transfer_syntax(ds)
    element = _pixel_element(fp, pixel_tag_at, syntax, size)
    if element is None:
        what = UID(str(sop_class)).name if sop_class else "unknown object"
        # pydicom stops quietly at the end of a cut-off file: an image object (by its SOP
        # class or its Rows) whose data set runs to the end of the file without pixel data
        # was cut short, it is not an object without an image.
        image_object = "Rows" in ds or "Image Storage" in what
        if image_object and pixel_tag_at + 8 > size:
            return Refused(source.name, f"truncated or incomplete: the file ends before its pixel data ({what})")
        return Refused(source.name, f"no image in this DICOM file ({what})")
    pixel_keyword, value_offset, value_length = element

    for keyword in ("Rows", "Columns", "BitsAllocated"):
        if values.get(keyword) in (None, "", 0):
            tag = pydicom.datadict.tag_for_keyword(keyword)
            return Refused(source.name, f"missing {keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X}), cannot lay out the pixels")

    notes: list[str] = []
    samples = int(values.get("SamplesPerPixel") or 0)
    photometric = str(values.get("PhotometricInterpretation") or "").strip().upper()
    if not photometric:
        photometric = "RGB" if samples == 3 else "MONOCHROME2"
        ds.PhotometricInterpretation = photometric
        notes.append("missing PhotometricInterpretation, taken as " + photometric)
    if samples == 0:
        samples = 3 if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT") else 1
        ds.SamplesPerPixel = samples
        notes.append(f"missing SamplesPerPixel, taken as {samples}")
    bits_allocated = int(values.get("BitsAllocated"))
    if bits_allocated not in (1, 8, 16, 32, 64):
        return Refused(source.name, f"BitsAllocated {bits_allocated} is not supported (1, 8, 16, 32 or 64)")
    if samples not in (1, 3):
        return Refused(source.name, f"SamplesPerPixel {samples} is not supported (1 or 3)")
    bits_stored = values.get("BitsStored")
    if bits_stored in (None, ""):
        bits_stored = bits_allocated
        ds.BitsStored = bits_allocated
        notes.append("missing BitsStored, taken as BitsAllocated")
    elif not isinstance(bits_stored, int) or not 1 <= bits_stored <= bits_allocated:
        notes.append(f"BitsStored {bits_stored!r} does not fit BitsAllocated {bits_allocated}, taken as {bits_allocated}")
        bits_stored = bits_allocated
        ds.BitsStored = bits_allocated
        ds.HighBit = bits_allocated - 1
    if values.get("HighBit") in (None, ""):
        ds.HighBit = int(bits_stored) - 1
    pixel_representation = values.get("PixelRepresentation")
    if pixel_representation in (None, ""):
        pixel_representation = 0
        ds.PixelRepresentation = 0
        notes.append("missing PixelRepresentation, taken as unsigned")
    try:
        frames = int(values.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return Refused(source.name, f"invalid NumberOfFrames {values.get('NumberOfFrames')!r}")
    if frames < 1:
        return Refused(source.name, f"invalid NumberOfFrames {frames}")

    rows, columns = int(values.get("Rows")), int(values.get("Columns"))
    instance = Instance(
        source=source,
        kind="dicom",
        rows=rows,
        columns=columns,
        frames=frames,
        samples_per_pixel=samples,
        photometric=photometric,
        bits_allocated=bits_allocated,
        bits_stored=int(bits_stored),
        pixel_representation=int(pixel_representation),
        planar_configuration=int(values.get("PlanarConfiguration") or 0),
        float_pixels=pixel_keyword != "PixelData",
        transfer_syntax=str(syntax),
        notes=notes,
        attrs={keyword: values.get(keyword) for keyword in KEPT_KEYWORDS if keyword in values},
        dataset=ds if keep_header else None,
    )

    encapsulated = value_length == 0xFFFFFFFF
    remaining = size - value_offset
    if syntax in UNCOMPRESSED or not encapsulated:
        if encapsulated:
            return Refused(source.name, f"pixel data is compressed but the file says {syntax_name(syntax)}")
        per_pixel = 2 if photometric == "YBR_FULL_422" and samples == 3 else samples  # 4:2:2 subsampled
        expected = -(-rows * columns * per_pixel * frames * bits_allocated // 8)
        if syntax == DeflatedExplicitVRLittleEndian:
            remaining = value_length
        if value_length < expected or remaining < expected:
            found = max(0, min(value_length, remaining))
            if expected > 1 << 30:
                return Refused(source.name, (
                    f"truncated pixel data: the header claims {_size(expected)} ({rows} x {columns} pixels x "
                    f"{frames} frame(s)) but the file holds {_size(found)}; refused before reading"))
            return Refused(source.name, f"truncated pixel data (expected {expected} bytes, found {found})")
        if syntax in NATIVE_LITTLE_ENDIAN and bits_allocated in (8, 16, 32) and source.member is None:
            instance.pixel_offset = value_offset
    else:
        if remaining < 16:
            return Refused(source.name, "truncated pixel data (compressed data missing)")
        # Every compressed frame is at least one 8-byte item: a claim of more frames than that
        # is checked here, before anything is built per frame.
        if frames > remaining // 8:
            return Refused(source.name, (f"NumberOfFrames {frames} is more than the {_size(remaining)} of compressed "
                                         f"pixel data can hold; refused before reading"))
        decoded = rows * columns * samples * frames * max(bits_allocated, 8) // 8
        if decoded > MAX_CLAIM_BYTES and decoded > MAX_COMPRESSION_RATIO * remaining:
            return Refused(source.name, (
                f"the header claims {_size(decoded)} of pixels ({rows} x {columns} x {frames} frame(s)) from "
                f"{_size(remaining)} of compressed data, more than any codec packs; refused before decoding"))
        fp.seek(max(value_offset, size - 256))
        tail = fp.read()
        if b"\xfe\xff\xdd\xe0" not in tail and b"\xff\xfe\xe0\xdd" not in tail:
            return Refused(source.name, "truncated pixel data (the compressed frames have no end marker)")
        reason = decoder_missing(syntax)
        if reason:
            return Refused(source.name, reason)

    try:
        instance.geometry = frame_geometry(ds, frames, values)
    except (ValueError, TypeError, IndexError, AttributeError) as exc:
        return Refused(source.name, f"unreadable geometry attributes ({_short(exc)})")
    return instance


# Claims above this size must be backed by the bytes in the file (compressed: at most this ratio).
MAX_CLAIM_BYTES = 256 << 20
MAX_COMPRESSION_RATIO = 1000


def _size(count: int) -> str:
    """A byte count in plain words: 1.2 kB, 400.0 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def _deflate_bomb(fp, size: int) -> str | None:
    """Why a Deflated Explicit VR file is refused before pydicom inflates it whole (its data set
    expands beyond what an honest file does), or None. Leaves ``fp`` at its start."""
    fp.seek(0)
    head = fp.read(4096)
    fp.seek(0)
    if str(DeflatedExplicitVRLittleEndian).encode() not in head:
        return None
    from pydicom.filereader import _read_file_meta_info, read_preamble

    try:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
        start = fp.tell()
    except Exception:  # noqa: BLE001 - the full read will name what is wrong
        fp.seek(0)
        return None
    if str(meta.get("TransferSyntaxUID", "")).strip() != DeflatedExplicitVRLittleEndian:
        fp.seek(0)
        return None
    limit = max(MAX_CLAIM_BYTES, MAX_COMPRESSION_RATIO * max(size - start, 1))
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    while True:
        chunk = fp.read(1 << 20)
        if not chunk:
            break
        data = inflater.decompress(chunk, 16 << 20)
        total += len(data)
        while inflater.unconsumed_tail and total <= limit:
            data = inflater.decompress(inflater.unconsumed_tail, 16 << 20)
            total += len(data)
        if total > limit:
            fp.seek(0)
            return (f"deflated data set expands beyond {_size(limit)} from {_size(size - start)}: "
                    "a deflate bomb, not read")
        if inflater.eof:
            break
    fp.seek(0)
    return None


def decoder_missing(syntax: str) -> str | None:
    """Why frames in ``syntax`` cannot be decoded here, or None when they can."""
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(UID(syntax))
    except NotImplementedError:
        return f"no decoder for {syntax_name(syntax)}"
    if decoder.is_available:
        return None
    missing = decoder.missing_dependencies
    hint = f" (install one of: {'; '.join(missing)})" if missing else ""
    return f"no decoder installed for {syntax_name(syntax)}{hint}"


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    implicit, little = ds.original_encoding
    if syntax is None or not str(syntax).strip():
        if implicit:
            syntax = ImplicitVRLittleEndian
        else:
            syntax = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        if meta is None:
            ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = syntax
    return UID(str(syntax).strip())


def _pixel_element(fp, at: int, syntax: UID, size: int) -> tuple[str, int, int] | None:
    """(keyword, value offset, value length) of the pixel data element starting at ``at``."""
    if syntax == DeflatedExplicitVRLittleEndian:
        # Offsets in a deflated stream are not file offsets: inflate the whole data set.
        fp.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            full = pydicom.dcmread(fp, force=True)
        for tag, keyword in _PIXEL_TAGS.items():
            if tag in full:
                return keyword, 0, len(full[tag].value or b"")
        return None
    fp.seek(at)
    head = fp.read(12)
    if len(head) < 8:
        return None
    little = syntax != ExplicitVRBigEndian
    endian = "<" if little else ">"
    group, elem = struct.unpack(endian + "HH", head[:4])
    keyword = _PIXEL_TAGS.get((group << 16) | elem)
    if keyword is None:
        return None
    implicit = syntax == ImplicitVRLittleEndian or (head[4:6].isalpha() is False)
    if implicit:
        (length,) = struct.unpack(endian + "I", head[4:8])
        return keyword, at + 8, length
    vr = head[4:6]
    if vr in _EXPLICIT_LONG_VRS:
        if len(head) < 12:
            return None
        (length,) = struct.unpack(endian + "I", head[8:12])
        return keyword, at + 12, length
    (length,) = struct.unpack(endian + "H", head[6:8])
    return keyword, at + 8, length


def _floats(value, count: int) -> tuple[float, ...] | None:
    if value is None or value == "":
        return None
    try:
        values = tuple(float(v) for v in (value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]))
    except (TypeError, ValueError):
        return None
    if len(values) < count or not all(np.isfinite(values[:count])):
        return None
    return values[:count]


def _float(value, default: float | None = None) -> float | None:
    values = _floats(value, 1)
    return values[0] if values else default


def _count(value) -> int:
    return len(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else 1


def _windows(holder) -> tuple[tuple[float, float], ...]:
    centres = holder.get("WindowCenter")
    widths = holder.get("WindowWidth")
    if centres in (None, "") or widths in (None, ""):
        return ()
    # Every window the header offers, not just the first (``_floats`` keeps ``count`` values).
    c = _floats(centres, _count(centres)) or ()
    w = _floats(widths, _count(widths)) or ()
    return tuple((ci, wi) for ci, wi in zip(c, w) if wi > 0)


def _functional(ds: Dataset, frame_item: Dataset | None, sequence: str) -> Dataset | None:
    """The item of functional group ``sequence`` for a frame: per-frame first, then shared."""
    for holder in (frame_item, _first(ds.get("SharedFunctionalGroupsSequence"))):
        if holder is not None and sequence in holder:
            item = _first(holder.get(sequence))
            if item is not None:
                return item
    return None


def _first(sequence) -> Dataset | None:
    try:
        return sequence[0] if sequence else None
    except (TypeError, IndexError):
        return None


def frame_geometry(ds: Dataset, frames: int, values: FastHeader | None = None) -> list[FrameGeometry]:
    """Per-frame geometry and modality LUT, from classic or enhanced (functional group) headers."""
    has_functional = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") if has_functional else None
    ds_plain = ds
    ds = values or FastHeader(ds)
    base_position = _floats(ds.get("ImagePositionPatient"), 3)
    base_orientation = _floats(ds.get("ImageOrientationPatient"), 6)
    base_spacing = _floats(ds.get("PixelSpacing"), 2) or _floats(ds.get("ImagerPixelSpacing"), 2)
    base_thickness = _float(ds.get("SliceThickness"))
    base_slope = _float(ds.get("RescaleSlope"), 1.0) or 1.0
    base_intercept = _float(ds.get("RescaleIntercept"), 0.0)
    base_windows = _windows(ds)

    offsets: tuple[float, ...] | None = None
    if frames > 1 and not has_functional:
        grid = ds.get("GridFrameOffsetVector")
        if grid not in (None, ""):
            offsets = _floats(grid, frames)
        if offsets is None:
            step = _float(ds.get("SpacingBetweenSlices"))
            if step:
                offsets = tuple(step * k for k in range(frames))

    result = []
    for index in range(frames):
        position, orientation, spacing = base_position, base_orientation, base_spacing
        thickness, slope, intercept, windows = base_thickness, base_slope, base_intercept, base_windows
        if has_functional:
            item = per_frame[index] if per_frame and index < len(per_frame) else None
            plane = _functional(ds_plain, item, "PlanePositionSequence")
            if plane is not None:
                position = _floats(plane.get("ImagePositionPatient"), 3) or position
            plane = _functional(ds_plain, item, "PlaneOrientationSequence")
            if plane is not None:
                orientation = _floats(plane.get("ImageOrientationPatient"), 6) or orientation
            measures = _functional(ds_plain, item, "PixelMeasuresSequence")
            if measures is not None:
                spacing = _floats(measures.get("PixelSpacing"), 2) or spacing
                thickness = _float(measures.get("SliceThickness"), thickness)
            transform = _functional(ds_plain, item, "PixelValueTransformationSequence")
            if transform is not None:
                slope = _float(transform.get("RescaleSlope"), slope) or slope
                intercept = _float(transform.get("RescaleIntercept"), intercept)
            voi = _functional(ds_plain, item, "FrameVOILUTSequence")
            if voi is not None:
                windows = _windows(voi) or windows
        elif offsets is not None and position is not None and orientation is not None:
            normal = np.cross(orientation[:3], orientation[3:6])
            position = tuple(float(v) for v in np.asarray(position) + offsets[index] * normal)
        elif frames > 1:
            position = position if index == 0 else None
        result.append(FrameGeometry(position, orientation, spacing, thickness, float(slope), float(intercept), windows))
    return result


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]
