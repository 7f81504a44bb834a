"""16- and 32-bit RGB keep their stored depth: in the Volume, in ``info --json``'s pixel summary,
and windowed to 8 bits only for display. Compared with pydicom's own ``pixel_array`` on
pydicom-data's and pydicom's files (``get_testdata_file`` with exact names only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

import medviewer
from medviewer.core.info import describe
from medviewer.core.windowing import color_to_uint8
from medviewer.export.images import window_slice

NAMES = [
    "SC_rgb_16bit.dcm", "SC_rgb_16bit_2frame.dcm", "SC_rgb_32bit.dcm", "SC_rgb_32bit_2frame.dcm",
    "SC_rgb_expb_16bit.dcm", "SC_rgb_expb_16bit_2frame.dcm", "SC_rgb_expb_32bit.dcm", "SC_rgb_expb_32bit_2frame.dcm",
    "SC_rgb_rle_16bit.dcm", "SC_rgb_rle_16bit_2frame.dcm", "SC_rgb_rle_32bit.dcm", "SC_rgb_rle_32bit_2frame.dcm",
]


def _file(name: str) -> str:
    path = get_testdata_file(name)
    if path is None or not os.path.exists(path):
        pytest.skip(f"{name} is not installed (pydicom-data)")
    return path


def _reference(path: str) -> tuple[pydicom.Dataset, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        array = ds.pixel_array
    frames = int(ds.get("NumberOfFrames") or 1)
    return ds, (array if frames > 1 else array[None])


@pytest.mark.parametrize("name", NAMES)
def test_volume_keeps_the_stored_depth(name):
    path = _file(name)
    ds, expected = _reference(path)
    bits = int(ds.BitsAllocated)
    result = medviewer.scan(path, parallel=False)
    assert result.refused == []
    volume = medviewer.load(result.series[0], parallel=False)
    assert volume.is_color
    assert volume.voxels.dtype == np.dtype(f"uint{bits}")
    assert volume.color_bits == int(ds.BitsStored)
    assert int(volume.voxels.max()) == int(expected.max()) == (1 << bits) - 1
    for k, info in enumerate(volume.slices):
        np.testing.assert_array_equal(volume.voxels[k], expected[info.frame])


@pytest.mark.parametrize("name", ["SC_rgb_16bit.dcm", "SC_rgb_expb_32bit_2frame.dcm", "SC_rgb_rle_32bit.dcm"])
def test_info_pixel_summary_reports_the_stored_depth(name):
    path = _file(name)
    ds, expected = _reference(path)
    document = describe(medviewer.scan(path, parallel=False))
    pixels = document["studies"][0]["series"][0]["images"][0]["pixels"]
    assert pixels["bits_stored"] == int(ds.BitsStored)
    assert pixels["max"] == int(expected.max()) and pixels["min"] == int(expected.min())
    assert pixels["dtype"] == f"uint{int(ds.BitsAllocated)}"
    import hashlib
    shape = expected.shape[1:] if expected.shape[0] == 1 else expected.shape
    canonical = np.ascontiguousarray(expected.reshape(shape), dtype=expected.dtype.newbyteorder("<"))
    assert pixels["sha256"] == hashlib.sha256(canonical.tobytes()).hexdigest()


def test_info_json_cli_prints_65535():
    path = _file("SC_rgb_16bit.dcm")
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-m", "medviewer", "info", "--json", path], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    pixels = json.loads(out.stdout)["studies"][0]["series"][0]["images"][0]["pixels"]
    assert pixels["max"] == 65535 and pixels["bits_stored"] == 16


@pytest.mark.parametrize("name", ["SC_rgb_16bit.dcm", "SC_rgb_32bit.dcm"])
def test_display_windows_to_the_top_8_bits(name):
    path = _file(name)
    ds, expected = _reference(path)
    volume = medviewer.load(medviewer.scan(path, parallel=False).series[0], parallel=False)
    shown = window_slice(volume, 0)
    assert shown.dtype == np.uint8
    np.testing.assert_array_equal(shown, (expected[0] >> (int(ds.BitsStored) - 8)).astype(np.uint8))
    assert shown.max() == 255


def test_color_to_uint8_leaves_8_bit_alone():
    rgb = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    assert color_to_uint8(rgb, 8) is rgb
    deep = np.array([[[0, 256, 65535]]], dtype=np.uint16)
    np.testing.assert_array_equal(color_to_uint8(deep, 16), [[[0, 1, 255]]])
    np.testing.assert_array_equal(color_to_uint8(deep, 12), [[[0, 16, 255]]])
