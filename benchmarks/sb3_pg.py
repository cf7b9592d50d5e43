"""rlbench's ``ppo`` and ``a2c`` against Stable-Baselines3's PPO and A2C, same settings, same seeds.

    python benchmarks/sb3_pg.py                                # every case, seeds 0 1 2, 16 lanes
    python benchmarks/sb3_pg.py --steps 10000 --seeds 0 --lanes 4
    python benchmarks/sb3_pg.py --cases ppo-CartPole-v1 --lanes 0

Each case trains one agent on one environment with RL Zoo's tuned hyperparameters
(rl-baselines3-zoo, ``hyperparams/ppo.yml`` and ``a2c.yml``), written once below in SB3's
names and handed to both frameworks:

- ``ppo-CartPole-v1``: 8 environments, 100k steps, n_steps 32, batch 256, 20 epochs, gamma
  0.98, GAE λ 0.8, entropy 0, learning rate and clip range linear from 1e-3 and 0.2
  (the Zoo's ``lin_1e-3``, ``lin_0.2``); rlbench ppo's defaults.
- ``ppo-Pendulum-v1``: 4 environments, 100k steps, n_steps 1024, batch 64 (SB3's default),
  10 epochs, gamma 0.9, GAE λ 0.95, entropy 0, learning rate 1e-3, clip range 0.2, both
  constant. The Zoo also uses gSDE (``use_sde: True``, ``sde_sample_freq: 4``); rlbench's
  ppo has no gSDE, so neither side uses it here: both explore with a state-independent
  diagonal Gaussian.
- ``a2c-CartPole-v1``: 8 environments, entropy 0, the rest SB3's defaults (n_steps 5, RMSprop
  at 7e-4 constant, gamma 0.99, GAE λ 1, value coefficient 0.5, gradient norm 0.5). The Zoo
  trains it for 500k steps; this benchmark's budget is 100k for every case (``--steps``).

Both sides get the same network, SB3's ``MlpPolicy`` default: separate actor and critic MLPs
64-64 with tanh, orthogonal initialisation. Each run uses one torch thread; runs go one after
the other in this process, frameworks alternating seed by seed and which of them goes first
(rlbench then SB3 for seed 0, SB3 then rlbench for seed 1, ...), so that background load and
a host's drifting speed hit both alike. rlbench trains through its public harness
(:func:`rlbench.training.execute_run` on a run of a suite, what ``rlbench run`` does); SB3
through ``learn`` on a ``DummyVecEnv`` of the same number of environments (``make_vec_env``).

Speed is environment steps per second of training: rlbench's own figure (evaluation time
excluded), SB3's steps (``model.num_timesteps``: SB3 finishes its last rollout, so it can
take a rollout more than the budget) over the time of building the model and ``learn``.
Steps per CPU second of the whole run are printed too, steadier on a shared machine.

The final score of both is rlbench's protocol, :func:`rlbench.evaluation.evaluate`: the
greedy policy (argmax, or the Gaussian's mean clipped to the action bounds) over
``--eval-episodes`` episodes on a separate environment, episode ``j`` reset with seed
``eval_base + j``, ``eval_base`` derived from the run seed as the harness derives it.

Then, unless ``--lanes 0``, rlbench trains ``--lanes`` seeds (0, 1, ...) of each case in one
process as the lanes of one batched computation (:func:`rlbench.training.execute_lanes`) and
prints their aggregate steps per second against one SB3 process's (its mean over the seeds).

Stable-Baselines3 is a benchmark-only dependency: ``pip install -c constraints.txt -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from comparison import (
    FRAMEWORKS,
    LanesResult,
    Result,
    SB3Greedy,
    announce_and_warm_up,
    case_arguments,
    print_lanes,
    print_means_and_ratios,
    run_order,
    toml_value,
    train_rlbench,
    train_rlbench_lanes,
)

from rlbench.evaluation import evaluate
from rlbench.plugins import Catalogue, load_catalogue
from rlbench.runspec import RunSpec, expand
from rlbench.seeding import seed_streams
from rlbench.suite import load_suite

STEPS = 100_000


@dataclass(frozen=True)
class Case:
    """One agent on one environment with RL Zoo's hyperparameters, in SB3's names (a
    ``"lin_<x>"`` value is the Zoo's linear schedule from ``x`` to 0)."""

    agent: str
    env: str
    zoo: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.agent}-{self.env}"

    def rlbench_steps(self, budget: int) -> int:
        """What a run of ``budget`` steps takes: whole steps of all ``n_envs`` environments,
        ``budget`` or up to ``n_envs - 1`` more (the harness counts every environment's)."""
        n = self.zoo["n_envs"]
        return -(-budget // n) * n

    def rlbench_config(self) -> dict[str, Any]:
        """The suite's ``[agents.config]``: the same names, ``n_envs`` as ``num_envs``, and a
        constant schedule spelled out where the value is a plain number (rlbench ppo's
        defaults are the CartPole ones, with linear schedules)."""
        config: dict[str, Any] = {}
        for key, value in self.zoo.items():
            config["num_envs" if key == "n_envs" else key] = value
            if key in ("learning_rate", "clip_range") and not isinstance(value, str):
                config[f"{key}_schedule"] = "constant"
        return config

    def sb3_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for key, value in self.zoo.items():
            if key == "n_envs":
                continue
            if isinstance(value, str) and value.startswith("lin_"):
                kwargs[key] = linear(float(value.removeprefix("lin_")))
            else:
                kwargs[key] = value
        return kwargs


def linear(initial: float):
    """RL Zoo's ``linear_schedule``: ``initial * progress_remaining``."""
    return lambda progress_remaining: progress_remaining * initial


CASES = {
    case.name: case
    for case in (
        Case(
            "ppo",
            "CartPole-v1",
            {
                "n_envs": 8,
                "n_steps": 32,
                "batch_size": 256,
                "n_epochs": 20,
                "gamma": 0.98,
                "gae_lambda": 0.8,
                "ent_coef": 0.0,
                "learning_rate": "lin_1e-3",
                "clip_range": "lin_0.2",
            },
        ),
        Case(
            "ppo",
            "Pendulum-v1",
            {
                "n_envs": 4,
                "n_steps": 1024,
                "batch_size": 64,
                "n_epochs": 10,
                "gamma": 0.9,
                "gae_lambda": 0.95,
                "ent_coef": 0.0,
                "learning_rate": 1e-3,
                "clip_range": 0.2,
            },
        ),
        Case(
            "a2c",
            "CartPole-v1",
            {
                "n_envs": 8,
                "ent_coef": 0.0,
                "n_steps": 5,
                "learning_rate": 7e-4,
                "gamma": 0.99,
                "gae_lambda": 1.0,
                "vf_coef": 0.5,
                "max_grad_norm": 0.5,
            },
        ),
    )
}

SUITE = """
name = "sb3_pg"
seeds = {seeds}
devices = ["cpu"]
environments = ["{env}"]

[budget]
steps = {steps}
eval_interval = {steps}
eval_episodes = {eval_episodes}

[[agents]]
name = "{agent}"
network = {{ name = "mlp", hidden_sizes = [64, 64], activation = "tanh" }}

[agents.config]
{config}
"""


def rlbench_runs(
    case: Case, seeds: list[int], steps: int, eval_episodes: int, workdir: Path
) -> tuple[Catalogue, list[RunSpec]]:
    catalogue = load_catalogue(autoload=False)
    config = "\n".join(f"{k} = {toml_value(v)}" for k, v in case.rlbench_config().items())
    suite_path = workdir / f"{case.name}_seeds{seeds[0]}-{seeds[-1]}.toml"
    suite_path.write_text(
        textwrap.dedent(
            SUITE.format(
                seeds=seeds,
                env=case.env,
                steps=steps,
                eval_episodes=eval_episodes,
                agent=case.agent,
                config=config,
            )
        )
    )
    return catalogue, expand(load_suite(suite_path, catalogue))


def run_rlbench(case: Case, seed: int, steps: int, eval_episodes: int, workdir: Path) -> Result:
    catalogue, [spec] = rlbench_runs(case, [seed], steps, eval_episodes, workdir)
    return train_rlbench(spec, catalogue, workdir, case.rlbench_steps(steps))


def run_rlbench_lanes(
    case: Case, lanes: int, threads: int, steps: int, eval_episodes: int, workdir: Path
) -> LanesResult:
    catalogue, specs = rlbench_runs(case, list(range(lanes)), steps, eval_episodes, workdir)
    return train_rlbench_lanes(specs, catalogue, threads, workdir, case.rlbench_steps(steps))


def run_sb3(case: Case, seed: int, steps: int, eval_episodes: int) -> Result:
    import stable_baselines3
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    cpu = time.process_time()
    started = time.perf_counter()
    algorithm = getattr(stable_baselines3, case.agent.upper())
    envs = make_vec_env(case.env, n_envs=case.zoo["n_envs"], seed=seed)
    model = algorithm("MlpPolicy", envs, seed=seed, device="cpu", verbose=0, **case.sb3_kwargs())
    model.learn(total_timesteps=steps)
    train_s = time.perf_counter() - started
    _, _, eval_base = seed_streams(seed, case.zoo["n_envs"])
    eval_env = gym.make(case.env)
    result = evaluate(
        SB3Greedy(model),  # type: ignore[arg-type]
        eval_env,
        episodes=eval_episodes,
        base_seed=eval_base,
        device=torch.device("cpu"),
    )
    eval_env.close()
    envs.close()
    return Result(
        "sb3",
        seed,
        model.num_timesteps,
        time.perf_counter() - started,
        model.num_timesteps / train_s,
        time.process_time() - cpu,
        result["return_mean"],
        result["return_std"],
    )


def score(r: Result) -> str:
    return f"{r.return_mean:.1f} ± {r.return_std:.1f}"


def benchmark_case(case: Case, args: argparse.Namespace) -> None:
    print(f"\n== {case.name}: {args.steps} steps per run, seeds {args.seeds}", flush=True)
    print(
        f"{'framework':<10} {'seed':>4} {'steps':>7} {'wall s':>8} {'cpu s':>8} {'steps/s':>9} "
        f"{'steps/cpu-s':>11} {'final return':>16}",
        flush=True,
    )
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="sb3_pg_") as tmp:
        for index, seed in enumerate(args.seeds):
            for framework in run_order(args.frameworks, index):
                if framework == "rlbench":
                    r = run_rlbench(case, seed, args.steps, args.eval_episodes, Path(tmp))
                else:
                    r = run_sb3(case, seed, args.steps, args.eval_episodes)
                results.append(r)
                print(
                    f"{r.framework:<10} {r.seed:>4} {r.steps:>7} {r.wall_s:>8.1f} "
                    f"{r.cpu_s:>8.1f} {r.steps_per_second:>9.0f} {r.steps / r.cpu_s:>11.0f} "
                    f"{score(r):>16}",
                    flush=True,
                )
    by = print_means_and_ratios(results, args.frameworks, args.seeds)
    if set(FRAMEWORKS) <= set(args.frameworks):
        # Per seed: the difference of the final returns (rlbench - SB3), and how often
        # rlbench's is at least SB3's.
        diffs = [by["rlbench", s].return_mean - by["sb3", s].return_mean for s in args.seeds]
        at_least = sum(d >= 0 for d in diffs)
        print(
            "final return rlbench - sb3: "
            + ", ".join(f"seed {s}: {d:+.1f}" for s, d in zip(args.seeds, diffs, strict=True))
            + f"; rlbench >= sb3 on {at_least}/{len(diffs)} seeds",
            flush=True,
        )

    if args.lanes > 0 and "rlbench" in args.frameworks:
        sb3_runs = [r for r in results if r.framework == "sb3"]
        for threads in args.lane_threads:
            with tempfile.TemporaryDirectory(prefix="sb3_pg_lanes_") as tmp:
                lr = run_rlbench_lanes(
                    case, args.lanes, threads, args.steps, args.eval_episodes, Path(tmp)
                )
            print_lanes(lr, sb3_runs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Train rlbench's ppo and a2c and Stable-Baselines3's PPO and A2C with RL "
        "Zoo's settings on the same seeds, one torch thread each; compare speed and score.",
    )
    case_arguments(parser, CASES, STEPS, "environment steps per run")
    args = parser.parse_args(argv)
    announce_and_warm_up(args.frameworks, gym.__version__, np.__version__)
    for name in args.cases:
        benchmark_case(CASES[name], args)


if __name__ == "__main__":
    main()
