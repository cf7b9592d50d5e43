"""What produced a result: versions, code revision, machine and device."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def git_revision(path: Path | None = None) -> dict[str, Any] | None:
    """Commit and dirty flag of the git checkout at ``path`` (default: cwd), if any."""
    cwd = str(path or Path.cwd())
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def device_description(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


def collect(device: str, plugins: dict[str, str]) -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": platform.node(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torch_threads": torch.get_num_threads(),
        # MKL's reproducibility mode (rlbench sets AUTO,STRICT: see rlbench/__init__.py).
        "mkl_cbwr": os.environ.get("MKL_CBWR", ""),
        "gymnasium": _version("gymnasium"),
        "numpy": _version("numpy"),
        "rlbench": _version("rlbench"),
        "plugins": plugins,
        "git": git_revision(),
        "device": device,
        "device_name": device_description(device),
        "cpu_count": os.cpu_count(),
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "argv": sys.argv,
    }
