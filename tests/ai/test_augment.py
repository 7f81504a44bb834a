"""Domain randomisation of training batches: deterministic by seed, shapes kept, masks moved with the images."""

import torch

from medviewer.ai.augment import DomainRandomisation, randomise_domain


def _batch(n=4, c=3, size=48):
    g = torch.Generator().manual_seed(0)
    images = torch.rand((n, c, size, size), generator=g) * 0.2
    masks = torch.zeros((n, size, size), dtype=torch.int64)
    masks[:, 10:30, 12:28] = 1
    masks[:, 18:24, 18:24] = 2
    images[:, :, 10:30, 12:28] = 0.05
    images[:, :, 18:24, 18:24] = 0.75
    return images, masks


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_same_seed_same_output_and_other_seed_differs():
    images, masks = _batch()
    a = randomise_domain(images, masks, _gen(3))
    b = randomise_domain(images, masks, _gen(3))
    c = randomise_domain(images, masks, _gen(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_shapes_dtypes_and_range_kept():
    images, masks = _batch()
    out, moved = randomise_domain(images, masks.to(torch.uint8), _gen(1))
    assert out.shape == images.shape and out.dtype == torch.float32
    assert moved.shape == masks.shape and moved.dtype == torch.uint8
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert set(torch.unique(moved).tolist()) <= {0, 1, 2}
    no_masks, none = randomise_domain(images, None, _gen(1))
    assert none is None and no_masks.shape == images.shape


def test_masks_follow_the_geometry():
    # With intensity changes switched off, the bright nodule stays under label 2 after rotation/zoom/shift/elastic.
    quiet = DomainRandomisation(hu_offset=0.0, hu_scale=(1.0, 1.0), noise_hu=(0.0, 0.0), p_resample=0.0, p_blur=0.0,
                                p_sharpen=0.0, p_thick=0.0, p_table=0.0, p_air_noise=0.0, p_streaks=0.0,
                                p_truncate=0.0, p_cupping=0.0, translate=0.1)
    images, masks = _batch(n=8)
    out, moved = randomise_domain(images, masks, _gen(7), quiet)
    assert not torch.equal(moved, masks)  # the geometry did move them
    for i in range(8):
        nodule = moved[i] == 2
        if nodule.sum() == 0:
            continue
        assert float(out[i, 1][nodule].mean()) > 0.5
        assert float(out[i, 1][moved[i] == 0].mean()) < 0.25


def test_noise_level_in_hu():
    flat = torch.full((6, 3, 64, 64), 0.714)  # water
    cfg = DomainRandomisation(hu_offset=0.0, hu_scale=(1.0, 1.0), noise_hu=(30.0, 30.0), noise_blur_px=(0.0, 0.0),
                              rotate_deg=0.0, zoom=(1.0, 1.0), translate=0.0, elastic=0.0, p_resample=0.0, p_blur=0.0,
                              p_sharpen=0.0, p_thick=0.0, p_table=0.0, p_air_noise=0.0, p_streaks=0.0,
                              p_truncate=0.0, p_cupping=0.0)
    out, _ = randomise_domain(flat, None, _gen(0), cfg)
    std_hu = float(out.std()) * 1400.0
    assert 25.0 < std_hu < 35.0


def test_bad_shapes_rejected():
    images, masks = _batch()
    import pytest
    with pytest.raises(ValueError):
        randomise_domain(images[0], None, _gen(0))
    with pytest.raises(ValueError):
        randomise_domain(images, masks[:, :10], _gen(0))
