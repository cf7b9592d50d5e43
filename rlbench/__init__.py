"""rlbench: a plugin-based benchmark suite for deep reinforcement-learning agents.

The public API for plugin authors lives here; everything else is the harness.

The names below are imported on first use (PEP 562), not with the package: they bring in
torch and gymnasium, which reading results (``rlbench report``, :mod:`rlbench.results`)
never needs. ``from rlbench import Agent`` works as always.
"""

from __future__ import annotations

import importlib
import os
from importlib import metadata
from typing import TYPE_CHECKING, Any

# Intel MKL's strict conditional numerical reproducibility: a matrix product's result does
# not depend on where its operands sit in memory, so lane k of a stacked batch computes what
# it computes alone, whatever the group's size and k's place in it (see rlbench.lanes). MKL
# reads this once, at its first call, so it is set before torch is imported; a value the user
# set is kept (and recorded in each run's provenance).
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

if TYPE_CHECKING:
    from rlbench.agent import Agent, AgentConfig, AgentContext, LaneAgent, Transition
    from rlbench.hookspecs import hookimpl
    from rlbench.loggers import LogContext, Logger, LoggerSpec, RunStart
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

#: Public name -> the module that defines it.
_LAZY = {
    "Agent": "rlbench.agent",
    "AgentConfig": "rlbench.agent",
    "AgentContext": "rlbench.agent",
    "LaneAgent": "rlbench.agent",
    "Transition": "rlbench.agent",
    "hookimpl": "rlbench.hookspecs",
    "LogContext": "rlbench.loggers",
    "Logger": "rlbench.loggers",
    "LoggerSpec": "rlbench.loggers",
    "RunStart": "rlbench.loggers",
    "AgentSpec": "rlbench.specs",
    "EnvironmentSpec": "rlbench.specs",
    "NetworkConfig": "rlbench.specs",
    "NetworkSpec": "rlbench.specs",
    "ReferenceScores": "rlbench.specs",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rlbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "Agent",
    "AgentConfig",
    "AgentContext",
    "AgentSpec",
    "EnvironmentSpec",
    "LaneAgent",
    "LogContext",
    "Logger",
    "LoggerSpec",
    "NetworkConfig",
    "NetworkSpec",
    "ReferenceScores",
    "RunStart",
    "Transition",
    "__version__",
    "hookimpl",
]
