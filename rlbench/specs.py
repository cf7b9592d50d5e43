"""What plugins register: agents, networks and environments, each under a unique name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import torch
from pydantic import BaseModel, ConfigDict

from rlbench.agent import Agent, AgentConfig


def _first_line(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, on one line."""
    paragraph = " ".join((doc or "").strip().split("\n\n")[0].split())
    return paragraph.split(". ")[0].rstrip(".") + "." if paragraph else ""


@dataclass(frozen=True)
class AgentSpec:
    """An agent a plugin provides.

    ``name`` is what suite files use (``[[agents]] name = "dqn"``); ``agent`` is an
    :class:`~rlbench.agent.Agent` subclass whose ``Config`` holds its hyperparameters.
    """

    name: str
    agent: type[Agent]
    description: str = ""

    @property
    def config_model(self) -> type[AgentConfig]:
        return self.agent.Config

    @property
    def summary(self) -> str:
        return self.description or _first_line(self.agent.__doc__)


class NetworkConfig(BaseModel):
    """Base class of a network's options (the keys beside ``name`` in a suite's network
    table). Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)


@dataclass(frozen=True)
class NetworkSpec:
    """A network family a plugin provides.

    ``build(in_features, out_features, config)`` returns a fresh ``torch.nn.Module`` mapping
    ``[batch, in_features]`` to ``[batch, out_features]``; ``config`` is an instance of
    ``config_model`` built from the suite file.
    """

    name: str
    build: Callable[[int, int, Any], torch.nn.Module]
    config_model: type[NetworkConfig] = NetworkConfig
    description: str = ""

    @property
    def summary(self) -> str:
        return self.description or _first_line(self.build.__doc__)


@dataclass(frozen=True)
class ReferenceScores:
    """Two returns that put an environment's scores on a common scale: what a uniformly
    random policy gets, and the threshold at which the task counts as solved. Reports
    normalize as ``(score - random) / (solved - random)``."""

    random: float
    solved: float


@dataclass(frozen=True)
class EnvironmentSpec:
    """An environment a plugin provides, or reference data for an existing Gymnasium id.

    ``make(**kwargs)`` returns a fresh ``gymnasium.Env``; ``wrappers`` are applied in order
    afterwards (each ``wrapper(env) -> env``). Suite files pass ``kwargs`` through.
    """

    name: str
    make: Callable[..., gym.Env]
    reference: ReferenceScores | None = None
    wrappers: tuple[Callable[[gym.Env], gym.Env], ...] = ()
    description: str = ""
    default_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def create(self, **kwargs: Any) -> gym.Env:
        env = self.make(**{**self.default_kwargs, **kwargs})
        for wrap in self.wrappers:
            env = wrap(env)
        return env

    @property
    def summary(self) -> str:
        return self.description or _first_line(getattr(self.make, "__doc__", None))
