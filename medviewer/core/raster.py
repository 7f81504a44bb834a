"""Non-DICOM inputs: plain pictures (PNG, JPEG, TIFF, BMP) through Pillow and NIfTI through nibabel.

Both come in as :class:`~medviewer.core.header.Instance` objects so that the rest of the
loader treats them like DICOM: a picture is a single-frame (or multi-page) instance without
patient geometry; a NIfTI file is a multi-frame instance whose frames are its axial slices,
with positions from its affine (converted from RAS to DICOM's LPS).
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from medviewer.core.header import FrameGeometry, Instance
from medviewer.core.sources import Refused, Source

_GRAY_MODES = {"1": (8, 0, False), "L": (8, 0, False), "I;16": (16, 0, False), "I;16B": (16, 0, False),
               "I;16L": (16, 0, False), "I": (32, 1, False), "F": (32, 1, True)}


# Pages of a multi-page picture (TIFF) read at most, and claims that must be backed by the file.
MAX_PAGES = 4096
_MAX_CLAIM = 256 << 20
_PICTURE_RATIO = 1000


def _picture_extra(source: Source) -> dict:
    folder = os.path.basename(os.path.dirname(source.member or source.path)) or os.path.basename(source.path)
    return {"Modality": "OT", "SeriesDescription": folder, "StudyDescription": folder}


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.split(",")[0] if text else type(exc).__name__


def read_raster_header(source: Source, fp) -> Instance | Refused:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(fp) as image:
            width, height = image.size
            mode = image.mode
            frames = int(getattr(image, "n_frames", 1) or 1)
    except UnidentifiedImageError:
        return Refused(source.name, "not a DICOM file or a readable image")
    except Image.DecompressionBombError as exc:  # an Exception, not an OSError: it ended the whole scan
        return Refused(source.name, f"picture too large to open ({_short(exc)})")
    except (OSError, ValueError, SyntaxError) as exc:
        return Refused(source.name, f"damaged image file ({exc})")
    if width < 1 or height < 1:
        return Refused(source.name, "image has no pixels")
    if frames > MAX_PAGES:
        return Refused(source.name, f"picture has {frames} pages, more than {MAX_PAGES} are not read")
    decoded = width * height * frames * (3 if mode not in _GRAY_MODES else 4)
    size = source.size()
    if decoded > _MAX_CLAIM and decoded > _PICTURE_RATIO * max(size, 1):
        return Refused(source.name, (f"picture claims {_size(decoded)} of pixels ({width} x {height} x {frames} "
                                     f"page(s)) from a {_size(size)} file; refused before decoding"))
    if mode in _GRAY_MODES:
        bits, signed, is_float = _GRAY_MODES[mode]
        samples, photometric = 1, "MONOCHROME2"
    else:
        bits, signed, is_float = 8, 0, False
        samples, photometric = 3, "RGB"
    return Instance(
        source=source, kind="image", rows=height, columns=width, frames=frames,
        samples_per_pixel=samples, photometric=photometric, bits_allocated=bits, bits_stored=bits,
        pixel_representation=signed, float_pixels=is_float,
        geometry=[FrameGeometry() for _ in range(frames)], attrs=_picture_extra(source) | {"mode": mode},
    )


def decode_raster(instance: Instance) -> np.ndarray:
    """Stored values, shaped (frames, rows, cols) or (frames, rows, cols, 3) uint8 for colour."""
    from PIL import Image, ImageSequence

    with instance.source.open() as fp, Image.open(fp) as image:
        out = []
        for index, page in enumerate(ImageSequence.Iterator(image)):
            if index >= instance.frames:  # never more pages than the header read promised
                break
            if instance.samples_per_pixel == 3:
                array = np.asarray(page.convert("RGB"))
            elif page.mode == "1":
                array = np.asarray(page.convert("L"))
            else:
                array = np.asarray(page)
            if array.shape[:2] != (instance.rows, instance.columns):
                raise ValueError(f"image size changed between pages ({array.shape[:2]})")
            out.append(array)
    return np.stack(out)


# A large gzipped volume expanding more than this is a bomb (honest CT and MR compress a few-fold,
# masks a few hundred-fold at most); the largest header extension read.
_GZIP_RATIO = 200
_GZIP_CHECKED_ABOVE = 256 << 20
_MAX_VOX_OFFSET = 64 << 20


class _NiftiClaim:
    """A NIfTI header read alone (never the data), with what it claims checked against the file."""

    def __init__(self, header, gzipped: bool):
        self.header = header
        self.gzipped = gzipped
        self.shape = tuple(int(n) for n in header.get_data_shape())
        self.dtype = header.get_data_dtype()
        self.offset = int(header.get_data_offset())
        self.affine = np.asarray(header.get_best_affine(), dtype=float)
        slope, inter = header.get_slope_inter()
        self.slope = 1.0 if slope is None else slope
        self.inter = 0.0 if inter is None else inter

    @property
    def volume_bytes(self) -> int:
        """Bytes of the first 3D volume (what is shown), in exact integers."""
        count = 1
        for n in self.shape[:3]:
            count *= n
        return count * self.dtype.itemsize


def _nifti_stream(fp):
    head = fp.read(2)
    fp.seek(0)
    if head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=fp, mode="rb"), True
    return fp, False


def _nifti_claim(fp, size: int) -> _NiftiClaim:
    """The header of a NIfTI-1 or NIfTI-2 file, refused (``ValueError`` in plain words) when its
    claims do not fit the bytes present."""
    import nibabel as nib

    stream, gzipped = _nifti_stream(fp)
    raw = stream.read(544)
    header = None
    for klass in (nib.Nifti1Header, nib.Nifti2Header):
        block = raw[: klass.template_dtype.itemsize]
        if len(block) < klass.template_dtype.itemsize:
            continue
        sizeof = int.from_bytes(block[:4], "little")
        if sizeof != klass.sizeof_hdr and int.from_bytes(block[:4], "big") != klass.sizeof_hdr:
            continue
        try:
            header = klass(binaryblock=block, check=True)
            break
        except Exception as exc:  # noqa: BLE001 - nibabel raises many kinds for a wrong header
            raise ValueError(f"damaged NIfTI header ({_short(exc)})") from None
    if header is None:
        raise ValueError("not a NIfTI-1 or NIfTI-2 file (no valid header size)")
    try:
        claim = _NiftiClaim(header, gzipped)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"damaged NIfTI header ({_short(exc)})") from None
    if any(n < 0 for n in claim.shape):
        raise ValueError(f"damaged NIfTI header (negative dimension in {claim.shape})")
    if claim.offset < 0 or claim.offset > _MAX_VOX_OFFSET:
        raise ValueError(f"damaged NIfTI header (data offset {claim.offset})")
    need = claim.volume_bytes
    if gzipped:
        if need > _GZIP_RATIO * max(size, 1) and need > _GZIP_CHECKED_ABOVE:
            raise ValueError(f"the header claims {_size(need)} of voxels ({_dims(claim.shape)}) but the compressed "
                             f"file holds {_size(size)}, a gzip bomb; refused before reading")
    elif claim.offset + need > size:
        raise ValueError(f"the header claims {_size(need)} of voxels ({_dims(claim.shape)}) but the file holds "
                         f"{_size(max(0, size - claim.offset))}; refused before reading")
    return claim


def _dims(shape) -> str:
    return " x ".join(str(n) for n in shape)


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def read_nifti_header(source: Source, fp) -> Instance | Refused:
    try:
        image = _nifti_claim(fp, source.size())
    except (ValueError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        return Refused(source.name, str(exc) or f"damaged NIfTI file ({type(exc).__name__})")
    except OSError as exc:
        return Refused(source.name, f"damaged NIfTI file ({exc.strerror or exc or type(exc).__name__})")
    shape = image.shape
    if len(shape) < 2 or min(shape[:2]) < 1 or (len(shape) > 2 and shape[2] < 1):
        return Refused(source.name, f"NIfTI image has no slices (shape {shape})")
    dtype = image.dtype
    if dtype.kind not in "iuf" or dtype.itemsize > 8:
        return Refused(source.name, f"NIfTI data type {dtype} is not supported")
    columns, rows = int(shape[0]), int(shape[1])
    frames = int(shape[2]) if len(shape) > 2 else 1
    notes = []
    if len(shape) > 3 and int(np.prod(shape[3:])) > 1:
        notes.append(f"4D NIfTI {tuple(shape)}: showing the first volume")
    affine = np.asarray(image.affine, dtype=float)
    lps = np.diag([-1.0, -1.0, 1.0])
    axes = lps @ affine[:3, :3]
    dx, dy, dz = (float(np.linalg.norm(axes[:, n])) or 1.0 for n in range(3))
    orientation = tuple(float(v) for v in np.concatenate([axes[:, 0] / dx, axes[:, 1] / dy]))
    slope, intercept = image.slope, image.inter
    slope = float(slope) if np.isfinite(slope) and slope != 0 else 1.0
    intercept = float(intercept) if np.isfinite(intercept) else 0.0
    geometry = []
    for k in range(frames):
        position = lps @ (affine @ np.array([0.0, 0.0, k, 1.0]))[:3]
        geometry.append(FrameGeometry(tuple(float(v) for v in position), orientation, (dy, dx), dz, slope, intercept))
    name = source.basename
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return Instance(
        source=source, kind="nifti", rows=rows, columns=columns, frames=frames, samples_per_pixel=1,
        photometric="MONOCHROME2", bits_allocated=dtype.itemsize * 8, bits_stored=dtype.itemsize * 8,
        pixel_representation=int(dtype.kind in "if"), float_pixels=dtype.kind == "f",
        geometry=geometry, notes=notes,
        attrs={"Modality": "OT", "SeriesDescription": name, "StudyDescription": name,
               "dtype": dtype.str},
    )


def decode_nifti(instance: Instance) -> np.ndarray:
    """Stored (unscaled) values shaped (slices, rows, cols): NIfTI (x, y, z) transposed to (z, y, x).

    Only the first 3D volume is read, streamed from a gzipped file: never more than it claims.
    """
    with instance.source.open() as fp:
        claim = _nifti_claim(fp, instance.source.size())
        fp.seek(0)
        stream, _ = _nifti_stream(fp)
        skip = claim.offset
        while skip > 0:
            chunk = stream.read(min(skip, 1 << 20))
            if not chunk:
                raise ValueError("truncated NIfTI file (ends before its data)")
            skip -= len(chunk)
        need = claim.volume_bytes
        data = bytearray(need)
        view = memoryview(data)
        got = 0
        while got < need:
            chunk = stream.read(min(need - got, 16 << 20))
            if not chunk:
                raise ValueError(f"truncated NIfTI data ({got} of {need} bytes)")
            view[got:got + len(chunk)] = chunk
            got += len(chunk)
    shape = (claim.shape + (1, 1))[:3]
    raw = np.frombuffer(data, dtype=claim.dtype).reshape(shape, order="F")
    return np.ascontiguousarray(raw.transpose(2, 1, 0))
