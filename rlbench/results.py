"""Reading results back: run directories into tidy pandas DataFrames.

Only what a run's records vouch for is read: a run counts as complete only when its
``status.json`` says so and every file it needs parses (:meth:`rlbench.records.RunDir.
complete_problem`), and every run found is listed with its status, so failed, skipped and
damaged runs are never silently dropped. Nothing here needs torch, gymnasium or the plugins,
except reference scores for results folders written before ``suite.json`` recorded them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rlbench import bundle, records
from rlbench.errors import RlbenchError

if TYPE_CHECKING:
    from rlbench.plugins import Catalogue

    #: Where reference scores come from for results folders that did not record them: a
    #: catalogue, a function returning one (called only if needed), or ``None`` for the
    #: installed plugins.
    CatalogueSource = Catalogue | Callable[[], Catalogue] | None

RUN_COLUMNS = ["run_id", "suite", "agent", "label", "env", "seed", "device", "status"]


def _suite_run_dirs(suite_dir: Path, only_manifest: bool) -> tuple[list[Path], str | None]:
    """The run folders to read, in suite order, and the suite's name when they come from
    its ``suite.json`` (``None`` when every folder found is read instead). Raises
    :class:`~rlbench.records.RecordError` for a damaged ``suite.json``."""
    runs_root = suite_dir / records.RUNS_DIRNAME
    manifest = records.SuiteManifest.read(suite_dir)
    if only_manifest and manifest is not None:
        return [runs_root / run_id for run_id in manifest.runs], manifest.name
    found = sorted(p for p in runs_root.iterdir() if p.is_dir()) if runs_root.is_dir() else []
    return found, None


def load_runs(
    paths: Path | str | Iterable[Path | str], *, only_manifest: bool = True
) -> pd.DataFrame:
    """One row per run of one or more suite results folders: its config, status, final score
    and speed. ``only_manifest`` keeps the runs of the suite as last run (its ``suite.json``),
    leaving out leftovers of earlier configurations; a run listed there that never started
    gets a row with status ``"not started"``, and a run whose files are damaged one with
    status ``"damaged"`` and the reason as its error, so no run of the suite goes missing.
    Raises :class:`~rlbench.records.RecordError` for a damaged ``suite.json``."""
    rows: list[dict[str, Any]] = []
    for suite_dir in _as_paths(paths):
        run_dirs, suite_name = _suite_run_dirs(suite_dir, only_manifest)
        for run_dir in run_dirs:
            row = _run_row(suite_dir, run_dir.name, suite_name)
            if row is not None:
                rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else RUN_COLUMNS)


def _run_row(suite_dir: Path, run_id: str, suite_name: str | None) -> dict[str, Any] | None:
    """``load_runs``'s row of one run folder; ``None`` for a folder that holds no run yet
    and is not listed in ``suite.json``."""
    run = records.RunDir(suite_dir, run_id)
    damage = run.damage()
    try:
        config = run.read_config() if run.path.is_dir() else None
        status = None if damage else run.read_status()
    except records.RecordError:
        config, status = None, None
    if config is None:
        if damage is not None:
            return _listed_row(
                suite_dir, run_id, suite_name or suite_dir.name, records.DAMAGED, damage
            )
        return _not_started_row(suite_dir, run_id, suite_name) if suite_name is not None else None
    row = {
        "run_id": run_id,
        "suite": config["suite"],
        "agent": config["agent"],
        "label": config["label"],
        "env": config["env"],
        "seed": config["seed"],
        "device": config["device"],
        "steps": config["steps"],
        "status": records.DAMAGED if damage else status.status if status else "missing",
        "final_return": status.final_return_mean if status else None,
        "steps_per_second": status.steps_per_second if status else None,
        # Seeds trained together with it (its group's throughput is lanes times its
        # steps_per_second); 1 for a run trained alone.
        "lanes": status.lanes or 1 if status else 1,
        "wall_time_s": status.wall_time_s if status else None,
        "error": damage or (status and (status.error or status.reason)) or "",
        "path": str(run.path),
    }
    row.update({f"config.{k}": v for k, v in config["agent_config"].items()})
    row.update({f"network.{k}": _cell(v) for k, v in config["network"].items()})
    return row


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
        runs[runs["status"] != records.COMPLETE]
        .groupby(["label", "env"])
        .size()
        .rename("not_complete")
        .reset_index()
    )
    order = runs[["label", "env"]].drop_duplicates()
    table = order.merge(stats, how="left").merge(missing, how="left")
    table["n"] = table["n"].fillna(0).astype(int)
    table["not_complete"] = table["not_complete"].fillna(0).astype(int)
    return table


#: Status of a run listed in ``suite.json`` whose directory holds no ``config.json``: it
#: never started (the suite was interrupted before reaching it).
NOT_STARTED = "not started"


def source_names(paths: Path | str | Iterable[Path | str]) -> dict[Path, str]:
    """A short, unique name for each results folder: its own name, or as many of its parent
    folders as it takes to tell it apart from the others (``a/tiny`` and ``b/tiny``).
    Returns ``{folder: name}`` in the order given."""
    folders = list(dict.fromkeys(Path(p) for p in _as_paths(paths)))
    depth = 1
    while True:
        names = {f: "/".join(_shown(f).parts[-depth:]) for f in folders}
        if len(set(names.values())) == len(folders) or depth > 32:
            return names
        depth += 1


def is_suite_folder(path: Path) -> bool:
    """Whether ``path`` is a suite's results folder (it has ``suite.json`` or ``runs/``)."""
    return (path / records.MANIFEST).is_file() or (path / records.RUNS_DIRNAME).is_dir()


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` is one run's folder (``RESULTS/<suite>/runs/<run_id>``)."""
    # A suite folder is never a run's, whatever its parent is called (--results runs).
    return (
        path.is_dir()
        and not is_suite_folder(path)
        and (
            (path / records.CONFIG).is_file()
            or (path / records.STATUS).is_file()
            or path.parent.name == records.RUNS_DIRNAME
        )
    )


def open_suite_results(path: Path | str, *, role: str = "", purpose: str = "") -> Path:
    """The results folder to read for ``path``: a suite's results folder as it is, a
    results bundle unpacked (:func:`rlbench.bundle.open_results`). Raises
    :class:`~rlbench.errors.RlbenchError`, in one line that names what to pass instead, for
    a path that does not exist, a file that is not a bundle, one run's folder or any other
    folder (naming the suite folders it holds). ``role`` says which of a command's inputs
    ``path`` is (``baseline``); ``purpose`` what the command does with a suite's results."""
    path = Path(path)
    shown = f"{path} ({role})" if role else str(path)
    if not path.exists():
        raise RlbenchError(f"{shown}: no such results folder or bundle")
    if path.is_file():
        return bundle.open_results(path)
    if is_suite_folder(path):
        return path
    if is_run_folder(path):
        raise RlbenchError(
            f"{shown} is one run's folder{': ' + purpose if purpose else ''}; pass its "
            f"suite's results folder, {path.parent.parent}"
        )
    inner = sorted(p.name for p in path.iterdir() if (p / records.MANIFEST).is_file())
    hint = (
        f"; it holds the suite folders {', '.join(inner)}: pass e.g. {path / inner[0]}"
        if inner
        else ": pass RESULTS/<suite> (e.g. results/cartpole) or a results bundle"
    )
    raise RlbenchError(
        f"{shown} is not a suite's results folder (it has no {records.MANIFEST} and no "
        f"{records.RUNS_DIRNAME}/ folder){hint}"
    )


def _shown(folder: Path) -> Path:
    """A folder's path as its name is made: a bundle's file, less its suffix."""
    source = bundle.origin(folder)
    if source is None:
        return folder.resolve()
    return source.resolve().with_name(bundle.name_of(source))


def load_run_table(
    paths: Path | str | Iterable[Path | str], *, only_manifest: bool = True
) -> pd.DataFrame:
    """Every run of one or more results folders, whatever its status: :func:`load_runs`'s
    columns plus ``results_dir``, ``source`` (see :func:`source_names`), ``device_name``
    (from the run's provenance) and ``agent_key`` (see :func:`agent_keys`). Runs listed in
    ``suite.json`` that never started get a row with status ``"not started"``, damaged ones
    status ``"damaged"``. Returns one row per run, in suite order."""
    frames = []
    for folder, source in source_names(paths).items():
        rows = load_runs(folder, only_manifest=only_manifest).to_dict("records")
        manifest = records.SuiteManifest.read(folder)
        order = {run_id: i for i, run_id in enumerate(manifest.runs if manifest else ())}
        rows.sort(key=lambda r: order.get(r["run_id"], len(order)))
        for row in rows:
            provenance = records.read_json(Path(row["path"]) / records.PROVENANCE)
            row["device_name"] = (
                provenance.get("device_name", "") if isinstance(provenance, dict) else ""
            )
            row["results_dir"] = str(folder)
            row["source"] = source
        frames.append(pd.DataFrame(rows, columns=None if rows else RUN_COLUMNS))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=RUN_COLUMNS)
    for column in ("results_dir", "source", "device_name"):
        if column not in table.columns:
            table[column] = pd.Series(dtype=object)
    table["agent_key"] = agent_keys(table)
    return table


def agent_keys(runs: pd.DataFrame) -> pd.Series:
    """What reports compare: the agent's label, suffixed with `` @ <source>`` when the same
    label comes from more than one results folder (so two folders' ``dqn`` stay apart).
    Returns a Series aligned with ``runs``."""
    if runs.empty:
        return pd.Series(dtype=object, index=runs.index)
    sources = runs.groupby("label")["source"].nunique()
    shared = set(sources[sources > 1].index)
    return pd.Series(
        [
            f"{lab} @ {src}" if lab in shared else lab
            for lab, src in zip(runs["label"], runs["source"], strict=True)
        ],
        index=runs.index,
        dtype=object,
    )


def recorded_references(
    paths: Path | str | Iterable[Path | str],
) -> dict[str, records.EnvReference | None]:
    """The reference scores that ``rlbench run`` recorded in each folder's ``suite.json``
    (``None`` for an environment that declares none); environments of folders written
    before they were recorded are absent. The first folder to record an environment wins."""
    table: dict[str, records.EnvReference | None] = {}
    for folder in _as_paths(paths):
        manifest = records.SuiteManifest.read(folder)
        for env, ref in (manifest.references or {}).items() if manifest else ():
            table.setdefault(env, ref)
    return table


def reference_table(
    envs: Iterable[str],
    catalogue: CatalogueSource = None,
    *,
    folders: Path | str | Iterable[Path | str] = (),
) -> dict[str, records.Reference | None]:
    """Each environment's reference scores, or ``None`` where its plugin declares none (or
    the environment is unknown here): as recorded in ``folders``' ``suite.json`` at run
    time, else from the plugins (``catalogue``; the installed plugins when ``None``), loaded
    only for environments no folder recorded. Each value is a
    :class:`~rlbench.records.EnvReference`, which also names the declaring plugin."""
    table: dict[str, records.Reference | None] = {}
    recorded = recorded_references(folders)
    missing = [env for env in dict.fromkeys(envs) if env not in recorded]
    if missing:
        plugins = _catalogue(catalogue)
        recorded.update({env: records.EnvReference.declared(plugins, env) for env in missing})
    for env in dict.fromkeys(envs):
        table[env] = recorded[env]
    return table


def _catalogue(source: CatalogueSource) -> Catalogue:
    if source is None:
        from rlbench.plugins import load_catalogue  # imports torch: only when needed

        return load_catalogue()
    return source() if callable(source) else source


def load_tidy(
    paths: Path | str | Iterable[Path | str],
    *,
    references: Mapping[str, records.Reference | None] | None = None,
    catalogue: CatalogueSource = None,
    only_manifest: bool = True,
    runs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The long-form (tidy) frame that :mod:`rlbench.stats` works on: one row per complete
    run × evaluation step, with ``evaluations.csv``'s columns (``step``, ``return_mean``,
    ...), the run's columns from :func:`load_run_table` (config, device, speed, ...) and:

    - ``ref_random``, ``ref_solved``: the environment's declared reference scores (NaN
      where it declares none);
    - ``normalized``: ``(return_mean - ref_random) / (ref_solved - ref_random)``;
    - ``final``: True on the run's last evaluation (its final score).

    ``references`` maps environment names to reference scores; by default they are those
    recorded in the folders' ``suite.json`` (see :func:`reference_table`), or those of the
    plugins (``catalogue``) for older folders. ``runs`` reuses a table
    already read by :func:`load_run_table`. Returns an empty frame when no run completed."""
    runs = load_run_table(paths, only_manifest=only_manifest) if runs is None else runs
    complete = runs[runs["status"] == records.COMPLETE] if not runs.empty else runs
    frames = []
    for run in complete.to_dict("records"):
        curve = pd.read_csv(Path(run["path"]) / records.EVALUATIONS)
        if curve.empty:
            continue
        extra = {key: value for key, value in run.items() if key not in curve.columns}
        curve = curve.assign(**{k: [v] * len(curve) for k, v in extra.items()})
        curve["final"] = curve["step"] == curve["step"].max()
        frames.append(curve)
    if not frames:
        return pd.DataFrame(columns=[*RUN_COLUMNS, "step", "return_mean", "normalized"])
    tidy = pd.concat(frames, ignore_index=True)
    if references is None:
        references = reference_table(tidy["env"].unique(), catalogue, folders=paths)
    tidy["ref_random"] = (
        tidy["env"]
        .map(lambda e: references[e].random if references.get(e) else np.nan)
        .astype(float)
    )
    tidy["ref_solved"] = (
        tidy["env"]
        .map(lambda e: references[e].solved if references.get(e) else np.nan)
        .astype(float)
    )
    tidy["normalized"] = normalize(tidy["return_mean"], tidy["ref_random"], tidy["ref_solved"])
    return tidy


def normalize(score: Any, random: Any, solved: Any) -> Any:
    """``(score - random) / (solved - random)``: 0 is a uniformly random policy, 1 the
    solved threshold. Works element-wise on scalars, arrays and Series; returns the same
    kind."""
    return (score - random) / (solved - random)


def _not_started_row(folder: Path, run_id: str, suite: str) -> dict[str, Any]:
    return _listed_row(folder, run_id, suite, NOT_STARTED, "listed in suite.json but never started")


def _listed_row(folder: Path, run_id: str, suite: str, status: str, error: str) -> dict[str, Any]:
    """The row of a run known only by its id (its config.json is missing or damaged): what
    the id tells of it."""
    parts = run_id.split("__")
    label, env, seed, device = [*parts, "", "", "", ""][:4]
    seed_value: Any = int(seed[4:]) if seed.startswith("seed") and seed[4:].isdigit() else None
    return {
        "run_id": run_id,
        "suite": suite,
        "agent": label,
        "label": label,
        "env": env,
        "seed": seed_value,
        "device": device,
        "steps": None,
        "status": status,
        "final_return": None,
        "steps_per_second": None,
        "lanes": None,
        "wall_time_s": None,
        "error": error,
        "path": str(folder / records.RUNS_DIRNAME / run_id),
    }


def _as_paths(paths: Path | str | Iterable[Path | str]) -> Sequence[Path]:
    """The results folders to read: each path as given, a results bundle's file as the
    folder it unpacks to (:func:`rlbench.bundle.open_results`)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    return [bundle.open_results(p) for p in paths]


def _cell(value: Any) -> Any:
    return str(value) if isinstance(value, (list, dict)) else value
