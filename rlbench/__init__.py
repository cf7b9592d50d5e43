"""rlbench: a plugin-based benchmark suite for deep reinforcement-learning agents.

The public API for plugin authors lives here; everything else is the harness.
"""

from __future__ import annotations

from importlib import metadata

from rlbench.agent import Agent, AgentConfig, AgentContext, LaneAgent, Transition
from rlbench.hookspecs import hookimpl
from rlbench.specs import (
    AgentSpec,
    EnvironmentSpec,
    NetworkConfig,
    NetworkSpec,
    ReferenceScores,
)

try:
    __version__ = metadata.version("rlbench")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentContext",
    "AgentSpec",
    "EnvironmentSpec",
    "LaneAgent",
    "NetworkConfig",
    "NetworkSpec",
    "ReferenceScores",
    "Transition",
    "__version__",
    "hookimpl",
]
