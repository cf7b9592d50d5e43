"""Choosing torch devices: ``auto`` means cuda where it exists; a missing cuda skips runs."""

from __future__ import annotations

import torch


def cuda_available() -> bool:
    return torch.cuda.is_available()


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` or ``cpu``; everything else is kept as written."""
    if requested == "auto":
        return "cuda" if cuda_available() else "cpu"
    return requested


def unavailable_reason(device: str) -> str | None:
    """Why a run on ``device`` cannot happen here, or ``None`` if it can."""
    if not device.startswith("cuda"):
        return None
    if not cuda_available():
        build = torch.version.cuda
        why = "torch is a CPU-only build" if build is None else "no CUDA GPU is visible"
        return (
            f"device {device!r} requested but CUDA is not available ({why}, torch "
            f'{torch.__version__}); run with devices = ["cpu"] or "auto", or on a GPU machine'
        )
    index = torch.device(device).index
    if index is not None and index >= torch.cuda.device_count():
        return (
            f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) "
            "are visible"
        )
    return None
