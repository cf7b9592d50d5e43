"""Runs: build the environments and the agent, train for the budget, evaluate, record.

Every agent is measured by this one loop: the same seeding, the same evaluation protocol
and the same records, whatever plugin it comes from. The loop trains *lanes*: the runs of
one configuration that differ only in their seed, as one :class:`~rlbench.agent.LaneAgent`
(a single run is one lane; a plain :class:`~rlbench.agent.Agent` is wrapped as one lane),
each lane with its own environments, evaluation environment and records.

Seeding. For each lane, one ``numpy.random.SeedSequence(seed)`` is split into independent
streams: the agent's generator, the training environments' reset seeds, and the evaluation
environment's; the lane's networks are initialised from ``torch.manual_seed(seed)``.
Python's ``random``, numpy's global generator and torch's are seeded with the first lane's
seed too. The same seed, config and device (and torch thread count) give the same
evaluation curve, whichever group the run trains in.
"""

from __future__ import annotations

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

from rlbench import provenance, records
from rlbench.agent import Agent, AgentConfig, AgentContext, LaneAgent, OneLane, Transition
from rlbench.devices import unavailable_reason
from rlbench.evaluation import evaluate_lanes
from rlbench.plugins import Catalogue
from rlbench.runspec import RunSpec

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
    net_options = dict(spec.network)
    net_spec = catalogue.network(net_options.pop("name"))
    net_config = net_spec.config_model.model_validate(net_options)
    device = torch.device(spec.device)

    def make_network(in_features: int, out_features: int) -> torch.nn.Module:
        return net_spec.build(in_features, out_features, net_config).to(device)

    # Each lane's torch random stream, as seed_everything(seed) leaves it for a run of that
    # seed, continued from one call of make_lane_networks to the next.
    lane_torch_states: list[torch.Tensor | None] = [None] * len(specs)

    def make_lane_networks(in_features: int, out_features: int) -> list[torch.nn.Module]:
        outside = torch.random.get_rng_state()
        networks = []
        try:
            for k, lane in enumerate(specs):
                state = lane_torch_states[k]
                if state is None:
                    torch.manual_seed(lane.seed)
                else:
                    torch.random.set_rng_state(state)
                networks.append(make_network(in_features, out_features))
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
    return catalogue.agent(spec.agent).agent(config, context)


def execute_run(
    spec: RunSpec,
    suite_dir: Path,
    catalogue: Catalogue,
    progress: ProgressCallback | None = None,
) -> RunOutcome:
    """Run ``spec`` to completion and record it under ``suite_dir``. Failures are recorded
    (status ``failed`` with the error) and returned, never raised; ``KeyboardInterrupt``
    propagates and leaves the run ``running`` (incomplete) on disk."""
    return execute_lanes([spec], suite_dir, catalogue, progress)[0]


def execute_lanes(
    specs: Sequence[RunSpec],
    suite_dir: Path,
    catalogue: Catalogue,
    progress: ProgressCallback | None = None,
) -> list[RunOutcome]:
    """Run ``specs``, runs that differ only in their seed, as the lanes of one
    :class:`LaneAgent` (one batched computation), and record each under ``suite_dir`` as if
    it had run alone: its own run directory, curve, episodes, weights and status. A single
    run (any agent) is a group of one. Failures are recorded and returned per run, never
    raised; ``KeyboardInterrupt`` propagates and leaves the runs ``running`` on disk."""
    specs = list(specs)
    if not specs:
        return []
    if len(specs) > 1:
        if len({lane_key(s) for s in specs}) > 1:
            raise ValueError("execute_lanes: the runs must differ only in their seed")
        if not supports_lanes(specs[0], catalogue):
            raise ValueError(f"execute_lanes: agent {specs[0].agent!r} does not train in lanes")
    run_dirs = [records.RunDir(suite_dir, s.run_id) for s in specs]
    notify = progress or (lambda *_: None)
    for spec, run_dir in zip(specs, run_dirs, strict=True):
        run_dir.clear()
        run_dir.write_json(records.CONFIG, spec.to_json())
        notify("start", spec.run_id, {"steps": spec.steps})

    spec = specs[0]
    skip = unavailable_reason(spec.device)
    if skip is not None:
        outcomes = []
        for s, run_dir in zip(specs, run_dirs, strict=True):
            run_dir.write_status(records.SKIPPED, reason=skip)
            notify("end", s.run_id, {"status": records.SKIPPED, "error": skip})
            outcomes.append(RunOutcome(s.run_id, records.SKIPPED, error=skip))
        return outcomes
    if spec.unavailable:
        return [
            _fail(run_dir, s, s.unavailable, "", 0.0, notify)
            for s, run_dir in zip(specs, run_dirs, strict=True)
        ]

    versions = provenance.collect(spec.device, catalogue.plugin_versions())
    for run_dir in run_dirs:
        run_dir.write_json(records.PROVENANCE, {**versions, "lanes": len(specs)})
        run_dir.write_status(records.RUNNING)
    started = time.perf_counter()
    try:
        return _train(specs, run_dirs, catalogue, notify, started)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        trace = traceback.format_exc()
        outcomes = []
        for s, run_dir in zip(specs, run_dirs, strict=True):
            earlier = run_dir.status() or {}
            if earlier.get("status") == records.FAILED:  # a lane that diverged before: kept
                outcomes.append(RunOutcome(s.run_id, records.FAILED, error=earlier["error"]))
            else:
                outcomes.append(_fail(run_dir, s, message, trace, started, notify))
        return outcomes


def _fail(
    run_dir: records.RunDir,
    spec: RunSpec,
    message: str,
    trace: str,
    started: float,
    notify: ProgressCallback,
) -> RunOutcome:
    wall = time.perf_counter() - started if started else 0.0
    if trace:
        records.atomic_write_text(run_dir.file(records.ERROR), trace)
    run_dir.write_status(records.FAILED, error=message, wall_time_s=round(wall, 3))
    notify("end", spec.run_id, {"status": records.FAILED, "error": message})
    return RunOutcome(spec.run_id, records.FAILED, wall_time_s=wall, error=message)


def _diverged_trace(message: str) -> str:
    """A traceback of :class:`DivergedError` raised here (a lane's divergence stops only
    that lane, so it is recorded, not raised through the loop)."""
    try:
        raise DivergedError(message)
    except DivergedError:
        return traceback.format_exc()


def _train(
    specs: list[RunSpec],
    run_dirs: list[records.RunDir],
    catalogue: Catalogue,
    notify: ProgressCallback,
    started: float,
) -> list[RunOutcome]:
    spec = specs[0]
    lanes = len(specs)
    agent_config = catalogue.agent(spec.agent).config_model.model_validate(spec.agent_config)
    num_envs = agent_config.num_envs
    seed_everything(spec.seed)
    streams = [seed_streams(s.seed, num_envs) for s in specs]
    env_spec = catalogue.environment(spec.env)
    envs = [[env_spec.create(**spec.env_kwargs) for _ in range(num_envs)] for _ in specs]
    eval_envs = [env_spec.create(**spec.env_kwargs) for _ in specs]
    device = torch.device(spec.device)
    try:
        built = build_agent(specs, catalogue, agent_config, envs[0][0], [s[0] for s in streams])
        agent: Any = built if isinstance(built, LaneAgent) else OneLane(built)
        discrete = isinstance(envs[0][0].action_space, gym.spaces.Discrete)

        obs = np.stack(
            [
                np.stack([env.reset(seed=s)[0] for env, s in zip(lane_envs, st[1], strict=True)])
                for lane_envs, st in zip(envs, streams, strict=True)
            ]
        )
        ep_return = np.zeros((lanes, num_envs))
        ep_length = np.zeros((lanes, num_envs), dtype=np.int64)
        episodes: list[list[dict[str, Any]]] = [[] for _ in specs]
        evaluations: list[list[dict[str, Any]]] = [[] for _ in specs]
        metric_rows: list[list[dict[str, Any]]] = [[] for _ in specs]
        metric_sums: list[dict[str, float]] = [{} for _ in specs]
        metric_counts: list[dict[str, int]] = [{} for _ in specs]
        outcomes: list[RunOutcome | None] = [None] * lanes  # set when a lane fails
        eval_time = 0.0
        last_note = time.perf_counter()

        def live() -> list[int]:
            return [k for k in range(lanes) if outcomes[k] is None]

        def run_evaluation(step: int) -> None:
            nonlocal eval_time
            t0 = time.perf_counter()
            results = evaluate_lanes(
                agent,
                eval_envs,
                episodes=spec.eval_episodes,
                base_seeds=[st[2] for st in streams],
                device=device,
                max_episode_steps=spec.eval_max_episode_steps,
            )
            eval_time += time.perf_counter() - t0
            wall = round(time.perf_counter() - started, 3)
            for k in live():
                evaluations[k].append({"step": step, **results[k], "wall_time_s": wall})
                sums, counts = metric_sums[k], metric_counts[k]
                if counts:
                    metric_rows[k].append(
                        {"step": step, **{key: sums[key] / counts[key] for key in sums}}
                    )
                    sums.clear()
                    counts.clear()
                _write_progress(run_dirs[k], evaluations[k], episodes[k], metric_rows[k])
                payload = {"step": step, "return_mean": results[k]["return_mean"]}
                notify("eval", specs[k].run_id, payload)

        step = 0
        run_evaluation(0)
        next_eval = spec.eval_interval
        obs_t = to_tensor(obs, device)
        while step < spec.steps and live():
            action = agent.act(obs_t)
            actions = action.detach().cpu().numpy()
            # The step's observations; where an episode ended, the next act() sees the reset
            # observation instead, so only then does next_obs differ from it (and get its own
            # array and tensor).
            step_obs = np.empty_like(obs)
            rewards = np.empty((lanes, num_envs), dtype=np.float32)
            terminated = np.zeros((lanes, num_envs), dtype=bool)
            truncated = np.zeros((lanes, num_envs), dtype=bool)
            resets: list[tuple[int, int, Any]] = []
            for k, lane_envs in enumerate(envs):
                for i, env in enumerate(lane_envs):
                    a = actions[k, i].item() if discrete else actions[k, i]
                    o, r, term, trunc, _ = env.step(a)
                    step_obs[k, i] = o
                    rewards[k, i] = r
                    terminated[k, i], truncated[k, i] = term, trunc
                    ep_return[k, i] += r
                    ep_length[k, i] += 1
                    if term or trunc:
                        episodes[k].append(
                            {
                                "step": step + i + 1,
                                "return": float(ep_return[k, i]),
                                "length": int(ep_length[k, i]),
                                "terminated": bool(term),
                            }
                        )
                        ep_return[k, i], ep_length[k, i] = 0.0, 0
                        resets.append((k, i, env.reset()[0]))
            step_obs_t = to_tensor(step_obs, device)
            if resets:
                next_obs = step_obs.copy()
                for k, i, o in resets:
                    next_obs[k, i] = o
                next_obs_t = to_tensor(next_obs, device)
            else:
                next_obs, next_obs_t = step_obs, step_obs_t
            transition = Transition(
                obs=obs_t,
                action=action,
                reward=to_device(rewards, device),
                next_obs=step_obs_t,
                terminated=to_device(terminated, device),
                truncated=to_device(truncated, device),
            )
            metrics = agent.observe(transition)
            for key, values in metrics.items():
                for k, value in enumerate(values):
                    if outcomes[k] is not None:
                        continue
                    value = float(value)
                    if not math.isfinite(value):
                        message = f"training diverged at step {step + num_envs}: {key} = {value}"
                        outcomes[k] = _fail(
                            run_dirs[k],
                            specs[k],
                            f"{DivergedError.__name__}: {message}",
                            _diverged_trace(message),
                            started,
                            notify,
                        )
                        continue
                    metric_sums[k][key] = metric_sums[k].get(key, 0.0) + value
                    metric_counts[k][key] = metric_counts[k].get(key, 0) + 1
            obs, obs_t = next_obs, next_obs_t
            step += num_envs

            if step >= next_eval or step >= spec.steps:
                run_evaluation(step)
                while next_eval <= step:
                    next_eval += spec.eval_interval
            now = time.perf_counter()
            if now - last_note >= PROGRESS_EVERY_S:
                last_note = now
                sps = step / max(now - started - eval_time, 1e-9)
                for k in live():
                    notify("step", specs[k].run_id, {"step": step, "sps": sps})

        wall = time.perf_counter() - started
        train_time = max(wall - eval_time, 1e-9)
        for k in live():
            run_dirs[k].save_weights(agent.lane_state_dict(k))
            final = evaluations[k][-1]
            run_dirs[k].write_status(
                records.COMPLETE,
                env_steps=step,
                wall_time_s=round(wall, 3),
                train_time_s=round(train_time, 3),
                eval_time_s=round(eval_time, 3),
                steps_per_second=round(step / train_time, 1),
                lanes=lanes,
                final_return_mean=final["return_mean"],
                final_return_std=final["return_std"],
                episodes=len(episodes[k]),
            )
            outcomes[k] = RunOutcome(
                specs[k].run_id,
                records.COMPLETE,
                final_return=final["return_mean"],
                wall_time_s=wall,
                steps_per_second=step / train_time,
            )
            notify(
                "end",
                specs[k].run_id,
                {"status": records.COMPLETE, "final_return": final["return_mean"]},
            )
        return [o for o in outcomes if o is not None]  # every lane has one by now
    finally:
        for env in [*(e for lane_envs in envs for e in lane_envs), *eval_envs]:
            env.close()


EVALUATION_COLUMNS = [
    "step",
    "return_mean",
    "return_std",
    "return_min",
    "return_max",
    "length_mean",
    "episodes",
    "wall_time_s",
]
EPISODE_COLUMNS = ["step", "return", "length", "terminated"]


def _write_progress(
    run_dir: records.RunDir,
    evaluations: list[dict[str, Any]],
    episodes: list[dict[str, Any]],
    metric_rows: list[dict[str, Any]],
) -> None:
    run_dir.write_csv(records.EVALUATIONS, EVALUATION_COLUMNS, evaluations)
    run_dir.write_csv(records.EPISODES, EPISODE_COLUMNS, episodes)
    if metric_rows:
        columns = ["step", *sorted({k for row in metric_rows for k in row} - {"step"})]
        run_dir.write_csv(records.METRICS, columns, metric_rows)
