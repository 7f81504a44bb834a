"""Explanations: Grad-CAM heatmaps for a classifier's decision on each slice.

Grad-CAM weights the activations of the network's last convolutional features by the mean
gradient of the class logit over each feature map; the positive part, upsampled to the
image, shows where the evidence for "nodule present" lies.

For networks whose head is linear over a global pool of the features (our classifiers: they
expose ``cam_weights``), those gradients are known without a backward pass, and
:func:`cam_from_features` computes the same map from the forward pass that gave the
probabilities: the inference engine explains every slice at no extra cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def feature_layer(model: nn.Module) -> nn.Module:
    """The module whose output Grad-CAM uses: ``model.features`` where the network names it,
    else the last Conv2d."""
    layer = getattr(model, "features", None)
    if isinstance(layer, nn.Module):
        return layer
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("the model has no convolutional layer for Grad-CAM")
    return convs[-1]


def grad_cam(model: nn.Module, images: torch.Tensor, *, class_index: int = 0,
             output_size: tuple[int, int] | None = None, temperature: float = 1.0) -> torch.Tensor:
    """Heatmaps (N, H, W) in [0, 1] for ``images`` (N, C, h, w), one per image.

    Each map is normalised to its own maximum and then scaled by the image's predicted
    probability, so slices the model considers negative stay faint.
    """
    layer = feature_layer(model)
    store: dict[str, torch.Tensor] = {}

    def forward_hook(_module, _inputs, output):
        store["activations"] = output
        output.register_hook(lambda grad: store.__setitem__("gradients", grad))

    handle = layer.register_forward_hook(forward_hook)
    try:
        with torch.enable_grad():
            model.zero_grad(set_to_none=True)
            logits = model(images)
            if logits.ndim == 1:
                logits = logits[:, None]
            target = logits[:, class_index]
            target.sum().backward()
    finally:
        handle.remove()
    activations = store["activations"].detach().float()
    gradients = store["gradients"].detach().float()
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activations).sum(dim=1, keepdim=True))
    size = output_size or images.shape[-2:]
    cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-8)[:, None, None]
    probability = torch.sigmoid(target.detach().float() / temperature)[:, None, None]
    model.zero_grad(set_to_none=True)
    return (cam / peak * probability).clamp(0, 1)


def linear_head_weights(model: nn.Module, class_index: int = 0) -> torch.Tensor | None:
    """The per-channel Grad-CAM weights when the model can state them (``model.cam_weights``), else None."""
    method = getattr(model, "cam_weights", None)
    return method(class_index) if callable(method) else None


def cam_from_features(features: torch.Tensor, weights: torch.Tensor, probability: torch.Tensor,
                      output_size: tuple[int, int]) -> torch.Tensor:
    """Heatmaps (N, H, W) in [0, 1] from ``features`` (N, C, h, w) and per-channel ``weights`` (C,).

    As :func:`grad_cam`: each map normalised to its own maximum, then scaled by the slice's ``probability`` (N,).
    """
    cam = F.relu(torch.einsum("nchw,c->nhw", features.float(), weights.float().to(features.device)))[:, None]
    cam = F.interpolate(cam, size=output_size, mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-8)[:, None, None]
    return (cam / peak * probability.float()[:, None, None]).clamp(0, 1)
