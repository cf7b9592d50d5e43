"""What the rlbench-against-Stable-Baselines3 benchmarks share: their records, training a run
or a lane group through rlbench's harness, scoring an SB3 model with rlbench's evaluation,
and the printed comparison (means, per-seed ratios, lanes against one SB3 process).

``sb3_vs_rlbench.py`` (DQN) and ``sb3_pg.py`` (PPO, A2C) differ in their agents, settings and
SB3 calls; everything here is the same for both.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from rlbench.plugins import Catalogue
from rlbench.runspec import RunSpec
from rlbench.training import execute_lanes, execute_run

FRAMEWORKS = ("rlbench", "sb3")


@dataclass
class Result:
    framework: str
    seed: int
    steps: int
    wall_s: float
    steps_per_second: float
    cpu_s: float
    return_mean: float
    return_std: float


@dataclass
class LanesResult:
    lanes: int
    threads: int
    steps: int
    wall_s: float
    cpu_s: float
    steps_per_second: float
    """Aggregate: every lane's environment steps over the group's training time."""
    returns: list[float]


class SB3Greedy:
    """An SB3 model seen through rlbench's agent interface, for the shared evaluation."""

    def __init__(self, model) -> None:
        self.model = model

    def act(self, obs: torch.Tensor, *, greedy: bool = False) -> torch.Tensor:
        assert greedy
        action, _ = self.model.predict(obs.cpu().numpy(), deterministic=True)
        return torch.as_tensor(action)


def sb3_version(frameworks: Sequence[str]) -> str:
    """Stable-Baselines3's version, or ``-`` when it is not compared; exits with the install
    command when it is asked for and missing."""
    if "sb3" not in frameworks:
        return "-"
    try:
        import stable_baselines3
    except ImportError:
        sys.exit('stable-baselines3 is not installed: pip install -c constraints.txt -e ".[bench]"')
    return stable_baselines3.__version__


def final_score(workdir: Path, run_id: str) -> tuple[float, float]:
    curve = workdir / "results" / "runs" / run_id / "evaluations.csv"
    with curve.open(newline="") as f:
        last = list(csv.DictReader(f))[-1]
    return float(last["return_mean"]), float(last["return_std"])


def train_rlbench(spec: RunSpec, catalogue: Catalogue, workdir: Path, steps: int) -> Result:
    """One run through the harness (what ``rlbench run`` does), on one torch thread."""
    torch.set_num_threads(1)
    cpu = time.process_time()
    outcome = execute_run(spec, workdir / "results", catalogue)
    cpu = time.process_time() - cpu
    if outcome.status != "complete":
        raise RuntimeError(f"rlbench run {spec.run_id} {outcome.status}: {outcome.error}")
    mean, std = final_score(workdir, spec.run_id)
    return Result(
        "rlbench",
        spec.seed,
        steps,
        outcome.wall_time_s,
        outcome.steps_per_second or float("nan"),
        cpu,
        mean,
        std,
    )


def train_rlbench_lanes(
    specs: list[RunSpec], catalogue: Catalogue, threads: int, workdir: Path, steps: int
) -> LanesResult:
    """The runs ``specs`` (seeds of one configuration) as the lanes of one process."""
    torch.set_num_threads(threads)
    cpu = time.process_time()
    outcomes = execute_lanes(specs, workdir / "results", catalogue)
    cpu = time.process_time() - cpu
    for o in outcomes:
        if o.status != "complete":
            raise RuntimeError(f"rlbench run {o.run_id} {o.status}: {o.error}")
    lanes = len(specs)
    return LanesResult(
        lanes,
        threads,
        steps,
        outcomes[0].wall_time_s,
        cpu,
        lanes * (outcomes[0].steps_per_second or float("nan")),
        [final_score(workdir, s.run_id)[0] for s in specs],
    )


def mlp_flops(sizes: Sequence[int], rows: int, *, backward: bool = False) -> float:
    """Floating-point operations of an MLP's matrix products (layer widths ``sizes``, input
    first) on ``rows`` rows: ``2 * rows * in * out`` per layer for the forward pass; with
    ``backward`` also its backward pass (every weight gradient, and every layer's input
    gradient but the first's)."""
    layers = list(itertools.pairwise(sizes))
    forward = sum(2.0 * rows * i * o for i, o in layers)
    if not backward:
        return forward
    return 2 * forward + sum(2.0 * rows * i * o for i, o in layers[1:])


def matmul_ceiling(rows: int, width: int, repeats: int = 7) -> float:
    """This CPU's rate, in FLOP/s on one torch thread, for the product that dominates the
    agents' training: ``baddbmm`` of ``[1, rows, width] @ [1, width, width]`` (a hidden layer
    of ``width`` units on a minibatch of ``rows``), the best of ``repeats`` timings of about
    0.2 s each. No training step can do its products faster than this."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x, w = torch.randn(1, rows, width), torch.randn(1, width, width)
        bias = torch.randn(1, 1, width)
        for _ in range(20):
            torch.baddbmm(bias, x, w)
        n = max(10, int(0.2 / (2.0 * rows * width * width / 1e11)))
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(n):
                torch.baddbmm(bias, x, w)
            best = min(best, (time.perf_counter() - started) / n)
    finally:
        torch.set_num_threads(threads)
    return 2.0 * rows * width * width / best


def print_ceiling(
    flops_per_step: float, ceiling: float, speeds: Sequence[tuple[str, float]], *, threads: int = 1
) -> None:
    """The arithmetic's limit on speed and the fraction of it each of ``speeds`` (label,
    environment steps per second, aggregated over lanes) reaches: ``flops_per_step`` FLOP of
    matrix products per environment step, at ``ceiling`` FLOP/s per thread."""
    limit = ceiling * threads / flops_per_step
    print(
        f"arithmetic: {flops_per_step / 1e6:.2f} MFLOP of matrix products per environment "
        f"step; measured ceiling {ceiling / 1e9:.1f} GFLOP/s per thread x {threads}: at most "
        f"{limit:.0f} steps/s"
    )
    for label, speed in speeds:
        print(f"  {label}: {speed:.0f} steps/s = {100 * speed / limit:.0f}% of that ceiling")


def run_order(frameworks: Sequence[str], seed_index: int) -> list[str]:
    """The order the frameworks train seed ``seed_index`` in: as given for even indices,
    reversed for odd ones (A B, B A, A B, ...), so that a machine whose speed drifts during
    the benchmark (a shared host) favours neither side on average."""
    return list(frameworks) if seed_index % 2 == 0 else list(reversed(frameworks))


def print_means_and_ratios(
    results: list[Result], frameworks: Sequence[str], seeds: Sequence[int]
) -> dict[tuple[str, int], Result]:
    """Each framework's means over the seeds and, when both ran, rlbench / SB3 per seed;
    returns the results by ``(framework, seed)``."""
    for framework in frameworks:
        rs = [r for r in results if r.framework == framework]
        print(
            f"{framework:<10} mean over {len(rs)} seeds: "
            f"{statistics.mean(r.steps_per_second for r in rs):.0f} steps/s, "
            f"{statistics.mean(r.steps / r.cpu_s for r in rs):.0f} steps/cpu-s, "
            f"final return {statistics.mean(r.return_mean for r in rs):.1f}"
        )
    by = {(r.framework, r.seed): r for r in results}
    if set(FRAMEWORKS) <= set(frameworks):
        for label, speed in (
            ("steps/s", lambda r: r.steps_per_second),
            ("steps/cpu-s", lambda r: r.steps / r.cpu_s),
        ):
            ratios = [speed(by["rlbench", s]) / speed(by["sb3", s]) for s in seeds]
            per_seed = ", ".join(f"seed {s}: {x:.2f}" for s, x in zip(seeds, ratios, strict=True))
            print(f"{label} ratio rlbench / sb3: {per_seed}; mean {statistics.mean(ratios):.2f}")
    return by


def print_lanes(lr: LanesResult, sb3: list[Result], solved: float | None = None) -> None:
    """The lane group's aggregate speed and returns (how many reach ``solved``, else their
    median), and its speed against one SB3 process (the mean over ``sb3``'s runs)."""
    print(
        f"rlbench lanes: {lr.lanes} seeds (0-{lr.lanes - 1}) in one process, "
        f"{lr.threads} torch thread(s): wall {lr.wall_s:.1f} s, cpu {lr.cpu_s:.1f} s, "
        f"aggregate {lr.steps_per_second:.0f} steps/s, "
        f"{lr.lanes * lr.steps / lr.cpu_s:.0f} steps/cpu-s",
        flush=True,
    )
    if solved is None:
        spread = f"median {statistics.median(lr.returns):.1f}"
    else:
        spread = f"{sum(r >= solved for r in lr.returns)}/{lr.lanes} seeds >= {solved:g}"
    print(
        f"rlbench lanes final returns: mean {statistics.mean(lr.returns):.1f}, {spread}; "
        + " ".join(f"{r:.0f}" for r in lr.returns)
    )
    if sb3:
        one = statistics.mean(r.steps_per_second for r in sb3)
        one_cpu = statistics.mean(r.steps / r.cpu_s for r in sb3)
        print(
            f"aggregate steps/s ratio, {lr.lanes} rlbench lanes ({lr.threads} thread(s)) "
            f"/ one sb3 process (1 thread): {lr.steps_per_second / one:.2f} "
            f"(steps/cpu-s: {lr.lanes * lr.steps / lr.cpu_s / one_cpu:.2f})",
            flush=True,
        )


def toml_value(value: object) -> str:
    """``value`` as a TOML literal, for the suites the comparisons write (booleans, strings,
    numbers and lists of them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def case_arguments(
    parser: argparse.ArgumentParser,
    cases: Sequence[str],
    steps_default: int | None,
    steps_help: str,
) -> None:
    """The options every case-based comparison (``sb3_pg.py``, ``sb3_offpolicy.py``) takes:
    ``--cases``, ``--seeds``, ``--steps``, ``--frameworks``, ``--eval-episodes``, ``--lanes``
    and ``--lane-threads``."""
    parser.add_argument("--cases", nargs="+", choices=list(cases), default=list(cases))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=steps_default, help=steps_help)
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument(
        "--lanes",
        type=int,
        default=16,
        help="then train this many seeds (0, 1, ...) of each case as lanes of one process "
        "(0: skip)",
    )
    parser.add_argument(
        "--lane-threads",
        type=int,
        nargs="+",
        default=[1],
        help="torch threads of the lanes' process; several values train the lanes once each",
    )


def announce_and_warm_up(
    frameworks: Sequence[str], gymnasium_version: str, numpy_version: str
) -> None:
    """Print the versions a comparison ran with, and pay here the lazy imports that the first
    optimizer and the first backward passes of a process pay (about a second each: the
    optimizers' modules, sympy for a backward pass given its gradient, the first pass
    restricted to some inputs), not in whichever framework happens to run first."""
    print(
        f"one torch thread per run; torch {torch.__version__}, gymnasium {gymnasium_version}, "
        f"numpy {numpy_version}, stable-baselines3 {sb3_version(frameworks)}",
        flush=True,
    )
    warm = torch.nn.Parameter(torch.zeros(1))
    torch.optim.Adam([warm])
    torch.optim.Adam([warm], fused=True)
    torch.optim.RMSprop([warm])
    (warm * 2).backward(torch.ones(1))
    (warm * 2).sum().backward(inputs=[warm])
