"""What the Ray executor and mid-run checkpoints cost, against local worker processes.

Runs one suite three times, each a fresh ``rlbench run`` into its own temporary results
folder, as a user would:

1. ``--jobs N --checkpoint-every 0``: local workers, no checkpoints (the baseline);
2. ``--jobs N``: local workers, a checkpoint after each evaluation (the default);
3. ``--executor ray``: the same on the Ray cluster at ``--address`` (``$RAY_ADDRESS``, or a
   local one started with ``scripts/ray_cluster.sh`` and stopped at the end: a head and a
   worker node, ``--ray-cpus`` CPUs each, which should add up to N);

and prints each one's wall time and its ratio to the baseline, the checkpoints' sizes
(taken with ``--keep-checkpoints``), and checks that all three wrote the same results.

    python benchmarks/ray_overhead.py                           # suites/cartpole.toml, N=2
    python benchmarks/ray_overhead.py --steps 10000             # the same suite, shorter runs
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from run_files import differences  # noqa: E402 - the tests' comparison of results folders


def rlbench_run(suite: Path, results: Path, *options: str) -> float:
    """Wall seconds of ``rlbench run SUITE --results RESULTS OPTIONS`` (which must succeed)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "rlbench", "run", str(suite), "--results", str(results),
         "--no-report", *options],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"rlbench run {' '.join(options)} failed:\n{done.stdout}\n{done.stderr}")
    return wall


def scaled_suite(suite: Path, steps: int | None, folder: Path) -> Path:
    """``suite``, or a copy of it whose ``[budget] steps`` is ``steps``."""
    if steps is None:
        return suite
    text = re.sub(r"(?m)^steps\s*=.*$", f"steps = {steps}", suite.read_text(), count=1)
    copy = folder / suite.name
    copy.write_text(text)
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", type=Path, default=REPO / "suites" / "cartpole.toml")
    parser.add_argument("--steps", type=int, default=None, help="override [budget] steps")
    parser.add_argument("--jobs", type=int, default=2, help="local worker processes (N)")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"))
    parser.add_argument("--ray-cpus", type=int, default=1, help="CPUs of each local node")
    parser.add_argument("--no-local-checkpoints", action="store_true",
                        help="skip the local run with checkpoints (the second)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rlbench-ray-bench-"))
    suite = scaled_suite(args.suite, args.steps, work)
    started_cluster = False
    address = args.address
    env = dict(os.environ)
    if address is None:
        env = {**os.environ, "RLBENCH_RAY_CPUS": str(args.ray_cpus), "RLBENCH_RAY_PORT": "6398",
               "RLBENCH_RAY_DIR": str(work / "ray")}
        up = subprocess.run(["bash", str(REPO / "scripts" / "ray_cluster.sh"), "start"],
                            capture_output=True, text=True, env=env, check=True)
        address = up.stdout.strip().splitlines()[-1]
        started_cluster = True
    try:
        jobs = str(args.jobs)
        budget = "its own budget" if args.steps is None else f"{args.steps} steps"
        print(f"suite {suite} ({budget})")
        base = rlbench_run(suite, work / "base", "-j", jobs, "--checkpoint-every", "0")
        print(f"local --jobs {jobs}, no checkpoints:        {base:7.1f} s  1.00 (baseline)")
        others = ["ray"]
        if not args.no_local_checkpoints:
            ckpt = rlbench_run(suite, work / "ckpt", "-j", jobs, "--keep-checkpoints")
            print(f"local --jobs {jobs}, checkpoint each eval:  {ckpt:7.1f} s  {ckpt / base:.3f}")
            others.insert(0, "ckpt")
        ray = rlbench_run(suite, work / "ray", "--executor", "ray", "--address", address)
        print(f"ray at {address}, checkpoint each eval: {ray:7.1f} s  {ray / base:.3f}")
        sizes = [p.stat().st_size for p in work.rglob("ckpt/**/checkpoint.pt")]
        if sizes:
            print(f"checkpoints: {len(sizes)} (one per lane group), "
                  f"{min(sizes) / 1e6:.2f}-{max(sizes) / 1e6:.2f} MB each")
        name = next((work / "base").iterdir()).name
        same = [
            differences(work / "base" / name / "runs", work / other / name / "runs",
                        grouping=False)
            for other in others
        ]
        print("same results in every run:", "yes" if not any(same) else f"NO: {same}")
    finally:
        if started_cluster:
            subprocess.run(["bash", str(REPO / "scripts" / "ray_cluster.sh"), "stop"],
                           capture_output=True, env=env)


if __name__ == "__main__":
    main()
