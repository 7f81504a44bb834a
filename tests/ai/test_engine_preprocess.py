"""Preprocessing shared by training and inference, augmentation, and the patient-wise split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medviewer.ai.data import SliceDataset, prepare_volume, split_by_group
from medviewer.ai.manifest import InputSpec
from medviewer.ai.preprocess import augment, normalise, resize_batch, resize_labels, slice_stack, volume_batches

SPEC = InputSpec(clip=(-1000.0, 400.0), size=(16, 16), channels=3, context="2.5d")


def test_normalise_clips_and_scales():
    hu = np.array([-2000, -1000, -300, 400, 3000], dtype=np.int16)
    out = normalise(hu, SPEC)
    assert out.dtype == np.float32
    assert out.tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])
    assert hu[0] == -2000  # the input is untouched


def test_slice_stack_replicates_edges():
    vol = np.arange(4, dtype=np.int16)[:, None, None] * np.ones((1, 2, 2), dtype=np.int16)
    assert slice_stack(vol, 0, 3)[:, 0, 0].tolist() == [0, 0, 1]
    assert slice_stack(vol, 3, 5)[:, 0, 0].tolist() == [1, 2, 3, 3, 3]
    assert slice_stack(vol, 2, 1).shape == (1, 2, 2)
    with pytest.raises(ValueError):
        slice_stack(vol, 1, 2)


def test_resize_batch_and_labels():
    x = torch.rand(2, 3, 32, 24)
    assert resize_batch(x, (16, 16)).shape == (2, 3, 16, 16)
    masks = torch.zeros(2, 32, 24, dtype=torch.uint8)
    masks[:, :16] = 2
    small = resize_labels(masks, (16, 12))
    assert small.shape == (2, 16, 12) and small.dtype == torch.uint8
    assert set(small.unique().tolist()) == {0, 2}  # nearest neighbour: no new values


def test_volume_batches_matches_the_training_cache():
    rng = np.random.default_rng(0)
    voxels = rng.integers(-1024, 1000, size=(5, 40, 40)).astype(np.int16)
    batch = volume_batches(voxels, SPEC, [0, 2, 4])
    assert batch.shape == (3, 3, 16, 16) and batch.dtype == torch.float32
    cached, _ = prepare_volume(voxels, SPEC)
    data = SliceDataset()
    data.append(cached)
    images, _ = data.batch(np.array([[0, 0], [0, 2], [0, 4]]), channels=3)
    assert torch.allclose(images, batch, atol=2e-3)  # float16 cache


def test_augment_is_seeded_and_moves_masks_with_images():
    images = torch.zeros(4, 1, 32, 32)
    images[:, :, 8:16, 20:28] = 1.0
    masks = (images[:, 0] > 0.5).long()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, ma = augment(images, masks, g1, noise_std=0.0, contrast=0.0, brightness=0.0)
    b, mb = augment(images, masks, g2, noise_std=0.0, contrast=0.0, brightness=0.0)
    assert torch.equal(a, b) and torch.equal(ma, mb)
    assert a.shape == images.shape and ma.shape == masks.shape and ma.dtype == masks.dtype
    # geometry only: where the mask moved, the image moved with it
    inside = a[:, 0][ma == 1]
    assert inside.mean() > 0.9


def test_split_by_group_never_leaks():
    groups = ["p1", "p1", "p2", "p3", "p3", "p4", "p5", "p6"]
    train, val = split_by_group(groups, 0.34, seed=5)
    assert sorted(train + val) == list(range(len(groups)))
    assert not {groups[i] for i in train} & {groups[i] for i in val}
    assert train and val
    assert split_by_group(groups, 0.34, seed=5) == (train, val)
    # strata: each class with two or more groups lands on both sides
    strata = [0, 0, 0, 0, 0, 1, 1, 1]
    train, val = split_by_group(groups, 0.34, seed=1, strata=strata)
    assert {strata[i] for i in val} == {0, 1} and {strata[i] for i in train} == {0, 1}
