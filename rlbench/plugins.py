"""Loading plugins and building the catalogue of agents, networks and environments.

Every plugin, rlbench's own included, is found through the ``rlbench`` entry-point group.
A fresh :class:`Catalogue` is built per command (and per worker process), and it owns the
one plugin manager that command uses: there is no global plugin manager.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Generic, TypeVar

import gymnasium as gym
import pluggy

from rlbench import hookspecs
from rlbench.errors import PluginError, RlbenchError, did_you_mean
from rlbench.loggers import LoggerSpec
from rlbench.specs import (
    SPEC_CLASSES,
    AgentSpec,
    EnvironmentSpec,
    NetworkSpec,
    SpecKind,
    describe_value,
    spec_problem,
)

ENTRY_POINT_GROUP = "rlbench"
#: Set to any non-empty value to load only rlbench's own plugins (plus RLBENCH_PLUGINS).
DISABLE_AUTOLOAD_ENV = "RLBENCH_DISABLE_PLUGIN_AUTOLOAD"
#: Comma-separated module names to register as plugins in addition to the entry points.
EXTRA_PLUGINS_ENV = "RLBENCH_PLUGINS"
#: Set to print every hook call, the plugin it went to and what it returned, to stderr.
TRACE_ENV = "RLBENCH_TRACE_HOOKS"

T = TypeVar("T", AgentSpec, NetworkSpec, EnvironmentSpec, LoggerSpec)


@dataclass(frozen=True)
class PluginInfo:
    """A loaded plugin: its registered name and the distribution that ships it."""

    name: str
    module: str
    distribution: str
    version: str

    @property
    def label(self) -> str:
        return f"{self.distribution} {self.version}"


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that failed to import or to register; the others load regardless."""

    name: str
    distribution: str
    error: str

    def describe(self) -> str:
        return f"plugin {self.name!r} ({self.distribution}) failed to load: {self.error}"


@dataclass(frozen=True)
class Provided(Generic[T]):
    """A spec and the plugin that registered it."""

    spec: T
    plugin: PluginInfo


@dataclass
class Catalogue:
    """Everything the installed plugins provide, by name (the façade the harness uses
    instead of calling hooks directly).

    A catalogue owns the plugin manager that built it, so a hook asked later (the search
    space of the agent being tuned) goes to exactly the plugins that were loaded, through
    the same manager and the same tracing."""

    plugins: list[PluginInfo] = field(default_factory=list)
    broken: list[BrokenPlugin] = field(default_factory=list)
    agents: dict[str, Provided[AgentSpec]] = field(default_factory=dict)
    networks: dict[str, Provided[NetworkSpec]] = field(default_factory=dict)
    environments: dict[str, Provided[EnvironmentSpec]] = field(default_factory=dict)
    loggers: dict[str, Provided[LoggerSpec]] = field(default_factory=dict)
    """Experiment trackers (``rlbench run --log NAME``), by name."""
    manager: pluggy.PluginManager | None = field(default=None, repr=False, compare=False)
    """The manager the plugins are registered with (``None``: a catalogue built by hand)."""
    _spaces: dict[str, tuple[dict[str, Any] | None, str]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def agent(self, name: str) -> AgentSpec:
        return self._lookup("agent", self.agents, name).spec

    def network(self, name: str) -> NetworkSpec:
        return self._lookup("network", self.networks, name).spec

    def logger(self, name: str) -> LoggerSpec:
        return self._lookup("logger", self.loggers, name).spec

    def logger_problems(self, names: Sequence[str]) -> list[str]:
        """One line per name of ``names`` that cannot be logged to (in order): an unknown
        logger (with did-you-mean and the loggers installed), or one whose tracker's package
        is missing (with the command that installs it)."""
        problems = []
        for name in names:
            if name not in self.loggers:
                known = ", ".join(sorted(self.loggers)) or "none"
                problems.append(
                    f"unknown logger {name!r}{did_you_mean(name, self.loggers)}; the loggers "
                    f"installed: {known}"
                )
                continue
            missing = self.logger(name).missing()
            if missing:
                problems.append(missing)
        return problems

    def environment(self, name: str) -> EnvironmentSpec:
        """The registered spec, else a plain ``gym.make`` of any registered Gymnasium id."""
        if name in self.environments:
            return self.environments[name].spec
        if name in gym.registry:
            return EnvironmentSpec(name=name, make=functools.partial(gym.make, name))
        pool = list(self.environments) + list(gym.registry)
        raise RlbenchError(self._unknown("environment", name, pool))

    def has_environment(self, name: str) -> bool:
        return name in self.environments or name in gym.registry

    def search_space(self, agent_name: str) -> dict[str, Any] | None:
        """The default search space that the plugins give for ``agent_name``, or ``None``
        when none of them knows the agent.

        Calls the ``rlbench_search_space`` hook (with ``agent_name=`` as a keyword) at most
        once per catalogue and agent, as the hookspec promises: the answer is kept, and
        every later call returns it. Plugins are asked one by one in pluggy's order and
        the first answer other than ``None`` wins (:meth:`search_space_plugin` names the
        plugin that gave it). A plugin whose hook raises, or returns something other than
        a dict with string keys or ``None``, is a :class:`~rlbench.errors.PluginError`
        naming it.
        """
        if agent_name not in self._spaces:
            self._spaces[agent_name] = self._ask_search_space(agent_name)
        return self._spaces[agent_name][0]

    def search_space_plugin(self, agent_name: str) -> str:
        """The name of the plugin whose space :meth:`search_space` returns for
        ``agent_name`` (``""`` when none gave one). Asks the hook only if
        :meth:`search_space` has not already."""
        self.search_space(agent_name)
        return self._spaces[agent_name][1]

    def _ask_search_space(self, agent_name: str) -> tuple[dict[str, Any] | None, str]:
        if self.manager is None:
            return None, ""
        pm, hook_name = self.manager, "rlbench_search_space"
        call = f"{hook_name}(agent_name={agent_name!r})"
        # Call the implementations one by one, in pluggy's firstresult order, to know which
        # plugin answered (the space's errors name it).
        for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):
            try:
                space = _call_plugin(pm, hook_name, impl.plugin, agent_name=agent_name)
            except Exception as exc:
                message = f"plugin {impl.plugin_name!r}: {call} raised {_one_line(exc)}"
                raise PluginError(message) from exc
            if space is None:
                continue
            if not (isinstance(space, dict) and all(isinstance(k, str) for k in space)):
                raise PluginError(
                    f"plugin {impl.plugin_name!r}: {call} returned {describe_value(space)}; "
                    "it must return a dict {hyperparameter: dimension} or None"
                )
            return space, impl.plugin_name
        return None, ""

    def _lookup(self, kind: str, table: dict[str, Provided[Any]], name: str) -> Provided[Any]:
        if name in table:
            return table[name]
        raise RlbenchError(self._unknown(kind, name, table))

    def _unknown(self, kind: str, name: str, pool: Iterable[str]) -> str:
        msg = f"unknown {kind} {name!r}{did_you_mean(name, pool)}"
        if self.broken:
            msg += "; it may come from a plugin that failed to load: " + "; ".join(
                b.describe() for b in self.broken
            )
        else:
            msg += f"; `rlbench list` shows the {kind}s installed"
        return msg

    def plugin_versions(self) -> dict[str, str]:
        """``{distribution: version}`` of every loaded plugin (for provenance)."""
        return {p.distribution: p.version for p in self.plugins}


def autoload_enabled() -> bool:
    return not os.environ.get(DISABLE_AUTOLOAD_ENV)


@dataclass(frozen=True)
class _Candidate:
    """A plugin to load: an entry point, or a module named with ``-p``/RLBENCH_PLUGINS."""

    name: str
    target: str
    load: Callable[[], Any]
    distribution: str
    version: str

    @property
    def label(self) -> str:
        return f"{self.distribution} {self.version}"


def load_catalogue(*, autoload: bool | None = None, extra_plugins: Sequence[str] = ()) -> Catalogue:
    """Load every plugin and collect what it registers.

    ``autoload=False`` (or ``RLBENCH_DISABLE_PLUGIN_AUTOLOAD=1``) loads only the plugins
    that the ``rlbench`` distribution itself declares, for clean, reproducible runs;
    ``extra_plugins`` (and ``RLBENCH_PLUGINS``) name further modules to register.

    A plugin that fails to import, whose hook raises, or whose hook returns something that
    is not a valid spec (see :func:`rlbench.specs.spec_problem`) is a :class:`BrokenPlugin`
    and contributes nothing; the others load regardless.
    """
    if autoload is None:
        autoload = autoload_enabled()
    extra = list(extra_plugins) + [
        m.strip() for m in os.environ.get(EXTRA_PLUGINS_ENV, "").split(",") if m.strip()
    ]
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    if os.environ.get(TRACE_ENV):
        pm.add_hookcall_monitoring(_trace_before, _trace_after)
    catalogue = Catalogue(manager=pm)
    _register(pm, _candidates(autoload, extra), catalogue)

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) if exc.plugin is not None else "?"
        raise PluginError(
            f"plugin {name!r} implements a hook rlbench does not define: {exc}; "
            "check the hook's spelling against rlbench.hookspecs"
        ) from None

    tables: dict[SpecKind, dict[str, Provided[Any]]] = {
        "agent": catalogue.agents,
        "network": catalogue.networks,
        "environment": catalogue.environments,
        "logger": catalogue.loggers,
    }
    for info in list(catalogue.plugins):
        try:
            provided = _collect(pm, info)
        except _Broken as exc:
            # All or nothing: a broken plugin contributes no names and is asked nothing more.
            catalogue.broken.append(BrokenPlugin(info.name, info.label, str(exc)))
            catalogue.plugins.remove(info)
            pm.unregister(name=info.name)
            continue
        for kind, specs in provided.items():
            for spec in specs:
                _add(tables[kind], kind, spec, info)
    return catalogue


def _candidates(autoload: bool, extra: Sequence[str]) -> list[_Candidate]:
    candidates = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        version = ep.dist.version if ep.dist is not None else "?"
        if not autoload and dist != "rlbench":
            continue
        candidates.append(_Candidate(ep.name, ep.value, ep.load, dist, version))
    # By name, then distribution: of two plugins with one name, the same one always loads.
    candidates.sort(key=lambda c: (c.name, c.distribution, c.version))
    for module_name in extra:
        load = functools.partial(importlib.import_module, module_name)
        candidates.append(_Candidate(module_name, module_name, load, "RLBENCH_PLUGINS", "-"))
    return candidates


def _register(pm: pluggy.PluginManager, candidates: list[_Candidate], catalogue: Catalogue) -> None:
    seen: dict[str, str] = {}
    for candidate in candidates:
        name = candidate.name
        if name in seen:
            if seen[name] != candidate.label:
                # Only one plugin can have a name, and which of two should win is not ours
                # to guess: the first loads, the second is reported on every command.
                catalogue.broken.append(
                    BrokenPlugin(
                        name,
                        candidate.label,
                        f"the plugin name {name!r} is already taken by {seen[name]}; rename "
                        "one of them (the entry point's name in its pyproject.toml, or the "
                        "module given with -p)",
                    )
                )
            # else: the same distribution twice on sys.path, or a -p module named twice.
            continue
        seen[name] = candidate.label
        try:
            module = candidate.load()
            if pm.is_registered(module):
                # A -p module that is also installed as an entry point: it is loaded once,
                # under its entry-point name, and the -p adds nothing.
                continue
            pm.register(module, name=name)
        except Exception as exc:  # a broken plugin must not take the others down
            catalogue.broken.append(BrokenPlugin(name, candidate.label, _one_line(exc)))
            continue
        catalogue.plugins.append(
            PluginInfo(name, candidate.target, candidate.distribution, candidate.version)
        )


class _Broken(Exception):
    """Raised by :func:`_collect`: the plugin is broken, for the reason in the message."""


REGISTRATION_HOOKS: dict[SpecKind, str] = {
    "agent": "rlbench_register_agents",
    "network": "rlbench_register_networks",
    "environment": "rlbench_register_environments",
    "logger": "rlbench_register_loggers",
}


def _collect(pm: pluggy.PluginManager, info: PluginInfo) -> dict[SpecKind, list[Any]]:
    """Call one plugin's registration hooks and check what they return."""
    plugin = pm.get_plugin(info.name)
    implemented = {caller.name for caller in pm.get_hookcallers(plugin) or []}
    provided: dict[SpecKind, list[Any]] = {}
    for kind, hook_name in REGISTRATION_HOOKS.items():
        if hook_name not in implemented:
            continue
        try:
            [result] = _call_plugin(pm, hook_name, plugin) or [None]
            if not isinstance(result, Iterable) or isinstance(result, str | bytes | Mapping):
                raise _Broken(
                    f"{hook_name} returned {describe_value(result)}; it must return a list of "
                    f"{SPEC_CLASSES[kind].__name__} (an empty list registers nothing)"
                )
            specs = list(result)
        except _Broken:
            raise
        except Exception as exc:
            raise _Broken(_one_line(exc)) from exc
        for spec in specs:
            problem = spec_problem(kind, spec)
            if problem is not None:
                raise _Broken(f"{hook_name} returned {problem}")
        provided[kind] = specs
    return provided


def _call_plugin(pm: pluggy.PluginManager, hook_name: str, plugin: object, **kwargs: Any) -> Any:
    """Call one plugin's implementation of a hook, through pluggy (so the call is traced
    and the keyword arguments are matched to what the implementation accepts)."""
    others = [p for p in pm.get_plugins() if p is not plugin]
    return pm.subset_hook_caller(hook_name, remove_plugins=others)(**kwargs)


def _add(table: dict[str, Provided[Any]], kind: str, spec: Any, info: PluginInfo) -> None:
    if spec.name in table:
        other = table[spec.name].plugin
        raise PluginError(
            f"{kind} {spec.name!r} is registered by two plugins: {other.name!r} "
            f"({other.label}) and {info.name!r} ({info.label}); uninstall one, or set "
            f"{DISABLE_AUTOLOAD_ENV}=1 to load only rlbench's own plugins"
        )
    table[spec.name] = Provided(spec, info)


# ------------------------------------------------------------------------- tracing


def _trace_before(hook_name: str, hook_impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    pass  # one line per call, written when the call has returned (or raised)


def _trace_after(
    outcome: pluggy.Result[Any],
    hook_name: str,
    hook_impls: Sequence[Any],
    kwargs: Mapping[str, Any],
) -> None:
    """``hook(kwargs) [plugin] -> what it returned``, on stderr, for every hook call."""
    plugins = ", ".join(impl.plugin_name for impl in hook_impls)
    arguments = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
    if outcome.exception is not None:
        summary = f"raised {_one_line(outcome.exception)}"
    else:
        result = outcome.get_result()
        # A hook that is not firstresult returns a list of its implementations' answers.
        if isinstance(result, list) and len(hook_impls) == 1:
            result = result[0] if result else None
        summary = _summary(result)
    sys.stderr.write(f"{hook_name}({arguments}) [{plugins}] -> {summary}\n")


def _summary(value: Any) -> str:
    """Names for a list of specs, keys for a dict, a short repr for anything else."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_item_summary(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(str(key) for key in value) + "}"
    return _item_summary(value)


def _item_summary(value: Any) -> str:
    name = getattr(value, "name", None)
    if isinstance(name, str) and not isinstance(value, type):
        return name
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return " ".join(text.split())
