"""The assistant's networks: two per-image classifiers and a 2D U-Net, all returning logits.

Shapes: inputs are ``(N, C, H, W)`` float32 in [0, 1] after :func:`medviewer.ai.preprocess.normalise`
(C neighbouring slices for 2.5D input).  Classifiers return ``(N, classes)`` logits; segmenters
``(N, classes, H, W)``.

Calibration lives in the network: both classifiers take ``calibration_temperature`` and ``calibration_bias``
arguments (stored with the other ``arguments`` in the package's manifest.json) and return
``raw_logits / calibration_temperature + calibration_bias``, so ``sigmoid`` (one class) or ``softmax`` of what
``forward`` returns is already the calibrated probability for every caller: inference must not scale the logits
again.  Training fits both after the weights (see :func:`medviewer.ai.calibration.fit_temperature`); the defaults
1 and 0 change nothing.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ARCHITECTURES", "NoduleCNN", "SeedCNN", "UNet2D", "build"]


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class _Calibrated(nn.Module):
    """Mixin: the calibration applied to the raw logits (plain floats, not parameters: they go in the manifest)."""

    calibration_temperature: float
    calibration_bias: float

    def _init_calibration(self, temperature: float, bias: float) -> None:
        if not float(temperature) > 0:
            raise ValueError(f"calibration_temperature must be > 0, got {temperature!r}")
        self.calibration_temperature = float(temperature)
        self.calibration_bias = float(bias)

    def _calibrate(self, logits: torch.Tensor) -> torch.Tensor:
        if self.calibration_temperature == 1.0 and self.calibration_bias == 0.0:
            return logits
        return logits / self.calibration_temperature + self.calibration_bias


class SeedCNN(_Calibrated):
    """The seed's small classifier: conv32-ReLU-pool, conv64-ReLU-pool, dense64-ReLU, dense(classes).

    Input ``(N, in_channels, size, size)``; ``size`` must be divisible by 4.  Output ``(N, classes)`` logits
    (one class: the logit of "present", for a sigmoid).
    """

    def __init__(self, in_channels: int = 1, size: int = 64, classes: int = 1,
                 calibration_temperature: float = 1.0, calibration_bias: float = 0.0) -> None:
        super().__init__()
        _positive_int("in_channels", in_channels)
        _positive_int("classes", classes)
        if _positive_int("size", size) % 4:
            raise ValueError(f"size must be divisible by 4, got {size}")
        self._init_calibration(calibration_temperature, calibration_bias)
        self.in_channels, self.size, self.classes = in_channels, size, classes
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * (size // 4) ** 2, 64), nn.ReLU(inplace=True), nn.Linear(64, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._calibrate(self.head(self.pool(self.features(x))))


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class NoduleCNN(_Calibrated):
    """Our built-in classifier: ``depth`` blocks of two conv3x3-BN-ReLU, 2x2 max pooling between blocks,
    global pooling, dropout, one dense layer.

    Channels double per block from ``width``.  ``head_pool``: ``"avg"`` (global average pool), ``"avgmax"``
    (average and max concatenated: a small finding anywhere in the slice still lifts the max) or ``"max"``
    (global max pool: the score does not depend on the image size, so a network trained on crops can read
    whole slices).
    ``features`` is the last block; its output ``(N, width * 2**(depth-1), H / 2**(depth-1), W / 2**(depth-1))``
    is the map to hook for Grad-CAM.  Output ``(N, classes)`` logits.  Fully convolutional up to the pool: any
    input whose sides are multiples of ``size_multiple`` works, and a crop at such an offset sees the same feature
    grid as the whole image.
    """

    def __init__(self, in_channels: int = 3, width: int = 32, depth: int = 4, classes: int = 1,
                 dropout: float = 0.2, head_pool: str = "avgmax",
                 calibration_temperature: float = 1.0, calibration_bias: float = 0.0) -> None:
        super().__init__()
        _positive_int("in_channels", in_channels)
        _positive_int("width", width)
        _positive_int("depth", depth)
        _positive_int("classes", classes)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        if head_pool not in ("avg", "avgmax", "max"):
            raise ValueError(f"head_pool must be 'avg', 'avgmax' or 'max', got {head_pool!r}")
        self._init_calibration(calibration_temperature, calibration_bias)
        self.head_pool = head_pool
        self.size_multiple = 2 ** (depth - 1)
        blocks: list[nn.Module] = []
        cin = in_channels
        for level in range(depth - 1):
            cout = width * 2**level
            blocks.append(nn.Sequential(*_conv_bn_relu(cin, cout), *_conv_bn_relu(cout, cout), nn.MaxPool2d(2)))
            cin = cout
        cout = width * 2 ** (depth - 1)
        self.body = nn.Sequential(*blocks)
        self.features = nn.Sequential(*_conv_bn_relu(cin, cout), *_conv_bn_relu(cout, cout))
        self.dropout = nn.Dropout(float(dropout))
        self.fc = nn.Linear(cout * (2 if head_pool == "avgmax" else 1), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(self.body(x))
        if self.head_pool == "max":
            pooled = f.amax(dim=(2, 3))
        elif self.head_pool == "avgmax":
            pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        else:
            pooled = f.mean(dim=(2, 3))
        return self._calibrate(self.fc(self.dropout(pooled)))

    def cam_weights(self, class_index: int = 0) -> torch.Tensor:
        """Per-channel weights of ``features`` for class ``class_index``'s logit: its Grad-CAM weights.

        The head is linear over a global pool of ``features`` (dropout is the identity in evaluation), so the
        gradient of the logit sums to the dense weight over each feature map whether pooled by mean (spread over
        the map) or max (all at the maximum); Grad-CAM's mean gradient is that sum over the map's area, a
        constant the heatmap's normalisation removes. ``relu(sum_c w_c * features_c)`` is therefore the Grad-CAM
        map, computed from the forward pass alone.
        """
        w = self.fc.weight[class_index].detach()
        if self.head_pool == "avgmax":
            half = w.numel() // 2
            w = w[:half] + w[half:]
        return w


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    raise ValueError(f"norm must be 'batch', 'instance' or 'group', got {kind!r}")


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), _norm(norm, cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), _norm(norm, cout), nn.ReLU(inplace=True),
        )


class UNet2D(nn.Module):
    """A 2D U-Net: ``depth`` poolings, channels ``width * 2**level``, transposed-conv upsampling, skip
    concatenation, normalisation ``"batch"``, ``"instance"`` or ``"group"``.

    Input ``(N, in_channels, H, W)`` with H and W divisible by ``2**depth``; output ``(N, classes, H, W)``
    logits (softmax over classes; label value = channel index).  ``features`` is the bottleneck.
    ``size_multiple`` (``2**depth``) is what input sides, and a crop's offsets, must be multiples of.
    """

    def __init__(self, in_channels: int = 3, classes: int = 3, width: int = 16, depth: int = 4,
                 norm: str = "batch") -> None:
        super().__init__()
        _positive_int("in_channels", in_channels)
        _positive_int("width", width)
        _positive_int("depth", depth)
        if _positive_int("classes", classes) < 2:
            raise ValueError(f"classes must be >= 2 (background and at least one label), got {classes}")
        _norm(norm, width)  # validates the name
        self.depth, self.norm = depth, norm
        self.size_multiple = 2**depth
        chans = [width * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = in_channels
        for c in chans[:-1]:
            self.down.append(_DoubleConv(cin, c, norm))
            cin = c
        self.pool = nn.MaxPool2d(2)
        self.features = _DoubleConv(chans[-2], chans[-1], norm)
        self.up = nn.ModuleList()
        self.decode = nn.ModuleList()
        for level in reversed(range(depth)):
            self.up.append(nn.ConvTranspose2d(chans[level + 1], chans[level], 2, stride=2))
            self.decode.append(_DoubleConv(2 * chans[level], chans[level], norm))
        self.out = nn.Conv2d(chans[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 2**self.depth
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(f"UNet2D: input height and width must be divisible by {factor}, got {tuple(x.shape[-2:])}")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.features(x)
        for up, block, skip in zip(self.up, self.decode, reversed(skips)):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.out(x)


ARCHITECTURES: dict[str, type[nn.Module]] = {"SeedCNN": SeedCNN, "NoduleCNN": NoduleCNN, "UNet2D": UNet2D}


def build(architecture: str, arguments: dict) -> nn.Module:
    """A fresh network ``ARCHITECTURES[architecture](**arguments)``; an unknown name or argument is a ValueError."""
    cls = ARCHITECTURES.get(architecture)
    if cls is None:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    if not isinstance(arguments, dict):
        raise TypeError(f"arguments must be a dict, got {type(arguments).__name__}")
    try:
        return cls(**arguments)
    except TypeError as exc:  # an unexpected keyword
        raise ValueError(f"{architecture}: bad arguments {arguments!r}: {exc}") from None
