"""Writing files so that a crash at any moment leaves nothing to mistrust: each is written to
a temporary name in the same folder, flushed, fsynced and renamed over its final name, so a
reader sees the old file or the new one, never half of one. Every file rlbench writes goes
through here (figures too: :func:`atomic_savefig`)."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rlbench.errors import RlbenchError


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


def json_bytes(data: Any) -> bytes:
    """``data`` as rlbench writes JSON files (indented, keys sorted, one final newline)."""
    return (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")


def csv_bytes(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> bytes:
    """``rows`` as rlbench writes CSV files (a header of ``columns``, other keys ignored)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, json_bytes(data))


def atomic_write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    atomic_write_bytes(path, csv_bytes(columns, rows))


def atomic_savefig(fig: Any, path: Path, **savefig_kwargs: Any) -> None:
    """Save a matplotlib figure to ``path`` atomically (a kill never leaves a truncated
    image): rendered in memory in the format ``path``'s suffix names, then written like
    every other file. ``savefig_kwargs`` go to ``fig.savefig`` (``dpi``, ``bbox_inches``…)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or None, **savefig_kwargs)
    atomic_write_bytes(path, buffer.getvalue())


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
