"""The one place that decides where the assistant's tensors live and how many CPU threads torch uses."""

from __future__ import annotations

import os

import torch

__all__ = ["configure_threads", "device_name", "select_device", "usable_cores"]

_PREFERENCES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(preference: str = "auto") -> torch.device:
    """The device for ``preference``: ``"auto"`` picks CUDA, then Apple MPS, then the CPU.

    ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``) and ``"mps"`` ask for that device; one that this machine
    lacks is a :class:`ValueError` in plain words.
    """
    pref = str(preference or "auto").strip().lower()
    kind = pref.split(":", 1)[0]
    if kind not in _PREFERENCES:
        raise ValueError(f"device {preference!r} is not one of auto, cpu, cuda, mps")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for, but this machine has no CUDA GPU that torch can use")
        device = torch.device(pref)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {pref!r} was asked for, but only {torch.cuda.device_count()} CUDA GPU(s) exist")
        return device
    if kind == "mps":
        if not _mps_available():
            raise ValueError("device 'mps' was asked for, but Apple's Metal (MPS) backend is not available here")
        return torch.device("mps")
    return torch.device("cpu")


def usable_cores() -> int:
    """CPU cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def configure_threads(n: int | None = None) -> int:
    """Set torch's intra-op CPU threads explicitly (default: the usable cores); returns the number set."""
    count = usable_cores() if n is None else int(n)
    if count < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(count)
    return count


def device_name(device: torch.device | str) -> str:
    """A human name for ``device``: the GPU's name, or ``"CPU (n threads)"``."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple GPU (MPS)"
    n = torch.get_num_threads()
    return f"CPU ({n} thread{'' if n == 1 else 's'})"
