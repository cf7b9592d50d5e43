"""Loading plugins and building the catalogue of agents, networks and environments.

Every plugin, rlbench's own included, is found through the ``rlbench`` entry-point group.
A fresh :class:`Catalogue` is built per command (and per worker process): there is no
global plugin manager.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Generic, TypeVar

import gymnasium as gym
import pluggy

from rlbench import hookspecs
from rlbench.errors import PluginError, RlbenchError, did_you_mean
from rlbench.specs import AgentSpec, EnvironmentSpec, NetworkSpec

ENTRY_POINT_GROUP = "rlbench"
#: Set to any non-empty value to load only rlbench's own plugins (plus RLBENCH_PLUGINS).
DISABLE_AUTOLOAD_ENV = "RLBENCH_DISABLE_PLUGIN_AUTOLOAD"
#: Comma-separated module names to register as plugins in addition to the entry points.
EXTRA_PLUGINS_ENV = "RLBENCH_PLUGINS"
#: Set to print every hook call, the plugin it went to and what it returned, to stderr.
TRACE_ENV = "RLBENCH_TRACE_HOOKS"

T = TypeVar("T", AgentSpec, NetworkSpec, EnvironmentSpec)


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
    instead of calling hooks directly)."""

    plugins: list[PluginInfo] = field(default_factory=list)
    broken: list[BrokenPlugin] = field(default_factory=list)
    agents: dict[str, Provided[AgentSpec]] = field(default_factory=dict)
    networks: dict[str, Provided[NetworkSpec]] = field(default_factory=dict)
    environments: dict[str, Provided[EnvironmentSpec]] = field(default_factory=dict)

    def agent(self, name: str) -> AgentSpec:
        return self._lookup("agent", self.agents, name).spec

    def network(self, name: str) -> NetworkSpec:
        return self._lookup("network", self.networks, name).spec

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


def load_catalogue(*, autoload: bool | None = None, extra_plugins: Sequence[str] = ()) -> Catalogue:
    """Load every plugin and collect what it registers.

    ``autoload=False`` (or ``RLBENCH_DISABLE_PLUGIN_AUTOLOAD=1``) loads only the plugins
    that the ``rlbench`` distribution itself declares, for clean, reproducible runs;
    ``extra_plugins`` (and ``RLBENCH_PLUGINS``) name further modules to register.
    """
    if autoload is None:
        autoload = autoload_enabled()
    extra = list(extra_plugins) + [
        m.strip() for m in os.environ.get(EXTRA_PLUGINS_ENV, "").split(",") if m.strip()
    ]
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)

    catalogue = Catalogue()
    candidates: list[tuple[str, str, Callable[[], Any], str, str]] = []
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else "?"
        version = ep.dist.version if ep.dist is not None else "?"
        if not autoload and dist != "rlbench":
            continue
        candidates.append((ep.name, ep.value, ep.load, dist, version))
    for module_name in extra:
        candidates.append(
            (
                module_name,
                module_name,
                functools.partial(importlib.import_module, module_name),
                "RLBENCH_PLUGINS",
                "-",
            )
        )

    seen: dict[str, str] = {}
    for name, target, load, dist, version in candidates:
        if name in seen:
            if seen[name] == f"{dist} {version}":
                continue  # the same plugin named twice (e.g. installed and given with -p)
            raise PluginError(
                f"two plugins use the entry-point name {name!r}: {seen[name]} and "
                f"{dist} {version}; rename one of them in its pyproject.toml"
            )
        seen[name] = f"{dist} {version}"
        try:
            module = load()
            if pm.is_registered(module):
                continue
            pm.register(module, name=name)
        except Exception as exc:  # a broken plugin must not take the others down
            catalogue.broken.append(BrokenPlugin(name, f"{dist} {version}", _one_line(exc)))
            continue
        catalogue.plugins.append(PluginInfo(name, target, dist, version))

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) if exc.plugin is not None else "?"
        raise PluginError(
            f"plugin {name!r} implements a hook rlbench does not define: {exc}; "
            "check the hook's spelling against rlbench.hookspecs"
        ) from None

    by_name = {p.name: p for p in catalogue.plugins}
    _collect(pm.hook.rlbench_register_agents, "agent", catalogue.agents, by_name, catalogue)
    _collect(pm.hook.rlbench_register_networks, "network", catalogue.networks, by_name, catalogue)
    _collect(
        pm.hook.rlbench_register_environments,
        "environment",
        catalogue.environments,
        by_name,
        catalogue,
    )
    return catalogue


def _collect(
    hook: Any,
    kind: str,
    table: dict[str, Provided[Any]],
    plugins: dict[str, PluginInfo],
    catalogue: Catalogue,
) -> None:
    # Call each implementation on its own so every spec is attributed to its plugin and a
    # plugin whose hook raises is reported without losing the others.
    trace = os.environ.get(TRACE_ENV)
    for impl in reversed(hook.get_hookimpls()):
        info = plugins[impl.plugin_name]
        try:
            specs = list(impl.function() or [])
            if trace:
                names = ", ".join(spec.name for spec in specs)
                sys.stderr.write(f"{hook.name} [{info.name}] -> [{names}]\n")
        except Exception as exc:
            catalogue.broken.append(BrokenPlugin(info.name, info.label, _one_line(exc)))
            continue
        for spec in specs:
            if spec.name in table:
                other = table[spec.name].plugin
                raise PluginError(
                    f"{kind} {spec.name!r} is registered by two plugins: {other.name!r} "
                    f"({other.label}) and {info.name!r} ({info.label}); uninstall one, or set "
                    f"{DISABLE_AUTOLOAD_ENV}=1 to load only rlbench's own plugins"
                )
            table[spec.name] = Provided(spec, info)


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return " ".join(text.split())
