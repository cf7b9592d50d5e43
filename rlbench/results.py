"""Reading results back: run directories into tidy pandas DataFrames.

Only what a run's records vouch for is read: a run counts as complete only when its
``status.json`` says so, and every run found is listed with its status, so failed and
skipped runs are never silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from rlbench import records
from rlbench.executor import MANIFEST

RUN_COLUMNS = ["run_id", "suite", "agent", "label", "env", "seed", "device", "status"]


def _suite_run_dirs(suite_dir: Path, only_manifest: bool) -> list[Path]:
    runs_root = suite_dir / records.RUNS_DIRNAME
    manifest = records.read_json(suite_dir / MANIFEST)
    if only_manifest and isinstance(manifest, dict):
        return [runs_root / run_id for run_id in manifest.get("runs", [])]
    return sorted(p for p in runs_root.iterdir() if p.is_dir()) if runs_root.is_dir() else []


def load_runs(paths: Path | str | Iterable[Path | str], *, only_manifest: bool = True) -> pd.DataFrame:
    """One row per run of one or more suite results folders: its config, status, final score
    and speed. ``only_manifest`` keeps the runs of the suite as last run (its ``suite.json``),
    leaving out leftovers of earlier configurations."""
    rows: list[dict[str, Any]] = []
    for suite_dir in _as_paths(paths):
        for run_dir in _suite_run_dirs(suite_dir, only_manifest):
            config = records.read_json(run_dir / records.CONFIG)
            if not isinstance(config, dict):
                continue
            status = records.read_json(run_dir / records.STATUS) or {"status": "missing"}
            row = {
                "run_id": run_dir.name,
                "suite": config["suite"],
                "agent": config["agent"],
                "label": config["label"],
                "env": config["env"],
                "seed": config["seed"],
                "device": config["device"],
                "steps": config["steps"],
                "status": status.get("status", "missing"),
                "final_return": status.get("final_return_mean"),
                "steps_per_second": status.get("steps_per_second"),
                "wall_time_s": status.get("wall_time_s"),
                "error": status.get("error") or status.get("reason") or "",
                "path": str(run_dir),
            }
            row.update({f"config.{k}": v for k, v in config["agent_config"].items()})
            row.update({f"network.{k}": _cell(v) for k, v in config["network"].items()})
            rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else RUN_COLUMNS)


def load_evaluations(
    paths: Path | str | Iterable[Path | str], *, only_manifest: bool = True
) -> pd.DataFrame:
    """The tidy evaluation table: one row per complete run × evaluation step, with the run's
    columns from :func:`load_runs` alongside."""
    runs = load_runs(paths, only_manifest=only_manifest)
    frames = []
    for run in runs[runs["status"] == records.COMPLETE].to_dict("records"):
        curve = pd.read_csv(Path(run["path"]) / records.EVALUATIONS)
        for key, value in run.items():
            if key not in curve.columns:
                curve[key] = value
        frames.append(curve)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Final evaluation return per agent label × environment: mean, std over seeds, n, and
    how many runs did not complete."""
    if runs.empty:
        return pd.DataFrame(columns=["label", "env", "mean", "std", "n", "not_complete"])
    complete = runs[runs["status"] == records.COMPLETE]
    stats = (
        complete.groupby(["label", "env"], sort=False)["final_return"]
        .agg(mean="mean", std=lambda s: s.std(ddof=1) if len(s) > 1 else 0.0, n="count")
        .reset_index()
    )
    missing = (
        runs[runs["status"] != records.COMPLETE].groupby(["label", "env"]).size()
        .rename("not_complete").reset_index()
    )
    order = runs[["label", "env"]].drop_duplicates()
    table = order.merge(stats, how="left").merge(missing, how="left")
    table["n"] = table["n"].fillna(0).astype(int)
    table["not_complete"] = table["not_complete"].fillna(0).astype(int)
    return table


def _as_paths(paths: Path | str | Iterable[Path | str]) -> Sequence[Path]:
    if isinstance(paths, (str, Path)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def _cell(value: Any) -> Any:
    return str(value) if isinstance(value, (list, dict)) else value
