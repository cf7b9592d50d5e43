"""One run: build the environments and the agent, train for the budget, evaluate, record.

Every agent is measured by this one loop: the same seeding, the same evaluation protocol
and the same records, whatever plugin it comes from.

Seeding. One ``numpy.random.SeedSequence(seed)`` is split into independent streams: the
agent's generator, the training environments' reset seeds, and the evaluation
environment's. Python's ``random``, numpy's global generator and torch's are seeded with
``seed`` too. The same seed, config and device (and torch thread count) give the same
evaluation curve.
"""

from __future__ import annotations

import math
import random
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlbench import provenance, records
from rlbench.agent import Agent, AgentConfig, AgentContext, Transition
from rlbench.devices import unavailable_reason
from rlbench.evaluation import evaluate
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


def build_agent(
    spec: RunSpec,
    catalogue: Catalogue,
    config: AgentConfig,
    env: gym.Env,
    rng: np.random.Generator,
) -> Agent:
    """The run's agent, with its network factory and context, ready to train."""
    net_options = dict(spec.network)
    net_spec = catalogue.network(net_options.pop("name"))
    net_config = net_spec.config_model.model_validate(net_options)
    device = torch.device(spec.device)

    def make_network(in_features: int, out_features: int) -> torch.nn.Module:
        return net_spec.build(in_features, out_features, net_config).to(device)

    context = AgentContext(
        observation_space=env.observation_space,
        action_space=env.action_space,
        num_envs=config.num_envs,
        device=device,
        seed=spec.seed,
        rng=rng,
        total_steps=spec.steps,
        make_network=make_network,
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
    run_dir = records.RunDir(suite_dir, spec.run_id)
    run_dir.clear()
    run_dir.write_json(records.CONFIG, spec.to_json())
    notify = progress or (lambda *_: None)
    notify("start", spec.run_id, {"steps": spec.steps})

    skip = unavailable_reason(spec.device)
    if skip is not None:
        run_dir.write_status(records.SKIPPED, reason=skip)
        notify("end", spec.run_id, {"status": records.SKIPPED, "error": skip})
        return RunOutcome(spec.run_id, records.SKIPPED, error=skip)
    if spec.unavailable:
        return _fail(run_dir, spec, spec.unavailable, "", 0.0, notify)

    run_dir.write_json(
        records.PROVENANCE, provenance.collect(spec.device, catalogue.plugin_versions())
    )
    run_dir.write_status(records.RUNNING)
    started = time.perf_counter()
    try:
        outcome = _train(spec, run_dir, catalogue, notify, started)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        return _fail(run_dir, spec, message, traceback.format_exc(), started, notify)
    notify("end", spec.run_id, {"status": records.COMPLETE, "final_return": outcome.final_return})
    return outcome


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


def _train(
    spec: RunSpec,
    run_dir: records.RunDir,
    catalogue: Catalogue,
    notify: ProgressCallback,
    started: float,
) -> RunOutcome:
    agent_config = catalogue.agent(spec.agent).config_model.model_validate(spec.agent_config)
    num_envs = agent_config.num_envs
    seed_everything(spec.seed)
    agent_rng, train_seeds, eval_base = seed_streams(spec.seed, num_envs)
    env_spec = catalogue.environment(spec.env)
    envs = [env_spec.create(**spec.env_kwargs) for _ in range(num_envs)]
    eval_env = env_spec.create(**spec.env_kwargs)
    device = torch.device(spec.device)
    try:
        agent = build_agent(spec, catalogue, agent_config, envs[0], agent_rng)
        discrete = isinstance(envs[0].action_space, gym.spaces.Discrete)

        obs = np.stack([env.reset(seed=s)[0] for env, s in zip(envs, train_seeds, strict=True)])
        ep_return = np.zeros(num_envs)
        ep_length = np.zeros(num_envs, dtype=np.int64)
        episodes: list[dict[str, Any]] = []
        evaluations: list[dict[str, Any]] = []
        metric_rows: list[dict[str, Any]] = []
        metric_sums: dict[str, float] = {}
        metric_counts: dict[str, int] = {}
        eval_time = 0.0
        last_note = time.perf_counter()

        def run_evaluation(step: int) -> None:
            nonlocal eval_time
            t0 = time.perf_counter()
            result = evaluate(
                agent,
                eval_env,
                episodes=spec.eval_episodes,
                base_seed=eval_base,
                device=device,
                max_episode_steps=spec.eval_max_episode_steps,
            )
            eval_time += time.perf_counter() - t0
            evaluations.append(
                {"step": step, **result, "wall_time_s": round(time.perf_counter() - started, 3)}
            )
            if metric_counts:
                metric_rows.append(
                    {"step": step, **{k: metric_sums[k] / metric_counts[k] for k in metric_sums}}
                )
                metric_sums.clear()
                metric_counts.clear()
            _write_progress(run_dir, evaluations, episodes, metric_rows)
            notify("eval", spec.run_id, {"step": step, "return_mean": result["return_mean"]})

        step = 0
        run_evaluation(0)
        next_eval = spec.eval_interval
        obs_t = to_tensor(obs, device)
        while step < spec.steps:
            action = agent.act(obs_t)
            actions = action.detach().cpu().numpy()
            # The step's observations; where an episode ended, the next act() sees the reset
            # observation instead, so only then does next_obs differ from it (and get its own
            # array and tensor).
            step_obs = np.empty_like(obs)
            rewards = np.empty(num_envs, dtype=np.float32)
            terminated = np.zeros(num_envs, dtype=bool)
            truncated = np.zeros(num_envs, dtype=bool)
            resets: list[tuple[int, Any]] = []
            for i, env in enumerate(envs):
                a = actions[i].item() if discrete else actions[i]
                o, r, term, trunc, _ = env.step(a)
                step_obs[i] = o
                rewards[i] = r
                terminated[i], truncated[i] = term, trunc
                ep_return[i] += r
                ep_length[i] += 1
                if term or trunc:
                    episodes.append(
                        {
                            "step": step + i + 1,
                            "return": float(ep_return[i]),
                            "length": int(ep_length[i]),
                            "terminated": bool(term),
                        }
                    )
                    ep_return[i], ep_length[i] = 0.0, 0
                    resets.append((i, env.reset()[0]))
            step_obs_t = to_tensor(step_obs, device)
            if resets:
                next_obs = step_obs.copy()
                for i, o in resets:
                    next_obs[i] = o
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
            for key, value in metrics.items():
                value = float(value)
                if not math.isfinite(value):
                    raise DivergedError(
                        f"training diverged at step {step + num_envs}: {key} = {value}"
                    )
                metric_sums[key] = metric_sums.get(key, 0.0) + value
                metric_counts[key] = metric_counts.get(key, 0) + 1
            obs, obs_t = next_obs, next_obs_t
            step += num_envs

            if step >= next_eval or step >= spec.steps:
                run_evaluation(step)
                while next_eval <= step:
                    next_eval += spec.eval_interval
            now = time.perf_counter()
            if now - last_note >= PROGRESS_EVERY_S:
                last_note = now
                elapsed = now - started - eval_time
                notify("step", spec.run_id, {"step": step, "sps": step / max(elapsed, 1e-9)})

        wall = time.perf_counter() - started
        train_time = max(wall - eval_time, 1e-9)
        run_dir.save_weights(agent.state_dict())
        final = evaluations[-1]
        run_dir.write_status(
            records.COMPLETE,
            env_steps=step,
            wall_time_s=round(wall, 3),
            train_time_s=round(train_time, 3),
            eval_time_s=round(eval_time, 3),
            steps_per_second=round(step / train_time, 1),
            final_return_mean=final["return_mean"],
            final_return_std=final["return_std"],
            episodes=len(episodes),
        )
        return RunOutcome(
            spec.run_id,
            records.COMPLETE,
            final_return=final["return_mean"],
            wall_time_s=wall,
            steps_per_second=step / train_time,
        )
    finally:
        for env in [*envs, eval_env]:
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
