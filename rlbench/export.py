"""Exporting results where other tools read them: rliable's score arrays, marl-eval's raw
experiment data (JSON), a Hugging Face model card for one run, and rlbench's own results
bundle (:mod:`rlbench.bundle`: what rlbench publishes and reads back).

Every export reads results through :mod:`rlbench.results` (:func:`~rlbench.results.
load_run_table`, :func:`~rlbench.results.load_tidy`), so whatever those read exports alike.
Only complete runs are exported (``warn`` counts the others), each by its evaluation
curve (``evaluations.csv``): rlbench records each greedy evaluation's mean return over its
episodes, not the episodes' returns, so every exported score is such a mean. A format is
one entry of :data:`FORMATS`, which ``rlbench export --format`` offers.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rlbench import bundle, records
from rlbench.errors import RlbenchError, did_you_mean
from rlbench.results import (
    is_run_folder,
    is_suite_folder,
    load_run_table,
    load_tidy,
    open_suite_results,
)

if TYPE_CHECKING:
    from rlbench.results import CatalogueSource

#: Where ``rlbench export`` writes a suite's exports by default: ``RESULTS/export/``.
EXPORT_DIRNAME = "export"
#: What an export reads (:attr:`ExportFormat.reads`): a suite's results (a results folder,
#: or anything :mod:`rlbench.results` reads as one), or one run's folder.
SUITE, RUN = "suite", "run"
#: marl-eval's ``environment_name`` for rlbench's tasks (Gymnasium environment ids).
MARL_EVAL_ENVIRONMENT = "gymnasium"
#: marl-eval's name of the metric rlbench exports.
MARL_EVAL_METRIC = "return"

Warn = Callable[[str], None]


@dataclass(frozen=True)
class ExportFormat:
    """One format of ``rlbench export``. ``write(source, out, catalogue=..., warn=...)``
    writes the export of ``source`` to ``out`` and returns the path written; ``reads`` says
    what ``source`` must be (:data:`SUITE` or :data:`RUN`); ``default_name`` is the file
    name written when no output path is given (see :func:`default_out`)."""

    write: Callable[..., Path]
    description: str
    default_name: str
    reads: str = SUITE


# ---------------------------------------------------------------- entry point


def export(
    source: Path | str,
    format_name: str,
    out: Path | str | None = None,
    *,
    catalogue: CatalogueSource = None,
    warn: Warn | None = None,
) -> Path:
    """Write ``source``'s results in the format :data:`FORMATS` names ``format_name``, to
    ``out`` (default: :func:`default_out`). Reference scores are those recorded in
    ``suite.json``; ``catalogue`` (see :data:`rlbench.results.CatalogueSource`) is asked only
    for folders that recorded none. ``warn`` gets one line per thing left out. Raises
    :class:`~rlbench.errors.RlbenchError` for an unknown format, a source of the wrong kind
    for it, results it cannot hold, or an output that cannot be written. Returns the path
    written."""
    if format_name not in FORMATS:
        raise RlbenchError(
            f"unknown export format {format_name!r}{did_you_mean(format_name, FORMATS)}; "
            f"the formats are {', '.join(FORMATS)}"
        )
    fmt = FORMATS[format_name]
    source = Path(source)
    check_source(source, format_name)
    target = Path(out) if out is not None else default_out(source, format_name)
    if target.is_dir():
        raise RlbenchError(
            f"{target} is a folder: pass the file to write, e.g. {target / fmt.default_name}"
        )
    try:
        return fmt.write(source, target, catalogue=catalogue, warn=warn)
    except OSError as exc:
        raise RlbenchError(f"{target}: cannot write the export: {exc.strerror or exc}") from None


def default_out(source: Path | str, format_name: str) -> Path:
    """Where :func:`export` writes by default: ``RUN_DIR/<name>`` for a run's export,
    ``RESULTS/export/<name>`` for a suite's results folder, and for a results bundle
    (``NAME.rlbench.json``) ``NAME-export/<name>`` beside it, as ``rlbench report`` does.
    Returns the path."""
    fmt = FORMATS[format_name]
    source = Path(source)
    if fmt.reads == RUN:
        return source / fmt.default_name
    if source.is_file():
        return bundle.beside(source, EXPORT_DIRNAME) / fmt.default_name
    return source / EXPORT_DIRNAME / fmt.default_name


def check_source(source: Path, format_name: str) -> None:
    """Raise :class:`~rlbench.errors.RlbenchError`, in one line that names what to pass
    instead, when ``source`` is not what ``format_name`` exports: a suite's results folder
    (or a results file) for the suite formats, one run's folder for ``model-card``."""
    fmt = FORMATS[format_name]
    if not source.exists():
        raise RlbenchError(f"{source}: no such file or folder")
    if fmt.reads == RUN:
        _check_run_folder(source, format_name)
    elif source.is_dir():
        open_suite_results(source, purpose=f"--format {format_name} exports a suite's results")


def _check_run_folder(path: Path, format_name: str) -> None:
    what = f"--format {format_name} writes the card of one run"
    if path.is_file():
        raise RlbenchError(
            f"{path} is a file: {what}; pass a run's folder, RESULTS/<suite>/runs/<run_id>"
        )
    if is_suite_folder(path):
        runs = path / records.RUNS_DIRNAME
        found = sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
        example = runs / found[0] if found else runs / "<run_id>"
        raise RlbenchError(
            f"{path} is a suite's results folder: {what}; pass one of its runs, e.g. {example}"
        )
    if not is_run_folder(path):
        raise RlbenchError(
            f"{path} is not a run's folder (it has no {records.CONFIG}): {what}; pass "
            "RESULTS/<suite>/runs/<run_id>"
        )


# ---------------------------------------------------------------- reading


@dataclass
class _RunCurve:
    """One complete run's evaluations, in step order."""

    seed: int
    device: str
    run_id: str
    steps: np.ndarray
    returns: np.ndarray
    normalized: np.ndarray


def _suite_tidy(source: Path, catalogue: CatalogueSource, warn: Warn | None) -> pd.DataFrame:
    """``load_tidy``'s frame of ``source``, after saying (``warn``) which runs are left out.
    Raises :class:`~rlbench.errors.RlbenchError` when no run completed."""
    runs = load_run_table(source)
    if runs.empty:
        raise RlbenchError(f"{source}: no runs found: pass a suite's results folder")
    _warn_left_out(source, runs, warn)
    tidy = load_tidy(source, catalogue=catalogue, runs=runs)
    if tidy.empty:
        raise RlbenchError(
            f"{source}: no run completed, so there is nothing to export (`rlbench report "
            f"{source}` lists each run with its status and error)"
        )
    return tidy


def _warn_left_out(source: Path, runs: pd.DataFrame, warn: Warn | None) -> None:
    left = runs[runs["status"] != records.COMPLETE]
    if warn is None or left.empty:
        return
    counts = left["status"].value_counts(sort=False)
    how = ", ".join(f"{n} {status}" for status, n in counts.items())
    warn(
        f"{source}: {len(left)} of {len(runs)} runs did not complete and are left out of "
        f"the export ({how}); `rlbench report` lists them with their errors"
    )


def _run_curves(tidy: pd.DataFrame) -> dict[tuple[str, str], list[_RunCurve]]:
    """Per (agent, environment), its complete runs' curves, ordered by seed (then device
    and run id)."""
    from rlbench import stats

    agent = stats.agent_column(tidy)
    keys = ["results_dir", "run_id"] if "results_dir" in tidy.columns else ["run_id"]
    curves: dict[tuple[str, str], list[_RunCurve]] = {}
    for _, run in tidy.groupby(keys, sort=False):
        run = run.sort_values("step", kind="stable")
        first = run.iloc[0]
        curves.setdefault((first[agent], first["env"]), []).append(
            _RunCurve(
                seed=int(first["seed"]),
                device=str(first["device"]),
                run_id=str(first["run_id"]),
                steps=run["step"].to_numpy(np.int64),
                returns=run["return_mean"].to_numpy(float),
                normalized=run["normalized"].to_numpy(float),
            )
        )
    for runs in curves.values():
        runs.sort(key=lambda r: (r.seed, r.device, r.run_id))
    return curves


# ---------------------------------------------------------------- rliable


def rliable_arrays(tidy: pd.DataFrame, source: Path | str = "results") -> dict[str, np.ndarray]:
    """rliable's score arrays of a tidy frame (:func:`~rlbench.results.load_tidy`), as
    :func:`write_rliable` saves them: per agent ``final/<agent>`` (runs × tasks: each run's
    final evaluation return), ``curves/<agent>`` (runs × tasks × evaluations: every
    evaluation's mean return), ``steps/<agent>`` (tasks × evaluations: the environment
    steps of each evaluation) and ``seeds/<agent>`` (runs × tasks); when every task declares
    reference scores also ``final_normalized/<agent>`` and ``curves_normalized/<agent>``
    (``(score - random) / (solved - random)``). ``agents`` and ``tasks`` give the order of
    the agents and of the task axis, ``references`` (tasks × 2) each task's random and
    solved scores (NaN where none is declared). Runs are ordered by seed on each task.

    rliable needs rectangular arrays, so each agent must have as many complete runs on
    every task, all of a task's runs evaluated at the same steps, and as many evaluations
    on every task: otherwise :class:`~rlbench.errors.RlbenchError` names the agent and the
    counts (``source`` names the results in that line). Returns ``{name: array}``."""
    from rlbench import stats

    agents, tasks = stats.agent_order(tidy), stats.env_order(tidy)
    curves = _run_curves(tidy)
    refs = tidy.drop_duplicates("env").set_index("env")[["ref_random", "ref_solved"]]
    references = refs.loc[tasks].to_numpy(float)
    normalizable = bool(np.isfinite(references).all())
    arrays: dict[str, np.ndarray] = {
        "agents": np.array(agents, dtype=str),
        "tasks": np.array(tasks, dtype=str),
        "references": references,
    }
    for name in agents:
        runs = [curves.get((name, env), []) for env in tasks]
        counts = [len(r) for r in runs]
        if len(set(counts)) > 1:
            raise RlbenchError(
                f"{source}: agent {name!r} has {_per_task(counts, tasks, 'complete runs')}: "
                "rliable's arrays need as many runs on every task; complete the missing "
                "runs (`rlbench run` of the suite) or export --format marl-eval"
            )
        for env, env_runs in zip(tasks, runs, strict=True):
            distinct = {tuple(r.steps) for r in env_runs}
            if len(distinct) > 1:
                shown = " vs ".join(str(list(s)) for s in sorted(distinct, key=len)[:2])
                raise RlbenchError(
                    f"{source}: agent {name!r}'s runs on {env} were evaluated at different "
                    f"steps ({shown}): rliable's curves need the same evaluation steps for "
                    "every run of a task; rerun them with one budget"
                )
        evaluations = [len(r[0].steps) for r in runs]
        if len(set(evaluations)) > 1:
            raise RlbenchError(
                f"{source}: agent {name!r} has {_per_task(evaluations, tasks, 'evaluations')}: "
                "rliable's curves need as many evaluations on every task; give every "
                "environment the same steps / eval_interval"
            )
        arrays[f"final/{name}"] = _stack(runs, lambda r: r.returns[-1])
        arrays[f"curves/{name}"] = _stack(runs, lambda r: r.returns)
        if normalizable:
            arrays[f"final_normalized/{name}"] = _stack(runs, lambda r: r.normalized[-1])
            arrays[f"curves_normalized/{name}"] = _stack(runs, lambda r: r.normalized)
        arrays[f"steps/{name}"] = np.stack([r[0].steps for r in runs])
        arrays[f"seeds/{name}"] = _stack(runs, lambda r: r.seed).astype(np.int64)
    return arrays


def _per_task(counts: list[int], tasks: list[str], what: str) -> str:
    """``3 complete runs on A, 2 on B``."""
    parts = [f"{n} on {env}" for n, env in zip(counts, tasks, strict=True)]
    return ", ".join([f"{counts[0]} {what} on {tasks[0]}", *parts[1:]])


def _stack(runs: list[list[_RunCurve]], value: Callable[[_RunCurve], Any]) -> np.ndarray:
    """runs × tasks (× whatever ``value`` returns) from per-task lists of runs."""
    return np.stack(
        [np.stack([np.asarray(value(r)) for r in env_runs]) for env_runs in runs], axis=1
    ).astype(float)


def write_rliable(
    source: Path,
    out: Path,
    *,
    catalogue: CatalogueSource = None,
    warn: Warn | None = None,
) -> Path:
    """Write :func:`rliable_arrays` of ``source``'s complete runs to ``out``, a NumPy
    ``.npz`` archive (read it back with :func:`load_rliable`). Returns ``out``."""
    arrays = rliable_arrays(_suite_tidy(source, catalogue, warn), source)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    records.atomic_write_bytes(out, buffer.getvalue())
    return out


def load_rliable(path: Path | str) -> dict[str, Any]:
    """An rliable export (:func:`write_rliable`) as rliable takes it: ``{"final": {agent:
    runs × tasks array}, "final_normalized": {...}, "curves": {agent: runs × tasks ×
    evaluations}, "curves_normalized": {...}, "steps": {agent: tasks × evaluations},
    "seeds": {...}, "agents": [...], "tasks": [...], "references": tasks × 2}`` (the
    ``*_normalized`` keys only when every task declares reference scores). Each ``{agent:
    array}`` is the ``score_dict`` of ``rliable.library.get_interval_estimates`` (and
    ``rliable.metrics`` takes its arrays). Raises :class:`~rlbench.errors.RlbenchError` for
    a file that is not such an export. Returns a dict."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            flat = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise RlbenchError(f"{path}: not an rliable export of rlbench ({exc})") from None
    if "agents" not in flat or "tasks" not in flat:
        raise RlbenchError(
            f"{path}: not an rliable export of rlbench (no 'agents' and 'tasks' arrays); "
            "write one with `rlbench export RESULTS --format rliable`"
        )
    agents = [str(a) for a in flat.pop("agents")]
    loaded: dict[str, Any] = {"agents": agents, "tasks": [str(t) for t in flat.pop("tasks")]}
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, array in flat.items():
        group, slash, name = key.partition("/")
        if slash:
            groups.setdefault(group, {})[name] = array
        else:
            loaded[key] = array
    for group, by_agent in groups.items():
        loaded[group] = {name: by_agent[name] for name in agents if name in by_agent}
    return loaded


# ---------------------------------------------------------------- marl-eval


def marl_eval_data(tidy: pd.DataFrame) -> dict[str, Any]:
    """marl-eval's raw experiment data of a tidy frame (:func:`~rlbench.results.load_tidy`):
    ``{"gymnasium": {task: {algorithm: {run: {"step_<i>": {"step_count": int, "return":
    [mean]}, ..., "absolute_metrics": {"return": [mean]}}}}}}``, with the environment id as
    the task, the agent's label as the algorithm and ``seed_<seed>`` as the run (as
    marl-eval's ``JsonLogger`` names them; ``seed_<seed>_<device>`` where a seed ran on
    several devices). Steps are numbered from 0 in evaluation order, and
    ``absolute_metrics`` (last, as marl-eval expects) holds the final evaluation's.

    Each list holds one number, the evaluation's mean return over its greedy episodes:
    rlbench records that mean, not each episode's return (marl-eval's format allows one
    value per metric). Returns the dict, in suite order."""
    from rlbench import stats

    curves = _run_curves(tidy)
    tasks: dict[str, Any] = {}
    for env in stats.env_order(tidy):
        for name in stats.agent_order(tidy):
            runs = curves.get((name, env))
            if not runs:
                continue
            seeds = [r.seed for r in runs]
            algorithm = tasks.setdefault(env, {}).setdefault(name, {})
            for run in runs:
                key = f"seed_{run.seed}"
                if seeds.count(run.seed) > 1:
                    key += f"_{run.device}"
                entry: dict[str, Any] = {
                    f"step_{i}": {"step_count": int(step), MARL_EVAL_METRIC: [float(value)]}
                    for i, (step, value) in enumerate(zip(run.steps, run.returns, strict=True))
                }
                entry["absolute_metrics"] = {MARL_EVAL_METRIC: [float(run.returns[-1])]}
                algorithm[key] = entry
    return {MARL_EVAL_ENVIRONMENT: tasks}


def write_marl_eval(
    source: Path,
    out: Path,
    *,
    catalogue: CatalogueSource = None,
    warn: Warn | None = None,
) -> Path:
    """Write :func:`marl_eval_data` of ``source``'s complete runs to ``out`` as JSON (keys
    in the order marl-eval reads them). Returns ``out``."""
    data = marl_eval_data(_suite_tidy(source, catalogue, warn))
    records.atomic_write_text(out, json.dumps(data, indent=2, allow_nan=False) + "\n")
    return out


# ---------------------------------------------------------------- model card


def model_card(run_dir: Path | str) -> str:
    """The Hugging Face model card (``README.md``) of one complete run: YAML front matter
    as the Hub and ``huggingface_sb3`` write it (``library_name``, ``tags`` and a
    ``model-index`` whose ``mean_reward`` metric is the final evaluation's ``"<mean> +/-
    <std>"``), then a Markdown body stating the protocol (steps, greedy evaluation episodes,
    seed, device, hyperparameters, and the rlbench version and commit of
    ``provenance.json``). Raises :class:`~rlbench.errors.RlbenchError` for a folder that is
    not a run's, or a run that did not complete. Returns the card's text."""
    run_dir = Path(run_dir)
    _check_run_folder(run_dir, "model-card")
    suite_dir = run_dir.parent.parent
    runs = load_run_table(suite_dir, only_manifest=False)
    mine = runs[runs["run_id"] == run_dir.name] if not runs.empty else runs
    if mine.empty:
        raise RlbenchError(
            f"{run_dir}: no run found there (it has no {records.CONFIG}): pass "
            "RESULTS/<suite>/runs/<run_id>"
        )
    run = mine.iloc[0]
    if run["status"] != records.COMPLETE:
        why = f": {run['error']}" if run["error"] else ""
        raise RlbenchError(
            f"{run_dir}: the run is {run['status']}{why}; a model card needs a complete "
            "run (`rlbench run` of its suite completes it)"
        )
    tidy = load_tidy(suite_dir, references={}, runs=mine)
    final = tidy[tidy["final"]].iloc[0]
    config = records.read_json(Path(run["path"]) / records.CONFIG)
    provenance = records.read_json(Path(run["path"]) / records.PROVENANCE)
    return _card_text(
        run,
        final,
        config if isinstance(config, dict) else {},
        provenance if isinstance(provenance, dict) else {},
    )


def _card_text(
    run: pd.Series, final: pd.Series, config: Mapping[str, Any], provenance: Mapping[str, Any]
) -> str:
    label, env, agent = str(run["label"]), str(run["env"]), str(run["agent"])
    mean, std = float(final["return_mean"]), float(final["return_std"])
    tags = list(
        dict.fromkeys(
            ["reinforcement-learning", "deep-reinforcement-learning", env, agent, "rlbench"]
        )
    )
    front = [
        "---",
        "library_name: rlbench",
        "tags:",
        *(f"- {_yaml(tag)}" for tag in tags),
        "model-index:",
        f"- name: {_yaml(label)}",
        "  results:",
        "  - task:",
        "      type: reinforcement-learning",
        "      name: reinforcement-learning",
        "    dataset:",
        f"      name: {_yaml(env)}",
        f"      type: {_yaml(env)}",
        "    metrics:",
        "    - type: mean_reward",
        f"      value: {_yaml(f'{mean:.2f} +/- {std:.2f}')}",
        "      name: mean_reward",
        "      verified: false",
        "---",
    ]
    git = provenance.get("git") if isinstance(provenance.get("git"), dict) else None
    commit = (
        f"commit {git.get('commit')}" + (" with uncommitted changes" if git.get("dirty") else "")
        if git
        else "no git commit recorded (not run from a git checkout)"
    )
    interval = config.get("eval_interval", "?")
    episodes = int(final["episodes"]) if pd.notna(final.get("episodes")) else "?"
    rows = [
        ("agent", f"`{agent}` (label `{label}`)"),
        ("environment", f"`{env}`" + _kwargs_text(config.get("env_kwargs"))),
        ("training", f"{int(run['steps']):,} environment steps, seed {int(run['seed'])}"),
        (
            "evaluation",
            f"every {interval:,} steps and at the end: {config.get('eval_episodes', '?')} "
            "episodes with greedy actions, on an evaluation environment of its own "
            "(episode j reset with the same seed at every evaluation)"
            if isinstance(interval, int)
            else "greedy (deterministic) actions",
        ),
        (
            "final evaluation",
            f"step {int(final['step']):,}: mean return {mean:.2f} ± {std:.2f} over "
            f"{episodes} episodes (min {float(final['return_min']):g}, max "
            f"{float(final['return_max']):g})",
        ),
        ("device", f"{run['device']} ({provenance.get('device_name') or 'unnamed'})"),
        ("rlbench", f"{provenance.get('rlbench') or '?'}, {commit}"),
        (
            "libraries",
            ", ".join(
                f"{lib} {provenance[lib]}"
                for lib in ("torch", "gymnasium", "numpy", "python")
                if provenance.get(lib)
            ),
        ),
    ]
    body = [
        "",
        f"# {label} on {env}",
        "",
        f"A `{agent}` agent trained on `{env}` by rlbench. "
        "The score above is the mean return of the run's final evaluation, ± the standard "
        "deviation over its episodes.",
        "",
        "## Protocol",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {key} | {value} |" for key, value in rows),
        "",
        "## Hyperparameters",
        "",
        "```json",
        json.dumps(
            {
                "agent_config": config.get("agent_config", {}),
                "network": config.get("network", {}),
            },
            indent=2,
            sort_keys=True,
        ),
        "```",
        "",
        "## Files",
        "",
        "`weights.pt` holds the trained network, `config.json` the whole run configuration, "
        "`evaluations.csv` every evaluation and `provenance.json` the versions and machine. "
        "`rlbench evaluate <this folder>` plays the saved agent again under the same protocol.",
        "",
    ]
    return "\n".join(front + body)


def _kwargs_text(kwargs: Any) -> str:
    if not kwargs:
        return ""
    return " with " + ", ".join(f"`{k}={v!r}`" for k, v in dict(kwargs).items())


def _yaml(text: str) -> str:
    """``text`` as a YAML double-quoted scalar (JSON's string syntax is YAML's)."""
    return json.dumps(str(text), ensure_ascii=False)


def write_model_card(
    source: Path,
    out: Path,
    *,
    catalogue: CatalogueSource = None,
    warn: Warn | None = None,
) -> Path:
    """Write :func:`model_card` of the run folder ``source`` to ``out`` (by default its
    ``README.md``, the file the Hub reads). Returns ``out``."""
    records.atomic_write_text(out, model_card(source))
    return out


def write_rlbench_bundle(
    source: Path | str, out: Path | str, *, catalogue: Any = None, warn: Warn | None = None
) -> Path:
    """Write ``source`` (a suite's results folder or a bundle) as a results bundle at
    ``out`` (:mod:`rlbench.bundle`: every run of its ``suite.json`` with its config, status,
    evaluation curve and provenance; no weights). Returns ``out``."""
    return bundle.write_bundle(bundle.open_results(source), out)


#: Every format of ``rlbench export``, by the name ``--format`` takes: add a format with
#: one entry.
FORMATS: dict[str, ExportFormat] = {
    "rlbench": ExportFormat(
        write_rlbench_bundle,
        "a results bundle: every run's config, status, evaluation curve and provenance in "
        "one JSON file that rlbench report, compare and export read like the folder",
        "results.rlbench.json",
    ),
    "rliable": ExportFormat(
        write_rliable,
        "score arrays for rliable (runs × tasks; runs × tasks × evaluations), a .npz",
        "rliable.npz",
    ),
    "marl-eval": ExportFormat(
        write_marl_eval,
        "marl-eval's raw experiment data, a .json",
        "marl_eval.json",
    ),
    "model-card": ExportFormat(
        write_model_card,
        "one run's Hugging Face model card with its model-index, a README.md",
        "README.md",
        reads=RUN,
    ),
}
