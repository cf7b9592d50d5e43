"""Seeding: how a run's seed becomes every random stream it trains with.

For each lane, one ``numpy.random.SeedSequence(seed)`` is split into independent streams:
the agent's generator, the training environments' reset seeds, and the evaluation
environment's (:func:`seed_streams`); the lane's networks are initialised from
``torch.manual_seed(seed)`` (:func:`rlbench.building.build_agent`). Python's ``random``,
numpy's global generator and torch's are seeded with the first lane's seed too
(:func:`seed_everything`). The same seed, config and device (and torch thread count) give
the same evaluation curve, whichever group the run trains in.
"""

from __future__ import annotations

import random

import numpy as np
import torch


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
