"""What a lane agent needs to know about gymnasium spaces to size its networks."""

from __future__ import annotations

import math

import gymnasium as gym


def flat_size(space: gym.Space) -> int:
    """Numbers in one observation (or action) of ``space``: its shape's product, 1 for a
    scalar. The harness hands an agent observations ``[lanes, n, *shape]``; ``obs.flatten(2)``
    makes them ``[lanes, n, flat_size]``, what a network built with ``flat_size`` inputs reads."""
    return int(math.prod(space.shape or (1,)))
