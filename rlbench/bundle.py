"""Results bundles: a suite's results in one JSON file, to publish and to read back.

A bundle holds what a results folder's reports, comparisons and exports read, and nothing
heavier: the suite (``suite.json``, ``suite.toml``) and, per run, ``config.json`` (agent,
label, config, network, environment and kwargs, seed, budget, evaluation protocol; the run
id carries the config hash), ``status.json`` (final score, speed, wall time),
``evaluations.csv`` (the evaluation curve) and ``provenance.json`` (versions, commit,
machine). Weights, checkpoints and training logs stay behind. rlbench's published reference
results (``results/reference/``, ``docs/benchmarks.md``) are bundles.

Format ``rlbench-results``, version 1 (a reader refuses other versions by name)::

    {"format": "rlbench-results", "version": 1,
     "suite": {<suite.json>}, "suite_toml": "<the suite file as run>",
     "span": {"started_at": ISO time, "ended_at": ISO time, "wall_time_s": float},
     "runs": [{"run_id": str, "config": {...}, "status": {...}, "provenance": {...},
               "evaluations": {"columns": [...], "rows": [[...], ...]}}, ...]}

Everything that reads results folders (:mod:`rlbench.results`, ``rlbench report``,
``rlbench compare``, ``rlbench export``) reads a bundle file as well: :func:`open_results`
unpacks it, once per process, into a temporary results folder marked as a bundle's (its
runs are complete without weights; see :meth:`rlbench.records.RunDir.damage`).
"""

from __future__ import annotations

import atexit
import csv
import io
import json
import shutil
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rlbench import records
from rlbench.errors import RlbenchError

FORMAT = "rlbench-results"
VERSION = 1
#: What a bundle's file name ends with (``results/reference/cartpole.rlbench.json``).
SUFFIX = ".rlbench.json"

#: Bundles unpacked in this process: ``{(path, mtime_ns, size): folder}``; and each
#: folder's bundle file, for names and default output paths.
_unpacked: dict[tuple[str, int, int], Path] = {}
_origins: dict[Path, Path] = {}
_scratch: Path | None = None


def write_bundle(suite_dir: Path | str, path: Path | str) -> Path:
    """Write the results of ``suite_dir`` (a suite's results folder) as a bundle at
    ``path``: every run listed in its ``suite.json`` that has started (complete or not; a
    run never started is still listed there). Raises :class:`~rlbench.errors.RlbenchError`
    for a folder that is not a suite's results folder. Returns ``path``."""
    suite_dir, path = Path(suite_dir), Path(path)
    try:
        manifest = records.SuiteManifest.read(suite_dir)
    except records.RecordError as exc:
        raise RlbenchError(f"{suite_dir / records.MANIFEST}: {exc}") from exc
    if manifest is None:
        raise RlbenchError(
            f"{suite_dir} is not a suite's results folder (it has no {records.MANIFEST})"
        )
    runs = []
    for run_id in manifest.runs:
        run = records.RunDir(suite_dir, run_id)
        config = records.read_json(run.file(records.CONFIG))
        if not isinstance(config, dict):
            continue  # never started: suite.json lists it, as in the folder
        status = records.read_json(run.file(records.STATUS))
        runs.append(
            {
                "run_id": run_id,
                "config": config,
                "status": status if isinstance(status, dict) else None,
                "provenance": records.read_json(run.file(records.PROVENANCE)),
                "evaluations": _read_csv(run.file(records.EVALUATIONS)),
            }
        )
    source = suite_dir / records.SUITE_SOURCE
    bundle = {
        "format": FORMAT,
        "version": VERSION,
        "suite": manifest.to_json(),
        "suite_toml": source.read_text(encoding="utf-8") if source.is_file() else "",
        "span": span(runs),
        "runs": runs,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    records.atomic_write_bytes(path, _dumps(bundle).encode("utf-8"))
    return path


def _dumps(bundle: dict[str, Any]) -> str:
    """Compact JSON with one run per line, so that a diff of two versions shows the runs
    that changed."""
    head = json.dumps({k: v for k, v in bundle.items() if k != "runs"}, separators=(",", ":"))
    runs = ",\n".join(json.dumps(run, separators=(",", ":")) for run in bundle["runs"])
    return f'{head[:-1]},"runs":[\n{runs}\n]}}\n'


def span(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """When the runs trained: the first start, the last end (start + wall time) and the
    wall time between them (what the suite's command took, less its start-up), from each
    run's ``provenance.json`` and ``status.json``. Empty when no run says."""
    starts, ends = [], []
    for run in runs:
        provenance, status = run.get("provenance") or {}, run.get("status") or {}
        try:
            started = datetime.fromisoformat(provenance["started_at"])
        except (KeyError, TypeError, ValueError):
            continue
        starts.append(started)
        ends.append(started + timedelta(seconds=float(status.get("wall_time_s") or 0.0)))
    if not starts:
        return {}
    first, last = min(starts), max(ends)
    return {
        "started_at": first.isoformat(timespec="seconds"),
        "ended_at": last.isoformat(timespec="seconds"),
        "wall_time_s": round((last - first).total_seconds(), 1),
    }


def read_bundle(path: Path | str) -> dict[str, Any]:
    """The bundle at ``path``, checked. Raises :class:`~rlbench.errors.RlbenchError` with
    one line naming the file for a file that is not a bundle of this version."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RlbenchError(f"{path}: not a results bundle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RlbenchError(
            f'{path}: not a results bundle (no "format": "{FORMAT}"); pass a suite\'s '
            f"results folder or a {SUFFIX} file written by `rlbench export --format rlbench`"
        )
    if data.get("version") != VERSION:
        raise RlbenchError(
            f"{path}: a results bundle of version {data.get('version')!r}; this rlbench reads "
            f"version {VERSION} (upgrade rlbench to read it)"
        )
    if not isinstance(data.get("runs"), list) or not isinstance(data.get("suite"), dict):
        raise RlbenchError(f"{path}: a damaged results bundle (no 'suite' or 'runs')")
    return data


def open_results(path: Path | str) -> Path:
    """The results folder to read for ``path``: ``path`` itself when it is a folder; for a
    bundle file, the folder it unpacks to (unpacked once per process and version of the
    file). Raises :class:`~rlbench.errors.RlbenchError` for a file that is not a bundle."""
    path = Path(path)
    if not path.is_file():
        return path
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _unpacked:
        _unpacked[key] = _unpack(read_bundle(path), path)
    return _unpacked[key]


def name_of(path: Path | str) -> str:
    """A bundle file's name less its suffix: ``cartpole`` for ``cartpole.rlbench.json``."""
    return Path(path).name.removesuffix(SUFFIX)


def beside(path: Path | str, kind: str) -> Path:
    """Where a bundle's ``kind`` of output (``report``, ``export``) goes by default: the
    folder ``<name>-<kind>`` next to the file (the bundle itself unpacks to a temporary
    folder, which is no place for what a user keeps)."""
    return Path(path).with_name(f"{name_of(path)}-{kind}")


def origin(folder: Path | str) -> Path | None:
    """The bundle file that ``folder`` was unpacked from, or ``None`` for a real folder."""
    return _origins.get(Path(folder))


def display_path(folder: Path | str) -> Path:
    """What to call ``folder`` when telling a user: its bundle file if it came from one."""
    return origin(folder) or Path(folder)


def is_unpacked(suite_dir: Path) -> bool:
    """Whether ``suite_dir`` is a bundle's unpacked folder (its runs have no weights)."""
    return (suite_dir / records.BUNDLE_MARKER).is_file()


def _unpack(bundle: dict[str, Any], path: Path) -> Path:
    global _scratch
    if _scratch is None:
        _scratch = Path(tempfile.mkdtemp(prefix="rlbench-bundles-"))
        atexit.register(shutil.rmtree, _scratch, ignore_errors=True)
    name = name_of(path).removesuffix(".json") or "bundle"
    folder = _scratch / str(len(_origins)) / name
    runs_dir = folder / records.RUNS_DIRNAME
    runs_dir.mkdir(parents=True)
    records.atomic_write_json(folder / records.MANIFEST, bundle["suite"])
    records.atomic_write_text(folder / records.SUITE_SOURCE, bundle.get("suite_toml") or "")
    records.atomic_write_json(
        folder / records.BUNDLE_MARKER, {"bundle": str(path), "span": bundle.get("span")}
    )
    for i, run in enumerate(bundle["runs"]):
        run_id = run.get("run_id") if isinstance(run, dict) else None
        if not isinstance(run_id, str) or "/" in run_id or run_id.startswith("."):
            raise RlbenchError(f"{path}: runs[{i}] has no valid 'run_id'")
        run_dir = runs_dir / run_id
        run_dir.mkdir()
        for name, key in (
            (records.CONFIG, "config"),
            (records.STATUS, "status"),
            (records.PROVENANCE, "provenance"),
        ):
            if run.get(key) is not None:
                records.atomic_write_json(run_dir / name, run[key])
        table = run.get("evaluations") or {"columns": records.EVALUATION_COLUMNS, "rows": []}
        columns = list(table.get("columns") or records.EVALUATION_COLUMNS)
        rows = [dict(zip(columns, row, strict=True)) for row in table.get("rows") or []]
        records.atomic_write_csv(run_dir / records.EVALUATIONS, columns, rows)
    _origins[folder] = path
    return folder


def _read_csv(path: Path) -> dict[str, Any]:
    """A CSV file as ``{"columns": [...], "rows": [[...], ...]}``, numbers as numbers (the
    same digits as the file: a float is written back as it was read)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {"columns": [], "rows": []}
    reader = csv.reader(io.StringIO(text))
    columns = next(reader, [])
    return {"columns": columns, "rows": [[_number(cell) for cell in row] for row in reader]}


def _number(cell: str) -> Any:
    for kind in (int, float):
        try:
            return kind(cell)
        except ValueError:
            pass
    return cell
