"""The synthetic chest-CT phantom and its DICOM writer: determinism, anatomy, ground truth, files."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from medviewer.ai.demo_data import (
    DEMO_CONFIG,
    DEMO_SEED,
    truth_files,
    write_demo_data,
    write_phantom_dicom,
)
from medviewer.ai.phantom import LABELS, Phantom, PhantomConfig, generate_phantom

# 24 slices x 64 x 64 (5.5 mm pixels, 2.5 mm slices): a 60 mm slab through the middle of the chest
SMALL = PhantomConfig(slices=24, size=64, nodule_count=(2, 3), nodule_diameter_mm=(12.0, 20.0), vessel_generations=6)
# finer, for volumes: 2.7 mm pixels, 2 mm slices
FINE = PhantomConfig(slices=40, size=128, slice_thickness_mm=2.0, nodule_count=(3, 3),
                     nodule_diameter_mm=(8.0, 20.0), vessel_generations=6)


@pytest.fixture(scope="module")
def small() -> Phantom:
    return generate_phantom(SMALL, seed=3)


@pytest.fixture(scope="module")
def fine() -> Phantom:
    return generate_phantom(FINE, seed=1)


# ---------------------------------------------------------------------------------------------- the generator


def test_same_seed_same_phantom_other_seed_other(small: Phantom) -> None:
    again = generate_phantom(SMALL, seed=3)
    assert np.array_equal(again.hu, small.hu)
    assert np.array_equal(again.labels, small.labels)
    assert again.nodules == small.nodules
    other = generate_phantom(SMALL, seed=4)
    assert not np.array_equal(other.hu, small.hu)
    assert other.nodules != small.nodules


def test_arrays_and_geometry(small: Phantom) -> None:
    shape = (SMALL.slices, SMALL.size, SMALL.size)
    assert small.hu.shape == shape and small.labels.shape == shape
    assert small.hu.dtype == np.int16 and small.labels.dtype == np.uint8
    assert small.hu.flags.c_contiguous and small.labels.flags.c_contiguous
    assert set(np.unique(small.labels).tolist()) == set(LABELS) == {0, 1, 2}
    dz, dy, dx = small.spacing_mm
    assert (dz, dy, dx) == (2.5, 350.0 / 64, 350.0 / 64)
    # centred volume: first and last voxel centres are symmetric about 0 on every axis
    first, last = small.index_to_lps(0, 0, 0), small.index_to_lps(*(n - 1 for n in shape))
    assert first == small.origin_lps_mm
    assert all(math.isclose(a, -b) for a, b in zip(first, last))
    k, j, i = small.lps_to_index(*small.index_to_lps(3, 4, 5))
    assert (round(k), round(j), round(i)) == (3, 4, 5)
    assert small.seed == 3 and small.config is SMALL


def test_hounsfield_ranges(fine: Phantom) -> None:
    hu, lab = fine.hu, fine.labels
    assert hu.min() >= -1024 and hu.max() <= 3071
    corner = hu[:, :3, :3].astype(np.float32)  # air outside the body
    assert abs(corner.mean() + 1000) < 10
    lung = hu[lab == 1]
    assert -880 < np.median(lung) < -760  # parenchyma, with some vessels and airways
    soft = np.count_nonzero((hu > -20) & (hu < 100)) / hu.size  # muscle, heart, mediastinum
    assert soft > 0.08
    fat = np.count_nonzero((hu > -140) & (hu < -60)) / hu.size
    assert fat > 0.02
    bone = hu > 400  # spine, ribs, sternum
    assert np.count_nonzero(bone) / hu.size > 0.002
    assert hu.max() > 600


def test_orientation_spine_posterior_apex_superior() -> None:
    # default slab (300 mm): lungs taper to the apex at high k, the spine lies behind the centre (+y = larger j)
    p = generate_phantom(replace(SMALL, slices=60, slice_thickness_mm=5.0, nodule_count=(0, 0)), seed=0)
    area = (p.labels > 0).sum(axis=(1, 2))
    widest = int(np.argmax(area))
    assert area[-1] < 0.2 * area[widest] and area[0] < 0.8 * area[widest]
    assert widest < 0.6 * p.hu.shape[0]
    mid = p.hu[p.hu.shape[0] // 2]
    jj, ii = np.nonzero(mid > 300)
    spine = np.abs(ii - (p.hu.shape[2] - 1) / 2) < 4
    assert spine.any() and jj[spine].mean() > (p.hu.shape[1] - 1) / 2


@pytest.mark.parametrize("phantom_name", ["small", "fine"])
def test_nodules_inside_lung(phantom_name: str, request: pytest.FixtureRequest) -> None:
    p: Phantom = request.getfixturevalue(phantom_name)
    cfg = p.config
    assert cfg.nodule_count[0] <= len(p.nodules) <= cfg.nodule_count[1]
    nod = p.labels == 2
    assert nod.any()
    # one voxel of lung around every nodule voxel (3x3x3 neighbourhood), and nothing at the volume's border
    assert not (nod[0].any() or nod[-1].any() or nod[:, 0].any() or nod[:, -1].any()
                or nod[:, :, 0].any() or nod[:, :, -1].any())
    grown = nod.copy()
    for axis in range(3):
        for shift in (1, -1):
            grown |= np.roll(nod, shift, axis=axis)
    grown3 = grown.copy()
    for a in range(3):
        for b in range(a + 1, 3):
            for sa in (1, -1):
                for sb in (1, -1):
                    grown3 |= np.roll(np.roll(nod, sa, axis=a), sb, axis=b)
    assert np.all(p.labels[grown3] >= 1)
    centres = np.array([n.center_lps_mm for n in p.nodules])
    for n in p.nodules:
        assert cfg.nodule_diameter_mm[0] <= n.diameter_mm <= cfg.nodule_diameter_mm[1]
        assert cfg.nodule_hu[0] <= n.hu <= cfg.nodule_hu[1]
        assert p.labels[n.center_index] == 2
        k, j, i = p.lps_to_index(*n.center_lps_mm)
        assert (round(k), round(j), round(i)) == n.center_index
        if n.diameter_mm >= 4 * max(p.spacing_mm[1:]):
            # centre density: the nodule's HU give or take noise (small ones are partial volume)
            core = p.hu[n.center_index].astype(float)
            assert abs(core - n.hu) < 5 * cfg.noise_hu + 30
        others = np.linalg.norm(centres - np.array(n.center_lps_mm), axis=1)
        radii = np.array([m.diameter_mm for m in p.nodules]) / 2 + n.diameter_mm / 2
        assert np.count_nonzero(others < radii) == 1  # only itself: nodules do not overlap


def test_nodule_label_volume_matches_sphere(fine: Phantom) -> None:
    dz, dy, dx = fine.spacing_mm
    k, j, i = np.indices(fine.hu.shape, dtype=np.float32)
    x0, y0, z0 = fine.origin_lps_mm
    total = 0
    for n in fine.nodules:
        cx, cy, cz = n.center_lps_mm
        d2 = (x0 + i * dx - cx) ** 2 + (y0 + j * dy - cy) ** 2 + (z0 + k * dz - cz) ** 2
        inside = d2 <= (n.diameter_mm / 2) ** 2
        assert np.all(fine.labels[inside] == 2)
        volume = np.count_nonzero(inside) * dz * dy * dx
        sphere = math.pi / 6 * n.diameter_mm**3
        assert abs(volume - sphere) / sphere < 0.15, (n, volume, sphere)
        total += np.count_nonzero(inside)
    assert np.count_nonzero(fine.labels == 2) == total  # every label-2 voxel belongs to one sphere


def test_nodule_settings_do_not_change_the_anatomy() -> None:
    a = generate_phantom(replace(SMALL, nodule_count=(0, 0)), seed=7)
    b = generate_phantom(replace(SMALL, nodule_count=(1, 1)), seed=7)
    assert not a.nodules and len(b.nodules) == 1
    # identical away from the nodule and the blur around it
    k, j, i = b.nodules[0].center_index
    far = np.ones(b.hu.shape, dtype=bool)
    far[max(k - 6, 0):k + 7, max(j - 4, 0):j + 5, max(i - 4, 0):i + 5] = False
    assert np.array_equal(a.hu[far], b.hu[far])


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="nodule_count"):
        PhantomConfig(nodule_count=(3, 1))
    with pytest.raises(ValueError, match="slices"):
        PhantomConfig(slices=0)
    with pytest.raises(ValueError, match="nodule_hu"):
        PhantomConfig(nodule_hu=(-2000.0, 0.0))
    with pytest.raises(TypeError):
        generate_phantom({"slices": 3})  # type: ignore[arg-type]
    assert PhantomConfig.from_dict(json.loads(json.dumps(SMALL.to_dict()))) == SMALL


def test_demo_phantom_has_a_nodule_of_at_least_8mm() -> None:
    assert DEMO_CONFIG.size == 256 and 100 <= DEMO_CONFIG.slices <= 140
    p = generate_phantom(replace(DEMO_CONFIG, noise_hu=0.0), DEMO_SEED)  # noise does not move nodules
    assert any(n.diameter_mm >= 8.0 for n in p.nodules)


# ---------------------------------------------------------------------------------------------- the writer


def _read_series(study: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(f) for f in sorted((study / "CT").glob("IM*.dcm"))]


def _check_series(p: Phantom, study: Path, syntax: str) -> list[pydicom.Dataset]:
    datasets = _read_series(study)
    slices = p.hu.shape[0]
    assert len(datasets) == slices
    dz, dy, dx = p.spacing_mm
    x0, y0, z0 = p.origin_lps_mm
    seen = set()
    for ds in datasets:
        assert ds.file_meta.TransferSyntaxUID == syntax
        assert ds.SOPClassUID == pydicom.uid.CTImageStorage == ds.file_meta.MediaStorageSOPClassUID
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        ipp = [float(v) for v in ds.ImagePositionPatient]
        k = round((ipp[2] - z0) / dz)
        assert abs(ipp[2] - (z0 + k * dz)) < 1e-3 and abs(ipp[0] - x0) < 1e-3 and abs(ipp[1] - y0) < 1e-3
        assert k not in seen
        seen.add(k)
        assert ds.InstanceNumber == slices - k  # 1 = most superior
        assert abs(float(ds.SliceLocation) - ipp[2]) < 1e-3
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([dy, dx])
        assert float(ds.SliceThickness) == float(ds.SpacingBetweenSlices) == dz
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 12, 11, 0)
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept), ds.RescaleType) == (1.0, -1024.0, "HU")
        assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.SamplesPerPixel == 1
        assert [float(v) for v in ds.WindowCenter] == [-600, 40]
        assert [float(v) for v in ds.WindowWidth] == [1500, 400]
        hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        assert np.array_equal(hu, p.hu[k])
    assert seen == set(range(slices))
    for name in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "PatientID", "StudyDate"):
        assert len({str(getattr(ds, name)) for ds in datasets}) == 1, name
    assert len({ds.SOPInstanceUID for ds in datasets}) == slices
    return datasets


def test_write_reads_back_exactly(small: Phantom, tmp_path: Path) -> None:
    study = write_phantom_dicom(small, tmp_path, study_name="case")
    assert study == tmp_path / "case"
    datasets = _check_series(small, study, ExplicitVRLittleEndian)
    ds = datasets[0]
    assert ds.Modality == "CT" and ds.BodyPartExamined == "CHEST" and ds.Manufacturer == "MedViewer phantom"
    assert ds.PatientName == "DEMO^PHANTOM" and ds.PatientID == "DEMO0001"
    assert ds.StudyDescription == "Chest CT (synthetic phantom)"
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert ds.PatientSex in ("M", "F") and ds.PatientAge.endswith("Y") and len(ds.StudyDate) == 8
    assert (study / "CT" / "IM0001.dcm").exists() and (study / "CT" / f"IM{small.hu.shape[0]:04d}.dcm").exists()

    # The ground truth lies in the hidden .truth folder, which the scanner does not walk.
    assert not (study / "labels.npy").exists() and not (study / "truth.json").exists()
    labels_path, truth_path = truth_files(study)
    assert (labels_path, truth_path) == (study / ".truth" / "labels.npy", study / ".truth" / "truth.json")
    labels = np.load(labels_path)
    assert labels.dtype == np.uint8 and np.array_equal(labels, small.labels)
    truth = json.loads(truth_path.read_text())
    assert truth["seed"] == small.seed
    assert PhantomConfig.from_dict(truth["config"]) == small.config
    assert truth["spacing_mm"] == list(small.spacing_mm) and truth["origin_lps_mm"] == list(small.origin_lps_mm)
    assert truth["shape"] == list(small.hu.shape)
    assert truth["labels"] == {"0": "background", "1": "lung", "2": "nodule"}
    assert truth["label_voxels"]["2"] == int(np.count_nonzero(small.labels == 2))
    assert truth["series_instance_uid"] == ds.SeriesInstanceUID
    assert len(truth["nodules"]) == len(small.nodules)
    for got, n in zip(truth["nodules"], small.nodules):
        assert got["center_lps_mm"] == list(n.center_lps_mm) and got["center_index"] == list(n.center_index)
        assert got["diameter_mm"] == n.diameter_mm and got["hu"] == n.hu
    # files[k] is slice k and carries that slice's SOP Instance UID
    for k in (0, small.hu.shape[0] - 1):
        ds_k = pydicom.dcmread(study / truth["files"][k], stop_before_pixels=True)
        assert ds_k.SOPInstanceUID == truth["sop_instance_uids"][k]
        assert ds_k.InstanceNumber == small.hu.shape[0] - k


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, RLELossless])
def test_lossless_compression_round_trips(small: Phantom, tmp_path: Path, syntax: str) -> None:
    study = write_phantom_dicom(small, tmp_path, transfer_syntax=syntax)
    _check_series(small, study, syntax)


def test_rejects_unsupported_syntax(small: Phantom, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="transfer_syntax"):
        write_phantom_dicom(small, tmp_path, transfer_syntax=pydicom.uid.JPEGBaseline8Bit)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()}


def test_repeated_write_is_byte_identical(tmp_path: Path) -> None:
    cfg = replace(SMALL, slices=8)
    calls: list[tuple[int, int]] = []
    a = write_demo_data(tmp_path / "a", count=2, seed=11, config=cfg, progress=lambda d, t: calls.append((d, t)))
    b = write_demo_data(tmp_path / "b", count=2, seed=11, config=cfg)
    assert [p.name for p in a] == [p.name for p in b] == ["demo-chest-ct-001", "demo-chest-ct-002"]
    assert calls[-1] == (16, 16) and len(calls) == 16
    files_a, files_b = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert len(files_a) == 2 * (8 + 2)
    assert files_a == files_b
    # two studies, two patients, two seeds
    first, second = (pydicom.dcmread(p / "CT" / "IM0001.dcm", stop_before_pixels=True) for p in a)
    assert (first.PatientID, second.PatientID) == ("DEMO0001", "DEMO0002")
    assert first.StudyInstanceUID != second.StudyInstanceUID
    assert [json.loads(truth_files(p)[1].read_text())["seed"] for p in a] == [11, 12]
    # rewriting a shorter series into the same folder leaves no stale slices behind
    write_phantom_dicom(generate_phantom(replace(cfg, slices=5), 11), tmp_path / "a", study_name=a[0].name)
    assert len(list((a[0] / "CT").glob("*.dcm"))) == 5
