"""Grouping and geometric sorting of series, on small series written with pydicom in tmp_path.

Every series here is tiny (16x16 slices) so the file is fast; what matters is the order the
loader puts the slices in, the spacing and geometry it derives, and the warnings it gives.
"""

from __future__ import annotations

import gzip
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

import medviewer
from medviewer.core.sources import natural_key

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def scan_one(path, **kwargs) -> medviewer.Series:
    result = medviewer.scan(path, parallel=False, **kwargs)
    assert result.refused == [], [str(r) for r in result.refused]
    assert len(result.series) == 1, result.series
    return result.series[0]


def load(series: medviewer.Series) -> medviewer.Volume:
    return medviewer.load(series, parallel=False)


def assert_geometric_order(volume: medviewer.Volume, written: dict, intercept: float = -1024) -> None:
    """Slice k of the volume is slice k of what was written (which is in geometric order)."""
    slices = written["slices"]
    assert volume.shape == (len(slices), 16, 16)
    for k, item in enumerate(slices):
        assert volume.slices[k].source == item["path"], f"slice {k}"
        np.testing.assert_allclose(volume.slices[k].position_lps_mm, item["position"], atol=1e-4)
        np.testing.assert_array_equal(volume.voxels[k], item["pixels"].astype(np.int32) + intercept)


def warnings_text(obj) -> str:
    return " | ".join(obj.warnings).lower()


# --- order -----------------------------------------------------------------------------------


def test_shuffled_files_and_instance_numbers(writer):
    written = writer.write(6, file_order=[3, 0, 5, 1, 4, 2], instance_numbers=[4, 6, 1, 2, 5, 3])
    series = scan_one(writer.folder)
    volume = load(series)
    assert_geometric_order(volume, written)
    assert volume.voxels.dtype == np.int16
    assert volume.voxels.flags.c_contiguous
    assert volume.spacing_mm == pytest.approx((2.5, 0.7, 0.8))
    np.testing.assert_allclose(volume.origin_lps_mm, written["slices"][0]["position"])
    np.testing.assert_allclose(volume.direction, np.eye(3)[[2, 1, 0]])
    assert series.warnings == []
    assert volume.units == "HU" and volume.modality == "CT"


def test_reversed_order(writer):
    """Files and instance numbers running head to foot, positions decreasing along the normal."""
    written = writer.write(5, distances=[0.0, -3.0, -6.0, -9.0, -12.0], file_order=[0, 1, 2, 3, 4],
                           instance_numbers=[1, 2, 3, 4, 5])
    volume = load(scan_one(writer.folder))
    # Geometric order is by increasing distance: the written order reversed.
    written["slices"] = written["slices"][::-1]
    assert_geometric_order(volume, written)
    assert volume.spacing_mm[0] == pytest.approx(3.0)
    np.testing.assert_allclose(volume.origin_lps_mm, written["slices"][0]["position"])


def test_oblique_orientation_sorted_along_normal(writer, dicom):
    """Tilted 30 degrees about x: positions move along the normal, not along z alone."""
    angle = np.radians(30)
    orientation = (1.0, 0.0, 0.0, 0.0, float(np.cos(angle)), float(np.sin(angle)))
    written = writer.write(6, orientation=orientation, spacing=2.0, file_order=[5, 2, 0, 4, 1, 3],
                           instance_numbers=[6, 1, 5, 2, 4, 3])
    series = scan_one(writer.folder)
    volume = load(series)
    assert_geometric_order(volume, written)
    normal = np.cross(orientation[:3], orientation[3:])
    np.testing.assert_allclose(volume.direction[0], normal, atol=1e-9)
    np.testing.assert_allclose(volume.direction[1], orientation[3:], atol=1e-9)
    np.testing.assert_allclose(volume.direction[2], orientation[:3], atol=1e-9)
    assert volume.spacing_mm == pytest.approx((2.0, 0.7, 0.8))
    assert not any("shear" in w or "tilt" in w for w in series.warnings)


def test_sorting_follows_normal_not_z(writer):
    """A tilted stack where sorting by z alone would give a different order than the normal."""
    angle = np.radians(80)
    orientation = (1.0, 0.0, 0.0, 0.0, float(np.cos(angle)), float(np.sin(angle)))
    # Normal is (0, -sin80, cos80): mostly -y. In-plane offsets along the column direction
    # (mostly +z) scramble z, but leave the distance along the normal alone.
    normal = np.cross(orientation[:3], orientation[3:])
    col = np.asarray(orientation[3:])
    folder = writer.folder
    written = writer.write(5, orientation=orientation, spacing=2.0)
    # Rewrite each slice with an in-plane shift along the column direction (still the same plane).
    shifts = [8.0, -6.0, 4.0, -10.0, 0.0]
    for k, item in enumerate(written["slices"]):
        ds = pydicom.dcmread(item["path"])
        position = np.asarray(item["position"]) + shifts[k] * col
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.save_as(item["path"])
        item["position"] = position
    z_order = np.argsort([item["position"][2] for item in written["slices"]])
    assert list(z_order) != list(range(5)), "the test needs z order to differ from normal order"
    series = scan_one(folder)
    volume = load(series)
    assert [s.source for s in volume.slices] == [item["path"] for item in written["slices"]]
    along = np.array([s.position_lps_mm for s in volume.slices]) @ normal
    assert np.all(np.diff(along) > 0)


# --- spacing, gaps, duplicates ---------------------------------------------------------------


def test_gap_warns_and_spacing_is_median(writer):
    """A missing slice: the acquired slices keep their real positions on an even grid, and the
    missing one is interpolated (slices after the gap are not pulled one spacing up)."""
    written = writer.write(5, distances=[0.0, 2.5, 5.0, 10.0, 12.5])
    series = scan_one(writer.folder)
    assert "gap" in warnings_text(series) and "resampled" in warnings_text(series)
    volume = load(series)
    assert volume.spacing_mm[0] == pytest.approx(2.5)
    assert volume.shape == (6, 16, 16) and volume.resampled
    acquired = [0, 1, 2, 4, 5]  # grid slice of each written slice
    for k, item in zip(acquired, written["slices"]):
        assert volume.slices[k].source == item["path"] and not volume.slices[k].interpolated
        np.testing.assert_allclose(volume.positions_lps_mm[k], item["position"], atol=1e-4)
        np.testing.assert_array_equal(volume.voxels[k], item["pixels"].astype(np.int32) - 1024)
    assert volume.slices[3].interpolated and volume.slices[3].sop_instance_uid == ""
    expected = (written["slices"][2]["pixels"].astype(np.float64) + written["slices"][3]["pixels"]) / 2 - 1024
    assert np.abs(volume.voxels[3] - expected).max() <= 0.5
    assert any("gap" in w.lower() for w in volume.warnings)
    assert [s.source for s in volume.acquired] == [item["path"] for item in written["slices"]]
    # Without resampling the acquired stack is kept, each slice with its own position.
    stack = medviewer.load(series, parallel=False, resample=False)
    assert_geometric_order(stack, written)
    assert any("not resampled" in w for w in stack.warnings)


def test_duplicate_position_keeps_one_and_lists_the_other(writer):
    written = writer.write(5, distances=[0.0, 2.5, 2.5, 5.0, 7.5])
    series = scan_one(writer.folder)
    assert len(series) == 4
    assert "position" in warnings_text(series) and "not used" in warnings_text(series)
    # The one with the lower instance number is used; the other is listed with the reason.
    (unused,) = series.unused
    assert unused.frame.instance.source.name == written["slices"][2]["path"]
    assert os.path.basename(written["slices"][1]["path"]) in unused.reason
    volume = load(series)
    assert volume.spacing_mm[0] == pytest.approx(2.5) and not volume.resampled
    kept = [written["slices"][i] for i in (0, 1, 3, 4)]
    assert [s.source for s in volume.slices] == [item["path"] for item in kept]
    for k, item in enumerate(kept):
        np.testing.assert_allclose(volume.positions_lps_mm[k], item["position"], atol=1e-4)


def test_irregular_spacing_warns(writer):
    writer.write(6, distances=[0.0, 2.0, 4.6, 6.5, 8.9, 11.0])
    series = scan_one(writer.folder)
    assert "irregular" in warnings_text(series)
    assert "gap" not in warnings_text(series)


def test_regular_spacing_has_no_warning(writer):
    writer.write(6, distances=[0.0, 1.25, 2.5, 3.75, 5.0, 6.25])
    series = scan_one(writer.folder)
    assert series.warnings == []
    assert series.spacing_mm[0] == pytest.approx(1.25)


def test_same_file_copied_twice_is_ignored_with_warning(writer):
    written = writer.write(4)
    first = written["slices"][1]["path"]
    shutil.copy(first, os.path.join(writer.folder, "copy_of_slice.dcm"))
    series = scan_one(writer.folder)
    assert len(series) == 4
    assert "duplicate" in warnings_text(series)
    volume = load(series)
    np.testing.assert_array_equal(volume.voxels[1], written["slices"][1]["pixels"] - 1024)


def test_spacing_from_positions_not_slice_thickness(writer):
    writer.write(5, spacing=2.0, thickness=5.0)
    series = scan_one(writer.folder)
    assert series.spacing_mm[0] == pytest.approx(2.0)
    assert load(series).spacing_mm[0] == pytest.approx(2.0)


# --- grouping and splitting ------------------------------------------------------------------


def test_two_series_in_one_folder(writer):
    a = writer.write(4, name="a", series_number=1, description="first")
    b = writer.write(3, name="b", series_number=2, description="second", spacing=5.0, file_order=[2, 0, 1])
    result = medviewer.scan(writer.folder, parallel=False)
    assert result.refused == []
    assert len(result.studies) == 1
    assert [s.uid for s in result.series] == [a["series"], b["series"]]
    va, vb = (load(s) for s in result.series)
    assert_geometric_order(va, a)
    assert_geometric_order(vb, b)
    assert vb.spacing_mm[0] == pytest.approx(5.0)


def _mixed(writer, **second) -> tuple[dict, dict, list[medviewer.Series]]:
    main = writer.write(5, name="main")
    other = writer.write(2, name="other", series=main["series"], frame_of_reference=main["frame_of_reference"],
                         **second)
    result = medviewer.scan(writer.folder, parallel=False)
    assert result.refused == []
    return main, other, result.series


def _check_split(main, other, parts, reason: str) -> None:
    assert len(parts) == 2
    assert {p.uid for p in parts} == {main["series"]}
    assert [p.part for p in parts] == [1, 2] and all(p.parts == 2 for p in parts)
    assert len({p.key for p in parts}) == 2
    assert [len(p) for p in parts] == [5, 2]  # the main stack first
    for p in parts:
        assert reason in p.split_reason
        assert any(reason in w for w in p.warnings)
    assert_geometric_order(load(parts[0]), main)
    assert sorted(s.source for s in load(parts[1]).slices) == sorted(i["path"] for i in other["slices"])


def test_localizer_in_series_is_split_by_orientation(writer):
    sagittal = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    main, other, parts = _mixed(writer, orientation=sagittal)
    _check_split(main, other, parts, "orientation")


def test_two_image_sizes_are_split(writer, dicom):
    main = writer.write(5, name="main")
    for k in range(2):
        ds = dicom.make_dataset(dicom.slice_pixels(k, rows=8, cols=12), study=writer.study, series=main["series"],
                                frame_of_reference=main["frame_of_reference"], position=(0, 0, 100 + k),
                                instance_number=10 + k)
        dicom.save(ds, writer.folder / f"small_{k}.dcm")
    parts = medviewer.scan(writer.folder, parallel=False).series
    assert len(parts) == 2
    assert all("image size" in p.split_reason for p in parts)
    assert (parts[0].rows, parts[0].columns, len(parts[0])) == (16, 16, 5)
    assert (parts[1].rows, parts[1].columns, len(parts[1])) == (8, 12, 2)
    assert load(parts[1]).shape == (2, 8, 12)


def test_two_frames_of_reference_are_split(writer):
    main = writer.write(5, name="main")
    other = writer.write(2, name="other", series=main["series"], origin=(0, 0, 200))
    parts = medviewer.scan(writer.folder, parallel=False).series
    _check_split(main, other, parts, "frame of reference")


# --- fallbacks without positions ---------------------------------------------------------------


def test_no_positions_ordered_by_instance_number(writer):
    # File names in one order, instance numbers in another; no ImagePositionPatient.
    written = writer.write(4, positions=False, file_order=[0, 1, 2, 3], instance_numbers=[3, 1, 4, 2])
    series = scan_one(writer.folder)
    assert "instance number" in warnings_text(series)
    volume = load(series)
    by_number = sorted(written["slices"], key=lambda item: int(item["ds"].InstanceNumber))
    assert [s.source for s in volume.slices] == [item["path"] for item in by_number]
    assert not volume.geometry_known


def test_no_positions_no_numbers_ordered_by_file_name(writer, dicom):
    folder = writer.folder
    series_uid, names = dicom.uid(), ["s10.dcm", "s2.dcm", "s1.dcm", "s33.dcm", "s3.dcm"]
    for n, name in enumerate(names):
        ds = dicom.make_dataset(dicom.slice_pixels(n), study=writer.study, series=series_uid,
                                frame_of_reference=None, position=None, orientation=None)
        dicom.save(ds, folder / name)
    series = scan_one(folder)
    assert "file name" in warnings_text(series)
    volume = load(series)
    natural = sorted(names, key=natural_key)
    assert natural == ["s1.dcm", "s2.dcm", "s3.dcm", "s10.dcm", "s33.dcm"]
    assert [os.path.basename(s.source) for s in volume.slices] == natural
    for k, name in enumerate(natural):
        np.testing.assert_array_equal(volume.voxels[k], dicom.slice_pixels(names.index(name)) - 1024)


# --- geometry -----------------------------------------------------------------------------------


def test_index_to_lps_round_trip_and_matches_positions(writer):
    angle = np.radians(30)
    orientation = (1.0, 0.0, 0.0, 0.0, float(np.cos(angle)), float(np.sin(angle)))
    written = writer.write(5, orientation=orientation, spacing=3.0, file_order=[4, 3, 2, 1, 0],
                           origin=(12.5, -40.0, 7.25))
    volume = load(scan_one(writer.folder))
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    dy, dx = 0.7, 0.8
    for k, item in enumerate(written["slices"]):
        np.testing.assert_allclose(volume.index_to_lps([k, 0, 0]), item["position"], atol=1e-6)
        # Row index j walks the column direction, column index i the row direction.
        np.testing.assert_allclose(volume.index_to_lps([k, 3, 5]), item["position"] + 3 * dy * col + 5 * dx * row,
                                   atol=1e-6)
    np.testing.assert_allclose(volume.positions_lps_mm, [item["position"] for item in written["slices"]], atol=1e-6)
    rng = np.random.default_rng(0)
    index = rng.uniform(-2, 20, size=(7, 3))
    np.testing.assert_allclose(volume.lps_to_index(volume.index_to_lps(index)), index, atol=1e-9)
    np.testing.assert_allclose(volume.lps_to_index(volume.index_to_lps(index[0])), index[0], atol=1e-9)
    grid = index.reshape(7, 1, 3).repeat(2, axis=1)
    assert volume.lps_to_index(volume.index_to_lps(grid)).shape == (7, 2, 3)


def _enhanced_ct(dicom, study: str, z: list[float], intercepts: list[float], slopes: list[float]) -> Dataset:
    frames = [dicom.slice_pixels(n) for n in range(len(z))]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT Image Storage
    ds.file_meta.MediaStorageSOPInstanceUID = dicom.uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, dicom.uid(), dicom.uid()
    ds.Modality = "CT"
    ds.InstanceNumber = 1
    ds.NumberOfFrames = len(z)
    ds.Rows, ds.Columns = frames[0].shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1

    shared = Dataset()
    orientation = Dataset()
    orientation.ImageOrientationPatient = list(AXIAL)
    shared.PlaneOrientationSequence = Sequence([orientation])
    measures = Dataset()
    measures.PixelSpacing = [0.6, 0.9]
    measures.SliceThickness = 7.0  # deliberately not the spacing
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])

    per_frame = []
    for n in range(len(z)):
        item = Dataset()
        plane = Dataset()
        plane.ImagePositionPatient = [-5.0, 8.0, z[n]]
        item.PlanePositionSequence = Sequence([plane])
        transform = Dataset()
        transform.RescaleIntercept = intercepts[n]
        transform.RescaleSlope = slopes[n]
        transform.RescaleType = "HU"
        item.PixelValueTransformationSequence = Sequence([transform])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = np.stack(frames).astype("<i2").tobytes()
    return ds


def test_enhanced_multiframe_sorted_with_per_frame_rescale(tmp_path, dicom):
    z = [6.0, -3.0, 3.0, 0.0, 9.0, -6.0]  # frames stored out of z order
    intercepts = [-1024, -1000, -1024, -900, -1024, -1010]
    slopes = [1, 1, 2, 1, 1, 3]
    path = dicom.save(_enhanced_ct(dicom, dicom.uid(), z, intercepts, slopes), tmp_path / "enhanced.dcm")
    series = scan_one(path)
    assert len(series) == 6
    volume = load(series)
    order = list(np.argsort(z))
    assert [s.frame for s in volume.slices] == order
    assert volume.voxels.dtype == np.int16
    for k, n in enumerate(order):
        expected = dicom.slice_pixels(n).astype(np.int32) * slopes[n] + intercepts[n]
        np.testing.assert_array_equal(volume.voxels[k], expected, err_msg=f"slice {k} (frame {n})")
        assert volume.slices[k].position_lps_mm == pytest.approx((-5.0, 8.0, z[n]))
        assert (volume.slices[k].slope, volume.slices[k].intercept) == (slopes[n], intercepts[n])
    assert volume.spacing_mm == pytest.approx((3.0, 0.6, 0.9))
    np.testing.assert_allclose(volume.origin_lps_mm, (-5.0, 8.0, -6.0))
    # The parallel path (the shared process pool is not used for native data; threads are).
    np.testing.assert_array_equal(medviewer.load(series).voxels, volume.voxels)


# --- values and dtypes ---------------------------------------------------------------------------


def test_monochrome1_keeps_values_and_sets_invert(writer):
    written = writer.write(3, photometric="MONOCHROME1", intercept=0, modality="MR")
    volume = load(scan_one(writer.folder))
    assert volume.invert is True
    assert volume.photometric == "MONOCHROME1"
    assert_geometric_order(volume, written, intercept=0)


def test_unsigned_16_bit_above_32767_loads_exactly(writer):
    written = writer.write(4, modality="MR", intercept=None, slope=None, dtype=np.uint16)
    # Push one slice's values above the int16 range.
    big = written["slices"][2]
    ds = pydicom.dcmread(big["path"])
    pixels = (big["pixels"].astype(np.uint32) + 60000).astype(np.uint16)
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(big["path"])
    big["pixels"] = pixels
    volume = load(scan_one(writer.folder))
    assert volume.voxels.dtype in (np.uint16, np.int32)
    assert volume.voxels.flags.c_contiguous
    assert int(volume.voxels.max()) == int(pixels.max()) > 32767
    assert_geometric_order(volume, written, intercept=0)


def test_unsigned_16_bit_with_negative_intercept_widens_to_int32(writer):
    written = writer.write(3, modality="CT", intercept=-1024, dtype=np.uint16)
    big = written["slices"][0]
    ds = pydicom.dcmread(big["path"])
    pixels = np.full((16, 16), 65000, dtype=np.uint16)
    pixels[0, 0] = 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(big["path"])
    big["pixels"] = pixels
    volume = load(scan_one(writer.folder))
    assert volume.voxels.dtype == np.int32
    assert_geometric_order(volume, written)


def test_float_slope_gives_float32(writer):
    written = writer.write(3, modality="MR", slope=0.5, intercept=-3)
    volume = load(scan_one(writer.folder))
    assert volume.voxels.dtype == np.float32
    for k, item in enumerate(written["slices"]):
        np.testing.assert_array_equal(volume.voxels[k], item["pixels"].astype(np.float32) * 0.5 - 3)


@pytest.mark.parametrize("signed", [True, False])
def test_12_bit_values_with_garbage_in_unused_high_bits(writer, signed):
    """BitsStored 12 of 16 with junk above bit 11 (overlay bits, say): the volume and the
    info hash hold pydicom's values (masked, or sign-extended from bit 11)."""
    import hashlib

    from medviewer.core.info import describe

    written = writer.write(2, dtype=np.int16 if signed else np.uint16, intercept=0, modality="MR")
    raw = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 16) | (0xF000 * (np.arange(256).reshape(16, 16) % 2))
    for item in written["slices"]:
        ds = pydicom.dcmread(item["path"])
        ds.BitsStored, ds.HighBit = 12, 11
        ds.PixelData = raw.astype(np.uint16).astype("<u2").tobytes()
        ds.save_as(item["path"])
    result = medviewer.scan(writer.folder, parallel=False)
    volume = load(result.series[0])
    for k, info in enumerate(volume.slices):
        reference = pydicom.dcmread(info.source).pixel_array
        np.testing.assert_array_equal(volume.voxels[k], reference)
    image = describe(result)["studies"][0]["series"][0]["images"][0]
    reference = pydicom.dcmread(image["path"]).pixel_array
    assert image["pixels"]["sha256"] == hashlib.sha256(np.ascontiguousarray(reference, "<i4").tobytes()).hexdigest()


# --- containers: ZIP and DICOMDIR ------------------------------------------------------------------


def test_zip_archive_loads_like_the_folder(writer, tmp_path):
    written = writer.write(5, file_order=[2, 4, 0, 3, 1])
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(Path(writer.folder).iterdir()):
            zf.write(path, f"study/{path.name}")
        zf.writestr("__MACOSX/._junk", b"junk")
    from_folder = scan_one(writer.folder)
    from_zip = scan_one(archive)
    assert from_zip.uid == from_folder.uid
    assert from_zip.spacing_mm == pytest.approx(from_folder.spacing_mm)
    np.testing.assert_allclose(from_zip.origin_lps_mm, from_folder.origin_lps_mm)
    a, b = load(from_folder), load(from_zip)
    np.testing.assert_array_equal(a.voxels, b.voxels)
    assert b.voxels.dtype == a.voxels.dtype
    assert [s.sop_instance_uid for s in a.slices] == [s.sop_instance_uid for s in b.slices]
    assert all(s.source.startswith(f"{archive}!/study/") for s in b.slices)
    assert_geometric_order(a, written)


def test_dicomdir_given_explicitly_lists_its_series(pydicom_file):
    path = pydicom_file("dicomdirtests/DICOMDIR")
    fileset = FileSet(pydicom.dcmread(path))
    expected_files = {os.path.normpath(str(instance.path)) for instance in fileset}
    result = medviewer.scan(path, parallel=False)
    assert result.refused == []
    series_uids = {s.uid for s in result.series}
    assert series_uids == {str(instance.SeriesInstanceUID) for instance in fileset}
    found = {os.path.normpath(inst.source.path) for s in result.series for inst in s.instances}
    assert found == expected_files
    # Every series in it loads.
    for series in result.series:
        assert load(series).shape[0] == len(series)


# --- pictures and NIfTI ----------------------------------------------------------------------------


def test_folder_of_pngs_is_one_stack_in_natural_order(tmp_path):
    from PIL import Image

    folder = tmp_path / "pngs"
    folder.mkdir()
    names = ["img10.png", "img2.png", "img1.png", "img3.png"]
    values = {}
    for n, name in enumerate(names):
        array = (np.arange(12 * 20).reshape(12, 20) % 50 + n * 60).astype(np.uint8)
        Image.fromarray(array, mode="L").save(folder / name)
        values[name] = array
    series = scan_one(folder)
    assert len(series) == 4
    volume = load(series)
    assert volume.voxels.dtype == np.uint8
    assert volume.shape == (4, 12, 20)
    order = ["img1.png", "img2.png", "img3.png", "img10.png"]
    assert [os.path.basename(s.source) for s in volume.slices] == order
    for k, name in enumerate(order):
        np.testing.assert_array_equal(volume.voxels[k], values[name])


def test_pictures_of_each_format(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(10, 14, 3), dtype=np.uint8)
    gray16 = rng.integers(0, 60000, size=(9, 11), dtype=np.uint16)
    files = {
        "a/photo.jpg": (Image.fromarray(rgb, mode="RGB"), {"quality": 95}),
        "b/scan.bmp": (Image.fromarray(rgb, mode="RGB"), {}),
        "c/plain.tif": (Image.fromarray(gray16), {}),
        "d/gray.png": (Image.fromarray(rgb[..., 0], mode="L"), {}),
    }
    for name, (image, options) in files.items():
        (tmp_path / name).parent.mkdir()
        image.save(tmp_path / name, **options)
    result = medviewer.scan(tmp_path, parallel=False)
    assert result.refused == []
    by_name = {os.path.relpath(s.first.source.path, tmp_path): s for s in result.series}
    assert set(by_name) == set(files)
    for name, series in by_name.items():
        volume = load(series)
        with Image.open(tmp_path / name) as image:
            reference = np.asarray(image.convert("RGB") if series.is_color else image)
        assert volume.shape[0] == 1
        np.testing.assert_array_equal(volume.voxels[0], reference, err_msg=name)
        assert volume.voxels.flags.c_contiguous
        if series.is_color:
            assert volume.voxels.dtype == np.uint8 and volume.shape == (1, 10, 14, 3)
    np.testing.assert_array_equal(load(by_name["b/scan.bmp"]).voxels[0], rgb)
    assert int(load(by_name["c/plain.tif"]).voxels.max()) == int(gray16.max())


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_orientation_spacing_and_values(tmp_path, suffix):
    import nibabel as nib

    shape = (6, 5, 4)  # x, y, z
    data = (np.arange(np.prod(shape)).reshape(shape) * 3 - 100).astype(np.int16)
    affine = np.array([
        [0.0, -0.9, 0.0, 10.0],  # voxel y runs to -R (= +L)
        [0.8, 0.0, 0.0, -5.0],  # voxel x runs to +A (= -P)
        [0.0, 0.0, 2.5, -30.0],
        [0.0, 0.0, 0.0, 1.0],
    ])
    image = nib.Nifti1Image(data, affine)
    path = tmp_path / f"brain{suffix}"
    raw = image.to_bytes()
    path.write_bytes(gzip.compress(raw) if suffix == ".nii.gz" else raw)

    series = scan_one(path)
    volume = load(series)
    assert volume.shape == (4, 5, 6)
    assert volume.voxels.dtype == np.int16
    assert volume.spacing_mm == pytest.approx((2.5, 0.9, 0.8))
    assert volume.geometry_known
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    for k, info in enumerate(volume.slices):
        z = info.frame
        for j, i in [(0, 0), (4, 5), (2, 3)]:
            assert volume.voxels[k, j, i] == data[i, j, z]
            expected = ras_to_lps @ (affine @ [i, j, z, 1.0])[:3]
            np.testing.assert_allclose(volume.index_to_lps([k, j, i]), expected, atol=1e-6)
    np.testing.assert_array_equal(volume.voxels[[s.frame for s in volume.slices].index(0)], data[:, :, 0].T)


@pytest.mark.parametrize("variant", ["DICOMDIR-bigEnd", "DICOMDIR-implicit", "DICOMDIR-reordered", "DICOMDIR-nooffset"])
def test_dicomdir_variants_list_the_same_series_quietly(tmp_path, pydicom_file, variant):
    """Other encodings of the same DICOMDIR (copied into place under the name DICOMDIR): the
    same series, and no pydicom warnings leaking onto the user's terminal."""
    import warnings

    source = Path(pydicom_file("dicomdirtests/DICOMDIR")).parent
    folder = tmp_path / "media"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("DICOMDIR*"))
    shutil.copy(source / variant, folder / "DICOMDIR")
    reference = medviewer.scan(source / "DICOMDIR", parallel=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = medviewer.scan(folder / "DICOMDIR", parallel=False)
    # (ResourceWarnings from garbage-collected pydicom FileSet staging folders are not shown to users.)
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == []
    assert result.refused == []
    assert sorted(s.key for s in result.series) == sorted(s.key for s in reference.series)


def test_broken_dicomdir_is_refused_with_reason(tmp_path, pydicom_file):
    source = Path(pydicom_file("dicomdirtests/DICOMDIR")).parent
    folder = tmp_path / "media"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("DICOMDIR*"))
    shutil.copy(source / "DICOMDIR-nopatient", folder / "DICOMDIR")
    result = medviewer.scan(folder / "DICOMDIR", parallel=False)
    assert result.series == []
    (refused,) = result.refused
    assert refused.path == str(folder / "DICOMDIR") and refused.reason.startswith("unreadable DICOMDIR")
    # The folder itself still opens: the walk skips the DICOMDIR and reads the files.
    # 24 series; "Routine Brain" holds a slice 202 mm from its other three, so it opens as two stacks.
    assert len(medviewer.scan(folder, parallel=False).series) == 25


# --- more header details ---------------------------------------------------------------------------


def test_all_windows_from_the_header_are_kept(writer):
    written = writer.write(2)
    for item in written["slices"]:
        ds = pydicom.dcmread(item["path"])
        ds.WindowCenter = [40, 400]
        ds.WindowWidth = [400, 2000]
        ds.save_as(item["path"])
    volume = load(scan_one(writer.folder))
    assert volume.windows == [(40.0, 400.0), (400.0, 2000.0)]
    assert volume.default_window == (40.0, 400.0)


def test_gantry_tilt_warns(writer):
    """Positions step along z while the plane stays axial: sheared slices, with a warning."""
    written = writer.write(5, spacing=2.0)
    for k, item in enumerate(written["slices"]):
        ds = pydicom.dcmread(item["path"])
        position = np.asarray(item["position"]) + (0.0, 0.5 * k, 0.0)  # y drifts 0.5 mm per slice
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.save_as(item["path"])
    series = scan_one(writer.folder)
    assert any("tilt" in w for w in series.warnings), series.warnings
    assert series.spacing_mm[0] == pytest.approx(2.0)


def test_parallel_scan_equals_serial(writer):
    """Enough files for the process pool (instances come back without their parsed header)."""
    from medviewer.core.scan import PARALLEL_MIN_FILES

    count = PARALLEL_MIN_FILES + 2
    rng = np.random.default_rng(3)
    written = writer.write(count, spacing=1.0, file_order=list(rng.permutation(count)))
    serial = scan_one(writer.folder)
    parallel = medviewer.scan(writer.folder).series
    assert len(parallel) == 1
    parallel = parallel[0]
    assert [r.instance.source for r in parallel.frames] == [r.instance.source for r in serial.frames]
    assert parallel.spacing_mm == pytest.approx(serial.spacing_mm)
    assert (parallel.modality, parallel.description, parallel.number) == ("CT", "test series", 1)
    volume = medviewer.load(parallel)
    assert_geometric_order(volume, written)
    assert volume.header(0).PatientName == "Test^Patient"
    np.testing.assert_array_equal(volume.voxels, load(serial).voxels)
