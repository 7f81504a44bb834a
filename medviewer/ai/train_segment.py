"""Training a segmenter: Dice + cross-entropy, Adam, crops near the rarest label, best epoch by validation Dice.

See :mod:`medviewer.ai.train` for determinism, progress and cancellation.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from medviewer.ai.augment import DomainRandomisation, randomise_domain
from medviewer.ai.data import SliceDataset
from medviewer.ai.evaluation import segment_dataset
from medviewer.ai.metrics import label_counts
from medviewer.ai.networks import build
from medviewer.ai.preprocess import augment
from medviewer.ai.train_loop import (
    ANY_LABEL,
    UNIFORM,
    EpochProgress,
    StepProgress,
    TrainLoop,
    TrainResult,
    crop_origins,
    deterministic,
    settings_record,
    setup_device,
)
from medviewer.core.errors import CancelToken

__all__ = ["train_segmenter"]


def _dice_ce(logits: torch.Tensor, target: torch.Tensor, classes: int) -> torch.Tensor:
    """Cross-entropy plus (1 - mean soft Dice of the foreground labels), Dice pooled over the batch."""
    ce = F.cross_entropy(logits, target)
    prob = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, classes).permute(0, 3, 1, 2).to(prob.dtype)
    dims = (0, 2, 3)
    inter = (prob * onehot).sum(dims)[1:]
    total = prob.sum(dims)[1:] + onehot.sum(dims)[1:]
    dice = (2 * inter + 1.0) / (total + 1.0)
    return ce + (1.0 - dice.mean())


def _seg_samples(data: SliceDataset, n: int, crop: int | None, focus: float, foreground: float, rare: int,
                 rare_pairs: np.ndarray, rare_weights: np.ndarray, all_pairs: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """Slices (and crop origins): a ``focus`` share of slices with the ``rare`` label (drawn by ``rare_weights``)
    centred near a pixel of it, a ``foreground`` share near any labelled pixel (the hard negatives around the rare
    label), the rest anywhere."""
    draw = rng.random(n)
    use_rare = (draw < focus) & (len(rare_pairs) > 0)
    pairs = all_pairs[rng.integers(0, len(all_pairs), n)]
    if use_rare.any():
        pairs[use_rare] = rare_pairs[rng.choice(len(rare_pairs), int(use_rare.sum()), p=rare_weights)]
    if crop is None:
        return pairs, None
    centre_on = np.where(use_rare, rare, np.where(draw < focus + foreground, ANY_LABEL, UNIFORM))
    return pairs, crop_origins(data, pairs, crop, centre_on, rng)


def train_segmenter(train: SliceDataset, val: SliceDataset, *, channels: int, classes: int,
                    architecture: str = "UNet2D", arguments: dict | None = None, epochs: int = 10,
                    batch_size: int = 8, lr: float = 1e-3, weight_decay: float = 1e-5,
                    steps_per_epoch: int | None = None, crop: int | None = None, focus: float = 0.5,
                    foreground: float = 0.0, val_max_slices: int = 400, augmentation: dict | None = None,
                    domain: DomainRandomisation | None = None, seed: int = 0,
                    device: str | torch.device = "auto", threads: int | None = None,
                    progress: EpochProgress | None = None, on_step: StepProgress | None = None,
                    cancel: CancelToken | None = None) -> TrainResult:
    """Train a segmenter with Dice + cross-entropy; keep the epoch with the best mean foreground Dice on validation.

    ``classes``: label values 0..classes-1 (0 background).  ``crop``: train on ``crop`` x ``crop`` patches of the
    cached slices (the network is fully convolutional; validation uses whole slices), ``focus`` of them centred
    near the rarest label (slices drawn in proportion to ``meta["sample_weight"]`` where present), ``foreground``
    near any other label (for crops).  ``val_max_slices``: validation uses every slice holding the rarest label plus others
    up to this many.  Metrics: Dice and IoU per label (pooled over validation slices).
    """
    dev = setup_device(device, threads)
    all_pairs = train.slices(labelled_only=False)
    counts = np.zeros(classes, dtype=np.int64)
    for m in train.masks:
        counts += np.bincount(m.numpy().ravel(), minlength=classes)[:classes]
    rare = int(np.argmin(np.where(counts[1:] > 0, counts[1:], np.iinfo(np.int64).max))) + 1 if classes > 1 else 0
    rare_pairs = np.array([(v, k) for v, m in enumerate(train.masks) for k in range(m.shape[0])
                           if bool((m[k] == rare).any())], dtype=np.int64).reshape(-1, 2)
    rare_weights = train.slice_weights(rare_pairs)
    rare_weights = rare_weights / rare_weights.sum() if len(rare_weights) else rare_weights
    val_pairs = _val_selection(val, rare, val_max_slices, seed)
    if len(all_pairs) == 0 or len(val_pairs) == 0:
        raise ValueError("training and validation sets must both hold slices")
    args = dict(arguments or {})
    args.update(in_channels=channels, classes=classes)
    steps = steps_per_epoch or max(1, math.ceil(len(all_pairs) / batch_size))
    aug = dict(augmentation or {})
    history: list[dict] = []
    started = time.perf_counter()
    with deterministic(seed):
        model = build(architecture, args)
        loop = TrainLoop(model, dev, seed, lr, weight_decay, epochs * steps, cancel, on_step)
        best, best_key = None, None
        for epoch in range(1, epochs + 1):
            model.train()
            losses = []
            for s in range(steps):
                pairs, origins = _seg_samples(train, batch_size, crop, focus, foreground, rare, rare_pairs, rare_weights,
                                               all_pairs, loop.rng)
                images, masks = train.batch(pairs, channels, origins, crop)
                if domain is not None:
                    images, masks = randomise_domain(images.to(dev), masks.to(dev), loop.gen, domain)
                else:
                    images, masks = augment(images.to(dev), masks.to(dev), loop.gen, **aug)
                losses.append(loop.update(_dice_ce(model(images), masks, classes), s, steps))
            t_val = time.perf_counter()
            scores = _seg_scores(model, val, val_pairs, channels, classes, dev)
            row = {"epoch": epoch, "loss": float(np.mean(losses)),
                   "val_dice": float(np.mean([scores["dice"][str(c)] for c in range(1, classes)])),
                   **{f"val_dice_{c}": scores["dice"][str(c)] for c in range(1, classes)},
                   "validation_seconds": round(time.perf_counter() - t_val, 1),
                   "seconds": round(time.perf_counter() - started, 1)}
            history.append(row)
            key = (row["val_dice"],)
            if best_key is None or key > best_key:
                best_key, best = key, copy.deepcopy(model.state_dict())
            if progress is not None:
                progress(epoch, epochs, row)
    model.load_state_dict(best)
    model = model.to("cpu").eval()
    metrics = _seg_scores(model, val, val_pairs, channels, classes, "cpu")
    names = train.class_names or [str(c) for c in range(classes)]
    metrics = {"dice": {names[int(c)]: v for c, v in metrics["dice"].items()},
               "iou": {names[int(c)]: v for c, v in metrics["iou"].items()},
               "slices": int(len(val_pairs)), "pooled_over": "validation slices"}
    settings = settings_record(dev, seed, epochs, steps, batch_size, lr, weight_decay,
                               aug if domain is None else {"domain_randomisation": domain.to_dict()}, started, best_key,
                               history, crop=crop, focus=focus, foreground=foreground)
    return TrainResult(model, architecture, args, metrics, 0.5, history, settings)


def _val_selection(val: SliceDataset, rare: int, limit: int, seed: int) -> np.ndarray:
    pairs = val.slices(labelled_only=False)
    if len(pairs) <= limit:
        return pairs
    has = np.array([bool((val.masks[v][k] == rare).any()) for v, k in pairs])
    keep = list(np.flatnonzero(has)[:limit])
    rest = np.flatnonzero(~has)
    rng = np.random.default_rng([seed, 2])
    keep += sorted(rng.choice(rest, size=max(0, min(len(rest), limit - len(keep))), replace=False).tolist())
    return pairs[np.sort(np.array(keep, dtype=np.int64))]


def _seg_scores(model, val: SliceDataset, pairs: np.ndarray, channels: int, classes: int, dev) -> dict:
    pred = segment_dataset(model, val, pairs, channels, device=dev)
    totals = np.zeros((classes, 3), dtype=np.int64)
    for i, (v, k) in enumerate(pairs):
        counts = label_counts(pred[i], val.masks[v][k].numpy(), range(classes))
        totals += np.array([counts[c] for c in range(classes)])
    dice, iou = {}, {}
    for c in range(classes):
        inter, p, t = (int(x) for x in totals[c])
        dice[str(c)] = 1.0 if p + t == 0 else 2 * inter / (p + t)
        iou[str(c)] = 1.0 if p + t - inter == 0 else inter / (p + t - inter)
    return {"dice": dice, "iou": iou}
