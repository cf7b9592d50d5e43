"""Hook specifications: everything a plugin can provide to rlbench.

A plugin is a module (usually a pip-installable package) that implements some of these
hooks with the :data:`rlbench.hookimpl` marker and names itself in its ``pyproject.toml``::

    [project.entry-points.rlbench]
    my_plugin = "my_package.plugin"

rlbench's own agents, networks and environments are registered exactly this way.

Hooks are called with keyword arguments only, and an implementation may accept fewer
arguments than its specification, so new arguments can be added without breaking plugins.
"""

from __future__ import annotations

from typing import Any

import pluggy

from rlbench.specs import AgentSpec, EnvironmentSpec, NetworkSpec

PROJECT_NAME = "rlbench"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -------------------------------------------------------------------------
# Registration: called once per plugin manager, when rlbench first needs the
# catalogue of names (``rlbench list``, validating a suite, running a run).
# -------------------------------------------------------------------------


@hookspec
def rlbench_register_agents() -> list[AgentSpec]:
    """Return the agents this plugin provides.

    Called once, when rlbench builds its catalogue of agents (in the main process and in
    every worker process). Receives nothing.

    :returns: a list of :class:`~rlbench.specs.AgentSpec`. Names must be unique across all
        installed plugins; two plugins registering the same name is an error naming both.
    """


@hookspec
def rlbench_register_networks() -> list[NetworkSpec]:
    """Return the network families this plugin provides.

    Called once, when rlbench builds its catalogue of networks. Receives nothing. A suite
    chooses a network per agent with ``[agents.network] name = "..."`` and shapes it with the
    network's own options (validated against :attr:`NetworkSpec.config_model`).

    :returns: a list of :class:`~rlbench.specs.NetworkSpec` with unique names.
    """


@hookspec
def rlbench_register_environments() -> list[EnvironmentSpec]:
    """Return the environments this plugin provides.

    Called once, when rlbench builds its catalogue of environments. Receives nothing. Any
    Gymnasium id works in a suite without a plugin; register an
    :class:`~rlbench.specs.EnvironmentSpec` to add a new environment, wrappers, or reference
    scores (random-policy return and "solved" threshold) that reports normalize with. An
    environment spec whose name is a Gymnasium id takes precedence over plain ``gym.make``.

    :returns: a list of :class:`~rlbench.specs.EnvironmentSpec` with unique names.
    """


# -------------------------------------------------------------------------
# Tuning: called by ``rlbench tune`` (and by ``rlbench validate`` on a suite with a
# ``[tune]`` table) for the one agent being tuned.
#
# A hook rather than a ``search_space`` field on AgentSpec: AgentSpec stays as it is (no
# plugin needs to change), and a plugin can provide or override the search space of an
# agent it does not own (a package of tuned spaces for another package's agents, or a
# user's ``-p`` module), which a field on the owner's spec cannot allow.
# -------------------------------------------------------------------------


@hookspec(firstresult=True)
def rlbench_search_space(agent_name: str) -> dict[str, Any] | None:
    """Return the default hyperparameter search space of an agent, or ``None``.

    Called once per ``rlbench tune`` or ``rlbench validate`` of a suite with a ``[tune]``
    table, for the agent being tuned. Receives the agent's registered name. Plugins are
    asked in reverse registration order (``-p`` modules first, then entry points in
    reverse name order) and the first that returns something other than ``None`` wins; a
    plugin that knows nothing about the agent returns ``None``.

    :returns: ``{hyperparameter: dimension}`` in the suite file's ``[tune.space.<label>]``
        format (see ``docs/tuning.md``): ``{"low": 1e-4, "high": 1e-2, "log": True}`` (a
        float range, or an integer range when both bounds are integers, optionally with
        ``"step"``), ``{"choices": [...]}``, or a plain value (fixed). Keys must be fields of
        the agent's config. A suite's ``[tune.space.<label>]`` overrides it key by key.
    """
