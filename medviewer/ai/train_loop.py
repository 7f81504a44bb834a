"""What the training loops share: the result record, determinism, the device, the optimiser and schedule,
crop placement and validation subsampling."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from medviewer.ai.data import SliceDataset
from medviewer.ai.device import configure_threads, device_name, select_device
from medviewer.core.errors import Cancelled, CancelToken, is_cancelled

__all__ = ["ANY_LABEL", "UNIFORM", "EpochProgress", "StepProgress", "TrainLoop", "TrainResult", "crop_origins",
           "deterministic", "settings_record", "setup_device", "subsample"]

EpochProgress = Callable[[int, int, dict], object]
StepProgress = Callable[[int, int], object]


@dataclass
class TrainResult:
    """The best network (eval mode, on the CPU), the arguments that rebuild it (calibration included), the
    validation metrics for the manifest, the per-epoch history and how training went."""

    model: nn.Module
    architecture: str
    arguments: dict
    metrics: dict
    threshold: float = 0.5
    history: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)


@contextlib.contextmanager
def deterministic(seed: int):
    """Seed torch and switch deterministic algorithms on for the duration (restored after)."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
        torch.backends.cudnn.benchmark = benchmark


def setup_device(device: str | torch.device, threads: int | None) -> torch.device:
    """The device to train on; on the CPU the threads are set explicitly."""
    dev = select_device(str(device))
    if dev.type == "cpu":
        configure_threads(threads)
    return dev


def lr_at(step: int, total: int, lr: float, warmup: int) -> float:
    """Learning rate at ``step`` of ``total``: linear warm-up, then cosine decay to 2% of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))


class TrainLoop:
    """What both loops share: the optimiser, the schedule, the generators, cancel and progress."""

    def __init__(self, model: nn.Module, dev: torch.device, seed: int, lr: float, weight_decay: float,
                 total_steps: int, cancel: CancelToken | None, on_step: StepProgress | None,
                 extra: nn.Module | None = None) -> None:
        # channels-last throughout: evaluation converts the model too, and CPU convolutions prefer it
        self.model, self.dev = model.to(dev, memory_format=torch.channels_last), dev
        params = list(model.parameters()) + (list(extra.parameters()) if extra is not None else [])
        self.opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        self.lr, self.total, self.step = lr, total_steps, 0
        self.warmup = max(1, min(100, total_steps // 20))
        self.rng = np.random.default_rng([seed, 1])
        self.gen = torch.Generator(device=dev)
        self.gen.manual_seed(seed * 7919 + 17)
        self.cancel, self.on_step = cancel, on_step

    def update(self, loss: torch.Tensor, step_in_epoch: int, steps: int) -> float:
        if is_cancelled(self.cancel):
            raise Cancelled("training cancelled")
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.step, self.total, self.lr, self.warmup)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        if self.on_step is not None:
            self.on_step(step_in_epoch + 1, steps)
        return float(loss.detach())


def settings_record(dev, seed, epochs, steps, batch_size, lr, weight_decay, aug, started, best_key, history, **extra) -> dict:
    best_epoch = max(history, key=lambda r: (np.nan_to_num(r.get("val_auc", r.get("val_dice", 0.0))),
                                             -r.get("val_loss", 0.0)))["epoch"] if history else 0
    return {"device": device_name(dev), "seed": seed, "epochs": epochs, "steps_per_epoch": steps,
            "batch_size": batch_size, "learning_rate": lr, "weight_decay": weight_decay, "optimizer": "Adam",
            "schedule": "linear warm-up, cosine decay", "augmentation": aug or "defaults of preprocess.augment",
            "best_epoch": best_epoch, "seconds": round(time.perf_counter() - started, 1), **extra}


UNIFORM, ANY_LABEL = -2, -1


def crop_origins(data: SliceDataset, pairs: np.ndarray, crop: int, centre_on: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """Top-left corners ``(B, 2)`` of ``crop`` windows of the slices ``pairs``: where ``centre_on[i]`` is a label
    value (or ``ANY_LABEL``: any non-zero one) near a random pixel of it in the slice's mask, jittered by up to a
    third of the window; ``UNIFORM`` (or a slice without such pixels) anywhere."""
    n = len(pairs)
    h, w = data.images[0].shape[1:]
    if crop > h or crop > w:
        raise ValueError(f"crop {crop} is larger than the slices ({h} x {w})")
    origins = np.stack([rng.integers(0, h - crop + 1, n), rng.integers(0, w - crop + 1, n)], axis=1)
    for i in np.flatnonzero(centre_on != UNIFORM):
        v, k = pairs[i]
        mask = data.masks[v][k].numpy()
        rr, cc = np.nonzero(mask > 0 if centre_on[i] == ANY_LABEL else mask == centre_on[i])
        if len(rr):
            j = rng.integers(0, len(rr))
            jitter = rng.integers(-(crop // 3), crop // 3 + 1, 2)
            origins[i] = (np.clip(rr[j] - crop // 2 + jitter[0], 0, h - crop),
                          np.clip(cc[j] - crop // 2 + jitter[1], 0, w - crop))
    return origins


def subsample(pairs: np.ndarray, y: np.ndarray, limit: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Every slice of a class other than 0 and random class-0 slices up to ``limit`` in all (sorted)."""
    if limit is None or len(pairs) <= limit:
        return pairs, y
    keep = list(np.flatnonzero(y != 0))
    rest = np.flatnonzero(y == 0)
    rng = np.random.default_rng([seed, 3])
    keep += rng.choice(rest, size=max(0, min(len(rest), limit - len(keep))), replace=False).tolist()
    keep = np.sort(np.array(keep, dtype=np.int64))
    return pairs[keep], y[keep]
