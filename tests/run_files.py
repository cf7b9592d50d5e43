"""Comparing two results folders file by file, as a user checking that two ways of running a
suite gave the same results would: every file of every run byte for byte, less what measures
the clock or the machine (wall times and speeds, the host in provenance.json)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

#: Fields that measure time or place, not results.
CLOCK_FIELDS = {"wall_time_s", "train_time_s", "eval_time_s", "steps_per_second"}
PLACE_FIELDS = {"argv", "started_at", "host", "hostname", "pid"}
#: Files that only exist while a run trains (a kept checkpoint embeds wall times).
TRANSIENT = {"checkpoint.pt", "checkpoint.json"}


def _canonical(name: str, data: bytes) -> object:
    if name.endswith(".csv"):
        rows = list(csv.DictReader(io.StringIO(data.decode())))
        return [{k: v for k, v in row.items() if k not in CLOCK_FIELDS} for row in rows]
    if name == "status.json":
        status = json.loads(data)
        return {k: v for k, v in status.items() if k not in CLOCK_FIELDS}
    if name == "provenance.json":
        return {k: v for k, v in json.loads(data).items() if k not in PLACE_FIELDS}
    return data


def run_files(runs_dir: Path) -> dict[str, object]:
    """``{run/file: comparable content}`` of every run under ``runs_dir``."""
    found = {}
    for run in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        for file in sorted(run.iterdir()):
            if file.is_file() and file.name not in TRANSIENT:
                found[f"{run.name}/{file.name}"] = _canonical(file.name, file.read_bytes())
    return found


def differences(a: Path, b: Path) -> list[str]:
    """What differs between the runs of results folders ``a`` and ``b`` (empty: nothing)."""
    fa, fb = run_files(a), run_files(b)
    problems = [f"only in {a}: {k}" for k in sorted(fa.keys() - fb.keys())]
    problems += [f"only in {b}: {k}" for k in sorted(fb.keys() - fa.keys())]
    problems += [f"{k} differs" for k in sorted(fa.keys() & fb.keys()) if fa[k] != fb[k]]
    return problems
