"""Runs: train a group of lanes for its budget, evaluating, checkpointing and resuming.

Every agent is measured by this one loop: the same seeding (:mod:`rlbench.seeding`), the
same evaluation protocol (:mod:`rlbench.evaluation`) and the same records
(:mod:`rlbench.recording`), whatever plugin it comes from. The loop trains *lanes*: the runs
of one configuration that differ only in their seed, as one :class:`~rlbench.agent.LaneAgent`
(a single run is one lane; a plain :class:`~rlbench.agent.Agent` is wrapped as one lane),
each lane with its own environments, evaluation environment and records
(:mod:`rlbench.building` builds them).

The loop (:func:`_train`) acts, steps every lane's environments once
(:class:`~rlbench.stepping.LaneEnvs`, where the agent's action becomes what the environment
receives), hands the agent the :class:`~rlbench.agent.Transition`, and gives each lane's
:class:`~rlbench.recording.LaneRecord` its finished episodes and metrics; every
``eval_interval`` steps it evaluates all lanes at once and, as the
:class:`~rlbench.checkpoint.CheckpointPolicy` says, saves a checkpoint of the whole group that
a later :func:`execute_lanes` of the same runs resumes from.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlbench import checkpoint, provenance, records
from rlbench.agent import LaneAgent, OneLane, Transition
from rlbench.allocator import keep_freed_memory
from rlbench.building import build_agent, build_envs, lane_key, supports_lanes
from rlbench.checkpoint import CheckpointPolicy
from rlbench.devices import unavailable_reason
from rlbench.plugins import Catalogue
from rlbench.recording import Evaluator, LaneRecord, ProgressCallback, RunOutcome
from rlbench.runspec import RunSpec
from rlbench.seeding import seed_everything, seed_streams
from rlbench.stepping import EnvStep, LaneEnvs

PROGRESS_EVERY_S = 0.5


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
            lane.notify("provenance", lane.spec.run_id, {"provenance": versions})
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
    envs, eval_envs = build_envs(specs, catalogue, config.num_envs)
    device = torch.device(spec.device)
    try:
        built = build_agent(specs, catalogue, config, envs.first, [s[0] for s in streams])
        agent = built if isinstance(built, LaneAgent) else OneLane(built)
        evaluate = Evaluator(agent, eval_envs, [s[2] for s in streams], spec, started)
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
            transition = _transition(obs_t, action, stepped, device)
            metrics = agent.observe(transition)
            # Where an episode ended, the next act() sees the reset observation instead.
            reset = stepped.next_obs is not stepped.obs
            obs_t = to_tensor(stepped.next_obs, device) if reset else transition.next_obs
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
        _complete(lanes, agent, step, started, evaluate.seconds)
        if not checkpoints.keep:
            checkpoint.remove(lanes[0].run_dir)
        return [lane.outcome for lane in lanes if lane.outcome is not None]  # all by now
    finally:
        envs.close()
        for env in eval_envs:
            env.close()


def _transition(
    obs_t: torch.Tensor, action: torch.Tensor, stepped: EnvStep, device: torch.device
) -> Transition:
    """The agent's view of the step that took ``obs_t`` and ``action`` to ``stepped``."""
    next_obs_t = to_tensor(stepped.obs, device)
    return Transition(
        obs=obs_t,
        action=action,
        reward=to_device(stepped.reward, device),
        next_obs=next_obs_t,
        terminated=to_device(stepped.terminated, device),
        truncated=to_device(stepped.truncated, device),
    )


def _complete(
    lanes: Sequence[LaneRecord],
    agent: LaneAgent | OneLane,
    step: int,
    started: float,
    eval_seconds: float,
) -> None:
    """Record every live lane as complete after ``step`` steps, with its weights."""
    wall = time.perf_counter() - started
    train_time = max(wall - eval_seconds, 1e-9)
    for k, lane in enumerate(lanes):
        if lane.live:
            lane.complete(
                agent.lane_state_dict(k),
                env_steps=step,
                wall_time_s=wall,
                train_time_s=train_time,
                eval_time_s=eval_seconds,
                lanes=len(lanes),
            )


def _checkpoint(
    lanes: Sequence[LaneRecord],
    agent: LaneAgent | OneLane,
    envs: LaneEnvs,
    envs_problem: str | None,
    step: int,
    next_eval: int,
    evaluations: int,
    evaluate: Evaluator,
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
    evaluate: Evaluator,
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
