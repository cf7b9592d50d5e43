"""Recording a run as it trains: each lane's files and status, its evaluations, how it ended.

A :class:`LaneRecord` is one run of a lane group (a single run is a group of one): it keeps
the run's finished episodes, its metrics (averaged over each evaluation interval) and its
evaluations, and writes them to the run's folder (:class:`rlbench.records.RunDir`) after
every evaluation; its status last. A lane whose metric is not finite is recorded as
diverged and stops being recorded, the others go on. The :class:`Evaluator` runs the greedy
evaluation of every lane (protocol: :mod:`rlbench.evaluation`) and records each result in
its live lane.
"""

from __future__ import annotations

import dataclasses
import math
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch

from rlbench import records
from rlbench.agent import LaneAgent, OneLane
from rlbench.evaluation import evaluate_lanes
from rlbench.runspec import RunSpec
from rlbench.stepping import Episode

#: ``callback(event, run_id, payload)``; events: "start" (``steps``), "resume" (``step``,
#: ``exact``), "step" (``step``, ``sps``: training steps per second), "eval" (``step``,
#: ``return_mean``, ``wall_time_s``, ``sps`` after step 0), "end" (``status``, and
#: ``final_return`` or ``error``).
#: What the loggers (rlbench.tracking) read too: "start" also has ``config`` (``config.json``);
#: "provenance" (``provenance``: ``provenance.json``) comes once that is written; "eval" also
#: has the rows the run's files gained: ``evaluation`` (of ``evaluations.csv``), ``metrics``
#: (of ``metrics.csv``, or ``None``) and ``episodes`` (of ``episodes.csv``, since the last
#: one); "end" also has ``record`` (``status.json``).
ProgressCallback = Callable[[str, str, Mapping[str, Any]], None]


class DivergedError(RuntimeError):
    """Training produced a non-finite metric (NaN or inf loss)."""


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    status: str
    final_return: float | None = None
    wall_time_s: float = 0.0
    steps_per_second: float | None = None
    error: str = ""


class LaneRecord:
    """One run (a lane of its group) as it trains: what it has recorded so far, the files
    they go to, and how it ended (:attr:`outcome`, ``None`` while it is live)."""

    def __init__(self, spec: RunSpec, run_dir: records.RunDir, notify: ProgressCallback) -> None:
        self.spec = spec
        self.run_dir = run_dir
        self.notify = notify
        self.episodes: list[Episode] = []
        self.evaluations: list[dict[str, Any]] = []
        #: One row per evaluation: each metric's mean over the steps since the last one.
        self.metric_rows: list[dict[str, Any]] = []
        self._metric_sums: dict[str, float] = {}
        self._metric_counts: dict[str, int] = {}
        self.outcome: RunOutcome | None = None
        self.diverged = False
        #: Resumes from checkpoints so far: ``{"step", "exact", "note"}`` each.
        self.resumes: list[dict[str, Any]] = []
        #: Why the run could not checkpoint (``""``: it could, or was not asked to).
        self.checkpoint_note = ""
        #: How many of :attr:`episodes` an ``eval`` event has sent.
        self._episodes_sent = 0

    @property
    def live(self) -> bool:
        return self.outcome is None

    def start(self, *, resuming: bool = False) -> None:
        """Forget an earlier attempt's files (unless ``resuming`` it from its checkpoint)
        and record the run's config."""
        if resuming:
            self.run_dir.remove_temporaries()
        else:
            self.run_dir.clear()
        config = self.spec.to_json()
        self.run_dir.write_json(records.CONFIG, config)
        self.notify("start", self.spec.run_id, {"steps": self.spec.steps, "config": config})

    def progress_state(self) -> dict[str, Any]:
        """What this lane has recorded so far, for a checkpoint."""
        return {
            "episodes": list(self.episodes),
            "evaluations": list(self.evaluations),
            "metric_rows": list(self.metric_rows),
            "metric_sums": dict(self._metric_sums),
            "metric_counts": dict(self._metric_counts),
            "outcome": None if self.outcome is None else dataclasses.asdict(self.outcome),
            "diverged": self.diverged,
            "resumes": list(self.resumes),
        }

    def resume(self, state: Mapping[str, Any], saved: Mapping[str, Any]) -> None:
        """Take up what :meth:`progress_state` saved in the group's checkpoint ``saved`` (a
        lane that had diverged stays so) and, if the lane is live, record this resume: exact
        unless the checkpoint could not hold the training environments."""
        self.episodes = list(state["episodes"])
        self.evaluations = list(state["evaluations"])
        self.metric_rows = list(state["metric_rows"])
        self._metric_sums = dict(state["metric_sums"])
        self._metric_counts = dict(state["metric_counts"])
        outcome = state["outcome"]
        self.outcome = None if outcome is None else RunOutcome(**outcome)
        self.diverged = bool(state["diverged"])
        self.resumes = list(state["resumes"])
        self._episodes_sent = len(self.episodes)  # sent before the checkpoint was saved
        if not self.live:
            return
        step, exact = int(saved["step"]), saved["envs"] is not None
        note = ""
        if not exact:
            note = (
                f"at step {step} the training environments started new episodes from seeded "
                f"resets: {saved['envs_problem']}"
            )
        self.resumes.append({"step": step, "exact": exact, "note": note})
        self.notify("resume", self.spec.run_id, {"step": step, "exact": exact})

    def resume_fields(self) -> dict[str, Any]:
        """The :class:`records.RunStatus` fields that say how the run was resumed (or why it
        could not checkpoint)."""
        fields: dict[str, Any] = {}
        if self.resumes:
            notes = [r["note"] for r in self.resumes if r["note"]]
            fields = {
                "resumes": len(self.resumes),
                "resumed_from_step": self.resumes[-1]["step"],
                "resume_exact": all(r["exact"] for r in self.resumes),
                "resume_note": "; ".join(notes) or None,
            }
        if self.checkpoint_note:
            fields["checkpoint_note"] = self.checkpoint_note
        return fields

    def add_metric(self, key: str, value: Any, step: int, started: float) -> None:
        """``value`` of metric ``key`` from the transition that brought training to
        ``step``; a non-finite one (NaN, inf) fails the lane as diverged."""
        if not self.live:
            return
        value = float(value)
        if not math.isfinite(value):
            message = f"training diverged at step {step}: {key} = {value}"
            self.fail(f"{DivergedError.__name__}: {message}", _diverged_trace(message), started)
            self.diverged = True
            return
        self._metric_sums[key] = self._metric_sums.get(key, 0.0) + value
        self._metric_counts[key] = self._metric_counts.get(key, 0) + 1

    def add_evaluation(
        self,
        step: int,
        result: Mapping[str, Any],
        wall_time_s: float,
        steps_per_second: float | None = None,
    ) -> None:
        """Record the evaluation at ``step`` and the metrics' means since the last one, and
        write the run's records so far; the ``"eval"`` event says the step, the mean
        return, the run's wall time and (given) its training speed."""
        evaluation = {"step": step, **result, "wall_time_s": wall_time_s}
        self.evaluations.append(evaluation)
        sums, counts = self._metric_sums, self._metric_counts
        metrics = None
        if counts:
            metrics = {"step": step, **{k: sums[k] / counts[k] for k in sums}}
            self.metric_rows.append(metrics)
            sums.clear()
            counts.clear()
        self.run_dir.write_csv(records.EVALUATIONS, records.EVALUATION_COLUMNS, self.evaluations)
        self.run_dir.write_csv(records.EPISODES, records.EPISODE_COLUMNS, self.episodes)
        if self.metric_rows:
            names = sorted({k for row in self.metric_rows for k in row} - {"step"})
            self.run_dir.write_csv(records.METRICS, ["step", *names], self.metric_rows)
        payload = {"step": step, "return_mean": result["return_mean"], "wall_time_s": wall_time_s}
        if steps_per_second is not None:
            payload["sps"] = steps_per_second
        # What the files gained, for the loggers.
        payload["evaluation"] = dict(evaluation)
        payload["metrics"] = None if metrics is None else dict(metrics)
        payload["episodes"] = self.episodes[self._episodes_sent :]
        self._episodes_sent = len(self.episodes)
        self.notify("eval", self.spec.run_id, payload)

    def complete(
        self,
        weights: Mapping[str, Any],
        *,
        env_steps: int,
        wall_time_s: float,
        train_time_s: float,
        eval_time_s: float,
        lanes: int,
    ) -> RunOutcome:
        """Save the weights, then the status that makes the run complete (written last)."""
        self.run_dir.save_weights(weights)
        final = self.evaluations[-1]
        record = self.run_dir.write_status(
            records.COMPLETE,
            env_steps=env_steps,
            wall_time_s=round(wall_time_s, 3),
            train_time_s=round(train_time_s, 3),
            eval_time_s=round(eval_time_s, 3),
            steps_per_second=round(env_steps / train_time_s, 1),
            lanes=lanes,
            final_return_mean=final["return_mean"],
            final_return_std=final["return_std"],
            episodes=len(self.episodes),
            **self.resume_fields(),
        )
        self.outcome = RunOutcome(
            self.spec.run_id,
            records.COMPLETE,
            final_return=final["return_mean"],
            wall_time_s=wall_time_s,
            steps_per_second=env_steps / train_time_s,
        )
        payload = {
            "status": records.COMPLETE,
            "final_return": final["return_mean"],
            "record": record,
        }
        self.notify("end", self.spec.run_id, payload)
        return self.outcome

    def fail(self, message: str, trace: str = "", started: float = 0.0) -> RunOutcome:
        """Record the run as failed with ``message`` (one line) and ``trace`` (the
        traceback, for ``error.txt``); ``started`` is when training started (0: it did
        not)."""
        wall = time.perf_counter() - started if started else 0.0
        if trace:
            self.run_dir.write_text(records.ERROR, trace)
        record = self.run_dir.write_status(
            records.FAILED, error=message, wall_time_s=round(wall, 3)
        )
        payload = {"status": records.FAILED, "error": message, "record": record}
        self.notify("end", self.spec.run_id, payload)
        self.outcome = RunOutcome(self.spec.run_id, records.FAILED, wall_time_s=wall, error=message)
        return self.outcome

    def skip(self, reason: str) -> RunOutcome:
        """Record that the run cannot start here (e.g. no CUDA), and why."""
        record = self.run_dir.write_status(records.SKIPPED, reason=reason)
        payload = {"status": records.SKIPPED, "error": reason, "record": record}
        self.notify("end", self.spec.run_id, payload)
        self.outcome = RunOutcome(self.spec.run_id, records.SKIPPED, error=reason)
        return self.outcome


def _diverged_trace(message: str) -> str:
    """A traceback of :class:`DivergedError` raised here (a lane's divergence stops only
    that lane, so it is recorded, not raised through the loop)."""
    try:
        raise DivergedError(message)
    except DivergedError:
        return traceback.format_exc()


class Evaluator:
    """The greedy evaluation of every lane (protocol: :mod:`rlbench.evaluation`), recorded
    in the live lanes, and the time spent on it (which is not training time)."""

    def __init__(
        self,
        agent: LaneAgent | OneLane,
        envs: Sequence[gym.Env],
        base_seeds: Sequence[int],
        spec: RunSpec,
        started: float,
    ) -> None:
        self.agent, self.envs, self.base_seeds = agent, envs, base_seeds
        self.spec, self.started = spec, started
        self.seconds = 0.0

    def __call__(self, step: int, lanes: Sequence[LaneRecord]) -> None:
        t0 = time.perf_counter()
        results = evaluate_lanes(
            self.agent,
            self.envs,
            episodes=self.spec.eval_episodes,
            base_seeds=self.base_seeds,
            device=torch.device(self.spec.device),
            max_episode_steps=self.spec.eval_max_episode_steps,
        )
        self.seconds += time.perf_counter() - t0
        wall = round(time.perf_counter() - self.started, 3)
        # Training speed, as the "step" events measure it: evaluation time left out.
        sps = step / max(wall - self.seconds, 1e-9) if step else None
        for lane, result in zip(lanes, results, strict=True):
            if lane.live:
                lane.add_evaluation(step, result, wall, sps)
