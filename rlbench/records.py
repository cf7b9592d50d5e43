"""A run's directory on disk, written so that a crash at any moment leaves nothing to mistrust.

Every file is written to a temporary name in the same directory, flushed, fsynced and then
renamed over its final name, so a reader sees the old file or the new one, never half of
one. ``status.json`` is written first as ``running`` and last as ``complete``: a run is
trusted (skipped on rerun, loaded by reports) only when its status says ``complete``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rlbench.errors import RlbenchError

RUNS_DIRNAME = "runs"
CONFIG = "config.json"
PROVENANCE = "provenance.json"
STATUS = "status.json"
EVALUATIONS = "evaluations.csv"
EPISODES = "episodes.csv"
METRICS = "metrics.csv"
WEIGHTS = "weights.pt"
ERROR = "error.txt"

COMPLETE, FAILED, SKIPPED, RUNNING = "complete", "failed", "skipped", "running"


def _file_mode() -> int:
    # mkstemp creates files readable by the owner only; results are meant to be shared, so
    # give them the mode any other new file would get under the process's umask.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def read_json(path: Path) -> Any | None:
    """The parsed file, or ``None`` if it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def inside(root: Path, path: Path) -> Path:
    """``path``, once checked to resolve strictly inside ``root``: the one check that keeps
    names from suites and plugins (which become path parts) from writing anywhere else.
    Raises :class:`~rlbench.errors.RlbenchError` otherwise."""
    resolved_root = root.resolve()
    if resolved_root not in path.resolve().parents:
        raise RlbenchError(
            f"refusing to write {path}: it is not inside {root}; "
            "rename what gives it its name (suite, label, agent or environment)"
        )
    return path


class RunDir:
    """The files of one run: ``<suite results>/runs/<run_id>/``."""

    def __init__(self, suite_dir: Path, run_id: str) -> None:
        self.path = inside(suite_dir / RUNS_DIRNAME, suite_dir / RUNS_DIRNAME / run_id)

    def file(self, name: str) -> Path:
        return self.path / name

    def status(self) -> dict[str, Any] | None:
        data = read_json(self.file(STATUS))
        return data if isinstance(data, dict) else None

    def is_complete(self) -> bool:
        status = self.status()
        return bool(status) and status.get("status") == COMPLETE

    def write_status(self, status: str, **fields: Any) -> None:
        atomic_write_json(self.file(STATUS), {"status": status, **fields})

    def write_json(self, name: str, data: Any) -> None:
        atomic_write_json(self.file(name), data)

    def write_csv(
        self, name: str, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]
    ) -> None:
        atomic_write_csv(self.file(name), columns, rows)

    def save_weights(self, state: Mapping[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(dict(state), buffer)
        atomic_write_bytes(self.file(WEIGHTS), buffer.getvalue())

    def clear(self) -> None:
        """Remove the files of an earlier attempt (before redoing the run)."""
        if self.path.is_dir():
            for child in self.path.iterdir():
                if child.is_file():
                    child.unlink()
