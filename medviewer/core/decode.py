"""Decode frames to stored values (before the modality LUT), one door for every transfer syntax.

Native little-endian grayscale pixels are read straight from the file (no decoder, no copy
through pydicom). Everything else goes through pydicom's pixel pipeline with its pylibjpeg,
pyjpegls and Pillow plugins. Colour comes out as RGB (YBR converted by pydicom), palette
colour as its indices; :func:`to_rgb` turns either into interleaved RGB at the stored depth
(uint8, uint16 or uint32 samples; palette colour as uint8) and :func:`to_rgb8` into uint8 for
thumbnails.

These functions run in pool processes too: they take and return plain picklable data.
"""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from medviewer.core.header import Instance


class DecodeError(Exception):
    """A frame could not be decoded; the message is the plain reason."""


def stored_dtype(instance: Instance) -> np.dtype:
    """Numpy dtype of one stored sample as it lies in native little-endian pixel data."""
    if instance.float_pixels:
        return np.dtype("<f4" if instance.bits_allocated == 32 else "<f8")
    kind = "i" if instance.pixel_representation else "u"
    size = {1: 1, 8: 1, 16: 2, 32: 4}.get(instance.bits_allocated)
    if size is None:
        raise DecodeError(f"BitsAllocated {instance.bits_allocated} is not supported")
    return np.dtype(f"<{kind}{size}")


def fix_bits(values: np.ndarray, instance: Instance) -> np.ndarray:
    """Mask unused high bits (unsigned) or sign-extend from BitsStored (signed), in place."""
    bits_stored, bits_allocated = instance.bits_stored, instance.bits_allocated
    if instance.float_pixels or bits_stored >= bits_allocated or values.dtype.kind not in "iu":
        return values
    if instance.pixel_representation:
        shift = values.dtype.itemsize * 8 - bits_stored
        np.left_shift(values, shift, out=values)
        np.right_shift(values, shift, out=values)
    else:
        np.bitwise_and(values, (1 << bits_stored) - 1, out=values)
    return values


def read_native_frame(instance: Instance, frame: int, out: np.ndarray) -> np.ndarray:
    """Read frame ``frame`` of native little-endian grayscale data into ``out`` (its bytes reused).

    ``out`` must be C-contiguous with ``rows*cols*bytes per sample`` bytes; returns a view of
    it as the stored dtype.
    """
    dtype = stored_dtype(instance)
    view = out.view(np.uint8).reshape(-1)[: instance.frame_bytes].view(dtype).reshape(instance.rows, instance.columns)
    with open(instance.source.path, "rb") as fp:
        fp.seek(instance.pixel_offset + frame * instance.frame_bytes)
        count = fp.readinto(memoryview(view).cast("B"))
    if count != instance.frame_bytes:
        raise DecodeError(f"truncated pixel data in frame {frame + 1} ({count} of {instance.frame_bytes} bytes)")
    if instance.bits_stored < instance.bits_allocated:
        limit = (1 << instance.bits_stored) - 1 if not instance.pixel_representation else (1 << (instance.bits_stored - 1)) - 1
        if instance.pixel_representation or view.max() > limit:
            fix_bits(view, instance)
    return view


def _full_dataset(instance: Instance) -> Dataset:
    from medviewer.core.header import _apply_defaults

    with instance.source.open() as fp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(fp, force=True)
    # Attributes the header reader had to assume (missing BitsStored and the like) and the
    # transfer syntax it inferred for files without a meta header.
    _apply_defaults(ds, instance)
    return ds


Palette = tuple  # (table: (entries, 3) uint8, first mapped stored value: int)


def decode_frames(instance: Instance, frames: list[int]) -> tuple[list[np.ndarray], Palette | None]:
    """Stored values of ``frames`` and, for PALETTE COLOR, the palette.

    Each array is (rows, cols) for grayscale and palette indices, (rows, cols, 3) for RGB.
    """
    if instance.kind == "image":
        from medviewer.core.raster import decode_raster

        stack = decode_raster(instance)
        return [stack[f] for f in frames], None
    if instance.kind == "nifti":
        from medviewer.core.raster import decode_nifti

        stack = decode_nifti(instance)
        return [stack[f] for f in frames], None
    try:
        ds = _full_dataset(instance)
    except Exception as exc:  # noqa: BLE001 - any parser failure is a bad file
        raise DecodeError(f"cannot read the file again ({_reason(exc)})") from None
    from pydicom.pixels import pixel_array

    out = []
    expected = (instance.rows, instance.columns) + ((3,) if instance.samples_per_pixel == 3 else ())
    preferred = preferred_plugin(instance.transfer_syntax)
    for frame in frames:
        index = frame if instance.frames > 1 else None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    array = pixel_array(ds, index=index, decoding_plugin=preferred) if preferred else None
                except Exception:  # noqa: BLE001 - fall back to every other plugin
                    array = None
                if array is None:
                    array = pixel_array(ds, index=index)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - decoders raise anything on bad data, and the
            # Rust codecs (pylibjpeg-rle) raise pyo3's PanicException, a BaseException, on corrupt frames
            raise DecodeError(f"frame {frame + 1} could not be decoded ({_reason(exc)})") from None
        if array.shape != expected and array.shape[1:] == expected and array.shape[0] == 1:
            array = array[0]
        if array.shape != expected:
            raise DecodeError(f"frame {frame + 1} decoded to shape {array.shape}, expected {expected}")
        out.append(array)
    palette = None
    if instance.photometric == "PALETTE COLOR":
        try:
            palette = _palette(ds)
        except Exception as exc:  # noqa: BLE001
            raise DecodeError(f"unusable colour palette ({_reason(exc)})") from None
    return out, palette


# JPEG 2000 through GDCM decodes about a quarter faster than through OpenJPEG's Python
# binding (benchmarks/load_series.py); pydicom falls back to its other plugins without it.
_PREFERRED_PLUGINS = {
    "1.2.840.10008.1.2.4.90": "gdcm",
    "1.2.840.10008.1.2.4.91": "gdcm",
}
_plugin_available: dict[str, bool] = {}


def preferred_plugin(syntax: str) -> str | None:
    """The pydicom decoding plugin to try first for ``syntax``, if installed."""
    plugin = _PREFERRED_PLUGINS.get(syntax)
    if plugin is None:
        return None
    if syntax not in _plugin_available:
        from pydicom.pixels import get_decoder
        from pydicom.uid import UID

        try:
            _plugin_available[syntax] = plugin in get_decoder(UID(syntax)).available_plugins
        except (NotImplementedError, ValueError):
            _plugin_available[syntax] = False
    return plugin if _plugin_available[syntax] else None


def _palette(ds: Dataset) -> Palette:
    """The palette as an (entries, 3) uint8 table and the first stored value it maps."""
    from pydicom.pixels import apply_color_lut

    descriptor = ds.RedPaletteColorLookupTableDescriptor
    entries = int(descriptor[0]) or 65536
    first = int(descriptor[1])
    indices = np.arange(first, first + entries, dtype=np.uint16 if ds.BitsAllocated > 8 else np.uint8)
    table = apply_color_lut(indices, ds)
    return _rgb_to_uint8(table, int(descriptor[2])).reshape(entries, 3), first


def _rgb_to_uint8(values: np.ndarray, bits: int) -> np.ndarray:
    if values.dtype == np.uint8:
        return values
    shift = max(0, bits - 8)
    return (values >> shift).astype(np.uint8) if shift else values.astype(np.uint8)


def rgb_dtype(instance: Instance) -> np.dtype:
    """The dtype colour samples keep in a volume: uint8 up to 8 bits allocated (and palette
    colour), uint16 up to 16, uint32 above."""
    if instance.photometric == "PALETTE COLOR" or instance.bits_allocated <= 8:
        return np.dtype(np.uint8)
    return np.dtype(np.uint16) if instance.bits_allocated <= 16 else np.dtype(np.uint32)


def rgb_bits(instance: Instance) -> int:
    """Significant bits of each colour sample as :func:`to_rgb` returns it (8 for palette colour)."""
    if instance.photometric == "PALETTE COLOR":
        return 8
    return max(1, min(instance.bits_stored or 8, rgb_dtype(instance).itemsize * 8))


def to_rgb(array: np.ndarray, instance: Instance, palette=None) -> np.ndarray:
    """Interleaved RGB of a decoded colour frame at its stored depth (:func:`rgb_dtype`, native
    byte order): RGB samples as stored, palette indices through the palette (uint8)."""
    if instance.photometric == "PALETTE COLOR":
        if palette is None:
            raise DecodeError("palette colour image without a usable palette")
        table, first = palette
        index = np.clip(array.astype(np.int64) - first, 0, len(table) - 1)
        return table[index]
    return np.asarray(array).astype(rgb_dtype(instance), copy=False)


def to_rgb8(array: np.ndarray, instance: Instance, palette=None) -> np.ndarray:
    """Interleaved RGB uint8 of a decoded colour frame: :func:`to_rgb` reduced to its top 8
    stored bits (for thumbnails and pictures; volumes keep the stored depth)."""
    if instance.photometric == "PALETTE COLOR":
        return to_rgb(array, instance, palette)
    return _rgb_to_uint8(array, instance.bits_stored)


def _reason(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0]
    if text.endswith(":") and len(lines) > 1:  # "... raised by all available plugins:" then one per plugin
        text = f"{text} {'; '.join(lines[1:3])}"
    return text[:200]
