"""Hook specifications: everything a plugin can provide to rlbench.

A plugin is a module (usually a pip-installable package) that implements some of these
hooks with the :data:`rlbench.hookimpl` marker and names itself in its ``pyproject.toml``::

    [project.entry-points.rlbench]
    my_plugin = "my_package.plugin"

rlbench's own agents, networks and environments are registered exactly this way.

Hooks are called with keyword arguments only, and an implementation may accept fewer
arguments than its specification, so new arguments can be added without breaking plugins.
Each plugin's implementation is called on its own (so that what it returns is attributed to
it), and what it returns is checked: a plugin whose registration hook raises or returns
something that is not a list of valid specs is reported as broken and contributes nothing.
"""

from __future__ import annotations

from typing import Any

import pluggy

from rlbench.loggers import LoggerSpec
from rlbench.specs import AgentSpec, EnvironmentSpec, NetworkSpec

PROJECT_NAME = "rlbench"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -------------------------------------------------------------------------
# Registration hooks: called once per catalogue, when rlbench builds it (every command
# that needs the names of agents, networks or environments: list, validate, run, tune,
# ...; and every worker process of `run -j N` and of `tune`, which builds its own).
# -------------------------------------------------------------------------


@hookspec
def rlbench_register_agents() -> list[AgentSpec]:
    """Return the agents this plugin provides.

    Called once per catalogue, when rlbench builds it: in the main process of every
    command and in every worker process. Takes no parameters.

    :returns: a list of :class:`~rlbench.specs.AgentSpec` (``[]`` registers nothing). Each
        ``name`` is what suite files write in ``[[agents]] name = ...``; it must be a safe
        name (see :func:`rlbench.specs.name_problem`: no ``/``, no ``..``, no control
        characters) and unique across all installed plugins: two plugins registering the
        same name is an error naming both. Anything else in the list (``None``, a
        :class:`~rlbench.specs.NetworkSpec`, an ``agent`` that is not an
        :class:`~rlbench.agent.Agent` subclass) makes the plugin broken.
    """


@hookspec
def rlbench_register_networks() -> list[NetworkSpec]:
    """Return the network families this plugin provides.

    Called once per catalogue, when rlbench builds it, like
    :func:`rlbench_register_agents`. Takes no parameters. A suite chooses a network per
    agent with ``network = { name = "...", ... }`` and shapes it with the network's own
    options (validated against :attr:`NetworkSpec.config_model`).

    :returns: a list of :class:`~rlbench.specs.NetworkSpec` with safe, unique names (no
        ``/``) and a ``config_model`` that subclasses :class:`~rlbench.specs.NetworkConfig`;
        anything else makes the plugin broken.
    """


@hookspec
def rlbench_register_environments() -> list[EnvironmentSpec]:
    """Return the environments this plugin provides.

    Called once per catalogue, when rlbench builds it, like
    :func:`rlbench_register_agents`. Takes no parameters. Any Gymnasium id works in a
    suite without a plugin; register an :class:`~rlbench.specs.EnvironmentSpec` to add a
    new environment, wrappers, or reference scores (random-policy return and "solved"
    threshold) that reports normalize with. An environment spec whose name is a Gymnasium
    id takes precedence over plain ``gym.make``.

    :returns: a list of :class:`~rlbench.specs.EnvironmentSpec` with safe, unique names; an
        environment's name may contain ``/`` between non-empty parts, as Gymnasium's
        namespaced ids do (``ALE/Pong-v5``). Anything else makes the plugin broken.
    """


# -------------------------------------------------------------------------
# Tuning hook: asked only for the agent being tuned, through Catalogue.search_space.
#
# A hook rather than a ``search_space`` field on AgentSpec: AgentSpec stays as it is (no
# plugin needs to change), and a plugin can provide or override the search space of an
# agent it does not own (a package of tuned spaces for another package's agents, or a
# user's ``-p`` module), which a field on the owner's spec cannot allow.
# -------------------------------------------------------------------------


@hookspec(firstresult=True)
def rlbench_search_space(agent_name: str) -> dict[str, Any] | None:
    """Return the default hyperparameter search space of an agent, or ``None``.

    Called at most once per catalogue and agent, when rlbench needs the default search
    space of the agent being tuned: by ``rlbench tune``, and whenever a suite with a
    ``[tune]`` table is validated (``rlbench validate``, ``rlbench run``). Plugins are
    asked in reverse registration order (``-p`` modules first, then entry points in
    reverse name order) and the first that returns something other than ``None`` wins.

    :param agent_name: the registered name of the agent being tuned (the ``name`` of the
        suite's ``[[agents]]`` entry, not its ``label``). A plugin that knows nothing
        about this agent returns ``None``.
    :returns: ``None``, or ``{hyperparameter: dimension}`` in the suite file's
        ``[tune.space.<label>]`` format (see ``docs/tuning.md``):
        ``{"low": 1e-4, "high": 1e-2, "log": True}`` (a float range, or an integer range
        when both bounds are integers, optionally with ``"step"``), ``{"choices": [...]}``,
        or a plain value (fixed). Keys must be fields of the agent's config. A suite's
        ``[tune.space.<label>]`` overrides it key by key. Returning anything other than a
        dict or ``None``, or raising, is an error naming the plugin.
    """


# -------------------------------------------------------------------------
# Logger hook: experiment trackers (TensorBoard, MLflow, Weights & Biases, yours), chosen per
# command with ``rlbench run --log NAME,...`` or a suite's ``log = [...]``.
#
# A registration hook, like the ones above, rather than a hook called with every event: a
# command feeds only the loggers it chose, each keeps its own state per run (a writer, a
# tracker's run), and one that fails is dropped alone (rlbench.tracking).
# -------------------------------------------------------------------------


@hookspec
def rlbench_register_loggers() -> list[LoggerSpec]:
    """Return the loggers (experiment trackers) this plugin provides.

    Called once per catalogue, when rlbench builds it, like
    :func:`rlbench_register_agents`. Takes no parameters. Registering a logger must not import
    the tracker's package (every worker process builds a catalogue); its
    :attr:`~rlbench.loggers.LoggerSpec.create` does, once per command that chooses it, in
    the driver process. The :class:`~rlbench.loggers.Logger` it returns then receives every
    run of that command: its start (``config.json`` and ``provenance.json``), the training
    episodes, metrics and evaluation of each evaluation interval (the rows the run's CSV
    files gain), and its end (``status.json``), on every executor.

    :returns: a list of :class:`~rlbench.loggers.LoggerSpec` with safe, unique names (no
        ``/``, ``,`` or space: ``--log`` takes a comma-separated list); ``requires`` names the
        modules the tracker imports and ``install`` the command that installs them, which
        a command choosing the logger without them shows. Anything else in the list makes
        the plugin broken.
    """
