"""Synthetic suite results folders, written file for file as training.py and the executor
write them (config.json, status.json, evaluations.csv, episodes.csv, metrics.csv,
provenance.json, weights.pt; suite.json and suite.toml), with scores chosen by the test."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlbench import records
from rlbench.records import EPISODE_COLUMNS, EVALUATION_COLUMNS
from rlbench.runspec import RunSpec


@dataclass
class FakeRun:
    """One run: ``final`` is its last evaluation's mean return; the curve rises linearly to
    it from ``start`` unless ``curve`` gives every evaluation's mean return."""

    label: str
    env: str
    seed: int
    final: float = 0.0
    start: float = 0.0
    curve: Sequence[float] | None = None
    status: str = records.COMPLETE
    error: str = ""
    device: str = "cpu"
    steps_per_second: float = 1000.0
    agent: str = "dqn"
    config: dict[str, Any] = field(default_factory=dict)


def write_results(
    root: Path,
    name: str,
    runs: Sequence[FakeRun],
    *,
    steps: int = 1000,
    eval_interval: int = 250,
    eval_episodes: int = 5,
    not_started: Sequence[str] = (),
    references: Mapping[str, records.EnvReference | None] | None = None,
) -> Path:
    """Write ``root/<name>/`` with ``runs`` and return that folder. ``not_started`` adds run
    ids to suite.json that have no directory (an interrupted suite); ``references`` are
    recorded in suite.json as ``rlbench run`` does (``None``: as before it did)."""
    suite_dir = root / name
    ids = []
    for run in runs:
        spec = RunSpec(
            suite=name,
            agent=run.agent,
            label=run.label,
            agent_config={"learning_rate": 0.001, "num_envs": 1, **run.config},
            network={"name": "mlp", "hidden_sizes": [32, 32]},
            env=run.env,
            env_kwargs={},
            seed=run.seed,
            device=run.device,
            steps=steps,
            eval_interval=eval_interval,
            eval_episodes=eval_episodes,
        )
        ids.append(spec.run_id)
        _write_run(suite_dir, spec, run, steps, eval_interval, eval_episodes)
    labels = list(dict.fromkeys(r.label for r in runs))
    envs = list(dict.fromkeys(r.env for r in runs))
    toml = [
        f'name = "{name}"',
        'description = "synthetic results for tests"',
        f"seeds = {len({r.seed for r in runs})}",
        "environments = [" + ", ".join(f'"{e}"' for e in envs) + "]",
        "",
        "[budget]",
        f"steps = {steps}",
        f"eval_interval = {eval_interval}",
        f"eval_episodes = {eval_episodes}",
        "",
    ]
    for label in labels:
        agent = next(r.agent for r in runs if r.label == label)
        toml += ["[[agents]]", f'name = "{agent}"', f'label = "{label}"', ""]
    manifest = records.SuiteManifest(name, f"suites/{name}.toml", (*ids, *not_started), references)
    manifest.write(suite_dir, "\n".join(toml))
    return suite_dir


def _write_run(
    suite_dir: Path, spec: RunSpec, run: FakeRun, steps: int, eval_interval: int, eval_episodes: int
) -> None:
    run_dir = records.RunDir(suite_dir, spec.run_id)
    run_dir.write_json(records.CONFIG, spec.to_json())
    if run.status == records.SKIPPED:
        run_dir.write_status(records.SKIPPED, reason=run.error or "device unavailable")
        return
    run_dir.write_json(
        records.PROVENANCE,
        {
            "python": "3.11.0",
            "platform": "Linux-test",
            "hostname": "testhost",
            "torch": "2.0.0",
            "torch_cuda": None,
            "torch_threads": 1,
            "gymnasium": "1.0.0",
            "numpy": "2.0.0",
            "rlbench": "0.1.0",
            "plugins": {"rlbench": "0.1.0"},
            "git": {"commit": "0123456789abcdef", "dirty": False},
            "device": run.device,
            "device_name": "Test CPU" if run.device == "cpu" else "Test GPU",
            "cpu_count": 2,
            "started_at": "2026-01-01T00:00:00+00:00",
            "argv": ["rlbench"],
        },
    )
    eval_steps = [*range(0, steps, eval_interval), steps]
    if run.curve is not None:
        curve = list(run.curve)
        assert len(curve) == len(eval_steps), f"curve needs {len(eval_steps)} values"
    else:
        curve = list(np.linspace(run.start, run.final, len(eval_steps)))
    if run.status == records.FAILED:  # failed halfway: a partial curve on disk
        half = len(eval_steps) // 2
        eval_steps, curve = eval_steps[:half], curve[:half]
    evaluations = [
        {
            "step": s,
            "return_mean": r,
            "return_std": 1.0,
            "return_min": r - 1,
            "return_max": r + 1,
            "length_mean": max(r, 1.0),
            "episodes": eval_episodes,
            "wall_time_s": round(s / run.steps_per_second, 3),
        }
        for s, r in zip(eval_steps, curve, strict=True)
    ]
    run_dir.write_csv(records.EVALUATIONS, EVALUATION_COLUMNS, evaluations)
    run_dir.write_csv(
        records.EPISODES,
        EPISODE_COLUMNS,
        [
            {"step": s, "return": r, "length": 10, "terminated": True}
            for s, r in zip(eval_steps[1:], curve[1:], strict=True)
        ],
    )
    run_dir.write_csv(
        records.METRICS, ["step", "loss"], [{"step": s, "loss": 0.5} for s in eval_steps[1:]]
    )
    if run.status == records.FAILED:
        records.atomic_write_text(run_dir.file(records.ERROR), "Traceback: boom\n")
        run_dir.write_status(
            records.FAILED, error=run.error or "RuntimeError: boom", wall_time_s=1.0
        )
        return
    run_dir.save_weights({})
    train_time = steps / run.steps_per_second
    run_dir.write_status(
        records.COMPLETE,
        env_steps=steps,
        wall_time_s=round(train_time + 0.1, 3),
        train_time_s=round(train_time, 3),
        eval_time_s=0.1,
        steps_per_second=run.steps_per_second,
        final_return_mean=curve[-1],
        final_return_std=1.0,
        episodes=len(curve) - 1,
    )
