"""Training speed of rlbench's ``dqn`` against Stable-Baselines3's DQN, same settings.

    python benchmarks/sb3_vs_rlbench.py                      # seeds 0 1 2, 50k steps each
    python benchmarks/sb3_vs_rlbench.py --steps 5000 --seeds 0 --lanes 4
    python benchmarks/sb3_vs_rlbench.py --frameworks rlbench --lanes 0

Both train RL Zoo's tuned CartPole-v1 DQN (rlbench ``dqn``'s defaults): lr 2.3e-3, batch 64,
buffer 100k, learning starts 1000, gamma 0.99, target update every 10 steps, train every 256
steps with 128 gradient steps, exploration fraction 0.16 to epsilon 0.04, Huber loss,
gradient norm 10, an MLP 256-256. Each run uses one torch thread; the runs go one after the
other in this process, frameworks alternating seed by seed and which of them goes first
(rlbench then SB3 for seed 0, SB3 then rlbench for seed 1, ...), so that background load and
a host's drifting speed hit both alike. rlbench trains through its public harness
(``rlbench.training.execute_run`` on a run of a suite, exactly what ``rlbench run`` does);
Stable-Baselines3 through ``DQN.learn``.

Then, unless ``--lanes 0``, rlbench trains ``--lanes`` seeds (0, 1, ...) of the same
configuration in one process as the lanes of one batched computation
(:func:`rlbench.training.execute_lanes`, what ``rlbench run`` does with a suite's seeds),
with ``--lane-threads`` torch threads, and prints their aggregate environment steps per
second against one SB3 process's (the mean over its seeds above).

Beside the ratios it prints the arithmetic's limit: the matrix products one environment step
costs (acting, and the gradient steps' forward and backward passes and target passes, at
these settings), and this CPU's measured one-thread rate for the dominant product
(``comparison.matmul_ceiling``), so each speed is also given as a fraction of the fastest
that any implementation of this algorithm could train here.

Speed is environment steps per second of training: for rlbench the harness's own figure
(evaluation time excluded), for SB3 the steps over the time of building the model and
``learn`` (it does not evaluate while training). On a machine shared with other work, wall
time swings with the load; the CPU time of each run (``time.process_time``, training and
evaluations) is steadier, so steps per CPU second is printed too.

The final score of both is the same protocol, rlbench's :func:`rlbench.evaluation.evaluate`:
the greedy policy's mean return over ``--eval-episodes`` episodes on a separate environment,
episode ``j`` reset with seed ``eval_base + j`` where ``eval_base`` comes from the run seed
exactly as in the harness, so both frameworks face the same start states.

Stable-Baselines3 is a benchmark-only dependency: ``pip install -c constraints.txt -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import textwrap
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from comparison import (
    FRAMEWORKS,
    LanesResult,
    Result,
    SB3Greedy,
    matmul_ceiling,
    mlp_flops,
    print_ceiling,
    print_lanes,
    print_means_and_ratios,
    run_order,
    sb3_version,
    train_rlbench,
    train_rlbench_lanes,
)

from rlbench.evaluation import evaluate
from rlbench.plugins import Catalogue, load_catalogue
from rlbench.runspec import RunSpec, expand
from rlbench.seeding import seed_streams
from rlbench.suite import load_suite

ENV_ID = "CartPole-v1"

# RL Zoo's hyperparameters for DQN on CartPole-v1 (rl-baselines3-zoo, hyperparams/dqn.yml);
# they are also rlbench dqn's defaults, spelled out here so the two sides visibly match.
ZOO = {
    "learning_rate": 2.3e-3,
    "batch_size": 64,
    "buffer_size": 100_000,
    "learning_starts": 1000,
    "gamma": 0.99,
    "target_update_interval": 10,
    "train_freq": 256,
    "gradient_steps": 128,
    "exploration_fraction": 0.16,
    "exploration_final_eps": 0.04,
    "net_arch": [256, 256],
}

SUITE = """
name = "sb3_vs_rlbench"
seeds = {seeds}
devices = ["cpu"]
environments = ["{env}"]

[budget]
steps = {steps}
eval_interval = {steps}
eval_episodes = {eval_episodes}

[[agents]]
name = "dqn"
network = {{ name = "mlp", hidden_sizes = {net_arch} }}

[agents.config]
learning_rate = {learning_rate}
batch_size = {batch_size}
buffer_size = {buffer_size}
learning_starts = {learning_starts}
gamma = {gamma}
target_update_interval = {target_update_interval}
train_frequency = {train_freq}
gradient_steps = {gradient_steps}
exploration_fraction = {exploration_fraction}
epsilon_start = 1.0
epsilon_end = {exploration_final_eps}
loss = "huber"
max_grad_norm = 10.0
"""


def rlbench_runs(
    seeds: list[int], steps: int, eval_episodes: int, workdir: Path
) -> tuple[Catalogue, list[RunSpec]]:
    catalogue = load_catalogue(autoload=False)
    suite_path = workdir / f"rlbench_seeds{seeds[0]}-{seeds[-1]}.toml"
    suite_path.write_text(
        textwrap.dedent(
            SUITE.format(seeds=seeds, env=ENV_ID, steps=steps, eval_episodes=eval_episodes, **ZOO)
        )
    )
    return catalogue, expand(load_suite(suite_path, catalogue))


def run_rlbench(seed: int, steps: int, eval_episodes: int, workdir: Path) -> Result:
    catalogue, [spec] = rlbench_runs([seed], steps, eval_episodes, workdir)
    return train_rlbench(spec, catalogue, workdir, steps)


def run_rlbench_lanes(
    lanes: int, threads: int, steps: int, eval_episodes: int, workdir: Path
) -> LanesResult:
    catalogue, specs = rlbench_runs(list(range(lanes)), steps, eval_episodes, workdir)
    return train_rlbench_lanes(specs, catalogue, threads, workdir, steps)


def run_sb3(seed: int, steps: int, eval_episodes: int) -> Result:
    from stable_baselines3 import DQN

    torch.set_num_threads(1)
    cpu = time.process_time()
    started = time.perf_counter()
    z = ZOO
    model = DQN(
        "MlpPolicy",
        gym.make(ENV_ID),
        learning_rate=z["learning_rate"],
        batch_size=z["batch_size"],
        buffer_size=z["buffer_size"],
        learning_starts=z["learning_starts"],
        gamma=z["gamma"],
        target_update_interval=z["target_update_interval"],
        train_freq=z["train_freq"],
        gradient_steps=z["gradient_steps"],
        exploration_fraction=z["exploration_fraction"],
        exploration_final_eps=z["exploration_final_eps"],
        policy_kwargs={"net_arch": z["net_arch"]},
        seed=seed,
        device="cpu",
        verbose=0,
    )
    model.learn(total_timesteps=steps)
    train_s = time.perf_counter() - started
    _, _, eval_base = seed_streams(seed, 1)
    eval_env = gym.make(ENV_ID)
    result = evaluate(
        SB3Greedy(model),  # type: ignore[arg-type]
        eval_env,
        episodes=eval_episodes,
        base_seed=eval_base,
        device=torch.device("cpu"),
    )
    eval_env.close()
    return Result(
        "sb3",
        seed,
        steps,
        time.perf_counter() - started,
        steps / train_s,
        time.process_time() - cpu,
        result["return_mean"],
        result["return_std"],
    )


def flops_per_env_step() -> float:
    """The matrix products one environment step costs with these settings: acting (one
    forward pass on one row) and, per step, ``gradient_steps / train_freq`` gradient steps,
    each a forward and backward pass on a minibatch and the target network's forward pass on
    its next observations."""
    z = ZOO
    sizes = [gym.make(ENV_ID).observation_space.shape[0], *z["net_arch"], 2]
    batch = z["batch_size"]
    per_gradient_step = mlp_flops(sizes, batch, backward=True) + mlp_flops(sizes, batch)
    return mlp_flops(sizes, 1) + z["gradient_steps"] / z["train_freq"] * per_gradient_step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Train rlbench's dqn and Stable-Baselines3's DQN with RL Zoo's CartPole-v1 "
        "settings on the same seeds, one torch thread each, and compare their speed.",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=50_000, help="environment steps per run")
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument(
        "--lanes",
        type=int,
        default=16,
        help="then train this many seeds (0, 1, ...) as lanes of one process (0: skip)",
    )
    parser.add_argument(
        "--lane-threads",
        type=int,
        nargs="+",
        default=[1, 2],
        help="torch threads of the lanes' process; several values train the lanes once each",
    )
    args = parser.parse_args(argv)
    sb3 = sb3_version(args.frameworks)

    print(
        f"{ENV_ID}, {args.steps} steps per run, seeds {args.seeds}, one torch thread; "
        f"torch {torch.__version__}, gymnasium {gym.__version__}, numpy {np.__version__}, "
        f"stable-baselines3 {sb3}",
        flush=True,
    )
    # Lazy imports that the first optimizer of a process pays (torch._dynamo, about a second)
    # are paid here, not by whichever framework happens to run first.
    warm = torch.nn.Parameter(torch.zeros(1))
    torch.optim.Adam([warm], fused=True)
    torch.optim.Adam([warm])

    print(
        f"{'framework':<10} {'seed':>4} {'wall s':>8} {'cpu s':>8} {'steps/s':>9} "
        f"{'steps/cpu-s':>11} {'final return':>16}",
        flush=True,
    )
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="sb3_vs_rlbench_") as tmp:
        for index, seed in enumerate(args.seeds):
            for framework in run_order(args.frameworks, index):
                if framework == "rlbench":
                    r = run_rlbench(seed, args.steps, args.eval_episodes, Path(tmp))
                else:
                    r = run_sb3(seed, args.steps, args.eval_episodes)
                results.append(r)
                score = f"{r.return_mean:.1f} ± {r.return_std:.1f}"
                print(
                    f"{r.framework:<10} {r.seed:>4} {r.wall_s:>8.1f} {r.cpu_s:>8.1f} "
                    f"{r.steps_per_second:>9.0f} {r.steps / r.cpu_s:>11.0f} {score:>16}",
                    flush=True,
                )

    print()
    by = print_means_and_ratios(results, args.frameworks, args.seeds)
    # The CPU's limit, measured now (between the runs, under the same load).
    ceiling = matmul_ceiling(ZOO["batch_size"], ZOO["net_arch"][0])
    print_ceiling(
        flops_per_env_step(),
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
            print()
            with tempfile.TemporaryDirectory(prefix="sb3_vs_rlbench_lanes_") as tmp:
                lr = run_rlbench_lanes(
                    args.lanes, threads, args.steps, args.eval_episodes, Path(tmp)
                )
            print_lanes(lr, sb3_runs, solved=475)
            print_ceiling(
                flops_per_env_step(),
                ceiling,
                [(f"{args.lanes} lanes", lr.steps_per_second)],
                threads=threads,
            )


if __name__ == "__main__":
    main()
