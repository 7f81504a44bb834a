"""MedViewer's loader against pydicom's own decode of every bundled image file.

A reference table in the manner of pydicom's ``tests/pixels/pixels_reference.py``: one row per
bundled file, naming its transfer syntax, photometric interpretation and frame count (checked,
so a pydicom upgrade that swaps a file shows up here) and what MedViewer should make of it.

For every row, ``medviewer.scan`` finds one series and ``medviewer.load`` gives a volume whose
voxels equal pydicom's decode:

* grayscale: ``ds.pixel_array * RescaleSlope + RescaleIntercept`` (per frame where the
  functional groups say so),
* colour: pydicom's RGB (``pixel_array`` converts YBR to RGB) at the stored depth (uint16 and
  uint32 for 16- and 32-bit samples, never cut to 8 bits),
* palette colour: ``pydicom.pixels.apply_color_lut``, reduced to uint8 the same way,

with each slice matched to its frame through ``volume.slices[k].frame`` (never assuming the
loader kept file order). ``medviewer.core.info.describe`` must hash the same stored values.

Only files present in the installed pydicom wheel are used (``get_testdata_file`` with exact
names); a name not on disk would make pydicom try the network.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut

import medviewer
from medviewer.core.info import describe

TEST_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")

# Transfer syntax UIDs, spelled out so the table reads without a lookup.
ILE = "1.2.840.10008.1.2"  # Implicit VR Little Endian
ELE = "1.2.840.10008.1.2.1"  # Explicit VR Little Endian
DEF = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
EBE = "1.2.840.10008.1.2.2"  # Explicit VR Big Endian
JPB = "1.2.840.10008.1.2.4.50"  # JPEG Baseline (process 1)
JPE = "1.2.840.10008.1.2.4.51"  # JPEG Extended (process 2 and 4)
JPL = "1.2.840.10008.1.2.4.70"  # JPEG Lossless SV1
JLS = "1.2.840.10008.1.2.4.80"  # JPEG-LS Lossless
JLN = "1.2.840.10008.1.2.4.81"  # JPEG-LS Near-Lossless
J2L = "1.2.840.10008.1.2.4.90"  # JPEG 2000 Lossless
J2K = "1.2.840.10008.1.2.4.91"  # JPEG 2000
RLE = "1.2.840.10008.1.2.5"  # RLE Lossless


@dataclass(frozen=True)
class Ref:
    name: str
    syntax: str
    photometric: str
    frames: int
    bits: int  # BitsAllocated
    dtype: str | None = None  # the volume's dtype where the rules fix it
    note: str = ""

    @property
    def kind(self) -> str:
        if self.photometric == "PALETTE COLOR":
            return "palette"
        if self.photometric.startswith("MONOCHROME"):
            return "gray"
        return "color"


REFERENCE = [
    # Native little endian, implicit and explicit VR.
    Ref("CT_small.dcm", ELE, "MONOCHROME2", 1, 16, "int16", "CT with rescale -1024"),
    Ref("MR_small.dcm", ELE, "MONOCHROME2", 1, 16, "int16"),
    Ref("MR_small_implicit.dcm", ILE, "MONOCHROME2", 1, 16, "int16"),
    Ref("MR_small_padded.dcm", ELE, "MONOCHROME2", 1, 16, "int16", "excess padding after the pixels"),
    Ref("examples_overlay.dcm", ELE, "MONOCHROME2", 1, 16, "int16", "12 of 16 bits, overlay in the header"),
    Ref("rtdose.dcm", ILE, "MONOCHROME2", 15, 32, "int32", "32-bit multi-frame, GridFrameOffsetVector"),
    Ref("rtdose_1frame.dcm", ILE, "MONOCHROME2", 1, 32, "int32"),
    Ref("liver_1frame.dcm", ELE, "MONOCHROME2", 1, 1, "uint8", "1-bit SEG, functional groups"),
    Ref("examples_rgb_color.dcm", ELE, "RGB", 1, 8, "uint8"),
    Ref("SC_rgb_small_odd.dcm", ELE, "RGB", 1, 8, "uint8", "3x3, odd length"),
    Ref("SC_rgb_jpeg_dcmd.dcm", ILE, "RGB", 1, 8, "uint8"),
    Ref("SC_ybr_full_422_uncompressed.dcm", ELE, "YBR_FULL_422", 1, 8, "uint8", "subsampled, uncompressed"),
    Ref("examples_palette.dcm", ELE, "PALETTE COLOR", 1, 8, "uint8", "16-bit palette entries"),
    # Deflated.
    Ref("image_dfl.dcm", DEF, "MONOCHROME2", 1, 8, "uint8"),
    # Big endian.
    Ref("MR_small_bigendian.dcm", EBE, "MONOCHROME2", 1, 16, "int16"),
    Ref("MR_small_expb.dcm", EBE, "MONOCHROME2", 1, 16, "int16"),
    Ref("rtdose_expb.dcm", EBE, "MONOCHROME2", 15, 32, "int32"),
    Ref("rtdose_expb_1frame.dcm", EBE, "MONOCHROME2", 1, 32, "int32"),
    Ref("liver_expb_1frame.dcm", EBE, "MONOCHROME2", 1, 1, "uint8"),
    Ref("ExplVR_BigEnd.dcm", EBE, "RGB", 1, 8, "uint8"),
    Ref("SC_rgb_small_odd_big_endian.dcm", EBE, "RGB", 1, 8, "uint8"),
    # JPEG baseline (8-bit colour, RGB and YBR, with and without subsampling).
    Ref("SC_rgb_jpeg.dcm", JPB, "RGB", 1, 8, "uint8"),
    Ref("SC_rgb_jpeg_dcmtk.dcm", JPB, "YBR_FULL", 1, 8, "uint8"),
    Ref("SC_rgb_jpeg_lossy_gdcm.dcm", JPB, "YBR_FULL", 1, 8, "uint8"),
    Ref("SC_rgb_jpeg_app14_dcmd.dcm", JPB, "RGB", 1, 8, "uint8", "Adobe APP14 marker"),
    Ref("SC_jpeg_no_color_transform.dcm", JPB, "RGB", 1, 8, "uint8"),
    Ref("SC_jpeg_no_color_transform_2.dcm", JPB, "RGB", 1, 8, "uint8"),
    Ref("SC_rgb_dcmtk_+eb+cr.dcm", JPB, "RGB", 1, 8, "uint8"),
    Ref("SC_rgb_dcmtk_+eb+cy+n1.dcm", JPB, "YBR_FULL", 1, 8, "uint8"),
    Ref("SC_rgb_dcmtk_+eb+cy+n2.dcm", JPB, "YBR_FULL", 1, 8, "uint8"),
    Ref("SC_rgb_dcmtk_+eb+cy+s4.dcm", JPB, "YBR_FULL", 1, 8, "uint8"),
    Ref("SC_rgb_dcmtk_+eb+cy+np.dcm", JPB, "YBR_FULL_422", 1, 8, "uint8"),
    Ref("SC_rgb_dcmtk_+eb+cy+s2.dcm", JPB, "YBR_FULL_422", 1, 8, "uint8"),
    Ref("SC_rgb_small_odd_jpeg.dcm", JPB, "YBR_FULL", 1, 8, "uint8"),
    Ref("examples_ybr_color.dcm", JPB, "YBR_FULL_422", 30, 8, "uint8", "30 frames, no positions"),
    # JPEG extended (12-bit) and lossless.
    Ref("JPGExtended.dcm", JPE, "MONOCHROME2", 1, 16, "int16"),
    Ref("SC_rgb_jpeg_gdcm.dcm", JPL, "RGB", 1, 8, "uint8"),
    # JPEG-LS lossless and near-lossless.
    Ref("MR_small_jpeg_ls_lossless.dcm", JLS, "MONOCHROME2", 1, 16, "int16"),
    Ref("JPEGLSNearLossless_08.dcm", JLN, "MONOCHROME2", 1, 8, "uint8"),
    Ref("JPEGLSNearLossless_16.dcm", JLN, "MONOCHROME2", 1, 16, "uint16", "values up to 65535: widened"),
    Ref("SC_rgb_jls_lossy_line.dcm", JLN, "RGB", 1, 8, "uint8"),
    Ref("SC_rgb_jls_lossy_sample.dcm", JLN, "RGB", 1, 8, "uint8"),
    # JPEG 2000 lossless and lossy.
    Ref("MR_small_jp2klossless.dcm", J2L, "MONOCHROME2", 1, 16, "int16"),
    Ref("J2K_pixelrep_mismatch.dcm", J2L, "MONOCHROME2", 1, 16, "int16", "CT, J2K sign differs from header"),
    Ref("GDCMJ2K_TextGBR.dcm", J2L, "YBR_RCT", 1, 8, "uint8"),
    Ref("examples_jpeg2k.dcm", J2L, "YBR_RCT", 1, 8, "uint8"),
    Ref("JPEG2000.dcm", J2K, "MONOCHROME2", 1, 16, "int16"),
    Ref("693_J2KI.dcm", J2K, "MONOCHROME2", 1, 16, "int16", "CT, 14 of 16 bits signed"),
    Ref("SC_rgb_gdcm_KY.dcm", J2K, "RGB", 1, 8, "uint8"),
    # RLE: 8/16/32 bits, 1 and 2 frames, grayscale and colour.
    Ref("MR_small_RLE.dcm", RLE, "MONOCHROME2", 1, 16, "int16"),
    Ref("rtdose_rle.dcm", RLE, "MONOCHROME2", 15, 32, "int32"),
    Ref("rtdose_rle_1frame.dcm", RLE, "MONOCHROME2", 1, 32, "int32"),
    Ref("SC_rgb_rle.dcm", RLE, "RGB", 1, 8, "uint8"),
    Ref("SC_rgb_rle_2frame.dcm", RLE, "RGB", 2, 8, "uint8"),
    Ref("SC_rgb_rle_16bit.dcm", RLE, "RGB", 1, 16, "uint16"),
    Ref("SC_rgb_rle_16bit_2frame.dcm", RLE, "RGB", 2, 16, "uint16"),
    Ref("SC_rgb_rle_32bit.dcm", RLE, "RGB", 1, 32, "uint32"),
    Ref("SC_rgb_rle_32bit_2frame.dcm", RLE, "RGB", 2, 32, "uint32"),
]

# Bundled image files that pydicom itself cannot decode.
UNDECODABLE = [
    "JPEG2000-embedded-sequence-delimiter.dcm",  # a sequence delimiter inside the codestream
    "JPEG-lossy.dcm",  # 12-bit JPEG extended that no installed plugin accepts
]


def _path(name: str) -> str:
    path = os.path.join(TEST_FILES, name)
    if not os.path.exists(path):  # never let get_testdata_file go to the network
        pytest.skip(f"{name} is not bundled with this pydicom")
    assert get_testdata_file(name) == path
    return path


def _read(path: str) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def _frames(ds: pydicom.Dataset) -> np.ndarray:
    """pydicom's decode with a leading frame axis (RGB for colour, indices for palette)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        array = ds.pixel_array
    frames = int(ds.get("NumberOfFrames") or 1)
    return array if frames > 1 else array[None]


def _rescale(ds: pydicom.Dataset, frame: int) -> tuple[float, float]:
    """(slope, intercept) of ``frame``: per-frame group, then shared group, then top level."""
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    holders = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and frame < len(per_frame):
        holders.append(per_frame[frame])
    if ds.get("SharedFunctionalGroupsSequence"):
        holders.append(ds.SharedFunctionalGroupsSequence[0])
    for holder in holders:
        if holder.get("PixelValueTransformationSequence"):
            item = holder.PixelValueTransformationSequence[0]
            return float(item.RescaleSlope), float(item.RescaleIntercept)
    return slope, intercept


def _to_uint8(values: np.ndarray, bits: int) -> np.ndarray:
    """Keep the top 8 of ``bits`` significant bits (MedViewer's colour reduction)."""
    if values.dtype == np.uint8:
        return values
    return (values >> max(0, bits - 8)).astype(np.uint8)


def _expected_voxels(ref: Ref, ds: pydicom.Dataset) -> np.ndarray:
    """What each frame should become in the volume, in file frame order."""
    stored = _frames(ds)
    if ref.kind == "color":
        return stored
    if ref.kind == "palette":
        rgb = apply_color_lut(stored, ds)
        return _to_uint8(rgb, int(ds.RedPaletteColorLookupTableDescriptor[2]))
    out = np.empty(stored.shape, dtype=np.float64)
    for f in range(stored.shape[0]):
        slope, intercept = _rescale(ds, f)
        out[f] = stored[f].astype(np.float64) * slope + intercept
    return out


def _canonical_hash(ref: Ref, ds: pydicom.Dataset) -> str:
    """info.py's documented hash, computed from pydicom's decode."""
    stored = _frames(ds)
    if ref.kind == "color":
        canonical = np.ascontiguousarray(stored, dtype=stored.dtype.newbyteorder("<"))
    elif stored.dtype.kind == "f":
        canonical = np.ascontiguousarray(stored, dtype="<f8")
    else:
        canonical = np.ascontiguousarray(stored, dtype="<i4")
    return hashlib.sha256(canonical.tobytes()).hexdigest()


@pytest.fixture(scope="module")
def loaded():
    """Scan and load each file once (serial: the shared pool is exercised separately)."""
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            path = _path(name)
            result = medviewer.scan(path, parallel=False)
            volume = medviewer.load(result.series[0], parallel=False) if len(result.series) == 1 else None
            cache[name] = (path, result, volume)
        return cache[name]

    return get


@pytest.mark.parametrize("ref", REFERENCE, ids=lambda r: r.name)
def test_table_matches_file(ref: Ref):
    """The table's description of each file is what the file says (guards the table itself)."""
    ds = _read(_path(ref.name))
    assert str(ds.file_meta.TransferSyntaxUID) == ref.syntax
    assert ds.PhotometricInterpretation == ref.photometric
    assert int(ds.get("NumberOfFrames") or 1) == ref.frames
    assert int(ds.BitsAllocated) == ref.bits


def test_table_covers_every_syntax_and_photometric():
    syntaxes = {r.syntax for r in REFERENCE}
    assert syntaxes == {ILE, ELE, DEF, EBE, JPB, JPE, JPL, JLS, JLN, J2L, J2K, RLE}
    photometrics = {r.photometric for r in REFERENCE}
    assert {"MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "PALETTE COLOR"} <= photometrics
    assert {r.bits for r in REFERENCE if r.syntax == RLE} == {8, 16, 32}
    assert {r.frames for r in REFERENCE if r.syntax == RLE} == {1, 2, 15}


@pytest.mark.parametrize("ref", REFERENCE, ids=lambda r: r.name)
def test_load_equals_pydicom(ref: Ref, loaded):
    path, result, volume = loaded(ref.name)
    assert result.refused == []
    assert len(result.series) == 1, result.series
    series = result.series[0]
    assert len(series) == ref.frames
    assert volume is not None

    ds = _read(path)
    expected = _expected_voxels(ref, ds)
    voxels = volume.voxels

    # Shape, layout and dtype rules.
    rows, cols = int(ds.Rows), int(ds.Columns)
    if ref.kind == "gray":
        assert voxels.shape == (ref.frames, rows, cols)
    else:
        assert voxels.shape == (ref.frames, rows, cols, 3)
        assert voxels.dtype == (np.uint8 if ref.kind == "palette" or ref.bits == 8 else np.dtype(f"uint{ref.bits}"))
        assert volume.is_color
        assert volume.color_bits == (8 if ref.kind == "palette" else int(ds.BitsStored))
    assert voxels.flags.c_contiguous
    if ref.dtype is not None:
        assert voxels.dtype == np.dtype(ref.dtype), f"{ref.name}: {voxels.dtype}"
    if ds.get("Modality") == "CT":
        assert voxels.dtype == np.int16
    if ref.kind == "gray" and ref.bits <= 8 and int(ds.PixelRepresentation) == 0 and "RescaleSlope" not in ds:
        assert voxels.dtype == np.uint8

    # Each slice says which frame it came from; together they are a permutation of the frames.
    frames = [s.frame for s in volume.slices]
    assert sorted(frames) == list(range(ref.frames))
    assert all(s.source == path for s in volume.slices)
    for k, f in enumerate(frames):
        if ref.kind == "gray" and voxels.dtype.kind == "f":
            np.testing.assert_allclose(voxels[k], expected[f], rtol=1e-6, err_msg=f"{ref.name} slice {k}")
        else:
            np.testing.assert_array_equal(voxels[k], expected[f], err_msg=f"{ref.name} slice {k} (frame {f})")


@pytest.mark.parametrize("ref", [r for r in REFERENCE if r.frames > 1], ids=lambda r: r.name)
def test_multiframe_slice_order(ref: Ref, loaded):
    """Positioned frames come out sorted along the normal; unpositioned ones keep frame order."""
    path, _, volume = loaded(ref.name)
    if volume.geometry_known:
        positions = np.array([s.position_lps_mm for s in volume.slices], dtype=float)
        along = positions @ volume.direction[0]
        assert np.all(np.diff(along) > 0)
        np.testing.assert_allclose(volume.positions_lps_mm, positions, atol=1e-4)
        ds = _read(path)
        if "GridFrameOffsetVector" in ds:
            ipp = np.array([float(v) for v in ds.ImagePositionPatient])
            offsets = [float(v) for v in ds.GridFrameOffsetVector]
            for s in volume.slices:
                np.testing.assert_allclose(s.position_lps_mm, ipp + offsets[s.frame] * volume.direction[0], atol=1e-4)
    else:
        assert [s.frame for s in volume.slices] == list(range(ref.frames))


@pytest.mark.parametrize("ref", REFERENCE, ids=lambda r: r.name)
def test_info_hash_equals_pydicom(ref: Ref, loaded):
    path, result, _ = loaded(ref.name)
    document = describe(result)
    assert document["refused"] == []
    (image,) = document["studies"][0]["series"][0]["images"]
    pixels = image["pixels"]
    ds = _read(path)
    stored = _frames(ds)
    expected_shape = list(stored.shape[1:] if stored.shape[0] == 1 else stored.shape)
    assert pixels["shape"] == expected_shape
    assert pixels["sha256"] == _canonical_hash(ref, ds), ref.name
    if ref.kind != "color":
        assert pixels["min"] == int(stored.min()) and pixels["max"] == int(stored.max())


def test_monochrome_volume_not_inverted(loaded):
    _, _, volume = loaded("CT_small.dcm")
    assert volume.invert is False
    assert volume.units == "HU"
    assert volume.photometric == "MONOCHROME2"


def test_geometry_of_single_file(loaded):
    path, _, volume = loaded("CT_small.dcm")
    ds = _read(path)
    np.testing.assert_allclose(volume.origin_lps_mm, [float(v) for v in ds.ImagePositionPatient])
    dy, dx = (float(v) for v in ds.PixelSpacing)
    assert volume.spacing_mm[1:] == pytest.approx((dy, dx))
    assert volume.pixel_spacing_known


@pytest.mark.parametrize("name", ["rtdose.dcm", "examples_ybr_color.dcm", "MR_small_jp2klossless.dcm",
                                  "SC_rgb_rle_16bit_2frame.dcm"])
def test_parallel_load_equals_serial(name, loaded):
    """The default path (threads and the shared process pool) gives the same voxels."""
    _, result, serial = loaded(name)
    parallel = medviewer.load(result.series[0])
    assert parallel.voxels.dtype == serial.voxels.dtype
    np.testing.assert_array_equal(parallel.voxels, serial.voxels)
    assert parallel.voxels.flags.c_contiguous


@pytest.mark.parametrize("name", UNDECODABLE)
def test_undecodable_file_fails_with_one_line(name):
    path = _path(name)
    ds = _read(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = ds.pixel_array
    except Exception:  # noqa: BLE001 - pydicom cannot decode it, as expected
        reference = None
    result = medviewer.scan(path, parallel=False)
    if reference is not None:  # a plugin installed later (GDCM, say) decodes it: then so must we
        volume = medviewer.load(result.series[0], parallel=False)
        np.testing.assert_array_equal(volume.voxels.reshape(reference.shape), reference)
        return

    if not result.series:  # refused at scan time: one reason naming the file
        (refused,) = result.refused
        assert refused.path == path and refused.reason and "\n" not in refused.reason
        return
    for parallel in (False, True):
        with pytest.raises(medviewer.LoadError) as info:
            medviewer.load(result.series[0], parallel=parallel)
        message = str(info.value)
        assert "\n" not in message
        assert path in message
        assert info.value.path == path

    document = describe(result)
    (refused,) = document["refused"]
    assert refused["path"] == path and "\n" not in refused["reason"]
