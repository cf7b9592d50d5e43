"""Experience replay for every lane at once: a preallocated tensor buffer, sampled per lane.

Any off-policy lane agent can use it: discrete actions are stored as integers, ``Box``
actions as float vectors (:meth:`LaneReplayBuffer.for_agent` reads which from the agent's
action space).
"""

from __future__ import annotations

from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch

from rlbench.agent import AgentContext, Transition
from rlbench.lanes.spaces import flat_size


class ReplaySample(NamedTuple):
    """Sampled transitions: ``obs`` and ``next_obs`` are ``[lanes, count, obs_size]``,
    ``reward`` and ``terminated`` are ``[lanes, count]``, ``action`` is ``[lanes, count,
    *action_shape]`` (``[lanes, count]`` for discrete actions)."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor


class LaneReplayBuffer:
    """A circular buffer of transitions for every lane, preallocated as tensors on the
    agent's device: fields ``[lanes, capacity, ...]``. Lanes step in lockstep, so they all
    hold the same number of transitions; lane ``k`` is sampled with its own generator
    ``rngs[k]`` (the indices a one-lane buffer of that seed draws).

    Observations are stored flattened (``obs_size`` numbers, float32); actions with
    ``action_shape`` and ``action_dtype`` (``()`` and ``torch.long`` for discrete actions,
    ``(dim,)`` and ``torch.float32`` for ``Box`` actions).

    Adding a step is one slice assignment per field (through numpy views of the same memory
    on the CPU, where that is several times cheaper than a tensor assignment); sampling is
    one index tensor."""

    FIELDS = ("obs", "next_obs", "action", "reward", "terminated")

    def __init__(
        self,
        capacity: int,
        obs_size: int,
        device: torch.device,
        rngs: tuple[np.random.Generator, ...],
        *,
        action_shape: tuple[int, ...] = (),
        action_dtype: torch.dtype = torch.long,
    ) -> None:
        lanes = len(rngs)
        self.capacity = capacity
        self.rngs = rngs
        self.obs = torch.zeros((lanes, capacity, obs_size), dtype=torch.float32, device=device)
        self.next_obs = torch.zeros_like(self.obs)
        self.action_shape = tuple(action_shape)
        self.action = torch.zeros(
            (lanes, capacity, *self.action_shape), dtype=action_dtype, device=device
        )
        self.reward = torch.zeros((lanes, capacity), dtype=torch.float32, device=device)
        self.terminated = torch.zeros((lanes, capacity), dtype=torch.bool, device=device)
        self.lane_index = torch.arange(lanes, device=device).unsqueeze(1)
        self._np = (
            tuple(getattr(self, name).numpy() for name in self.FIELDS)
            if self.obs.device.type == "cpu"
            else None
        )
        self.position = 0
        self.size = 0

    @classmethod
    def for_agent(cls, capacity: int, context: AgentContext) -> LaneReplayBuffer:
        """A buffer of ``capacity`` transitions per lane for the agent of ``context``: its
        flattened observations and its actions (:func:`action_layout`), on its device,
        sampled with its lanes' generators."""
        obs_size = flat_size(context.observation_space)
        shape, dtype = action_layout(context.action_space)
        return cls(
            capacity,
            obs_size,
            context.device,
            context.lane_rngs,
            action_shape=shape,
            action_dtype=dtype,
        )

    def __len__(self) -> int:
        return self.size

    def add(self, t: Transition) -> None:
        """Store one step of every lane: ``t``'s fields are ``[lanes, n, ...]``."""
        lanes, n = t.obs.shape[:2]
        p = self.position
        where: slice | torch.Tensor = (
            slice(p, p + n) if p + n <= self.capacity else (torch.arange(n) + p) % self.capacity
        )
        values = (
            t.obs.flatten(2),
            t.next_obs.flatten(2),
            t.action.to(self.action.dtype).reshape(lanes, n, *self.action_shape),
            t.reward.float(),
            t.terminated.bool(),
        )
        if self._np is not None and all(v.device.type == "cpu" for v in values):
            np_where = where if isinstance(where, slice) else where.numpy()
            for array, value in zip(self._np, values, strict=True):
                array[:, np_where] = value.detach().numpy()
        else:
            for name, value in zip(self.FIELDS, values, strict=True):
                getattr(self, name)[:, where] = value
        self.position = (p + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample_indices(self, count: int, *, replace: bool = True) -> torch.Tensor:
        """``[lanes, count]`` indices, drawn uniformly (with replacement unless
        ``replace=False``, as Python's ``random.sample`` draws); row ``k`` from ``rngs[k]``.

        One call for ``j * batch`` indices draws exactly what ``j`` calls for ``batch`` do
        (numpy's bounded integers are drawn element by element), so a training phase can draw
        all its minibatches at once."""
        if replace:
            rows = [rng.integers(self.size, size=count) for rng in self.rngs]
        else:
            rows = [rng.choice(self.size, size=count, replace=False) for rng in self.rngs]
        return torch.as_tensor(np.stack(rows)).to(self.obs.device)

    def sample(self, count: int, *, replace: bool = True) -> ReplaySample:
        """:meth:`gather` of :meth:`sample_indices`."""
        return self.gather(self.sample_indices(count, replace=replace))

    def gather(self, idx: torch.Tensor) -> ReplaySample:
        """The transitions at ``idx`` (``[lanes, count]``), each field ``[lanes, count, ...]``."""
        lane = self.lane_index
        return ReplaySample(
            obs=self.obs[lane, idx],
            action=self.action[lane, idx],
            reward=self.reward[lane, idx],
            next_obs=self.next_obs[lane, idx],
            terminated=self.terminated[lane, idx],
        )


def action_layout(space: gym.Space) -> tuple[tuple[int, ...], torch.dtype]:
    """How a replay buffer stores one action of ``space``: ``((), torch.long)`` for
    ``Discrete``, ``((size,), torch.float32)`` for ``Box`` (flattened), ``((n,),
    torch.long)`` for ``MultiDiscrete``."""
    if isinstance(space, gym.spaces.Discrete):
        return (), torch.long
    if isinstance(space, gym.spaces.Box):
        return (flat_size(space),), torch.float32
    if isinstance(space, gym.spaces.MultiDiscrete):
        return (flat_size(space),), torch.long
    raise ValueError(f"a replay buffer stores Discrete, Box or MultiDiscrete actions, got {space}")
