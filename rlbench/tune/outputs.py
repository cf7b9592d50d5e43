"""What a study shows and leaves: one line per finished trial while it runs, then
``trials.csv``, ``best.toml`` and Optuna's figures, each written atomically (a kill
leaves the old file or the new one, never a truncated one)."""

from __future__ import annotations

import io
import json
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from rlbench import records
from rlbench.tune.job import StudyLocation, TuneJob
from rlbench.tune.plan import objective_label
from rlbench.tune.study import TrialCounts, count_trials

BEST_SUITE = "best.toml"


class TrialPrinter:
    """Prints one line per trial as it finishes: state, value, best so far, parameters."""

    def __init__(self, write: Callable[[str], None], target: int) -> None:
        self.write = write
        self.target = target
        self.seen: set[int] = set()

    def start(self, study: optuna.Study) -> TrialCounts:
        """Note the trials finished before this command; returns the study's counts."""
        trials = study.get_trials(deepcopy=False)
        self.seen = {t.number for t in trials if t.state.is_finished()}
        return count_trials(trials)

    def update(self, study: optuna.Study) -> None:
        trials = study.get_trials(deepcopy=False)
        new = sorted(
            (t for t in trials if t.state.is_finished() and t.number not in self.seen),
            key=lambda t: t.datetime_complete or t.datetime_start,
        )
        if not new:
            return
        counts = count_trials(trials)
        best = _best_trial(trials)
        for t in new:
            self.seen.add(t.number)
            self.write(self._line(t, counts, best))

    def _line(self, t: FrozenTrial, counts: TrialCounts, best: FrozenTrial | None) -> str:
        if t.state == TrialState.COMPLETE:
            what = f"complete  value {t.value:.4g}"
        elif t.state == TrialState.PRUNED and "error" in t.user_attrs:
            what = f"pruned (diverged: {t.user_attrs['error']})"
        elif t.state == TrialState.PRUNED:
            what = f"pruned at step {t.user_attrs.get('pruned_at_step', '?')}"
        else:
            what = f"failed ({t.user_attrs.get('error', 'no error recorded')})"
        best_text = f"best {best.value:.4g} (trial {best.number})" if best else "best -"
        seconds = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else 0.0
        )
        return (
            f"[{counts.finished}/{self.target}] trial {t.number} {what}; {best_text}; "
            f"{seconds:.0f} s; params {_format_params(t.params)}"
        )


def _best_trial(trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return max(complete, key=lambda t: t.value) if complete else None


def _format_params(params: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


@dataclass
class TuneOutcome:
    """What ``rlbench tune`` reports at the end."""

    study: optuna.Study
    counts: TrialCounts
    best: FrozenTrial | None
    files: list[Path]
    notes: list[str]


def finish(study: optuna.Study, job: TuneJob) -> TuneOutcome:
    """The study's results: counts, best trial, and the files written (trials.csv,
    best.toml when a trial completed, and the figures)."""
    trials = study.get_trials(deepcopy=False)
    out = job.location.study_dir
    out.mkdir(parents=True, exist_ok=True)
    files, notes = [], []
    frame = study.trials_dataframe()
    records.atomic_write_text(out / "trials.csv", frame.to_csv(index=False))
    files.append(out / "trials.csv")
    best = _best_trial(trials)
    if best is not None:
        path = out / BEST_SUITE
        records.atomic_write_text(path, _best_suite_toml(job, best))
        files.append(path)
    else:
        notes.append("no trial completed: no best.toml")
    saved, skipped = save_figures(study, out)
    files += saved
    notes += skipped
    return TuneOutcome(study, count_trials(trials), best, files, notes)


def save_figures(study: optuna.Study, out: Path) -> tuple[list[Path], list[str]]:
    """Optuna's optimization history, parameter importances and slice plot as PNG files.
    Returns (files written, one note per figure that could not be drawn and why)."""
    # Imported here, when a study ends: matplotlib is slow to import and its backend is
    # chosen once per process, which tuning must not do for a caller that only plans.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    figures: list[tuple[str, Callable[[optuna.Study], Any], int]] = [
        ("history.png", plots.plot_optimization_history, 1),
        ("importances.png", plots.plot_param_importances, 2),
        ("slice.png", plots.plot_slice, 1),
    ]
    files, notes = [], []
    for name, plot, needs in figures:
        if complete < needs:
            notes.append(f"{name}: needs {needs} complete trial(s), the study has {complete}")
            continue
        try:
            with warnings.catch_warnings():  # e.g. "importances will be equal" on few trials
                warnings.simplefilter("ignore")
                axes = plot(study)
            figure = np.atleast_1d(axes).flat[0].figure
            try:
                # Drawn in memory, then written atomically: savefig on the final path
                # truncates it first, and a kill mid-draw left an empty history.png.
                png = io.BytesIO()
                figure.savefig(png, format="png", dpi=120, bbox_inches="tight")
            finally:
                plt.close(figure)
            records.atomic_write_bytes(out / name, png.getvalue())
            files.append(out / name)
        except Exception as exc:  # a figure must never cost the study's results
            notes.append(f"{name}: not drawn ({type(exc).__name__}: {exc})")
    return files, notes


def _best_suite_name(location: StudyLocation) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{location.suite}-{location.study_name}-best")


def _best_suite_toml(job: TuneJob, best: FrozenTrial) -> str:
    """A ready-to-run suite: the tuned agent (``<label>_tuned``) beside the default one
    (``<label>``), on the suite's own seeds (never tuning seeds), each environment with the
    budget, ``env_config`` and networks its trials trained with."""
    plan, location = job.plan, job.location
    tuned = {**plan.base_config, **plan.fixed, **best.params}
    # The search space's values override env_config: the tuned entry's leaves them out.
    searched = {**plan.fixed, **best.params}
    tuned_env_config = {
        env: kept
        for env, override in plan.env_config.items()
        if (kept := {k: v for k, v in override.items() if k not in searched})
    }
    envs: list[Any] = []
    for env, kwargs in plan.environments:
        budget = {k: v for k, v in plan.budget_of(env).items() if v != getattr(plan, k)}
        entry = {"id": env, **({"kwargs": kwargs} if kwargs else {})}
        entry.update({"budget": budget} if budget else {})
        envs.append(entry if len(entry) > 1 else env)
    lines = [
        f"# Written by `rlbench tune`: study {location.study_name!r} ({location.storage_label}).",
        f"# Best trial: {best.number}, value {best.value:.6g} = {objective_label(plan)},",
        f"# on tuning seeds {list(plan.seeds)}. Tuned hyperparameters:",
        *(f"#   {key} = {_toml(value)}" for key, value in best.params.items()),
        "# `rlbench run` on this file re-evaluates the tuned agent against the default one on",
        "# the suite's own seeds, which the tuner never trained on.",
        f"name = {_toml(_best_suite_name(location))}",
        f"description = {_toml(f'{plan.label} tuned (study {location.study_name}) vs default')}",
        f"seeds = {_toml(list(plan.eval_seeds))}",
        f"devices = {_toml(list(plan.devices))}",
        f"environments = {_toml(envs)}",
        "",
        "[budget]",
        f"steps = {plan.steps}",
        f"eval_interval = {plan.eval_interval}",
        f"eval_episodes = {plan.eval_episodes}",
    ]
    if plan.eval_max_episode_steps is not None:
        lines.append(f"eval_max_episode_steps = {plan.eval_max_episode_steps}")
    entries = (
        (f"{plan.label}_tuned", tuned, tuned_env_config),
        (plan.label, plan.base_config, plan.env_config),
    )
    for label, config, env_config in entries:
        lines += [
            "",
            "[[agents]]",
            f"name = {_toml(plan.agent)}",
            f"label = {_toml(label)}",
            f"config = {_toml(config)}",
            f"network = {_toml(plan.network)}",
        ]
        if plan.networks:
            lines.append(f"networks = {_toml(plan.networks)}")
        if env_config:
            lines.append(f"env_config = {_toml(env_config)}")
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    """A TOML inline value (strings in JSON's escapes, which TOML's basic strings share)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = ", ".join(f"{_toml_key(k)} = {_toml(v)}" for k, v in value.items())
        return "{ " + items + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML: {value!r}")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)
