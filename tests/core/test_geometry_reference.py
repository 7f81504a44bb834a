"""Voxel positions against two independent readers: SimpleITK (GDCM's per-file positions and its
series sort) and dcm2niix (its tilt-corrected ``_Tilt`` and even-spacing ``_Eq`` volumes).

Each case writes a small CT series with pydicom into tmp_path: gantry tilt, gaps, duplicates at
one position, oblique orientation, shuffled files and instance numbers. Every stored pixel value
is a linear function of the pixel's patient position, ``f(x, y, z) = 20x + 15y + 30z + 1000``
(|grad f| = 39 per mm, rounded to integers: 0.013 mm), so a voxel's value says where the loader
put it: ``|value - f(position)| / |grad f|`` is its placement error in mm, and linear
interpolation (tilt correction, gap filling, the reference's sampling) keeps f exact. A bright
3x3 marker on one slice checks that a known patient position holds the marker.

Figures (printed by ``python tests/core/test_geometry_reference.py``): for every case the
maximum error in mm of our voxels against f, of SimpleITK's per-file pixel positions against
our volume, and of dcm2niix's voxels against our volume; all must be under 0.1 mm.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

import medviewer

GRAD = np.array([20.0, 15.0, 30.0])
OFFSET = 1000.0
GRAD_NORM = float(np.linalg.norm(GRAD))
MARKER = 30000
TOLERANCE_MM = 0.1
ROWS, COLS = 20, 16
SPACING = (0.8, 0.7)  # (between rows, between columns)


def field_value(points: np.ndarray) -> np.ndarray:
    return np.asarray(points, dtype=float) @ GRAD + OFFSET


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, cy, cz, sx, sy, sz = np.cos(ax), np.cos(ay), np.cos(az), np.sin(ax), np.sin(ay), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class Case:
    name: str
    positions: list[np.ndarray]  # IPP of each written slice, in geometric order
    row_dir: np.ndarray
    col_dir: np.ndarray
    file_order: list[int] = field(default_factory=list)
    instance_numbers: list[int] = field(default_factory=list)
    extra: list[tuple[int, float]] = field(default_factory=list)  # (slice, value offset): a duplicate
    marker_slice: int = 1
    tilt: float | None = None

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_dir, self.col_dir)


def _case(name: str) -> Case:
    origin = np.array([-10.0, -20.0, 30.0])
    axial_r, axial_c = np.array([1.0, 0, 0]), np.array([0.0, 1, 0])
    if name == "tilted":
        # 15° gantry tilt: each slice 2 mm further along z and 2*tan(15°) mm along y.
        t = np.tan(np.radians(15))
        return Case(name, [origin + k * 2.0 * np.array([0, t, 1]) for k in range(12)], axial_r, axial_c,
                    tilt=15.0, marker_slice=7)
    if name == "gapped":
        distances = [0, 2, 4, 8, 10, 12, 18, 20]  # one and two slices missing
        return Case(name, [origin + d * np.array([0, 0, 1.0]) for d in distances], axial_r, axial_c, marker_slice=4)
    if name == "duplicated":
        distances = [0, 2, 4, 4, 6, 8]
        case = Case(name, [origin + d * np.array([0, 0, 1.0]) for d in distances], axial_r, axial_c, marker_slice=5)
        case.extra = [(3, 500.0)]  # the second image at 4 mm holds other values (it must not be used)
        return case
    if name == "oblique":
        r = rotation(np.radians(25), np.radians(-20), np.radians(10))
        row, col = r[:, 0], r[:, 1]
        normal = np.cross(row, col)
        rng = np.random.default_rng(7)
        order = list(rng.permutation(9))
        return Case(name, [origin + k * 1.5 * normal for k in range(9)], row, col, file_order=order,
                    instance_numbers=[9 - k for k in range(9)], marker_slice=3)
    if name == "shuffled":
        rng = np.random.default_rng(11)
        order = list(rng.permutation(10))
        numbers = [int(v) + 1 for v in rng.permutation(10)]
        return Case(name, [origin + k * 2.5 * np.array([0, 0, 1.0]) for k in range(10)], axial_r, axial_c,
                    file_order=order, instance_numbers=numbers, marker_slice=6)
    if name == "oblique_tilted_gapped":
        r = rotation(np.radians(-30), np.radians(15), np.radians(5))
        row, col = r[:, 0], r[:, 1]
        normal = np.cross(row, col)
        distances = [0, 1.5, 3, 6, 7.5, 9, 10.5]
        shear = 0.3 * col + 0.2 * row  # per mm along the normal
        return Case(name, [origin + d * (normal + shear) for d in distances], row, col, marker_slice=4)
    raise KeyError(name)


CASES = ["tilted", "gapped", "duplicated", "oblique", "shuffled", "oblique_tilted_gapped"]


def _pixel_positions(position: np.ndarray, row_dir: np.ndarray, col_dir: np.ndarray) -> np.ndarray:
    j, i = np.mgrid[0:ROWS, 0:COLS]
    return (position + j[..., None] * SPACING[0] * col_dir + i[..., None] * SPACING[1] * row_dir)


def write_case(case: Case, folder: Path) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    n = len(case.positions)
    order = case.file_order or list(range(n))
    numbers = case.instance_numbers or [k + 1 for k in range(n)]
    offsets = dict(case.extra)
    written = []
    for k, position in enumerate(case.positions):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.Modality, ds.Manufacturer = "Geometry^Test", "GEO-1", "CT", "MedViewerTest"
        ds.SeriesNumber, ds.InstanceNumber, ds.StudyDate = 1, numbers[k], "20240102"
        ds.ImagePositionPatient = [round(float(v), 6) for v in position]
        ds.ImageOrientationPatient = [round(float(v), 8) for v in (*case.row_dir, *case.col_dir)]
        ds.PixelSpacing = list(SPACING)
        ds.SliceThickness = 2.0
        if case.tilt is not None:
            ds.GantryDetectorTilt = case.tilt
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = ROWS, COLS
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        pixels = np.rint(field_value(_pixel_positions(ipp, case.row_dir, case.col_dir)) + offsets.get(k, 0.0))
        marker = None
        if k == case.marker_slice:
            pixels[8:11, 6:9] = MARKER
            marker = _pixel_positions(ipp, case.row_dir, case.col_dir)[9, 7]
        ds.PixelData = pixels.astype(np.int16).tobytes()
        path = folder / f"IM{order[k]:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append({"path": str(path), "position": ipp, "uid": ds.SOPInstanceUID, "marker": marker,
                        "duplicate": k in offsets})
    return written


# ---------------------------------------------------------------------------------------- readers


def trilinear(volume: medviewer.Volume, points: np.ndarray) -> np.ndarray:
    """Our volume's values at LPS points (linear interpolation of the voxels); NaN outside."""
    from scipy.ndimage import map_coordinates

    index = volume.lps_to_index(np.asarray(points, dtype=float).reshape(-1, 3))
    shape = np.array(volume.voxels.shape[:3]) - 1
    outside = np.any((index < -1e-3) | (index > shape + 1e-3), axis=1)  # float32 sforms: ~1e-5 mm
    index = np.clip(index, 0, shape)
    values = map_coordinates(volume.voxels.astype(np.float64), index.T, order=1, mode="nearest")
    values[outside] = np.nan
    return values.reshape(np.asarray(points).shape[:-1])


def read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(data as (i, j, k) float64 with the scaling applied, 4x4 sform in RAS mm) of a NIfTI-1 file."""
    raw = path.read_bytes()
    assert struct.unpack("<i", raw[:4])[0] == 348, "little-endian NIfTI-1 expected"
    dim = struct.unpack("<8h", raw[40:56])
    datatype = struct.unpack("<h", raw[70:72])[0]
    vox_offset, slope, inter = struct.unpack("<3f", raw[108:120])
    sform = np.array(struct.unpack("<12f", raw[280:328]), dtype=float).reshape(3, 4)
    assert struct.unpack("<h", raw[254:256])[0] > 0, "sform present"
    dtype = {2: "<u1", 4: "<i2", 8: "<i4", 16: "<f4", 512: "<u2"}[datatype]
    shape = tuple(int(v) for v in dim[1:1 + dim[0]])
    count = int(np.prod(shape))
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=int(vox_offset)).reshape(shape, order="F")
    data = data.astype(np.float64) * (slope if slope else 1.0) + (inter if slope else 0.0)
    return data, np.vstack([sform, [0, 0, 0, 1]])


def dcm2niix_volume(folder: Path, out: Path, name: str) -> tuple[np.ndarray, np.ndarray, str]:
    """dcm2niix's corrected volume (``_Tilt_Eq``, ``_Tilt``, else ``_Eq``, else the plain one):
    data (i, j, k), its voxel-to-LPS affine, and the file's name."""
    out.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(["dcm2niix", "-z", "n", "-o", str(out), "-f", name, str(folder)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    for suffix in ("_Tilt_Eq_1", "_Tilt_1", "_Eq_1", ""):
        path = out / f"{name}{suffix}.nii"
        if path.exists():
            data, sform = read_nifti(path)
            return data, np.diag([-1.0, -1.0, 1.0, 1.0]) @ sform, path.name  # RAS -> LPS
    raise AssertionError(f"dcm2niix wrote none of the expected files: {sorted(os.listdir(out))}")


def corner_and_centre(shape) -> np.ndarray:
    ni, nj, nk = shape[:3]
    corners = [(i, j, k) for i in (0, ni - 1) for j in (0, nj - 1) for k in (0, nk - 1)]
    return np.array(corners + [((ni - 1) // 2, (nj - 1) // 2, (nk - 1) // 2)], dtype=float)


# ---------------------------------------------------------------------------------------- measuring


@dataclass
class Figures:
    case: str
    ours_mm: float  # our voxels against f (interior voxels)
    sitk_mm: float  # SimpleITK's per-file pixel positions: our value there against the file's
    sitk_affine_mm: float | None  # SimpleITK series reader's voxel (i,j,k) against ours, where its affine is right
    dcm2niix_mm: float | None  # dcm2niix's voxels: our value at their position against theirs
    dcm2niix_grid_mm: float  # dcm2niix's corner and centre voxels against our nearest voxel centre
    dcm2niix_file: str
    marker_ok: bool
    dcm2niix_truth_mm: float | None = None  # dcm2niix's voxels against f: its own placement (median, signed)


def interior(volume: medviewer.Volume, written: list[dict], case: Case) -> np.ndarray:
    """Boolean mask of voxels inside (by a pixel's margin) both acquired slices around them
    along the normal (not the fill beside tilted slices), and away from the marker."""
    k, j, i = np.indices(volume.voxels.shape[:3])
    points = volume.index_to_lps(np.stack([k, j, i], axis=-1).reshape(-1, 3).astype(float))
    used = sorted((item for item in written if not item["duplicate"]), key=lambda it: it["position"] @ case.normal)
    along = np.array([it["position"] @ case.normal for it in used])
    t = points @ case.normal
    below = np.clip(np.searchsorted(along, t + 1e-6, side="right") - 1, 0, len(used) - 1)
    above = np.clip(below + 1, 0, len(used) - 1)
    ok = np.ones(len(points), dtype=bool)
    axes = np.stack([case.col_dir / SPACING[0], case.row_dir / SPACING[1]]).T
    for pick in (below, above):
        origin = np.array([used[a]["position"] for a in pick])
        local = (points - origin) @ axes
        ok &= (local[:, 0] >= 1) & (local[:, 0] <= ROWS - 2) & (local[:, 1] >= 1) & (local[:, 1] <= COLS - 2)
    marker = next(item["marker"] for item in written if item["marker"] is not None)
    ok &= np.linalg.norm(points - marker, axis=1) > 4.0 + max(volume.spacing_mm)
    return ok.reshape(volume.voxels.shape[:3])


def measure(name: str, root: Path) -> tuple[Figures, medviewer.Volume, list[dict]]:
    import SimpleITK as sitk

    case = _case(name)
    folder = root / name
    written = write_case(case, folder)
    result = medviewer.scan(folder, parallel=False)
    assert result.refused == [] and len(result.series) == 1, result.series
    series = result.series[0]
    volume = medviewer.load(series, parallel=False)

    # Our own voxels against the field.
    k, j, i = np.indices(volume.voxels.shape[:3])
    points = volume.index_to_lps(np.stack([k, j, i], axis=-1).reshape(-1, 3).astype(float))
    errors = np.abs(volume.voxels.reshape(-1).astype(float) - field_value(points)) / GRAD_NORM
    ours = float(errors[interior(volume, written, case).reshape(-1)].max())

    # SimpleITK: GDCM's sort, then each file's pixel positions as SimpleITK reads them.
    reader = sitk.ImageSeriesReader()
    names = list(reader.GetGDCMSeriesFileNames(str(folder)))
    used = [item for item in written if not item["duplicate"]]
    assert [n for n in names if n in {u["path"] for u in used}] == [u["path"] for u in used] or \
        [n for n in names if n in {u["path"] for u in used}] == [u["path"] for u in used][::-1]
    sitk_errors = []
    for item in used:
        image = sitk.ReadImage(item["path"])
        pixels = sitk.GetArrayFromImage(image)[0].astype(float)  # (rows, cols)
        for jj in range(1, ROWS - 1, 3):
            for ii in range(1, COLS - 1, 3):
                if pixels[jj, ii] == MARKER or abs(jj - 9) <= 3 and abs(ii - 7) <= 3:
                    continue
                point = np.array(image.TransformIndexToPhysicalPoint((ii, jj, 0)))
                value = float(trilinear(volume, point[None])[0])
                sitk_errors.append(abs(value - pixels[jj, ii]) / GRAD_NORM)
    sitk_mm = float(np.nanmax(sitk_errors))
    assert not np.any(np.isnan(sitk_errors)), "a pixel SimpleITK places lies outside our volume"

    # The series reader's affine, where it can be right (an even, orthogonal stack of one image per position).
    sitk_affine = None
    if series.grid is None and not series.unused:
        reader.SetFileNames(names)
        stack = reader.Execute()
        theirs = np.array([stack.TransformIndexToPhysicalPoint(tuple(int(v) for v in c))
                           for c in corner_and_centre(stack.GetSize())])
        ours_points = volume.index_to_lps(corner_and_centre(stack.GetSize())[:, ::-1])
        sitk_affine = float(np.linalg.norm(theirs - ours_points, axis=1).max())

    # dcm2niix.
    data, affine, produced = dcm2niix_volume(folder, root / f"{name}_nii", name)
    ii, jj, kk = np.indices(data.shape[:3])
    index = np.stack([ii, jj, kk, np.ones_like(ii)], axis=-1).reshape(-1, 4).astype(float)
    theirs = (index @ affine.T)[:, :3]
    ours_there = trilinear(volume, theirs)
    # Only where every voxel our interpolation reads is covered (not the fill beside tilted
    # slices, not the marker).
    mask_volume = medviewer.Volume(interior(volume, written, case).astype(np.float32), volume.spacing_mm,
                                   volume.origin_lps_mm, volume.direction, volume.slices)
    ours_there[~(trilinear(mask_volume, theirs) > 1 - 1e-9)] = np.nan
    truth = np.abs(data.reshape(-1) - field_value(theirs)) / GRAD_NORM
    truth_ok = truth < 2.0  # their covered voxels (not the fill outside the tilted slices)
    corners = corner_and_centre(data.shape)
    corner_points = (np.c_[corners, np.ones(len(corners))] @ affine.T)[:, :3]
    nearest = volume.index_to_lps(np.rint(volume.lps_to_index(corner_points)))
    grid_mm = float(np.linalg.norm(nearest - corner_points, axis=1).max())
    inside = ~np.isnan(ours_there) & truth_ok
    if inside.sum() > 0.2 * len(inside):
        dcm_mm = float((np.abs(ours_there[inside] - data.reshape(-1)[inside]) / GRAD_NORM).max())
        inner = truth_ok & (truth < 1.0) if np.any(truth < 1.0) else truth_ok
        dcm_offset = float(np.median(data.reshape(-1)[inner] - field_value(theirs[inner])) / GRAD_NORM)
    else:  # dcm2niix's voxels are nowhere near the positions the files state
        dcm_mm, dcm_offset = None, None

    marker = next(item["marker"] for item in written if item["marker"] is not None)
    kji = np.rint(volume.lps_to_index(marker)).astype(int)
    marker_ok = bool(volume.voxels[tuple(kji)] == MARKER)
    return Figures(name, ours, sitk_mm, sitk_affine, dcm_mm, grid_mm, produced, marker_ok,
                   dcm_offset), volume, written


needs_tools = pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix is not installed")
sitk = pytest.importorskip("SimpleITK")


@needs_tools
@pytest.mark.parametrize("name", CASES)
def test_positions_agree_with_simpleitk_and_dcm2niix(name, tmp_path):
    figures, volume, written = measure(name, tmp_path)
    assert figures.ours_mm < TOLERANCE_MM, figures
    assert figures.sitk_mm < TOLERANCE_MM, figures
    if figures.sitk_affine_mm is not None:
        assert figures.sitk_affine_mm < TOLERANCE_MM, figures
    if name in ("tilted", "oblique_tilted_gapped"):
        # dcm2niix's tilt correction (v1.0.20220720) is itself off the files' positions: by a
        # constant -0.2 mm along grad f here (about half a pixel along y), and for a shear
        # in both in-plane directions by more than 2 mm. Ours agrees with the files (above);
        # for the plain tilt its grid (the corners and centre of its volume) is the same as ours.
        if name == "tilted":
            assert figures.dcm2niix_grid_mm < TOLERANCE_MM, figures
        if figures.dcm2niix_mm is not None:
            assert abs(figures.dcm2niix_mm - abs(figures.dcm2niix_truth_mm)) < 0.02, figures
    else:
        assert figures.dcm2niix_mm < TOLERANCE_MM, figures
        assert figures.dcm2niix_grid_mm < TOLERANCE_MM, figures
    assert figures.marker_ok, figures
    # The volume is an even orthogonal grid.
    np.testing.assert_allclose(volume.direction @ volume.direction.T, np.eye(3), atol=1e-6)


@needs_tools
def test_tilted_series_is_corrected_with_a_warning(tmp_path):
    figures, volume, written = measure("tilted", tmp_path)
    assert volume.resampled == "gantry tilt"
    assert any("tilt" in w and "resampled" in w for w in volume.warnings)
    assert figures.dcm2niix_file.endswith("_Tilt_1.nii")
    # dcm2niix's tilt-corrected grid is ours: every corner and the centre on one of our voxel centres.
    assert figures.dcm2niix_grid_mm < TOLERANCE_MM, figures
    # The last slice's first voxel is where its file says (uncorrected, it was ~6 mm off here).
    last = written[-1]["position"]
    k, j, i = volume.lps_to_index(last)
    assert abs(k - (volume.shape[0] - 1)) < 1e-6 and abs(i - round(i)) < 1e-6
    # A distance measured in the corrected volume is the true one: between the two slices' first pixels.
    first = written[0]["position"]
    assert np.linalg.norm(volume.index_to_lps((k, j, i)) - volume.index_to_lps(volume.lps_to_index(first))) == \
        pytest.approx(np.linalg.norm(last - first), abs=1e-6)


@needs_tools
def test_duplicate_is_left_out_and_listed(tmp_path):
    figures, volume, written = measure("duplicated", tmp_path)
    result = medviewer.scan(tmp_path / "duplicated", parallel=False)
    (unused,) = result.series[0].unused
    dup = next(item for item in written if item["duplicate"])
    assert unused.frame.instance.source.name == dup["path"]
    assert dup["uid"] not in volume.sop_instance_uids
    assert volume.shape[0] == len(written) - 1 and not volume.resampled


@needs_tools
def test_gapped_series_keeps_acquired_slices_exact(tmp_path):
    figures, volume, written = measure("gapped", tmp_path)
    assert volume.resampled == "uneven slice spacing"
    assert volume.shape[0] == 11  # 0..20 mm at 2 mm
    by_uid = {s.sop_instance_uid: k for k, s in enumerate(volume.slices) if s.sop_instance_uid}
    assert set(by_uid) == {item["uid"] for item in written}
    interpolated = [k for k, s in enumerate(volume.slices) if s.interpolated]
    assert interpolated == [3, 7, 8]
    assert [s.sop_instance_uid for s in volume.acquired] == [item["uid"] for item in written]


def test_positions_rounded_in_the_header_are_not_resampled(tmp_path):
    """0.625 mm slices written with two decimals (steps of 0.62 and 0.63 mm): kept as acquired,
    the spacing fitted through the first and last slice, every slice within 0.01 mm."""
    origin = np.array([-10.0, -20.0, 30.0])
    positions = [origin + np.array([0, 0, round(k * 0.625, 2)]) for k in range(16)]
    case = Case("rounded", positions, np.array([1.0, 0, 0]), np.array([0.0, 1, 0]), marker_slice=3)
    written = write_case(case, tmp_path / "rounded")
    volume = medviewer.load(medviewer.scan(tmp_path / "rounded", parallel=False).series[0], parallel=False)
    assert not volume.resampled and volume.shape[0] == 16
    assert volume.spacing_mm[0] == pytest.approx(0.625, abs=1e-3)
    error = np.linalg.norm(volume.positions_lps_mm - np.array([w["position"] for w in written]), axis=1)
    assert error.max() < 0.01


def test_info_json_names_the_resampling_and_the_unused_image(tmp_path):
    import json

    write_case(_case("tilted"), tmp_path / "tilted")
    written = write_case(_case("duplicated"), tmp_path / "duplicated")
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-m", "medviewer", "info", "--json", str(tmp_path / "tilted"),
                          str(tmp_path / "duplicated")], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    series = [s for st in json.loads(out.stdout)["studies"] for s in st["series"]]
    tilted = next(s for s in series if s["resampled"])
    assert tilted["resampled"]["reason"] == "gantry tilt" and tilted["resampled"]["rows"] > ROWS
    assert any("tilt" in w for w in tilted["warnings"])
    duplicated = next(s for s in series if s["not_used"])
    (unused,) = duplicated["not_used"]
    dup = next(w for w in written if w["duplicate"])
    assert unused["sop_instance_uid"] == dup["uid"] and "same position" in unused["reason"]
    assert dup["uid"] not in {img["sop_instance_uid"] for img in duplicated["images"]}


def main() -> None:
    import tempfile

    print(f"{'case':24} {'ours':>8} {'SimpleITK':>10} {'sitk affine':>12} {'dcm2niix':>9} {'dcm grid':>9} "
          f"{'dcm truth':>10}  file")
    with tempfile.TemporaryDirectory() as tmp:
        for name in CASES:
            f, _, _ = measure(name, Path(tmp))
            def num(v):
                return f"{v:.4f}" if v is not None else "n/a"
            print(f"{f.case:24} {f.ours_mm:8.4f} {f.sitk_mm:10.4f} {num(f.sitk_affine_mm):>12} {num(f.dcm2niix_mm):>9} "
                  f"{f.dcm2niix_grid_mm:9.4f} {num(f.dcm2niix_truth_mm):>10}  {f.dcm2niix_file} "
                  f"marker={'ok' if f.marker_ok else 'WRONG'}")
    print("errors in mm (maximum over the voxels compared)")


if __name__ == "__main__":
    sys.exit(main())
