"""The held-out chest-CT family: reproducible, its truth consistent with its voxels, and readable through the
loader with every storage convention it writes."""

from __future__ import annotations

import numpy as np
import pytest

from medviewer.phantoms.heldout import (
    ATTACHMENTS,
    DIAMETER_MM,
    KINDS,
    MARGINS,
    NODULE_HU,
    STORAGE,
    generate_heldout,
    read_heldout_truth,
    write_heldout_study,
)

SIZE = 64
SEEDS = range(6)


@pytest.fixture(scope="module")
def studies():
    return [generate_heldout(seed, size=SIZE, max_slices=48, nodules=(2, 5)) for seed in SEEDS]


def test_same_seed_same_study_other_seed_other_study():
    a = generate_heldout(3, size=SIZE, max_slices=24)
    b = generate_heldout(3, size=SIZE, max_slices=24)
    c = generate_heldout(4, size=SIZE, max_slices=24)
    assert np.array_equal(a.hu, b.hu) and np.array_equal(a.nodule_labels, b.nodule_labels)
    assert a.nodules == b.nodules and a.acquisition == b.acquisition
    assert a.hu.shape != c.hu.shape or not np.array_equal(a.hu, c.hu)


def test_shapes_dtypes_and_geometry(studies):
    for s in studies:
        assert s.hu.dtype == np.int16 and s.lung_mask.dtype == bool and s.nodule_labels.dtype == np.uint8
        assert s.hu.shape == s.lung_mask.shape == s.nodule_labels.shape
        assert s.hu.shape[1:] == (SIZE, SIZE) and 4 <= s.hu.shape[0] <= 48
        assert s.lung_mask.any(), "every study shows lung"
        dz, dy, dx = s.spacing_mm
        assert dz == s.acquisition["slice_thickness_mm"] and 0.6 <= dz <= 7
        assert dy == dx == pytest.approx(s.acquisition["field_of_view_mm"] / SIZE)
        assert 5 <= s.acquisition["noise_hu"] <= 60
        _, _, _, _, lo, hi, _ = STORAGE[s.acquisition["storage"]]
        assert lo <= s.hu.min() and s.hu.max() <= hi
        # lung reads as air-like tissue, soft tissue elsewhere in the body
        assert -1000 < np.median(s.hu[s.lung_mask]) < -650


def test_settings_vary_over_seeds():
    acq = [generate_heldout(seed, size=32, max_slices=4).acquisition for seed in range(14)]
    assert len({a["storage"] for a in acq}) >= 4 and len({a["kernel"] for a in acq}) >= 3
    assert {a["contrast"] for a in acq} == {True, False} and {a["metal"] for a in acq} == {True, False}
    assert len({a["slice_thickness_mm"] for a in acq}) >= 4


def test_nodules_honour_their_ranges_and_sit_in_the_lung(studies):
    from scipy import ndimage

    seen = set()
    count = 0
    for s in studies:
        labels = [n.label for n in s.nodules]
        assert labels == list(range(1, len(s.nodules) + 1))
        assert set(np.unique(s.nodule_labels)) <= {0, *labels}
        # every nodule voxel is inside the lung fields
        assert not (s.nodule_labels.astype(bool) & ~s.lung_mask).any()
        edt = ndimage.distance_transform_edt(s.lung_mask, sampling=s.spacing_mm)
        for n in s.nodules:
            count += 1
            seen.add(n.kind)
            assert n.kind in KINDS and n.attachment in ATTACHMENTS and n.margin in MARGINS
            assert DIAMETER_MM[0] <= n.diameter_mm <= DIAMETER_MM[1]
            lo, hi = NODULE_HU[n.kind]
            assert lo <= n.hu <= hi
            if n.kind == "part-solid":
                assert NODULE_HU["solid"][0] <= n.core_hu <= NODULE_HU["solid"][1]
            k, j, i = (int(round(v)) for v in n.center_index)
            assert s.lung_mask[k, j, i], f"{n.type} centre outside the lung"
            assert np.allclose(s.index_to_lps(*n.center_index), n.center_lps_mm, atol=1e-2)
            depth = edt[k, j, i]
            r = n.diameter_mm / 2
            if n.attachment == "pleural":
                assert depth <= r + max(s.spacing_mm), f"juxta-pleural {n} does not reach the pleura"
            elif n.attachment == "none":
                assert depth >= r, f"free {n} touches the pleura"
    assert count >= 12 and len(seen) >= 3


def test_nodule_centres_have_the_kind_density_without_noise():
    found = 0
    for seed in range(20):
        s = generate_heldout(seed, size=128, max_slices=60, nodules=(5, 5), noise_hu=0.0, metal=False,
                             cupping_hu=0.0, hu_offset=0.0, kernel="standard", slice_thickness_mm=3.0,
                             field_of_view_mm=250.0)
        for n in s.nodules:
            if n.diameter_mm < 6 * s.spacing_mm[1] or n.margin != "smooth" or n.attachment == "vascular":
                continue
            x, y, _ = n.center_lps_mm
            if np.hypot(x, y) > 125.0 - 25.0:  # the edge of the field reads brighter (truncation)
                continue
            found += 1
            k, j, i = (int(round(v)) for v in n.center_index)
            value = int(s.hu[k, j, i])
            if n.kind == "part-solid":  # a small solid core blurs into its ground glass
                assert n.hu - 60 <= value <= n.core_hu + 60, (n, value)
            else:
                tolerance = 60 if n.kind == "ground-glass" else 30  # ground glass keeps a texture
                assert abs(value - n.hu) <= tolerance, (n, value)
        if found >= 3:
            break
    assert found >= 2


@pytest.mark.parametrize("storage", sorted(STORAGE))
def test_dicom_round_trip_through_the_loader(tmp_path, storage):
    from medviewer.core.load import load
    from medviewer.core.scan import scan

    s = generate_heldout(7, size=48, max_slices=8, storage=storage, metal=True)
    dicom, truth_dir = write_heldout_study(s, tmp_path, "case-01")
    assert not list(dicom.glob("*.npy")) and not list(dicom.glob("*.json")), "no sidecars in the series folder"
    result = scan([str(dicom)])
    assert not result.refused and len(result.series) == 1
    volume = load(result.series[0])
    slope = STORAGE[storage][2]
    assert volume.voxels.shape == s.hu.shape
    zs = [sl.position[2] for sl in volume.slices] if hasattr(volume.slices[0], "position") else None
    if zs is not None:
        assert zs == sorted(zs), "the loader orders slices inferior to superior, as the study"
    diff = np.abs(volume.voxels.astype(np.float64) - s.hu)
    assert diff.max() <= slope / 2 + 1e-6
    assert volume.spacing_mm == pytest.approx(s.spacing_mm)
    assert np.allclose(volume.origin_lps_mm, s.origin_lps_mm, atol=1e-3)
    truth, labels, nodules = read_heldout_truth(truth_dir)
    assert np.array_equal(labels, s.labels) and np.array_equal(nodules, s.nodule_labels)
    assert [n["label"] for n in truth["nodules"]] == [n.label for n in s.nodules]
    assert truth["acquisition"]["storage"] == storage
