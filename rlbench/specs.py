"""What plugins register: agents, networks and environments, each under a unique name, and
the checks a registered spec and its name must pass."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium as gym
import torch
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from rlbench.agent import Agent, AgentConfig, numbers_not_strings
from rlbench.errors import RlbenchError
from rlbench.loggers import LoggerSpec


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

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_not_strings(cls, value: Any, info: ValidationInfo) -> Any:
        return numbers_not_strings(cls, value, info)


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
    random policy gets, and the threshold at which the task counts as solved (or, where the
    task has none, a published reference score). Reports normalize as
    ``(score - random) / (solved - random)``.

    ``kwargs`` says which environment kwargs the scores are for: empty, they hold for any;
    ``{"continuous": True}``, only for an environment made with ``continuous=True`` (see
    :meth:`EnvironmentSpec.reference_for`)."""

    random: float
    solved: float
    # Not hashed: a dict is not hashable, and two scores for different kwargs may be equal.
    kwargs: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def applies_to(self, kwargs: Mapping[str, Any]) -> bool:
        """Whether an environment made with ``kwargs`` (all of them, defaults included) is
        one these scores are for: every key of :attr:`kwargs` has the given value."""
        return all(key in kwargs and kwargs[key] == value for key, value in self.kwargs.items())


@dataclass(frozen=True)
class EnvironmentSpec:
    """An environment a plugin provides, or reference data for an existing Gymnasium id.

    ``make(**kwargs)`` returns a fresh ``gymnasium.Env``; ``wrappers`` are applied in order
    afterwards (each ``wrapper(env) -> env``). Suite files pass ``kwargs`` through.
    ``reference`` holds for any kwargs; ``variants`` are reference scores for particular
    kwargs (each with its ``kwargs`` set), e.g. LunarLander-v3 with ``continuous=True``.
    ``install`` is how to install what ``make`` needs when that is optional (a command):
    validation shows it when ``make`` fails for want of a module.
    """

    name: str
    make: Callable[..., gym.Env]
    reference: ReferenceScores | None = None
    wrappers: tuple[Callable[[gym.Env], gym.Env], ...] = ()
    description: str = ""
    default_kwargs: Mapping[str, Any] = field(default_factory=dict)
    variants: tuple[ReferenceScores, ...] = ()
    install: str = ""

    def create(self, **kwargs: Any) -> gym.Env:
        env = self.make(**{**self.default_kwargs, **kwargs})
        for wrap in self.wrappers:
            env = wrap(env)
        return env

    def reference_for(self, kwargs: Mapping[str, Any] | None = None) -> ReferenceScores | None:
        """The reference scores of the environment made with ``kwargs`` (a suite entry's,
        over :attr:`default_kwargs`): of :attr:`reference` and :attr:`variants`, the one
        that names the most of these kwargs and applies to them all; ``None`` when none
        does."""
        given = {**self.default_kwargs, **(kwargs or {})}
        candidates = [self.reference, *self.variants]
        matching = [ref for ref in candidates if ref is not None and ref.applies_to(given)]
        # max keeps the first of equally specific ones: `reference` before the variants.
        return max(matching, key=lambda ref: len(ref.kwargs), default=None)

    def missing_dependency(self, exc: BaseException) -> str | None:
        """What ``exc``, raised by :meth:`create`, says is not installed, with the command
        that installs it when :attr:`install` knows one (one line); ``None`` when ``exc`` is
        about something else. Gymnasium raises ``DependencyNotInstalled`` (from the
        ``ImportError``) where an optional package is missing."""
        missing = exc if isinstance(exc, ModuleNotFoundError) else exc.__cause__
        module = missing.name if isinstance(missing, ModuleNotFoundError) else None
        if module is None and not isinstance(exc, gym.error.DependencyNotInstalled):
            return None
        what = (
            f"the module {module!r}, which is not installed"
            if module
            else " ".join(str(exc).split())
        )
        return f"needs {what}" + (f"; install it with: {self.install}" if self.install else "")

    @property
    def summary(self) -> str:
        return self.description or _first_line(getattr(self.make, "__doc__", None))


# ------------------------------------------------------------------------- names

NameKind = Literal["agent", "network", "environment", "logger"]

#: Kinds whose names may contain ``/``: Gymnasium namespaces environment ids, as in
#: ``ALE/Pong-v5``; each part between the slashes obeys the rule for a whole name.
NAMESPACED_KINDS = frozenset({"environment"})


def name_problem(kind: NameKind, name: object) -> str | None:
    """What is wrong with ``name`` as the registered name of a ``kind``, or ``None``.

    The one rule for names that plugins register (suites name them and run directories
    are built from them, so ``../x`` or ``/tmp/x`` must stop here): a non-empty string of
    printable characters (no NUL, newline or other control character), without surrounding
    spaces, backslashes or ``..``; no ``/`` unless ``kind`` is an environment, whose id may
    have namespaces (``ALE/Pong-v5``) but no empty part, so it neither starts nor ends with
    ``/``.
    """
    if not isinstance(name, str):
        return f"must be a string, not {type(name).__name__}"
    if not name:
        return "must not be empty"
    if not name.isprintable():
        bad = next(c for c in name if not c.isprintable())
        return f"must not contain the control character {bad!r}"
    if name != name.strip():
        return "must not start or end with a space"
    if "\\" in name:
        return "must not contain '\\'"
    if ".." in name:
        return "must not contain '..'"
    if "/" in name:
        if kind not in NAMESPACED_KINDS:
            return "must not contain '/'"
        if any(part in ("", ".") for part in name.split("/")):
            return "must not start or end with '/', or contain '//' or a '.' part"
    elif name == ".":
        return "must not be '.'"
    if kind == "logger" and ("," in name or " " in name):
        return "must not contain ',' or a space (`--log` takes a comma-separated list)"
    return None


def check_name(kind: NameKind, name: object) -> str:
    """``name`` if it is a safe name for a ``kind`` (see :func:`name_problem`); otherwise
    an :class:`~rlbench.errors.RlbenchError` saying why."""
    problem = name_problem(kind, name)
    if problem is not None:
        raise RlbenchError(f"{kind} name {name!r} {problem}")
    assert isinstance(name, str)
    return name


# ------------------------------------------------------------------------- validation

SpecKind = NameKind

#: The spec class each kind of registration hook must return.
SPEC_CLASSES: dict[SpecKind, type[AgentSpec | NetworkSpec | EnvironmentSpec | LoggerSpec]] = {
    "agent": AgentSpec,
    "network": NetworkSpec,
    "environment": EnvironmentSpec,
    "logger": LoggerSpec,
}


def spec_problem(kind: SpecKind, spec: object) -> str | None:
    """What makes ``spec`` unusable as a registered ``kind``, or ``None`` if nothing does.

    Plugins are other people's code: a hook may return a string, ``None``, a
    :class:`NetworkSpec` where an :class:`AgentSpec` belongs, or a spec whose fields have
    the wrong types. Checking here, once, at registration lets the harness trust every spec
    in the catalogue (``rlbench list`` itself reads ``agent.__doc__``, ``config_model`` and
    ``default_network``).
    """
    expected = SPEC_CLASSES[kind].__name__
    if not isinstance(spec, AgentSpec | NetworkSpec | EnvironmentSpec | LoggerSpec):
        return f"{describe_value(spec)} where {_article(expected)} {expected} belongs"
    if not isinstance(spec, SPEC_CLASSES[kind]):
        other = type(spec).__name__
        other_kind = next(k for k, cls in SPEC_CLASSES.items() if isinstance(spec, cls))
        return (
            f"{_article(other)} {other} ({spec.name!r}) where {_article(expected)} {expected} "
            f"belongs; return it from rlbench_register_{other_kind}s"
        )
    problem = name_problem(kind, spec.name)
    if problem is not None:
        return f"the {kind} name {spec.name!r}, which {problem}"
    where = f"{kind} {spec.name!r}: {type(spec).__name__}"
    if not isinstance(spec.description, str):
        return _wrong(where, "description", spec.description, "a string")
    if isinstance(spec, AgentSpec):
        return _agent_problem(spec, where)
    if isinstance(spec, NetworkSpec):
        return _network_problem(spec, where)
    if isinstance(spec, LoggerSpec):
        return _logger_problem(spec, where)
    return _environment_problem(spec, where)


def _agent_problem(spec: AgentSpec, where: str) -> str | None:
    if not (isinstance(spec.agent, type) and issubclass(spec.agent, Agent)):
        return _wrong(where, "agent", spec.agent, "a subclass of rlbench.Agent")
    where = f"agent {spec.name!r}: {spec.agent.__name__}"
    config = getattr(spec.agent, "Config", None)
    if not (isinstance(config, type) and issubclass(config, AgentConfig)):
        return _wrong(where, "Config", config, "a subclass of rlbench.AgentConfig")
    network = getattr(spec.agent, "default_network", None)
    if not (isinstance(network, Mapping) and isinstance(network.get("name"), str)):
        return _wrong(where, "default_network", network, 'a mapping with a "name"')
    return None


def _network_problem(spec: NetworkSpec, where: str) -> str | None:
    if not callable(spec.build):
        return _wrong(where, "build", spec.build, "a function")
    model = spec.config_model
    if not (isinstance(model, type) and issubclass(model, NetworkConfig)):
        return _wrong(where, "config_model", model, "a subclass of rlbench.NetworkConfig")
    return None


def _logger_problem(spec: LoggerSpec, where: str) -> str | None:
    if not callable(spec.create):
        return _wrong(where, "create", spec.create, "a function")
    if not isinstance(spec.requires, tuple | list) or not all(
        isinstance(module, str) for module in spec.requires
    ):
        return _wrong(where, "requires", spec.requires, "a tuple of module names")
    if not isinstance(spec.install, str):
        return _wrong(where, "install", spec.install, "a string")
    return None


def _environment_problem(spec: EnvironmentSpec, where: str) -> str | None:
    if not callable(spec.make):
        return _wrong(where, "make", spec.make, "a function")
    if spec.reference is not None and not isinstance(spec.reference, ReferenceScores):
        return _wrong(where, "reference", spec.reference, "rlbench.ReferenceScores or None")
    if not isinstance(spec.variants, tuple | list) or not all(
        isinstance(ref, ReferenceScores) for ref in spec.variants
    ):
        return _wrong(where, "variants", spec.variants, "a tuple of rlbench.ReferenceScores")
    for i, ref in enumerate([spec.reference, *spec.variants]):
        if ref is not None and not isinstance(ref.kwargs, Mapping):
            attribute = "reference.kwargs" if i == 0 else f"variants[{i - 1}].kwargs"
            return _wrong(where, attribute, ref.kwargs, "a mapping")
    if not isinstance(spec.install, str):
        return _wrong(where, "install", spec.install, "a string")
    if not isinstance(spec.wrappers, tuple | list) or not all(map(callable, spec.wrappers)):
        return _wrong(where, "wrappers", spec.wrappers, "a tuple of functions")
    if not isinstance(spec.default_kwargs, Mapping):
        return _wrong(where, "default_kwargs", spec.default_kwargs, "a mapping")
    return None


def _wrong(where: str, attribute: str, value: object, expected: str) -> str:
    return f"{where}.{attribute} is {describe_value(value)}, not {expected}"


def describe_value(value: object) -> str:
    """``5 (an int)``: a short repr and the type, for messages about a wrong value."""
    if value is None:
        return "None"
    if isinstance(value, type):
        return f"the class {value.__qualname__}"
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    name = type(value).__name__
    return f"{text} ({_article(name)} {name})"


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"
