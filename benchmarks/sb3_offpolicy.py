"""rlbench's ``sac`` and ``td3`` against Stable-Baselines3's SAC and TD3, same settings, same seeds.

    python benchmarks/sb3_offpolicy.py                          # every case, seeds 0 1 2, 16 lanes
    python benchmarks/sb3_offpolicy.py --cases sac-Pendulum-v1 td3-Pendulum-v1 --lanes 4
    python benchmarks/sb3_offpolicy.py --steps 600 --seeds 0 --lanes 2   # a smoke run

Each case trains one agent on one environment with RL Zoo's tuned hyperparameters
(rl-baselines3-zoo, ``hyperparams/sac.yml`` and ``td3.yml``), written once below in SB3's
names and handed to both frameworks (rlbench's sac and td3 use SB3's names; the Zoo's
``noise_std`` is td3's ``exploration_noise``, its ``net_arch`` the suite's network):

- ``sac-Pendulum-v1``: 20k steps, learning rate 1e-3, the rest SB3's defaults (buffer 1M,
  learning starts 100, batch 256, tau 0.005, gamma 0.99, one gradient step per environment
  step, ``ent_coef="auto"``, 256-256 ReLU actor and critics).
- ``td3-Pendulum-v1``: 20k steps, gamma 0.98, buffer 200k, learning starts 10k, Gaussian
  exploration noise of std 0.1 (SB3's ``NormalActionNoise``), learning rate 1e-3, 400-300
  networks, batch 256, policy delay 2, target smoothing 0.2 clipped at 0.5. The Zoo writes
  ``train_freq: [1, "episode"]`` with ``gradient_steps: -1`` (a training after every episode,
  as many gradient steps as it had steps). rlbench's td3 has no episode ``train_freq`` (lanes
  end their episodes at different steps), so **both** sides here train with ``train_freq
  200, gradient_steps -1``: Pendulum-v1's episodes are always 200 steps (a time limit, never
  a termination), so this is the same schedule, 200 gradient steps after each episode, in
  both frameworks. (The Zoo's td3.yml since January 2024, rl-baselines3-zoo #430, lists
  Pendulum-v1 with ``train_freq: 1, gradient_steps: 1``; this benchmark keeps the episode
  schedule that the rest of rlbench uses for td3 on Pendulum.)
- ``sac-MountainCarContinuous-v0``: 50k steps, the Zoo's tuned entry (learning rate 3e-4,
  buffer 50k, batch 512, ``ent_coef 0.1``, 32 gradient steps every 32 steps, gamma 0.9999,
  tau 0.01, learning starts 0, 64-64 networks) **without its gSDE** (``use_sde``,
  ``log_std_init -3.67``), which rlbench's sac does not have: both sides explore with the
  plain squashed Gaussian, so this case shows what that exploration reaches on a task the
  Zoo solves with gSDE.
- ``sac-HalfCheetah-v5``: the Zoo's MuJoCo settings (``HalfCheetah-v4`` there): learning
  starts 10k, the rest SB3's defaults.
- ``td3-HalfCheetah-v5``: the Zoo's MuJoCo settings: learning starts 10k, noise std 0.1,
  learning rate 1e-3, batch 256, ``train_freq 1``, ``gradient_steps 1``, 400-300 networks.
  The Zoo trains the MuJoCo cases 1M steps; the default budget here is 50k (``--steps``).
  They need MuJoCo (``pip install -c constraints.txt -e ".[mujoco]"``) and are skipped, with
  that command, when it is missing.

Each run uses one torch thread; runs go one after the other in this process, frameworks
alternating seed by seed and which of them goes first (rlbench then SB3 for seed 0, SB3 then
rlbench for seed 1, ...), so that background load and a host's drifting speed hit both alike.
rlbench trains through its public harness (:func:`rlbench.training.execute_run` on a run of a
suite, what ``rlbench run`` does); SB3 through ``learn`` on one environment.

Speed is environment steps per second of training: rlbench's own figure (evaluation time
excluded), SB3's steps (``model.num_timesteps``) over the time of building the model and
``learn``. Steps per CPU second of the whole run are printed too, steadier on a shared
machine.

The final score of both is rlbench's protocol, :func:`rlbench.evaluation.evaluate`: the
deterministic policy (rlbench: ``tanh(mean)`` or ``tanh(mu)`` rescaled to the action bounds;
SB3: ``predict(deterministic=True)``, which for SAC and TD3 returns actions already rescaled
to the bounds) over ``--eval-episodes`` episodes on a separate environment, episode ``j``
reset with seed ``eval_base + j``, ``eval_base`` derived from the run seed as the harness
derives it.

It prints, per case, one line per run, the means, the ratios rlbench / SB3 of ``steps/s`` and
``steps/cpu-s`` per seed, the difference of the final returns per seed, and the arithmetic's
limit: the matrix products one environment step costs at these settings (acting's one-row
actor pass, and each gradient step's forward and backward passes, see
:func:`flops_per_env_step`) against this CPU's measured one-thread rate for the dominant
product (``comparison.matmul_ceiling`` at the batch size and the first hidden width), with
the fraction of that limit each framework reaches. Then, unless ``--lanes 0``, rlbench trains
``--lanes`` seeds (0, 1, ...) of the case in one process as the lanes of one batched
computation (:func:`rlbench.training.execute_lanes`) and prints their aggregate steps per
second against one SB3 process's (its mean over the seeds), with the same limit.

Stable-Baselines3 is a benchmark-only dependency: ``pip install -c constraints.txt -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
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
    matmul_ceiling,
    mlp_flops,
    print_ceiling,
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

MUJOCO_INSTALL = 'pip install -c constraints.txt -e ".[mujoco]"'

# SB3's SAC and TD3 defaults (SB3 2.x) for what the arithmetic below counts; a case's ``zoo``
# overrides them.
SB3_DEFAULTS: dict[str, Any] = {
    "batch_size": 256,
    "learning_starts": 100,
    "train_freq": 1,
    "gradient_steps": 1,
    "policy_delay": 2,
    "net_arch": [256, 256],
}


@dataclass(frozen=True)
class Case:
    """One agent on one environment with RL Zoo's hyperparameters, in SB3's names, and the
    default budget (the Zoo's ``n_timesteps``, or less where that is 1M)."""

    agent: str
    env: str
    steps: int
    zoo: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.agent}-{self.env}"

    @property
    def needs_mujoco(self) -> bool:
        return self.env.startswith("HalfCheetah")

    def setting(self, key: str) -> Any:
        return self.zoo.get(key, SB3_DEFAULTS[key])

    def rlbench_config(self) -> dict[str, Any]:
        """The suite's ``[agents.config]``: the same names, the Zoo's ``noise_std`` as td3's
        ``exploration_noise`` (``net_arch`` is the suite's network)."""
        config: dict[str, Any] = {}
        for key, value in self.zoo.items():
            if key == "net_arch":
                continue
            config["exploration_noise" if key == "noise_std" else key] = value
        return config

    def sb3_kwargs(self, action_space: gym.spaces.Box) -> dict[str, Any]:
        """``SAC(...)``'s or ``TD3(...)``'s keyword arguments: the Zoo's ``noise_std`` as a
        ``NormalActionNoise`` (what the Zoo's ``noise_type: normal`` builds), ``net_arch`` in
        ``policy_kwargs``."""
        from stable_baselines3.common.noise import NormalActionNoise

        kwargs: dict[str, Any] = {}
        for key, value in self.zoo.items():
            if key == "net_arch":
                kwargs["policy_kwargs"] = {"net_arch": list(value)}
            elif key == "noise_std":
                n = action_space.shape[-1]
                kwargs["action_noise"] = NormalActionNoise(
                    mean=np.zeros(n), sigma=value * np.ones(n)
                )
            else:
                kwargs[key] = value
        return kwargs


CASES = {
    case.name: case
    for case in (
        Case("sac", "Pendulum-v1", 20_000, {"learning_rate": 1e-3}),
        Case(
            "td3",
            "Pendulum-v1",
            20_000,
            {
                "gamma": 0.98,
                "buffer_size": 200_000,
                "learning_starts": 10_000,
                "noise_std": 0.1,
                # The Zoo: train_freq [1, "episode"], gradient_steps -1; Pendulum-v1's
                # episodes are 200 steps, so train_freq 200 is the same schedule.
                "train_freq": 200,
                "gradient_steps": -1,
                "learning_rate": 1e-3,
                "net_arch": [400, 300],
            },
        ),
        Case(
            "sac",
            "MountainCarContinuous-v0",
            50_000,
            {
                "learning_rate": 3e-4,
                "buffer_size": 50_000,
                "batch_size": 512,
                "ent_coef": 0.1,
                "train_freq": 32,
                "gradient_steps": 32,
                "gamma": 0.9999,
                "tau": 0.01,
                "learning_starts": 0,
                # The Zoo's use_sde=True, log_std_init=-3.67: gSDE, which rlbench lacks.
                "net_arch": [64, 64],
            },
        ),
        Case("sac", "HalfCheetah-v5", 50_000, {"learning_starts": 10_000}),
        Case(
            "td3",
            "HalfCheetah-v5",
            50_000,
            {
                "learning_starts": 10_000,
                "noise_std": 0.1,
                "train_freq": 1,
                "gradient_steps": 1,
                "learning_rate": 1e-3,
                "batch_size": 256,
                "net_arch": [400, 300],
            },
        ),
    )
}

SUITE = """
name = "sb3_offpolicy"
seeds = {seeds}
devices = ["cpu"]
environments = ["{env}"]

[budget]
steps = {steps}
eval_interval = {steps}
eval_episodes = {eval_episodes}

[[agents]]
name = "{agent}"
network = {{ name = "mlp", hidden_sizes = {net_arch}, activation = "relu" }}

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
                net_arch=list(case.setting("net_arch")),
                config=config,
            )
        )
    )
    return catalogue, expand(load_suite(suite_path, catalogue))


def run_rlbench(case: Case, seed: int, steps: int, eval_episodes: int, workdir: Path) -> Result:
    catalogue, [spec] = rlbench_runs(case, [seed], steps, eval_episodes, workdir)
    return train_rlbench(spec, catalogue, workdir, steps)


def run_rlbench_lanes(
    case: Case, lanes: int, threads: int, steps: int, eval_episodes: int, workdir: Path
) -> LanesResult:
    catalogue, specs = rlbench_runs(case, list(range(lanes)), steps, eval_episodes, workdir)
    return train_rlbench_lanes(specs, catalogue, threads, workdir, steps)


def run_sb3(case: Case, seed: int, steps: int, eval_episodes: int) -> Result:
    import stable_baselines3

    torch.set_num_threads(1)
    cpu = time.process_time()
    started = time.perf_counter()
    algorithm = getattr(stable_baselines3, case.agent.upper())
    env = gym.make(case.env)
    model = algorithm(
        "MlpPolicy",
        env,
        seed=seed,
        device="cpu",
        verbose=0,
        **case.sb3_kwargs(env.action_space),  # type: ignore[arg-type]
    )
    model.learn(total_timesteps=steps)
    train_s = time.perf_counter() - started
    _, _, eval_base = seed_streams(seed, 1)
    eval_env = gym.make(case.env)
    result = evaluate(
        SB3Greedy(model),  # type: ignore[arg-type]
        eval_env,
        episodes=eval_episodes,
        base_seed=eval_base,
        device=torch.device("cpu"),
    )
    eval_env.close()
    env.close()
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


def gradient_steps_taken(case: Case, steps: int) -> int:
    """Gradient steps a run of ``steps`` environment steps takes on one environment (both
    frameworks' schedule): after every ``train_freq`` steps once more than
    ``learning_starts`` are done, ``gradient_steps`` of them (``train_freq`` for -1)."""
    freq, learning_starts = case.setting("train_freq"), case.setting("learning_starts")
    per_training = case.setting("gradient_steps")
    if per_training < 0:
        per_training = freq
    trainings = sum(1 for k in range(1, steps // freq + 1) if k * freq > learning_starts)
    return trainings * per_training


def flops_per_env_step(case: Case, steps: int) -> float:
    """The matrix products one environment step costs on average over a run of ``steps``
    steps: acting (the actor's forward pass on one row; the warm-up's random actions are
    counted as if they did too, an upper bound) and the run's gradient steps spread over its
    steps (none before ``learning_starts``). A gradient step at batch ``B``:

    - SAC: both critics' forward and backward passes (the critic loss), both targets'
      forward passes and the actor's on the next observations (the soft target), the actor's
      forward and backward pass on the observations, and both critics' forward pass on the
      actor's actions with their backward pass to that input (the actor's loss goes through
      the critics: every layer's input gradient, no weight gradient).
    - TD3: both critics' forward and backward passes, the target actor's and both target
      critics' forward passes on the next observations; every ``policy_delay``-th step also
      the actor's forward and backward pass and ``Q1``'s forward pass and backward pass to
      its input."""
    env = gym.make(case.env)
    obs = int(np.prod(env.observation_space.shape))
    actions = int(np.prod(env.action_space.shape))  # type: ignore[arg-type]
    env.close()
    hidden = list(case.setting("net_arch"))
    batch = case.setting("batch_size")
    critic = [obs + actions, *hidden, 1]
    if case.agent == "sac":
        actor = [obs, *hidden, 2 * actions]  # mean and log-std
        per_gradient_step = (
            2 * mlp_flops(critic, batch, backward=True)
            + 2 * mlp_flops(critic, batch)
            + mlp_flops(actor, batch)
            + mlp_flops(actor, batch, backward=True)
            + 2 * 2 * mlp_flops(critic, batch)
        )
    else:
        actor = [obs, *hidden, actions]
        delayed = mlp_flops(actor, batch, backward=True) + 2 * mlp_flops(critic, batch)
        per_gradient_step = (
            2 * mlp_flops(critic, batch, backward=True)
            + mlp_flops(actor, batch)
            + 2 * mlp_flops(critic, batch)
            + delayed / case.setting("policy_delay")
        )
    return mlp_flops(actor, 1) + gradient_steps_taken(case, steps) / steps * per_gradient_step


def quiet_mujoco_warnings() -> None:
    """Each distinct MuJoCo warning once, on stderr: MuJoCo 4 warns that HalfCheetah's model
    uses a deprecated compiler attribute (``settotalmass``) every time one is built, which
    the lanes, the evaluation environments and SB3 do dozens of times."""
    import mujoco

    seen: set[str] = set()

    def once(message: str) -> None:
        if message not in seen:
            seen.add(message)
            print(f"MuJoCo warning (shown once): {message}", file=sys.stderr, flush=True)

    mujoco.set_mju_user_warning(once)


def score(r: Result) -> str:
    return f"{r.return_mean:.1f} ± {r.return_std:.1f}"


def benchmark_case(case: Case, args: argparse.Namespace) -> None:
    steps = args.steps or case.steps
    if case.needs_mujoco and importlib.util.find_spec("mujoco") is None:
        print(f"\n== {case.name}: skipped, MuJoCo is not installed ({MUJOCO_INSTALL})", flush=True)
        return
    if case.needs_mujoco:
        quiet_mujoco_warnings()
    print(f"\n== {case.name}: {steps} steps per run, seeds {args.seeds}", flush=True)
    print(
        f"{'framework':<10} {'seed':>4} {'steps':>7} {'wall s':>8} {'cpu s':>8} {'steps/s':>9} "
        f"{'steps/cpu-s':>11} {'final return':>16}",
        flush=True,
    )
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="sb3_offpolicy_") as tmp:
        for index, seed in enumerate(args.seeds):
            for framework in run_order(args.frameworks, index):
                if framework == "rlbench":
                    r = run_rlbench(case, seed, steps, args.eval_episodes, Path(tmp))
                else:
                    r = run_sb3(case, seed, steps, args.eval_episodes)
                results.append(r)
                print(
                    f"{r.framework:<10} {r.seed:>4} {r.steps:>7} {r.wall_s:>8.1f} "
                    f"{r.cpu_s:>8.1f} {r.steps_per_second:>9.0f} {r.steps / r.cpu_s:>11.0f} "
                    f"{score(r):>16}",
                    flush=True,
                )
    by = print_means_and_ratios(results, args.frameworks, args.seeds)
    if set(FRAMEWORKS) <= set(args.frameworks):
        diffs = [by["rlbench", s].return_mean - by["sb3", s].return_mean for s in args.seeds]
        at_least = sum(d >= 0 for d in diffs)
        print(
            "final return rlbench - sb3: "
            + ", ".join(f"seed {s}: {d:+.1f}" for s, d in zip(args.seeds, diffs, strict=True))
            + f"; rlbench >= sb3 on {at_least}/{len(diffs)} seeds",
            flush=True,
        )
    # The CPU's limit, measured now (between the runs, under the same load): the dominant
    # product is a hidden layer of the first width on a minibatch.
    ceiling = matmul_ceiling(case.setting("batch_size"), case.setting("net_arch")[0])
    flops = flops_per_env_step(case, steps)
    print_ceiling(
        flops,
        ceiling,
        [
            (
                f"{f} (mean over seeds)",
                statistics.mean(by[f, s].steps_per_second for s in args.seeds),
            )
            for f in args.frameworks
        ],
    )

    if args.lanes > 0 and "rlbench" in args.frameworks:
        sb3_runs = [r for r in results if r.framework == "sb3"]
        for threads in args.lane_threads:
            with tempfile.TemporaryDirectory(prefix="sb3_offpolicy_lanes_") as tmp:
                lr = run_rlbench_lanes(
                    case, args.lanes, threads, steps, args.eval_episodes, Path(tmp)
                )
            print_lanes(lr, sb3_runs)
            print_ceiling(
                flops, ceiling, [(f"{args.lanes} lanes", lr.steps_per_second)], threads=threads
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Train rlbench's sac and td3 and Stable-Baselines3's SAC and TD3 with RL "
        "Zoo's settings on the same seeds, one torch thread each; compare speed and score.",
    )
    case_arguments(
        parser,
        CASES,
        None,
        "environment steps per run, for every case (default: 20000 on Pendulum-v1, 50000 on "
        "MountainCarContinuous-v0 and HalfCheetah-v5)",
    )
    args = parser.parse_args(argv)
    announce_and_warm_up(args.frameworks, gym.__version__, np.__version__)
    for name in args.cases:
        benchmark_case(CASES[name], args)


if __name__ == "__main__":
    main()
