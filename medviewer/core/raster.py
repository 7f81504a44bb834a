"""Non-DICOM inputs: plain pictures (PNG, JPEG, TIFF, BMP) through Pillow and NIfTI through nibabel.

Both come in as :class:`~medviewer.core.header.Instance` objects so that the rest of the
loader treats them like DICOM: a picture is a single-frame (or multi-page) instance without
patient geometry; a NIfTI file is a multi-frame instance whose frames are its axial slices,
with positions from its affine (converted from RAS to DICOM's LPS).
"""

from __future__ import annotations

import gzip
import io
import os

import numpy as np

from medviewer.core.header import FrameGeometry, Instance
from medviewer.core.sources import Refused, Source

_GRAY_MODES = {"1": (8, 0, False), "L": (8, 0, False), "I;16": (16, 0, False), "I;16B": (16, 0, False),
               "I;16L": (16, 0, False), "I": (32, 1, False), "F": (32, 1, True)}


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
        for page in ImageSequence.Iterator(image):
            if instance.samples_per_pixel == 3:
                array = np.asarray(page.convert("RGB"))
            elif page.mode == "1":
                array = np.asarray(page.convert("L"))
            else:
                array = np.asarray(page)
            out.append(array)
    stack = np.stack(out)
    if stack.shape[1:3] != (instance.rows, instance.columns):
        raise ValueError(f"image size changed between pages ({stack.shape[1:3]})")
    return stack


def _nifti_image(source: Source, fp):
    import nibabel as nib

    data = fp.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    for klass in (nib.Nifti1Image, nib.Nifti2Image):
        try:
            return klass.from_bytes(data)
        except Exception:  # noqa: BLE001 - nibabel raises many kinds for a wrong header
            continue
    raise ValueError("not a NIfTI-1 or NIfTI-2 image")


def read_nifti_header(source: Source, fp) -> Instance | Refused:
    try:
        image = _nifti_image(source, fp)
    except (OSError, EOFError, ValueError, gzip.BadGzipFile) as exc:
        return Refused(source.name, f"damaged NIfTI file ({exc})")
    shape = image.shape
    if len(shape) < 2 or min(shape[:2]) < 1:
        return Refused(source.name, f"NIfTI image has no slices (shape {shape})")
    dtype = image.get_data_dtype()
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
    slope, intercept = image.dataobj.slope, image.dataobj.inter
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
    """Stored (unscaled) values shaped (slices, rows, cols): NIfTI (x, y, z) transposed to (z, y, x)."""
    with instance.source.open() as fp:
        image = _nifti_image(instance.source, io.BytesIO(fp.read()))
    raw = np.asanyarray(image.dataobj.get_unscaled())
    while raw.ndim > 3:
        raw = raw[..., 0]
    if raw.ndim == 2:
        raw = raw[:, :, None]
    return np.ascontiguousarray(raw.transpose(2, 1, 0))
