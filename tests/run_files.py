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
PLACE_FIELDS = {"argv", "started_at", "host", "hostname", "pid", "ray_node"}
#: How a run's seeds were grouped into lanes: the results do not depend on it (rlbench.lanes),
#: but provenance.json and status.json record it.
GROUPING_FIELDS = {"lanes", "lane_seeds"}
#: Files that only exist while a run trains (a kept checkpoint embeds wall times).
TRANSIENT = {"checkpoint.pt", "checkpoint.json"}


def _canonical(name: str, data: bytes, grouping: bool) -> object:
    drop = CLOCK_FIELDS | PLACE_FIELDS | (set() if grouping else GROUPING_FIELDS)
    if name in ("status.json", "provenance.json"):
        return {k: v for k, v in json.loads(data).items() if k not in drop}
    if name.endswith(".csv"):
        rows = list(csv.DictReader(io.StringIO(data.decode())))
        return [{k: v for k, v in row.items() if k not in CLOCK_FIELDS} for row in rows]
    return data


def run_files(runs_dir: Path, grouping: bool = True) -> dict[str, object]:
    """``{run/file: comparable content}`` of every run under ``runs_dir`` (``grouping``:
    with the lane group each run trained in)."""
    found = {}
    for run in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        for file in sorted(run.iterdir()):
            if file.is_file() and file.name not in TRANSIENT:
                found[f"{run.name}/{file.name}"] = _canonical(
                    file.name, file.read_bytes(), grouping
                )
    return found


def differences(a: Path, b: Path, grouping: bool = True) -> list[str]:
    """What differs between the runs of results folders ``a`` and ``b`` (empty: nothing);
    ``grouping=False`` leaves out how seeds were grouped into lanes."""
    fa, fb = run_files(a, grouping), run_files(b, grouping)
    problems = [f"only in {a}: {k}" for k in sorted(fa.keys() - fb.keys())]
    problems += [f"only in {b}: {k}" for k in sorted(fb.keys() - fa.keys())]
    problems += [f"{k} differs" for k in sorted(fa.keys() & fb.keys()) if fa[k] != fb[k]]
    return problems


def statuses(runs_dir: Path) -> dict[str, dict]:
    """``{run id: parsed status.json}`` of every run under ``runs_dir``."""
    return {p.parent.name: json.loads(p.read_text()) for p in runs_dir.glob("*/status.json")}


#: What status.json adds when a run was resumed from a checkpoint.
RESUME_FIELDS = ("resumes", "resumed_from_step", "resume_exact", "resume_note")


def without_resume_fields(runs_dir: Path) -> None:
    """Drop what says a run was resumed, to compare the rest with an uninterrupted run."""
    for status in runs_dir.glob("*/status.json"):
        data = json.loads(status.read_text())
        status.write_text(json.dumps({k: v for k, v in data.items() if k not in RESUME_FIELDS}))
