"""Networks and device selection of the assistant's engine."""

from __future__ import annotations

import pytest
import torch

from medviewer.ai.device import configure_threads, device_name, select_device
from medviewer.ai.networks import ARCHITECTURES, NoduleCNN, SeedCNN, UNet2D, build


def test_seed_cnn_shapes():
    net = SeedCNN(in_channels=1, size=64, classes=1)
    assert net(torch.zeros(2, 1, 64, 64)).shape == (2, 1)
    assert SeedCNN(in_channels=3, size=32, classes=4)(torch.zeros(5, 3, 32, 32)).shape == (5, 4)
    with pytest.raises(ValueError, match="size"):
        SeedCNN(size=30)


def test_nodule_cnn_shapes_and_features_for_grad_cam():
    net = NoduleCNN(in_channels=3, width=8, depth=4, classes=1).eval()
    seen = {}
    net.features.register_forward_hook(lambda _m, _i, out: seen.setdefault("map", out))
    out = net(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 1)
    assert seen["map"].shape == (2, 64, 8, 8)  # width * 2**(depth-1) channels at 1/8 resolution
    assert NoduleCNN(in_channels=1, width=4, depth=2, classes=3, head_pool="avg")(torch.zeros(1, 1, 32, 48)).shape == (1, 3)
    assert NoduleCNN(in_channels=3, width=4, depth=3, head_pool="max")(torch.zeros(2, 3, 40, 40)).shape == (2, 1)


def test_classifier_calibration_is_applied_in_forward():
    torch.manual_seed(0)
    net = NoduleCNN(in_channels=1, width=4, depth=2).eval()
    x = torch.rand(3, 1, 32, 32)
    raw = net(x)
    net.calibration_temperature, net.calibration_bias = 2.0, -1.0
    assert torch.allclose(net(x), raw / 2.0 - 1.0)
    with pytest.raises(ValueError, match="calibration_temperature"):
        NoduleCNN(calibration_temperature=0.0)


@pytest.mark.parametrize("norm", ["batch", "instance", "group"])
def test_unet_shapes(norm):
    net = UNet2D(in_channels=3, classes=3, width=4, depth=3, norm=norm).eval()
    assert net(torch.zeros(1, 3, 32, 40)).shape == (1, 3, 32, 40)
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.zeros(1, 3, 36, 40))


def test_build_and_unknown_architecture():
    assert set(ARCHITECTURES) == {"SeedCNN", "NoduleCNN", "UNet2D"}
    assert isinstance(build("UNet2D", {"width": 4, "depth": 2}), UNet2D)
    with pytest.raises(ValueError, match="unknown architecture"):
        build("ResNet", {})
    with pytest.raises(ValueError, match="bad arguments"):
        build("SeedCNN", {"colour": True})
    with pytest.raises(ValueError, match="norm"):
        UNet2D(norm="layer")


def test_device_selection():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="not one of"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            select_device("cuda")
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        assert device_name(torch.device("cpu")) == "CPU (1 thread)"
        assert configure_threads() >= 1
    finally:
        torch.set_num_threads(before)
