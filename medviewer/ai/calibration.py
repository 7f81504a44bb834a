"""Post-hoc calibration of a classifier's logits: temperature scaling with a bias (Platt scaling).

Training samples classes in balance, so the raw logits are both over-confident and shifted towards the rare
class; a temperature ``T`` and a bias ``b`` fitted on held-out data (``logit / T + b``) correct both.  They are
stored as the network's ``calibration_temperature`` and ``calibration_bias`` arguments (manifest.json
``arguments``) and applied inside the network's ``forward`` (see :mod:`medviewer.ai.networks`): inference never
applies them itself.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["fit_temperature"]


def fit_temperature(logits: np.ndarray, y: np.ndarray, *, bias: bool = True) -> tuple[float, float]:
    """``(temperature, logit_bias)`` minimising the negative log-likelihood of ``y`` under ``logits / T + b``.

    ``logits``: ``(N,)`` raw logits of a one-logit classifier with ``y`` in {0, 1}, or ``(N, K)`` with ``y`` class
    indices (then only T is fitted).  Returns ``(1.0, 0.0)`` when there is nothing to fit.
    """
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    t = torch.as_tensor(np.asarray(y), dtype=torch.float64 if z.ndim == 1 else torch.int64)
    if z.numel() == 0 or (z.ndim == 1 and (t.min() == t.max())):
        return 1.0, 0.0
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=bias and z.ndim == 1)
    params = [log_t] + ([b] if b.requires_grad else [])
    opt = torch.optim.LBFGS(params, lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        opt.zero_grad()
        scaled = z / log_t.exp() + b
        loss = F.binary_cross_entropy_with_logits(scaled, t) if z.ndim == 1 else F.cross_entropy(scaled, t)
        loss.backward()
        return loss

    opt.step(nll)
    temperature, offset = float(log_t.detach().exp()), float(b.detach())
    if not (math.isfinite(temperature) and math.isfinite(offset)) or temperature <= 0:
        return 1.0, 0.0
    return temperature, offset
