"""Measure the mean return of a uniformly random policy (the ``random`` reference score) on
any environment in rlbench's catalogue: a Gymnasium id, or one a plugin registers.

    python benchmarks/random_scores.py CartPole-v1 Acrobot-v1 MountainCar-v0 --episodes 1000
    python benchmarks/random_scores.py LunarLander-v3 --kwargs '{"continuous": true}'
    RLBENCH_PLUGINS=my_envs python benchmarks/random_scores.py MyEnv-v0 --episodes 100

Environments are made as a run makes them (the plugin's ``make``, its default kwargs and
wrappers, then ``--kwargs``), so a plugin environment's floor is measured on what agents
train on. Episode ``i`` starts from ``reset(seed=i)`` and the action space is seeded with 0,
so a measurement repeats exactly.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from rlbench.errors import RlbenchError
from rlbench.plugins import Catalogue, load_catalogue


def random_return(
    catalogue: Catalogue, env_id: str, episodes: int, kwargs: Mapping[str, Any] | None = None
) -> tuple[float, float]:
    """Mean and standard deviation of the return of uniformly random actions over
    ``episodes`` episodes of ``env_id`` made with ``kwargs``."""
    env = catalogue.environment(env_id).create(**(kwargs or {}))
    try:
        env.action_space.seed(0)
        returns = []
        for episode in range(episodes):
            env.reset(seed=episode)
            total, done = 0.0, False
            while not done:
                _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    finally:
        env.close()
    return float(np.mean(returns)), float(np.std(returns))


def _kwargs(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("env_ids", nargs="+", metavar="ENV")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument(
        "--kwargs",
        type=_kwargs,
        default={},
        help='environment kwargs as a JSON object, e.g. \'{"continuous": true}\'',
    )
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes: expected a positive integer, got {args.episodes}")
    catalogue = load_catalogue()
    given = f" with kwargs {json.dumps(args.kwargs)}" if args.kwargs else ""
    for env_id in args.env_ids:
        try:
            mean, std = random_return(catalogue, env_id, args.episodes, args.kwargs)
        except RlbenchError as exc:  # an unknown name: the catalogue's message says which
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"{env_id}{given}: {mean:.1f} ± {std:.1f} over {args.episodes} episodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
