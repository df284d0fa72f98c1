"""Which device runs the model: ``auto`` picks the best one this machine has, and a named
device is checked before any work starts."""

from __future__ import annotations

import torch

from bpclip_core.errors import DeviceError


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto``: cuda, then mps, then cpu; anything else is passed to ``torch.device``.

    Raises:
        DeviceError: an unknown device name, or a device this machine does not have.
    """
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        picked = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise DeviceError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from exc
    if picked.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} asked for, but no CUDA GPU is available; use auto or cpu")
        if picked.index is not None and picked.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r} asked for, but there are {torch.cuda.device_count()} CUDA GPUs")
    elif picked.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {device!r} asked for, but MPS is not available on this machine; use auto or cpu")
    elif picked.type == "meta":
        raise DeviceError("the meta device holds no data and cannot score images")
    return picked


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` if CUDA is available, else ``cpu``; otherwise as named."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device
