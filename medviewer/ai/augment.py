"""Domain randomisation of training batches: scanner, reconstruction and patient variation a phantom lacks.

:func:`randomise_domain` works on network-ready batches ``(N, C, H, W)`` in [0, 1] (HU clipped to ``clip`` and
scaled, :func:`~medviewer.ai.preprocess.normalise`), so HU amounts are converted with the clip range.  Per sample:

* geometry (images and label masks alike; masks by nearest neighbour): rotation, zoom, translation and a smooth
  elastic displacement in one ``grid_sample``;
* resolution: down-sample in-plane by 0.5-1 and back (a coarser reconstruction), or up-sample and back;
* blur (gaussian) or sharpen (unsharp mask) kernels; slice-thickness averaging (the 2.5D channels pulled to
  their mean);
* clutter outside the body: a table line, noisy air; metal-streak-like bright and dark lines; FOV truncation
  (the image beyond a random chord set to air); intensity cupping (centre darker);
* HU offset and scale about water, then correlated noise (blurred white noise scaled to 5-60 HU);
* clamped back to [0, 1], as inference inputs always are.

Labels never change except by geometry.  All randomness comes from ``generator`` (a seeded generator on the
images' device repeats exactly).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

__all__ = ["DomainRandomisation", "randomise_domain"]


@dataclass(frozen=True)
class DomainRandomisation:
    """Ranges of :func:`randomise_domain` (HU, degrees, fractions of the image, probabilities)."""

    clip: tuple[float, float] = (-1000.0, 400.0)
    hu_offset: float = 30.0
    hu_scale: tuple[float, float] = (0.9, 1.1)
    noise_hu: tuple[float, float] = (5.0, 60.0)
    noise_blur_px: tuple[float, float] = (0.0, 1.5)
    rotate_deg: float = 15.0
    zoom: tuple[float, float] = (0.7, 1.3)
    translate: float = 0.15
    elastic: float = 0.02  # displacement amplitude, fraction of the half-size
    p_resample: float = 0.4
    resample: tuple[float, float] = (0.5, 2.0)
    p_blur: float = 0.3
    p_sharpen: float = 0.2
    p_thick: float = 0.3
    p_table: float = 0.3
    p_air_noise: float = 0.4
    p_streaks: float = 0.15
    p_truncate: float = 0.15
    p_cupping: float = 0.3
    cupping_hu: float = 40.0
    hflip: float = 0.5

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _u(n: int, lo: float, hi: float, gen: torch.Generator, dev) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, device=dev)


def _gauss_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample separable gaussian blur of ``(N, C, H, W)``; sigma ``(N,)`` in pixels (0: unchanged)."""
    radius = 4
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.clamp_min(1e-3)[:, None]
    k = torch.exp(-0.5 * (t[None] / s) ** 2)
    k = k / k.sum(1, keepdim=True)  # (N, K)
    n, c, h, w = x.shape
    flat = x.reshape(1, n * c, h, w)
    kk = k.repeat_interleave(c, 0)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kk[:, None, None, :], groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kk[:, None, :, None], groups=n * c)
    return flat.reshape(n, c, h, w)


def _geometry(images, masks, cfg: DomainRandomisation, gen, dev):
    n, _, h, w = images.shape
    angle = _u(n, -cfg.rotate_deg, cfg.rotate_deg, gen, dev) * (math.pi / 180.0)
    zoom = _u(n, cfg.zoom[0], cfg.zoom[1], gen, dev)
    flip = torch.where(torch.rand(n, generator=gen, device=dev) < cfg.hflip, -1.0, 1.0)
    shift = _u(2 * n, -cfg.translate, cfg.translate, gen, dev).reshape(n, 2) * 2.0
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cos * flip, -sin, shift[:, 0]
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sin * flip, cos, shift[:, 1]
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    if cfg.elastic > 0:
        coarse = torch.randn((n, 2, 5, 5), generator=gen, device=dev) * cfg.elastic
        field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
        grid = grid + field.permute(0, 2, 3, 1)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    moved = None
    if masks is not None:
        m = F.grid_sample(masks[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
        moved = m[:, 0].round().to(masks.dtype)
    return out, moved


def _where(p: float, n: int, gen, dev) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=dev) < p


def randomise_domain(images: torch.Tensor, masks: torch.Tensor | None = None,
                     generator: torch.Generator | None = None, config: DomainRandomisation = DomainRandomisation(),
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Randomised copies of a batch ``(N, C, H, W)`` in [0, 1] and its masks ``(N, H, W)``; see the module
    docstring.  Returns float32 images in [0, 1] of the same shape, and masks of the same shape and dtype."""
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
    if masks is not None and (masks.shape[0], *masks.shape[1:]) != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"masks {tuple(masks.shape)} do not match images {tuple(images.shape)}")
    dev = images.device
    if generator is None:
        generator = torch.Generator(device=dev)
        generator.manual_seed(int(torch.randint(0, 2**31 - 1, (1,)).item()))
    n, c, h, w = images.shape
    if n == 0:
        return images.float(), masks
    gen, cfg = generator, config
    lo, hi = cfg.clip
    per_hu = 1.0 / (hi - lo)
    water = (0.0 - lo) * per_hu
    air = 0.0
    x, m = _geometry(images, masks, cfg, gen, dev)

    # resolution: through a coarser (or finer) grid and back
    factor = torch.exp(_u(n, math.log(cfg.resample[0]), math.log(cfg.resample[1]), gen, dev))
    pick = _where(cfg.p_resample, n, gen, dev)
    for i in torch.nonzero(pick).flatten().tolist():
        f = float(factor[i])
        size = (max(8, round(h * f)), max(8, round(w * f)))
        small = F.interpolate(x[i:i + 1], size=size, mode="bilinear", align_corners=False, antialias=f < 1)
        x[i:i + 1] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)

    # blur or sharpen
    sigma = _u(n, 0.5, 1.5, gen, dev)
    blur_on, sharp_on = _where(cfg.p_blur, n, gen, dev), _where(cfg.p_sharpen, n, gen, dev)
    amount = _u(n, 0.3, 1.0, gen, dev)
    blurred = _gauss_blur(x, sigma)
    x = torch.where(blur_on[:, None, None, None], blurred, x)
    sharpened = x + amount[:, None, None, None] * (x - blurred)
    x = torch.where((sharp_on & ~blur_on)[:, None, None, None], sharpened, x)

    # slice-thickness averaging of the 2.5D stack
    thick = _where(cfg.p_thick, n, gen, dev) * _u(n, 0.2, 0.7, gen, dev)
    x = x + thick[:, None, None, None] * (x.mean(1, keepdim=True) - x)

    rows = torch.linspace(-1.0, 1.0, h, device=dev)[:, None].expand(h, w)
    cols = torch.linspace(-1.0, 1.0, w, device=dev)[None, :].expand(h, w)
    # table line: a bright horizontal band (HU 100..600) below a random row, only where the image is air
    table_on = _where(cfg.p_table, n, gen, dev)
    table_row = _u(n, 0.3, 0.95, gen, dev)
    table_hu = _u(n, 100.0, 600.0, gen, dev)
    band = ((rows[None] - table_row[:, None, None]).abs() < 0.03).float()
    is_air = (x < 0.15).float()
    x = x + (table_on[:, None, None, None] * band[:, None] * is_air
             * ((table_hu[:, None, None, None] - lo) * per_hu - x))
    # noisy air outside the body (up to 150 HU std) -- signed/unsigned storage and low-dose air
    air_on = _where(cfg.p_air_noise, n, gen, dev) * _u(n, 20.0, 150.0, gen, dev) * per_hu
    air_noise = torch.randn((n, c, h, w), generator=gen, device=dev).abs()
    x = x + (x < 0.1).float() * air_noise * air_on[:, None, None, None]
    # metal-streak-like lines through a random point
    streak_on = _where(cfg.p_streaks, n, gen, dev)
    for i in torch.nonzero(streak_on).flatten().tolist():
        cy, cx = (float(v) for v in _u(2, -0.5, 0.5, gen, dev))
        count = int(torch.randint(2, 7, (1,), generator=gen, device=dev))
        for a, s in zip(_u(count, 0.0, math.pi, gen, dev).tolist(), _u(count, -800.0, 800.0, gen, dev).tolist()):
            dist = ((cols - cx) * math.sin(a) - (rows - cy) * math.cos(a)).abs()
            x[i] = x[i] + (s * per_hu) * torch.exp(-(dist / 0.01) ** 2)[None]
    # FOV truncation: beyond a random chord the image is air
    trunc_on = _where(cfg.p_truncate, n, gen, dev)
    chord_angle = _u(n, 0.0, 2 * math.pi, gen, dev)
    chord_at = _u(n, 0.4, 0.95, gen, dev)
    proj = (cols[None] * torch.cos(chord_angle)[:, None, None] + rows[None] * torch.sin(chord_angle)[:, None, None])
    cut = (proj > chord_at[:, None, None]) & trunc_on[:, None, None]
    x = torch.where(cut[:, None], torch.full_like(x, air), x)
    # cupping: a centre darker than the edges (the body only)
    cup = _where(cfg.p_cupping, n, gen, dev) * _u(n, 0.0, cfg.cupping_hu, gen, dev) * per_hu
    profile = (1.0 - (rows ** 2 + cols ** 2) / 2.0)[None, None]
    x = x - cup[:, None, None, None] * profile * (x > 0.15).float()

    # HU offset and scale about water, then correlated noise
    offset = _u(n, -cfg.hu_offset, cfg.hu_offset, gen, dev) * per_hu
    scale = _u(n, cfg.hu_scale[0], cfg.hu_scale[1], gen, dev)
    x = (x - water) * scale[:, None, None, None] + water + offset[:, None, None, None]
    noise = torch.randn((n, c, h, w), generator=gen, device=dev)
    noise_sigma = _u(n, cfg.noise_blur_px[0], cfg.noise_blur_px[1], gen, dev)
    smooth = _gauss_blur(noise, noise_sigma)
    smooth = smooth / smooth.flatten(1).std(1).clamp_min(1e-6)[:, None, None, None]
    level = _u(n, cfg.noise_hu[0], cfg.noise_hu[1], gen, dev) * per_hu
    x = x + smooth * level[:, None, None, None]
    return x.clamp(0.0, 1.0), m
