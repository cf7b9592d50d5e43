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
