"""Runs: build the environments and the agent, train for the budget, evaluate, record.

Every agent is measured by this one loop: the same seeding, the same evaluation protocol
and the same records, whatever plugin it comes from. The loop trains *lanes*: the runs of
one configuration that differ only in their seed, as one :class:`~rlbench.agent.LaneAgent`
(a single run is one lane; a plain :class:`~rlbench.agent.Agent` is wrapped as one lane),
each lane with its own environments, evaluation environment and records.

The loop (:func:`_train`) acts, steps every lane's environments once
(:class:`~rlbench.stepping.LaneEnvs`, where the agent's action becomes what the environment
receives), hands the agent the :class:`~rlbench.agent.Transition`, and gives each lane's
:class:`LaneRecord` its finished episodes and metrics; every ``eval_interval`` steps it
evaluates all lanes at once. A :class:`LaneRecord` writes its run's files and status: a lane
whose metric is not finite is recorded as diverged and stops being recorded, the others go on.

Seeding. For each lane, one ``numpy.random.SeedSequence(seed)`` is split into independent
streams: the agent's generator, the training environments' reset seeds, and the evaluation
environment's; the lane's networks are initialised from ``torch.manual_seed(seed)``.
Python's ``random``, numpy's global generator and torch's are seeded with the first lane's
seed too. The same seed, config and device (and torch thread count) give the same
evaluation curve, whichever group the run trains in.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlbench import checkpoint, provenance, records
from rlbench.agent import Agent, AgentConfig, AgentContext, LaneAgent, OneLane, Transition
from rlbench.allocator import keep_freed_memory
from rlbench.checkpoint import CheckpointPolicy
from rlbench.devices import unavailable_reason
from rlbench.evaluation import evaluate_lanes
from rlbench.plugins import Catalogue
from rlbench.runspec import RunSpec
from rlbench.stepping import Episode, LaneEnvs

#: ``callback(event, run_id, payload)``; events: "start", "step", "eval", "end".
ProgressCallback = Callable[[str, str, Mapping[str, Any]], None]

PROGRESS_EVERY_S = 0.5


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


def seed_streams(seed: int, num_envs: int) -> tuple[np.random.Generator, list[int], int]:
    """The agent's generator, one first-reset seed per training environment, and the
    evaluation environment's base seed: independent streams derived from ``seed``."""
    agent_ss, train_ss, eval_ss = np.random.SeedSequence(seed).spawn(3)
    train_seeds = [int(s) for s in train_ss.generate_state(num_envs)]
    eval_base = int(eval_ss.generate_state(1)[0])
    return np.random.default_rng(agent_ss), train_seeds, eval_base


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_tensor(obs: Any, device: torch.device) -> torch.Tensor:
    """Observations as a float32 tensor on ``device``. A float32 numpy array becomes a CPU
    tensor sharing its memory (``torch.from_numpy``: about a microsecond, a third of
    ``torch.as_tensor``'s cost), so the harness hands over arrays it no longer writes to."""
    if isinstance(obs, np.ndarray) and obs.dtype == np.float32 and obs.flags.writeable:
        return to_device(obs, device)
    return torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=device)


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A writable numpy array as a tensor on ``device`` (sharing its memory on the CPU)."""
    tensor = torch.from_numpy(array)
    return tensor if device.type == "cpu" else tensor.to(device)


def lane_key(spec: RunSpec) -> str:
    """What runs must share to be lanes of one agent: everything but the seed."""
    identity = spec.identity()
    identity.pop("seed")
    return json.dumps(identity, sort_keys=True)


def supports_lanes(spec: RunSpec, catalogue: Catalogue) -> bool:
    """Whether ``spec``'s agent trains several seeds at once (a :class:`LaneAgent`)."""
    if spec.unavailable or spec.agent not in catalogue.agents:
        return False
    return issubclass(catalogue.agent(spec.agent).agent, LaneAgent)


def build_agent(
    specs: Sequence[RunSpec],
    catalogue: Catalogue,
    config: AgentConfig,
    env: gym.Env,
    rngs: Sequence[np.random.Generator],
) -> Agent:
    """The agent of ``specs`` (one run, or the lanes of a :class:`LaneAgent`), with its
    network factories and context, ready to train."""
    spec = specs[0]
    agent_cls = catalogue.agent(spec.agent).agent
    roles: tuple[str, ...] = tuple(getattr(agent_cls, "network_roles", ()))
    device = torch.device(spec.device)
    # Each role's network plugin and options (the suite validated them), built on first use.
    builders: dict[str | None, Callable[[int, int], torch.nn.Module]] = {}

    def builder(role: str | None) -> Callable[[int, int], torch.nn.Module]:
        if role is not None and role not in roles:
            raise ValueError(
                f"{spec.agent} asked for a {role!r} network, but its network_roles are "
                f"{roles!r}; declare the role there (or ask with role=None)"
            )
        if role not in builders:
            net_options = dict(spec.networks.get(role, spec.network) if role else spec.network)
            net_spec = catalogue.network(net_options.pop("name"))
            net_config = net_spec.config_model.model_validate(net_options)
            builders[role] = lambda i, o: net_spec.build(i, o, net_config).to(device)
        return builders[role]

    def make_network(
        in_features: int, out_features: int, role: str | None = None
    ) -> torch.nn.Module:
        return builder(role)(in_features, out_features)

    # Each lane's torch random stream, as seed_everything(seed) leaves it for a run of that
    # seed, continued from one call of make_lane_networks to the next.
    lane_torch_states: list[torch.Tensor | None] = [None] * len(specs)

    def make_lane_networks(
        in_features: int, out_features: int, role: str | None = None
    ) -> list[torch.nn.Module]:
        build = builder(role)
        outside = torch.random.get_rng_state()
        networks = []
        try:
            for k, lane in enumerate(specs):
                state = lane_torch_states[k]
                if state is None:
                    torch.manual_seed(lane.seed)
                else:
                    torch.random.set_rng_state(state)
                networks.append(build(in_features, out_features))
                lane_torch_states[k] = torch.random.get_rng_state()
        finally:
            torch.random.set_rng_state(outside)
        return networks

    context = AgentContext(
        observation_space=env.observation_space,
        action_space=env.action_space,
        num_envs=config.num_envs,
        device=device,
        seed=spec.seed,
        rng=rngs[0],
        total_steps=spec.steps,
        make_network=make_network,
        lanes=len(specs),
        lane_seeds=tuple(s.seed for s in specs),
        lane_rngs=tuple(rngs),
        make_lane_networks=make_lane_networks,
    )
    return agent_cls(config, context)


def execute_run(
    spec: RunSpec,
    suite_dir: Path,
    catalogue: Catalogue,
    progress: ProgressCallback | None = None,
    checkpoints: CheckpointPolicy = checkpoint.DEFAULT,
) -> RunOutcome:
    """Run ``spec`` to completion and record it under ``suite_dir``. Failures are recorded
    (status ``failed`` with the error) and returned, never raised; ``KeyboardInterrupt``
    propagates and leaves the run ``running`` (incomplete) on disk."""
    return execute_lanes([spec], suite_dir, catalogue, progress, checkpoints)[0]


def execute_lanes(
    specs: Sequence[RunSpec],
    suite_dir: Path,
    catalogue: Catalogue,
    progress: ProgressCallback | None = None,
    checkpoints: CheckpointPolicy = checkpoint.DEFAULT,
    sink: records.FileSink | None = None,
    placement: Mapping[str, Any] | None = None,
) -> list[RunOutcome]:
    """Run ``specs``, runs that differ only in their seed, as the lanes of one
    :class:`LaneAgent` (one batched computation), and record each under ``suite_dir`` as if
    it had run alone: its own run directory, curve, episodes, weights and status. A single
    run (any agent) is a group of one. Failures are recorded and returned per run, never
    raised; ``KeyboardInterrupt`` propagates and leaves the runs ``running`` on disk.

    The group checkpoints as ``checkpoints`` says (:mod:`rlbench.checkpoint`) and, when the
    first run's folder holds a checkpoint of exactly these runs, resumes from it. ``sink``
    is told of every file written (:class:`records.RunDir`); ``placement`` (where the group
    trains, e.g. its Ray node) goes into each run's ``provenance.json``."""
    specs = list(specs)
    if not specs:
        return []
    if len(specs) > 1:
        if len({lane_key(s) for s in specs}) > 1:
            raise ValueError("execute_lanes: the runs must differ only in their seed")
        if not supports_lanes(specs[0], catalogue):
            raise ValueError(f"execute_lanes: agent {specs[0].agent!r} does not train in lanes")
    notify = progress or (lambda *_: None)
    lanes = [LaneRecord(s, records.RunDir(suite_dir, s.run_id, sink), notify) for s in specs]
    # A checkpoint that does not fit (another group, other versions, damaged): start over.
    saved = (
        checkpoint.load(lanes[0].run_dir, [s.run_id for s in specs])[0]
        if checkpoints.resume
        else None
    )
    for lane in lanes:
        lane.start(resuming=saved is not None)

    spec = specs[0]
    skip = unavailable_reason(spec.device)
    if skip is not None:
        return [lane.skip(skip) for lane in lanes]
    if spec.unavailable:
        return [lane.fail(lane.spec.unavailable) for lane in lanes]

    # With the group a run trained in: on the CPU it changes nothing (rlbench.lanes), but a
    # backend whose batched kernels depend on the batch size would need it to reproduce.
    versions = {
        **provenance.collect(spec.device, catalogue.plugin_versions()),
        "lanes": len(specs),
        "lane_seeds": [s.seed for s in specs],
        **(placement or {}),
    }
    started = time.perf_counter()
    if saved is not None:
        started -= saved["elapsed_s"]
        for lane, progress_state in zip(lanes, saved["lanes"], strict=True):
            lane.resume(progress_state, saved)
    for lane in lanes:
        lane.run_dir.write_json(records.PROVENANCE, versions)
        if lane.live:
            lane.run_dir.write_status(records.RUNNING, **lane.resume_fields())
    try:
        return _train(lanes, catalogue, started, checkpoints, saved)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        trace = traceback.format_exc()
        # A lane that diverged before keeps its own error.
        return [
            lane.outcome if lane.diverged else lane.fail(message, trace, started) for lane in lanes
        ]


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
        self.run_dir.write_json(records.CONFIG, self.spec.to_json())
        self.notify("start", self.spec.run_id, {"steps": self.spec.steps})

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
        if not self.live:
            return
        step, exact = int(saved["step"]), saved["envs"] is not None
        note = "" if exact else (
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

    def add_evaluation(self, step: int, result: Mapping[str, Any], wall_time_s: float) -> None:
        """Record the evaluation at ``step`` and the metrics' means since the last one, and
        write the run's records so far."""
        self.evaluations.append({"step": step, **result, "wall_time_s": wall_time_s})
        sums, counts = self._metric_sums, self._metric_counts
        if counts:
            self.metric_rows.append({"step": step, **{k: sums[k] / counts[k] for k in sums}})
            sums.clear()
            counts.clear()
        self.run_dir.write_csv(records.EVALUATIONS, records.EVALUATION_COLUMNS, self.evaluations)
        self.run_dir.write_csv(records.EPISODES, records.EPISODE_COLUMNS, self.episodes)
        if self.metric_rows:
            names = sorted({k for row in self.metric_rows for k in row} - {"step"})
            self.run_dir.write_csv(records.METRICS, ["step", *names], self.metric_rows)
        payload = {"step": step, "return_mean": result["return_mean"]}
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
        self.run_dir.write_status(
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
        payload = {"status": records.COMPLETE, "final_return": final["return_mean"]}
        self.notify("end", self.spec.run_id, payload)
        return self.outcome

    def fail(self, message: str, trace: str = "", started: float = 0.0) -> RunOutcome:
        """Record the run as failed with ``message`` (one line) and ``trace`` (the
        traceback, for ``error.txt``); ``started`` is when training started (0: it did
        not)."""
        wall = time.perf_counter() - started if started else 0.0
        if trace:
            self.run_dir.write_text(records.ERROR, trace)
        self.run_dir.write_status(records.FAILED, error=message, wall_time_s=round(wall, 3))
        self.notify("end", self.spec.run_id, {"status": records.FAILED, "error": message})
        self.outcome = RunOutcome(self.spec.run_id, records.FAILED, wall_time_s=wall, error=message)
        return self.outcome

    def skip(self, reason: str) -> RunOutcome:
        """Record that the run cannot start here (e.g. no CUDA), and why."""
        self.run_dir.write_status(records.SKIPPED, reason=reason)
        self.notify("end", self.spec.run_id, {"status": records.SKIPPED, "error": reason})
        self.outcome = RunOutcome(self.spec.run_id, records.SKIPPED, error=reason)
        return self.outcome


def _diverged_trace(message: str) -> str:
    """A traceback of :class:`DivergedError` raised here (a lane's divergence stops only
    that lane, so it is recorded, not raised through the loop)."""
    try:
        raise DivergedError(message)
    except DivergedError:
        return traceback.format_exc()


class _Evaluator:
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
        for lane, result in zip(lanes, results, strict=True):
            if lane.live:
                lane.add_evaluation(step, result, wall)


def _train(
    lanes: list[LaneRecord],
    catalogue: Catalogue,
    started: float,
    checkpoints: CheckpointPolicy,
    saved: dict[str, Any] | None,
) -> list[RunOutcome]:
    """Train the lanes' runs for their budget (from ``saved``, a checkpoint, when given),
    evaluating every ``eval_interval`` steps, and record each lane; a lane that diverges
    stops being recorded, the others go on."""
    specs = [lane.spec for lane in lanes]
    spec = specs[0]
    config = catalogue.agent(spec.agent).config_model.model_validate(spec.agent_config)
    keep_freed_memory()
    seed_everything(spec.seed)
    streams = [seed_streams(s.seed, config.num_envs) for s in specs]
    env_spec = catalogue.environment(spec.env)
    envs = LaneEnvs(
        [[env_spec.create(**spec.env_kwargs) for _ in range(config.num_envs)] for _ in specs]
    )
    eval_envs = [env_spec.create(**spec.env_kwargs) for _ in specs]
    device = torch.device(spec.device)
    try:
        built = build_agent(specs, catalogue, config, envs.first, [s[0] for s in streams])
        agent = built if isinstance(built, LaneAgent) else OneLane(built)
        evaluate = _Evaluator(agent, eval_envs, [s[2] for s in streams], spec, started)
        # Whether the environments can be copied does not change during a run.
        envs_problem = envs.copy_problem() if checkpoints.every else None
        last_note = time.perf_counter()
        if saved is None:
            obs_t = to_tensor(envs.reset([s[1] for s in streams]), device)
            step, next_eval, evaluations = 0, spec.eval_interval, 0
            evaluate(0, lanes)
        else:
            step, next_eval, evaluations = _resume(saved, agent, envs, lanes, evaluate)
            obs_t = to_tensor(envs.obs, device)
        while step < spec.steps and any(lane.live for lane in lanes):
            action = agent.act(obs_t)
            stepped = envs.step(action.detach().cpu().numpy(), step)
            for k, episode in stepped.episodes:
                lanes[k].episodes.append(episode)
            step_obs_t = to_tensor(stepped.obs, device)
            transition = Transition(
                obs=obs_t,
                action=action,
                reward=to_device(stepped.reward, device),
                next_obs=step_obs_t,
                terminated=to_device(stepped.terminated, device),
                truncated=to_device(stepped.truncated, device),
            )
            metrics = agent.observe(transition)
            # Where an episode ended, the next act() sees the reset observation instead.
            reset = stepped.next_obs is not stepped.obs
            obs_t = to_tensor(stepped.next_obs, device) if reset else step_obs_t
            step += envs.num_envs
            for key, values in metrics.items():
                for k, value in enumerate(values):
                    lanes[k].add_metric(key, value, step, started)
            if step >= next_eval or step >= spec.steps:
                evaluate(step, lanes)
                evaluations += 1
                while next_eval <= step:
                    next_eval += spec.eval_interval
                every = checkpoints.every
                if every and evaluations % every == 0 and step < spec.steps:
                    problem = _checkpoint(
                        lanes, agent, envs, envs_problem, step, next_eval, evaluations, evaluate
                    )
                    if problem:  # the agent's state cannot be saved: train on without
                        checkpoints = dataclasses.replace(checkpoints, every=0)
                        for lane in lanes:
                            lane.checkpoint_note = problem
            now = time.perf_counter()
            if now - last_note >= PROGRESS_EVERY_S:
                last_note = now
                _note_speed(lanes, step, step / max(now - started - evaluate.seconds, 1e-9))

        wall = time.perf_counter() - started
        train_time = max(wall - evaluate.seconds, 1e-9)
        for k, lane in enumerate(lanes):
            if lane.live:
                lane.complete(
                    agent.lane_state_dict(k),
                    env_steps=step,
                    wall_time_s=wall,
                    train_time_s=train_time,
                    eval_time_s=evaluate.seconds,
                    lanes=len(lanes),
                )
        if not checkpoints.keep:
            checkpoint.remove(lanes[0].run_dir)
        return [lane.outcome for lane in lanes if lane.outcome is not None]  # all by now
    finally:
        envs.close()
        for env in eval_envs:
            env.close()


def _checkpoint(
    lanes: Sequence[LaneRecord],
    agent: LaneAgent | OneLane,
    envs: LaneEnvs,
    envs_problem: str | None,
    step: int,
    next_eval: int,
    evaluations: int,
    evaluate: _Evaluator,
) -> str:
    """Save the group's training state after the evaluation at ``step``
    (:mod:`rlbench.checkpoint`), the environments unless ``envs_problem`` says why they
    cannot be copied; why the state cannot be saved, if so (``""``: saved)."""
    try:
        agent_state = agent.checkpoint_state()
    except Exception as exc:  # a plugin agent's state the default cannot copy
        return (
            f"no mid-run checkpoints: the agent's state cannot be saved "
            f"({' '.join(f'{type(exc).__name__}: {exc}'.split())})"
        )
    checkpoint.save(
        lanes[0].run_dir,
        {
            "run_ids": [lane.spec.run_id for lane in lanes],
            "step": step,
            "next_eval": next_eval,
            "evaluations": evaluations,
            "elapsed_s": time.perf_counter() - evaluate.started,
            "eval_s": evaluate.seconds,
            "random": checkpoint.global_random_state(),
            "agent": agent_state,
            "envs": None if envs_problem else envs.state(),
            "envs_problem": envs_problem,
            "lanes": [lane.progress_state() for lane in lanes],
        },
    )
    return ""


def _resume(
    saved: Mapping[str, Any],
    agent: LaneAgent | OneLane,
    envs: LaneEnvs,
    lanes: Sequence[LaneRecord],
    evaluate: _Evaluator,
) -> tuple[int, int, int]:
    """Restore a checkpoint into the freshly built ``agent`` and ``envs`` (the lanes' records
    and resumes were taken up before: :meth:`LaneRecord.resume`); the step, next evaluation
    step and evaluations done."""
    step = int(saved["step"])
    agent.load_checkpoint_state(saved["agent"])
    if saved["envs"] is not None:
        envs.load_state(saved["envs"])
    else:  # LaneRecord.resume recorded this resume as not exact
        num_envs = envs.num_envs
        envs.reset([checkpoint.fresh_reset_seeds(lane.spec.seed, step, num_envs) for lane in lanes])
    evaluate.seconds = float(saved["eval_s"])
    checkpoint.set_global_random_state(saved["random"])
    return step, int(saved["next_eval"]), int(saved["evaluations"])


def _note_speed(lanes: Sequence[LaneRecord], step: int, sps: float) -> None:
    for lane in lanes:
        if lane.live:
            lane.notify("step", lane.spec.run_id, {"step": step, "sps": sps})
