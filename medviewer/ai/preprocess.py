"""Preprocessing shared by training and inference, and batched augmentation for training.

Every network input is made here, so training and inference can never disagree:

1. :func:`slice_stack` — the slices of a volume a 2D/2.5D input is made of (``channels`` neighbours centred
   on slice k, the first and last slice repeated past the ends);
2. :func:`normalise` — values clipped to ``spec.clip`` (modality units, e.g. HU) and scaled to [0, 1];
3. :func:`resize_batch` — bilinear (antialiased when shrinking) to ``spec.size``; :func:`resize_labels` is
   the nearest-neighbour twin for masks.

:func:`volume_batches` chains the three for inference.  Arrays are ``(slices, rows, cols)``; tensors
``(N, C, H, W)`` float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # pragma: no cover
    from medviewer.ai.manifest import InputSpec

__all__ = ["augment", "normalise", "resize_batch", "resize_labels", "slice_stack", "volume_batches"]


def normalise(values: np.ndarray, spec: InputSpec) -> np.ndarray:
    """``values`` (any shape, modality units such as HU) clipped to ``spec.clip`` and scaled to [0, 1], float32.

    Only ``"clip01"`` normalisation exists: ``(clip(v, lo, hi) - lo) / (hi - lo)``.
    """
    if spec.normalisation != "clip01":
        raise ValueError(f"normalisation {spec.normalisation!r} is not supported (only 'clip01')")
    lo, hi = (float(v) for v in spec.clip)
    out = np.asarray(values, dtype=np.float32)
    out = np.clip(out, lo, hi, out=out if out is not values else None)
    out -= np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    return out


def normalise_tensor(values: torch.Tensor, clip: Sequence[float]) -> torch.Tensor:
    """:func:`normalise` for a tensor (float32 result on the tensor's device)."""
    lo, hi = float(clip[0]), float(clip[1])
    return (values.float().clamp(lo, hi) - lo) * (1.0 / (hi - lo))


def stack_indices(count: int, k: int, channels: int) -> list[int]:
    """Indices of the ``channels`` slices centred on ``k`` in a volume of ``count`` slices, edges repeated."""
    if channels < 1 or channels % 2 == 0:
        raise ValueError(f"channels must be a positive odd number, got {channels}")
    if not 0 <= k < count:
        raise IndexError(f"slice {k} is outside 0..{count - 1}")
    half = channels // 2
    return [min(max(k + d, 0), count - 1) for d in range(-half, half + 1)]


def slice_stack(voxels: np.ndarray, k: int, channels: int) -> np.ndarray:
    """``(channels, rows, cols)``: slices ``k - channels//2 .. k + channels//2`` of ``voxels`` (slices, rows, cols),
    the first/last slice repeated past the ends.  ``channels == 1`` gives just slice k.  Same dtype as voxels."""
    if voxels.ndim != 3:
        raise ValueError(f"voxels must be (slices, rows, cols), got shape {voxels.shape}")
    return voxels[stack_indices(voxels.shape[0], k, channels)]


def _size_pair(size: Sequence[int] | int) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = (int(v) for v in size)
    return h, w


def resize_batch(batch: torch.Tensor, size: Sequence[int] | int) -> torch.Tensor:
    """Images ``(N, C, H, W)`` resized to ``size`` (h, w): bilinear, antialiased when shrinking, float32."""
    h, w = _size_pair(size)
    if batch.shape[-2:] == (h, w):
        return batch.float()
    shrink = batch.shape[-2] > h or batch.shape[-1] > w
    return F.interpolate(batch.float(), size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)


def resize_labels(masks: torch.Tensor, size: Sequence[int] | int) -> torch.Tensor:
    """Label masks ``(N, H, W)`` or ``(N, 1, H, W)`` (integers) resized by nearest neighbour; dtype and rank kept."""
    h, w = _size_pair(size)
    if masks.shape[-2:] == (h, w):
        return masks
    squeeze = masks.ndim == 3
    m = masks[:, None] if squeeze else masks
    out = F.interpolate(m.float(), size=(h, w), mode="nearest-exact").to(masks.dtype)
    return out[:, 0] if squeeze else out


def volume_batches(voxels: np.ndarray, spec: InputSpec, indices: Sequence[int],
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Network input for slices ``indices`` of ``voxels`` (slices, rows, cols) in modality units:
    ``(len(indices), spec.channels, *spec.size)`` float32 on ``device`` (stack, normalise, resize)."""
    if voxels.ndim != 3:
        raise ValueError(f"voxels must be (slices, rows, cols), got shape {voxels.shape}")
    channels = spec.channels if spec.context == "2.5d" else 1
    stacks = np.stack([slice_stack(voxels, int(k), channels) for k in indices]) if len(indices) else \
        np.zeros((0, channels) + voxels.shape[1:], dtype=voxels.dtype)
    batch = torch.from_numpy(normalise(stacks, spec)).to(device)
    if spec.context != "2.5d" and spec.channels > 1:  # a single plane fed to a multi-channel 2D network
        batch = batch.expand(-1, spec.channels, -1, -1)
    return resize_batch(batch, spec.size)


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) * (hi - lo) + lo


def augment(images: torch.Tensor, masks: torch.Tensor | None = None, generator: torch.Generator | None = None, *,
            hflip: float = 0.5, vflip: float = 0.0, rotate_deg: float = 10.0, scale: tuple[float, float] = (0.9, 1.1),
            contrast: float = 0.1, brightness: float = 0.05, noise_std: float = 0.02,
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random flips, rotation (±``rotate_deg``), zoom (``scale``), intensity jitter and gaussian noise, per sample.

    ``images``: ``(N, C, H, W)`` float in [0, 1] on any device; ``masks``: ``(N, H, W)`` integer labels moved by the
    same geometry (nearest neighbour; outside the image becomes 0).  Geometry uses one ``affine_grid`` and
    ``grid_sample`` for the whole batch; pixels from outside the image are 0 (air after CT normalisation).
    ``contrast``/``brightness``: ``x * (1 ± contrast) ± brightness``; noise std drawn in [0, noise_std].
    All randomness comes from ``generator`` (on the images' device), so a seeded generator repeats exactly.
    Returns new tensors ``(images, masks)``; images are not clipped back to [0, 1].
    """
    n, device = images.shape[0], images.device
    if generator is None:
        generator = torch.Generator(device=device)
        generator.manual_seed(int(torch.randint(0, 2**31 - 1, (1,)).item()))
    if n == 0:
        return images, masks
    angle = _uniform(n, -rotate_deg, rotate_deg, generator, device) * (math.pi / 180.0)
    zoom = _uniform(n, scale[0], scale[1], generator, device)
    sx = torch.where(torch.rand(n, generator=generator, device=device) < hflip, -1.0, 1.0)
    sy = torch.where(torch.rand(n, generator=generator, device=device) < vflip, -1.0, 1.0)
    gain = _uniform(n, 1.0 - contrast, 1.0 + contrast, generator, device)
    offset = _uniform(n, -brightness, brightness, generator, device)
    sigma = _uniform(n, 0.0, noise_std, generator, device)
    noise = torch.randn(images.shape, generator=generator, device=device)

    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom  # output -> input coordinates: zoom > 1 magnifies
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 1] = cos * sx, -sin * sy
    theta[:, 1, 0], theta[:, 1, 1] = sin * sx, cos * sy
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out * gain[:, None, None, None] + offset[:, None, None, None]
    out = out + noise * sigma[:, None, None, None]
    moved = None
    if masks is not None:
        m = masks[:, None].float()
        moved = F.grid_sample(m, grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0]
        moved = moved.round().to(masks.dtype)
    return out, moved
