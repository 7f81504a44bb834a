"""Training data held in memory: per-volume normalised images, masks and per-slice targets, from phantoms.

A :class:`SliceDataset` keeps, per volume, the network-ready image ``(slices, h, w)`` float16 in [0, 1]
(already normalised with :func:`~medviewer.ai.preprocess.normalise` and resized to the model's input size),
an optional label mask ``(slices, h, w)`` uint8, per-slice class targets (``-1``: not used), and a group key
(the patient) so that :func:`split_by_group` never puts one patient on both sides.  2.5D stacks are cut from
these volumes per batch, exactly as :func:`~medviewer.ai.preprocess.volume_batches` cuts them at inference.

Phantom data: :class:`PhantomRanges` draws per-phantom settings, :func:`iter_phantoms` generates them and
:func:`phantom_entry` turns one into a dataset volume.  Folder data lives in :mod:`medviewer.ai.folders`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from medviewer.ai.manifest import InputSpec
from medviewer.ai.phantom import Phantom, PhantomConfig, generate_phantom
from medviewer.ai.preprocess import normalise, resize_batch, resize_labels, stack_indices
from medviewer.core.errors import Cancelled, CancelToken, is_cancelled

__all__ = [
    "MIN_NODULE_AREA_MM2",
    "PhantomRanges",
    "SliceDataset",
    "draw_configs",
    "iter_phantoms",
    "nodule_area_mm2",
    "phantom_entry",
    "prepare_volume",
    "split_by_group",
]

# A slice "shows a nodule" when its nodule cross-section is at least this large: 20 mm^2 is a disc of 5 mm
# diameter, below which a cut through the cap of a sphere is a few pixels a reader would not call a nodule.
MIN_NODULE_AREA_MM2 = 20.0


@dataclass
class SliceDataset:
    """Volumes of network-ready slices; see the module docstring.  All lists are per volume."""

    images: list[torch.Tensor] = field(default_factory=list)  # (S, h, w) float16 in [0, 1]
    masks: list[torch.Tensor | None] = field(default_factory=list)  # (S, h, w) uint8 or None
    targets: list[np.ndarray | None] = field(default_factory=list)  # (S,) int64 class, -1 = not used, or None
    groups: list[str] = field(default_factory=list)
    meta: list[dict] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def append(self, image: torch.Tensor, mask: torch.Tensor | None = None, targets: np.ndarray | None = None,
               group: str = "", meta: dict | None = None) -> None:
        if image.ndim != 3:
            raise ValueError(f"image must be (slices, h, w), got {tuple(image.shape)}")
        if mask is not None and tuple(mask.shape) != tuple(image.shape):
            raise ValueError(f"mask {tuple(mask.shape)} does not match image {tuple(image.shape)}")
        if targets is not None and len(targets) != image.shape[0]:
            raise ValueError(f"{len(targets)} targets for {image.shape[0]} slices")
        self.images.append(image)
        self.masks.append(mask)
        self.targets.append(None if targets is None else np.asarray(targets, dtype=np.int64))
        self.groups.append(str(group))
        self.meta.append(meta or {})

    def subset(self, volumes) -> SliceDataset:
        """The volumes at indices ``volumes`` (shared tensors, no copy)."""
        out = SliceDataset(class_names=list(self.class_names))
        for v in volumes:
            out.append(self.images[v], self.masks[v], self.targets[v], self.groups[v], self.meta[v])
        return out

    def slices(self, labelled_only: bool = True) -> np.ndarray:
        """``(M, 2)`` int64 (volume, slice) of every slice (with a target >= 0 when ``labelled_only`` and targets exist)."""
        rows = []
        for v, image in enumerate(self.images):
            ks = np.arange(image.shape[0])
            t = self.targets[v]
            if labelled_only and t is not None:
                ks = ks[t >= 0]
            rows.append(np.stack([np.full(len(ks), v), ks], axis=1))
        return np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, 2), dtype=np.int64)

    def slice_weights(self, pairs: np.ndarray) -> np.ndarray:
        """Sampling weight of each (volume, slice): ``meta["sample_weight"][slice]`` where a volume has one, else 1."""
        return np.array([float(self.meta[v]["sample_weight"][k]) if "sample_weight" in self.meta[v] else 1.0
                         for v, k in pairs], dtype=np.float64)

    def slice_targets(self, pairs: np.ndarray) -> np.ndarray:
        return np.array([self.targets[v][k] for v, k in pairs], dtype=np.int64)

    def batch(self, pairs: np.ndarray, channels: int, crops: np.ndarray | None = None, crop_size: int | None = None,
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images ``(B, channels, h, w)`` float32 (2.5D stacks centred on each slice) and masks ``(B, h, w)`` int64
        (None without masks).  ``crops``: ``(B, 2)`` top-left (row, col) of a ``crop_size`` square per sample."""
        imgs, masks = [], []
        for b, (v, k) in enumerate(pairs):
            image = self.images[v]
            idx = stack_indices(image.shape[0], int(k), channels)
            stack = image[idx]
            mask = self.masks[v][k] if self.masks[v] is not None else None
            if crops is not None:
                r, c = (int(x) for x in crops[b])
                stack = stack[:, r:r + crop_size, c:c + crop_size]
                mask = None if mask is None else mask[r:r + crop_size, c:c + crop_size]
            imgs.append(stack)
            masks.append(mask)
        images = torch.stack(imgs).float()
        if any(m is None for m in masks):
            return images, None
        return images, torch.stack(masks).long()


def split_by_group(groups: list[str], fraction: float, seed: int,
                   strata: list[int] | None = None) -> tuple[list[int], list[int]]:
    """Indices (train, validation) of the items with ``groups`` keys, whole groups on one side.

    About ``fraction`` of the groups go to validation, drawn per stratum (e.g. the majority class of the group)
    so that each stratum with two or more groups is on both sides; at least one group each side when there are
    two or more groups.  Deterministic for a ``seed``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must lie in (0, 1), got {fraction}")
    keys = sorted(set(groups))
    stratum_of: dict[str, int] = {}
    for i, g in enumerate(groups):
        stratum_of.setdefault(g, strata[i] if strata is not None else 0)
    rng = np.random.default_rng(seed)
    val_keys: set[str] = set()
    for s in sorted(set(stratum_of.values())):
        members = [g for g in keys if stratum_of[g] == s]
        rng.shuffle(members)
        n_val = int(round(fraction * len(members)))
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val_keys.update(members[:n_val])
    if len(keys) >= 2 and (not val_keys or val_keys == set(keys)):
        val_keys = {keys[0]} if not val_keys else set(sorted(val_keys)[1:])
    train = [i for i, g in enumerate(groups) if g not in val_keys]
    val = [i for i, g in enumerate(groups) if g in val_keys]
    return train, val


# ------------------------------------------------------------------------------------------------ phantoms


@dataclass(frozen=True)
class PhantomRanges:
    """Per-phantom settings, each drawn uniformly from its range (mm, HU) for :func:`draw_configs`."""

    size: int = 256
    field_of_view_mm: float = 350.0
    extent_mm: tuple[float, float] = (180.0, 330.0)  # craniocaudal coverage; slices = extent / thickness
    max_slices: int = 200
    slice_thickness_mm: tuple[float, float] = (1.25, 5.0)
    noise_hu: tuple[float, float] = (5.0, 30.0)
    nodule_count: tuple[int, int] = (1, 4)
    nodule_diameter_mm: tuple[float, float] = (3.0, 30.0)
    nodule_hu: tuple[float, float] = (-200.0, 100.0)
    body_scale: tuple[float, float] = (0.85, 1.15)
    vessel_generations: int = 8

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def draw_configs(count: int, seed: int, ranges: PhantomRanges = PhantomRanges()) -> list[tuple[PhantomConfig, int]]:
    """``count`` (config, phantom seed) pairs drawn from ``ranges``; deterministic for ``seed``."""
    rng = np.random.default_rng([seed, 0x5EED])
    out = []
    for n in range(count):
        thickness = float(np.round(rng.uniform(*ranges.slice_thickness_mm), 2))
        extent = float(rng.uniform(*ranges.extent_mm))
        slices = int(min(max(round(extent / thickness), 8), ranges.max_slices))
        config = PhantomConfig(
            slices=slices, size=ranges.size, field_of_view_mm=ranges.field_of_view_mm,
            slice_thickness_mm=thickness, nodule_count=ranges.nodule_count,
            nodule_diameter_mm=ranges.nodule_diameter_mm, nodule_hu=ranges.nodule_hu,
            noise_hu=float(rng.uniform(*ranges.noise_hu)), body_scale=ranges.body_scale,
            vessel_generations=ranges.vessel_generations,
        )
        out.append((config, int(seed) * 100_003 + n))
    return out


def iter_phantoms(configs: list[tuple[PhantomConfig, int]], cancel: CancelToken | None = None,
                  progress=None) -> Iterator[Phantom]:
    """Generate the phantoms one at a time (``progress(done, total)`` after each)."""
    for n, (config, seed) in enumerate(configs):
        if is_cancelled(cancel):
            raise Cancelled("phantom generation cancelled")
        yield generate_phantom(config, seed)
        if progress is not None:
            progress(n + 1, len(configs))


def nodule_area_mm2(labels: np.ndarray, spacing_mm: tuple[float, float, float], nodule_label: int = 2) -> np.ndarray:
    """Nodule cross-section per slice (mm²) of a label volume ``(slices, rows, cols)``."""
    counts = np.array([np.count_nonzero(plane == nodule_label) for plane in labels], dtype=np.float64)
    return counts * float(spacing_mm[1]) * float(spacing_mm[2])


def prepare_volume(voxels: np.ndarray, spec: InputSpec, mask: np.ndarray | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A volume ``(slices, rows, cols)`` in modality units as the cached network-ready ``(S, h, w)`` float16, and its
    mask ``(S, h, w)`` uint8 resized by nearest neighbour; one slice at a time so no float copy of the volume is made."""
    out = torch.empty((voxels.shape[0], *spec.size), dtype=torch.float16)
    for k in range(voxels.shape[0]):
        plane = torch.from_numpy(normalise(voxels[k], spec))[None, None]
        out[k] = resize_batch(plane, spec.size)[0, 0].to(torch.float16)
    resized = None
    if mask is not None:
        resized = resize_labels(torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8)), spec.size)
    return out, resized


def phantom_entry(phantom: Phantom, spec: InputSpec, task: str, min_area_mm2: float = MIN_NODULE_AREA_MM2,
                  ) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray | None, str, dict]:
    """``(image, mask, targets, group, meta)`` for :meth:`SliceDataset.append` from one phantom.

    Classification targets: 1 where the slice's nodule cross-section is >= ``min_area_mm2``, else 0; the mask is
    then 1 where any nodule voxel falls in the (resized) pixel, for dense supervision of the classifier.
    Segmentation: the phantom's labels (0 background, 1 lung, 2 nodule) as the mask.  The group is the phantom
    (one synthetic patient).  ``meta`` keeps the spacing, per-slice nodule areas and the nodules.
    """
    area = nodule_area_mm2(phantom.labels, phantom.spacing_mm)
    image, mask = prepare_volume(phantom.hu, spec, phantom.labels if task == "segmentation" else None)
    targets = None
    if task == "classification":
        targets = (area >= min_area_mm2).astype(np.int64)
        nodule = torch.from_numpy(phantom.labels == 2)[:, None].float()
        mask = F.adaptive_max_pool2d(nodule, spec.size)[:, 0].to(torch.uint8)
    meta = {
        "spacing_mm": phantom.spacing_mm,
        "pixel_area_mm2": float(phantom.spacing_mm[1] * phantom.spacing_mm[2]
                                * phantom.hu.shape[1] * phantom.hu.shape[2] / (spec.size[0] * spec.size[1])),
        "nodule_area_mm2": area,
        "nodules": [(n.center_index, n.diameter_mm) for n in phantom.nodules],
        "seed": phantom.seed,
        "noise_hu": phantom.config.noise_hu,
    }
    return image, mask, targets, f"phantom-{phantom.seed}", meta
