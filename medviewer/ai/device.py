"""The one place that decides where the assistant's tensors live and how many CPU threads torch uses."""

from __future__ import annotations

import os

import torch

__all__ = ["BACKGROUND_NICE", "background_priority", "configure_threads", "device_name", "inference_threads",
           "select_device", "usable_cores"]

# How much nicer than the rest of the process a background run is (Linux per-thread nice, 0..19).
BACKGROUND_NICE = 10

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


def inference_threads() -> int:
    """Torch CPU threads for a run: every usable core, the same in the viewer as on the command line.

    The viewer stays responsive by running the model at a lower priority (:func:`background_priority`),
    not by leaving a core idle: that made its runs as many times slower as there are cores.
    """
    return usable_cores()


def background_priority(increment: int = BACKGROUND_NICE) -> bool:
    """Lower the calling thread's CPU priority (its nice value) by ``increment``; True where it took.

    On Linux the nice value belongs to the thread and the threads it starts inherit it, so called
    first in a worker thread it covers torch's CPU threads started by that worker's run: the GUI
    thread, at normal priority, gets a core whenever it wakes, and the model has every core the
    rest of the time. Elsewhere (or where the OS refuses) nothing changes.
    """
    import sys
    import threading

    if not sys.platform.startswith("linux"):  # elsewhere PRIO_PROCESS names a process, not a thread
        return False

    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + max(0, int(increment))))
    except OSError:
        return False
    return True


def device_name(device: torch.device | str) -> str:
    """A human name for ``device``: the GPU's name, or ``"CPU (n threads)"``."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple GPU (MPS)"
    n = torch.get_num_threads()
    return f"CPU ({n} thread{'' if n == 1 else 's'})"
