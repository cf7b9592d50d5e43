"""Stepping environments for an agent: the action an environment receives, and every lane's
training environments stepped once.

The action contract lives in :func:`env_actions`, the one place where what an agent's
:meth:`~rlbench.agent.Agent.act` returned becomes what ``env.step`` receives: a ``Discrete``
action becomes a Python ``int``, a ``Box`` action is clipped to the space's bounds, any other
action is passed as it is. The :class:`~rlbench.agent.Transition` the agent observes keeps
what it returned (an on-policy agent needs its raw sample for the log-probability).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import EzPickle

#: One finished episode as ``episodes.csv`` records it: ``step`` (the training step it ended
#: at), ``return``, ``length`` and ``terminated``.
Episode = dict[str, Any]


def env_actions(space: gym.Space) -> Callable[[np.ndarray], Sequence[Sequence[Any]]]:
    """The conversion from the actions an agent returned for every environment, ``[lanes,
    num_envs, ...]`` (numpy), to what each ``env.step`` of an environment with action
    ``space`` gets, indexed ``[lane][env]``: a ``Discrete`` action as a Python ``int``, a
    ``Box`` action clipped to the bounds, anything else as it is. One conversion per step,
    not one per environment."""
    if isinstance(space, gym.spaces.Discrete):
        return lambda actions: actions.tolist()
    if isinstance(space, gym.spaces.Box):
        low, high = space.low, space.high
        return lambda actions: np.clip(actions, low, high)
    return lambda actions: actions


def copy_problem(env: gym.Env) -> str | None:
    """Why a pickled copy of ``env`` would not continue where ``env`` is, or ``None``.

    Environments built on gymnasium's ``EzPickle`` (Box2D, MuJoCo) pickle their constructor
    arguments only: a copy is a new, unreset environment. Others (the classic-control tasks)
    pickle their whole state, wrappers' step counters included."""
    layer: Any = env
    while layer is not None:
        if isinstance(layer, EzPickle):
            name = type(env.unwrapped).__name__
            return f"{name} pickles its constructor arguments only (EzPickle), not its state"
        layer = getattr(layer, "env", None)
    try:
        pickle.dumps(env)
    except Exception as exc:  # any pickling failure means "cannot copy"
        return f"{type(env.unwrapped).__name__} cannot be pickled ({type(exc).__name__})"
    return None


@dataclass(frozen=True)
class EnvStep:
    """One step of every lane's training environments: ``[lanes, num_envs, ...]`` arrays."""

    obs: np.ndarray
    """The observations the step produced (the transition's ``next_obs``)."""
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    next_obs: np.ndarray
    """What the next ``act`` sees: ``obs``, with the reset observation where an episode
    ended (``obs`` itself, the same array, when none did)."""
    episodes: list[tuple[int, Episode]]
    """``(lane, episode)`` for every episode that ended at this step."""


class LaneEnvs:
    """Every lane's training environments (``envs[lane][i]``), stepped together, with each
    environment's running episode return and length."""

    def __init__(self, envs: Sequence[Sequence[gym.Env]]) -> None:
        self.envs = [list(lane_envs) for lane_envs in envs]
        self.lanes, self.num_envs = len(self.envs), len(self.envs[0])
        self.action_space = self.envs[0][0].action_space
        self._env_actions = env_actions(self.action_space)
        self._return = np.zeros((self.lanes, self.num_envs))
        self._length = np.zeros((self.lanes, self.num_envs), dtype=np.int64)
        self._obs: np.ndarray | None = None

    @property
    def obs(self) -> np.ndarray:
        """What the next ``act`` sees: ``[lanes, num_envs, *obs_shape]``."""
        assert self._obs is not None, "reset() first"
        return self._obs

    def copy_problem(self) -> str | None:
        """Why :meth:`state` cannot copy these environments exactly (``None``: it can)."""
        return copy_problem(self.first)

    def state(self) -> dict[str, Any]:
        """The environments mid-episode (pickled) with each one's running return, length
        and current observation: :meth:`load_state` of new ``LaneEnvs`` continues exactly
        here. Only where :meth:`copy_problem` is ``None``."""
        return {
            "envs": pickle.dumps(self.envs),
            "return": self._return.copy(),
            "length": self._length.copy(),
            "obs": self.obs.copy(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        for lane_envs in self.envs:
            for env in lane_envs:
                env.close()
        self.envs = pickle.loads(state["envs"])
        self._return, self._length = state["return"].copy(), state["length"].copy()
        self._obs = state["obs"].copy()

    @property
    def first(self) -> gym.Env:
        """Lane 0's first environment (the one the agent is built for)."""
        return self.envs[0][0]

    def reset(self, seeds: Sequence[Sequence[int]]) -> np.ndarray:
        """Reset environment ``i`` of lane ``k`` with ``seeds[k][i]``; the first
        observations, ``[lanes, num_envs, *obs_shape]``."""
        self._obs = np.stack(
            [
                np.stack([env.reset(seed=s)[0] for env, s in zip(lane_envs, ss, strict=True)])
                for lane_envs, ss in zip(self.envs, seeds, strict=True)
            ]
        )
        return self._obs

    def step(self, actions: np.ndarray, step: int) -> EnvStep:
        """Step environment ``i`` of lane ``k`` with ``actions[k, i]`` (what the agent
        returned, converted by :func:`env_actions`); ``step`` is the training step before
        this one. An environment whose episode ends is reset (unseeded: it continues its
        own random stream)."""
        assert self._obs is not None, "reset() first"
        sent = self._env_actions(actions)
        stepped = [
            env.step(action)
            for lane_envs, lane_actions in zip(self.envs, sent, strict=True)
            for env, action in zip(lane_envs, lane_actions, strict=True)
        ]
        shape = (self.lanes, self.num_envs)
        obs = (
            np.stack([s[0] for s in stepped])
            .reshape(self._obs.shape)
            .astype(self._obs.dtype, copy=False)
        )
        rewards = np.array([s[1] for s in stepped], dtype=np.float64).reshape(shape)
        reward = rewards.astype(np.float32)
        terminated = np.array([s[2] for s in stepped], dtype=bool).reshape(shape)
        truncated = np.array([s[3] for s in stepped], dtype=bool).reshape(shape)
        self._return += rewards  # the episode returns accumulate the rewards as the env gave them
        self._length += 1
        episodes: list[tuple[int, Episode]] = []
        resets: list[tuple[int, int, Any]] = []
        for k, i in zip(*np.nonzero(terminated | truncated), strict=True):
            k, i = int(k), int(i)
            episode = {
                "step": step + i + 1,
                "return": float(self._return[k, i]),
                "length": int(self._length[k, i]),
                "terminated": bool(terminated[k, i]),
            }
            episodes.append((k, episode))
            self._return[k, i], self._length[k, i] = 0.0, 0
            resets.append((k, i, self.envs[k][i].reset()[0]))
        # Only where an episode ended does the next observation differ from the step's, and
        # only then does it get an array of its own.
        next_obs = obs
        if resets:
            next_obs = obs.copy()
            for k, i, o in resets:
                next_obs[k, i] = o
        self._obs = next_obs
        return EnvStep(obs, reward, terminated, truncated, next_obs, episodes)

    def close(self) -> None:
        for lane_envs in self.envs:
            for env in lane_envs:
                env.close()
