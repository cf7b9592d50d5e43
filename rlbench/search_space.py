"""Search spaces and tuning plans for ``rlbench tune`` (no optuna here: validating a suite
must not need it).

A dimension is written in TOML (a suite's ``[tune.space.<label>]``) or returned as the same
plain data by a plugin's ``rlbench_search_space`` hook:

- ``{ low = 1e-4, high = 1e-2, log = true }``: a float range (log-uniform with ``log``);
  an integer range when both bounds are integers; optional ``step``;
- ``{ choices = [0.9, 0.99] }``: one of the listed values;
- any other value (``batch_size = 64``): fixed, not tuned.

:func:`resolve_plan` turns a validated suite (plus command-line overrides) into a
:class:`TunePlan`: plain, picklable data that worker processes rebuild their trials from.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pluggy
from pydantic import BaseModel, ValidationError

from rlbench import hookspecs
from rlbench.devices import resolve_device
from rlbench.errors import SuiteError, did_you_mean
from rlbench.specs import ReferenceScores

if TYPE_CHECKING:
    from rlbench.plugins import Catalogue
    from rlbench.suite import ResolvedAgent, Suite, SuiteFile

#: Tuning seeds are TUNING_SEED_BASE, TUNING_SEED_BASE + 1, ...: the same for every trial
#: (so trials are compared on equal terms) and never among a suite's own seeds, so that
#: ``rlbench run`` on the best configuration evaluates it on seeds it was not tuned on.
TUNING_SEED_BASE = 10_000
RANGE_KEYS = ("low", "high", "log", "step")
DIMENSION_KEYS = (*RANGE_KEYS, "choices")
Scalar = str | int | float | bool


# ------------------------------------------------------------------------- dimensions


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False
    step: float | None = None

    def to_raw(self) -> dict[str, Any]:
        raw: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            raw["log"] = True
        if self.step is not None:
            raw["step"] = self.step
        return raw


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    log: bool = False
    step: int = 1

    def to_raw(self) -> dict[str, Any]:
        raw: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            raw["log"] = True
        if self.step != 1:
            raw["step"] = self.step
        return raw


@dataclass(frozen=True)
class Choices:
    values: tuple[Scalar, ...]

    def to_raw(self) -> dict[str, Any]:
        return {"choices": list(self.values)}


@dataclass(frozen=True)
class Fixed:
    value: Any

    def to_raw(self) -> Any:
        return self.value


Dimension = FloatRange | IntRange | Choices | Fixed


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_dimension(raw: Any, where: str) -> tuple[Dimension | None, list[str]]:
    """One dimension from its TOML (or hook) form. Returns the dimension, or ``None`` and
    one problem line per mistake, each starting with ``where`` (the key)."""
    if isinstance(raw, list):
        return None, [
            f"{where}: a list is ambiguous; write {{ choices = [...] }} to tune over its "
            "values, or set a fixed list in the agent's config"
        ]
    if not isinstance(raw, dict):
        return Fixed(raw), []
    problems = [
        f"{where}.{key}: unknown key{did_you_mean(key, DIMENSION_KEYS)}; expected low, high, "
        "log, step, or choices"
        for key in raw
        if key not in DIMENSION_KEYS
    ]
    if "choices" in raw:
        if set(raw) & set(RANGE_KEYS):
            problems.append(f"{where}: give either choices or low/high, not both")
        dim = _parse_choices(raw["choices"], where, problems)
    else:
        dim = _parse_range(raw, where, problems)
    return (None if problems else dim), problems


def _parse_choices(values: Any, where: str, problems: list[str]) -> Choices | None:
    if not isinstance(values, list) or not values:
        problems.append(f"{where}.choices: expected a non-empty list, got {values!r}")
        return None
    bad = [v for v in values if not isinstance(v, Scalar)]
    if bad:
        problems.append(f"{where}.choices: expected strings, numbers or booleans, got {bad!r}")
        return None
    if len({json.dumps(v) for v in values}) != len(values):
        problems.append(f"{where}.choices: values must be distinct, got {values!r}")
        return None
    return Choices(tuple(values))


def _parse_range(raw: dict[str, Any], where: str, problems: list[str]) -> Dimension | None:
    before = len(problems)
    for key in ("low", "high"):
        if key not in raw:
            problems.append(f"{where}.{key}: required key is missing (or give choices)")
        elif not _is_number(raw[key]):
            problems.append(f"{where}.{key}: expected a number, got {raw[key]!r}")
    log, step = raw.get("log", False), raw.get("step")
    if not isinstance(log, bool):
        problems.append(f"{where}.log: expected true or false, got {log!r}")
    if step is not None and (not _is_number(step) or step <= 0):
        problems.append(f"{where}.step: expected a number > 0, got {step!r}")
    if len(problems) > before:
        return None
    low, high = raw["low"], raw["high"]
    if not low < high:
        problems.append(f"{where}: low must be less than high, got low={low!r}, high={high!r}")
    if log and low <= 0:
        problems.append(f"{where}.low: a log scale needs low > 0, got {low!r}")
    if log and step is not None:
        problems.append(f"{where}: log and step cannot be combined")
    if len(problems) > before:
        return None
    if isinstance(low, int) and isinstance(high, int):
        if step is not None and not isinstance(step, int):
            problems.append(f"{where}.step: an integer range needs an integer step, got {step!r}")
            return None
        return IntRange(low, high, log, step or 1)
    return FloatRange(float(low), float(high), log, None if step is None else float(step))


def grid_size(dims: Mapping[str, Dimension]) -> int:
    """Number of points of the grid over the tuned dimensions (all must be Choices)."""
    return math.prod(len(d.values) for d in dims.values() if isinstance(d, Choices))


# ------------------------------------------------------------------------- the hook


def default_search_space(catalogue: Catalogue, agent_name: str) -> tuple[Any, str]:
    """Ask the loaded plugins' ``rlbench_search_space`` hooks for ``agent_name``'s default
    space. Returns ``(space or None, name of the plugin that gave it)``.

    The catalogue keeps no plugin manager, so one is rebuilt here from the plugins it
    loaded (their modules are already imported; this only re-registers them)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for info in catalogue.plugins:
        try:
            module = metadata.EntryPoint(info.name, info.module, "rlbench").load()
            if not pm.is_registered(module):
                pm.register(module, name=info.name)
        except Exception:  # reported already when the catalogue was loaded
            continue
    # Call the implementations one by one, in pluggy's firstresult order, to know which
    # plugin answered (for error messages).
    for impl in reversed(pm.hook.rlbench_search_space.get_hookimpls()):
        args = [agent_name] if impl.argnames else []
        space = impl.function(*args)
        if space is not None:
            return space, impl.plugin_name
    return None, ""


# ------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class TuneOverrides:
    """Command-line options that replace the suite's ``[tune]`` values (None: keep)."""

    agent: str | None = None
    environments: tuple[str, ...] = ()
    trials: int | None = None
    seeds_per_trial: int | None = None
    sampler: str | None = None
    pruner: str | None = None


@dataclass(frozen=True)
class TunePlan:
    """Everything a tuning worker needs, as plain data (picklable to worker processes)."""

    suite: str
    agent: str
    label: str
    base_config: dict[str, Any]
    """The tuned entry's own config overrides (what best.toml's default entry keeps)."""
    resolved_config: dict[str, Any]
    """The entry's full config with the agent's defaults (what trial runs start from)."""
    network: dict[str, Any]
    environments: tuple[tuple[str, dict[str, Any]], ...]
    references: dict[str, tuple[float, float] | None]
    dims: dict[str, Dimension]
    """The tuned dimensions (never Fixed)."""
    fixed: dict[str, Any]
    """Values the search space fixes (applied to every trial and to the tuned entry)."""
    seeds: tuple[int, ...]
    eval_seeds: tuple[int, ...]
    devices: tuple[str, ...]
    device: str
    steps: int
    eval_interval: int
    eval_episodes: int
    eval_max_episode_steps: int | None
    trials: int
    sampler: str
    pruner: str
    warmup_steps: int
    objective: str
    seed: int
    space_source: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def normalized(self) -> bool:
        """Scores are normalized by reference scores when there are several environments."""
        return len(self.environments) > 1

    @property
    def steps_per_trial(self) -> int:
        return self.steps * len(self.environments) * len(self.seeds)

    def fingerprint(self) -> str:
        """What makes two trials comparable: a study's trials must all share it."""
        keys = (
            "agent", "resolved_config", "network", "environments", "fixed", "seeds",
            "steps", "eval_interval", "eval_episodes", "eval_max_episode_steps", "objective",
        )  # fmt: skip
        data = {k: v for k, v in asdict(self).items() if k in keys}
        data["dims"] = {name: dim.to_raw() for name, dim in sorted(self.dims.items())}
        data["environments"] = [list(e) for e in self.environments]
        return json.dumps(data, sort_keys=True, default=str)


def resolve_plan(suite: Suite, catalogue: Catalogue, overrides: TuneOverrides) -> TunePlan:
    """The tuning plan of a validated suite and the command line's overrides. Raises
    :class:`SuiteError` listing every problem (the same format as a suite's)."""
    plan, problems = _plan(suite.file, suite.agents, catalogue, overrides)
    if problems or plan is None:
        raise SuiteError(str(suite.path), problems)
    return plan


def tune_problems(
    file: SuiteFile, agents: Sequence[ResolvedAgent], catalogue: Catalogue
) -> list[str]:
    """Every problem of a suite's ``[tune]`` table (for ``validate_suite``)."""
    return _plan(file, agents, catalogue, TuneOverrides())[1]


def _plan(
    file: SuiteFile,
    agents: Sequence[ResolvedAgent],
    catalogue: Catalogue,
    overrides: TuneOverrides,
) -> tuple[TunePlan | None, list[str]]:
    from rlbench.suite import TuneTable

    table = file.tune or TuneTable()
    problems: list[str] = []
    target = _target(file, agents, catalogue, overrides.agent or table.agent, problems)
    environments = _environments(file, table, overrides, catalogue, problems)
    seeds_per_trial = overrides.seeds_per_trial or table.seeds_per_trial
    seeds = tuple(range(TUNING_SEED_BASE, TUNING_SEED_BASE + seeds_per_trial))
    overlap = sorted(set(seeds) & set(file.seed_list))
    if overlap:
        problems.append(
            f"seeds: {overlap} are tuning seeds; the suite's seeds evaluate the tuned agent and "
            f"must be ones the tuner never trains on (not {seeds[0]}..{seeds[-1]})"
        )
    if target is None or environments is None:
        return None, problems
    resolved, entry_config = target
    known = {a.label for a in agents} | set(catalogue.agents) | {resolved.label}
    for label in table.space:
        if label not in known:
            problems.append(
                f"tune.space.{label}: no [[agents]] entry has this label"
                f"{did_you_mean(label, known)}; key it by the label of the agent it tunes"
            )
    spec = catalogue.agent(resolved.name)
    dims, fixed, source = _space(table, resolved, spec.config_model, catalogue, problems)
    sampler = overrides.sampler or table.sampler
    if sampler == "grid":
        ranges = [name for name, dim in dims.items() if not isinstance(dim, Choices)]
        if ranges:
            problems.append(
                f"tune.sampler: the grid sampler needs {{ choices = [...] }} for every tuned "
                f"hyperparameter; {', '.join(ranges)} is a range"
            )
    if not dims and not problems:
        problems.append(f"tune.space.{resolved.label}: nothing to tune (no range or choices)")
    references = _references(environments, catalogue, problems)
    budget = file.budget
    steps_per_trial = budget.steps * len(environments) * len(seeds)
    warmup = table.warmup_steps if table.warmup_steps is not None else budget.steps // 4
    if warmup >= steps_per_trial:
        problems.append(
            f"tune.warmup_steps: {warmup} leaves nothing to prune; a trial trains "
            f"{steps_per_trial} environment steps"
        )
    if problems:
        return None, problems
    plan = TunePlan(
        suite=file.name,
        agent=resolved.name,
        label=resolved.label,
        base_config=dict(entry_config),
        resolved_config=dict(resolved.config),
        network=dict(resolved.network),
        environments=tuple((env.id, dict(env.kwargs)) for env in environments),
        references=references,
        dims=dims,
        fixed=fixed,
        seeds=seeds,
        eval_seeds=tuple(file.seed_list),
        devices=tuple(file.devices),
        device=resolve_device(file.devices[0]),
        steps=budget.steps,
        eval_interval=budget.eval_interval,
        eval_episodes=budget.eval_episodes,
        eval_max_episode_steps=budget.eval_max_episode_steps,
        trials=overrides.trials or table.trials,
        sampler=sampler,
        pruner=overrides.pruner or table.pruner,
        warmup_steps=warmup,
        objective=table.objective,
        seed=table.seed,
        space_source=source,
    )
    return plan, []


def _target(
    file: SuiteFile,
    agents: Sequence[ResolvedAgent],
    catalogue: Catalogue,
    name: str | None,
    problems: list[str],
) -> tuple[ResolvedAgent, dict[str, Any]] | None:
    """The agent entry to tune and its own config overrides: an [[agents]] entry by label,
    then by agent name, else a registered agent with its defaults."""
    from rlbench.suite import AgentEntry, _resolve_agent

    configs = {entry.display: dict(entry.config) for entry in file.agents}
    if name is None:
        return (agents[0], configs.get(agents[0].label, {})) if agents else None
    for by in ("label", "name"):
        for agent in agents:
            if getattr(agent, by) == name:
                return agent, configs.get(agent.label, {})
    if name in catalogue.agents:
        resolved = _resolve_agent(AgentEntry(name=name), "tune.agent", catalogue, problems, {})
        return (resolved, {}) if resolved is not None else None
    pool = [a.label for a in agents] + list(catalogue.agents)
    problems.append(
        f"tune.agent: unknown agent {name!r}{did_you_mean(name, pool)}; give the label of an "
        "[[agents]] entry or a registered agent (`rlbench list`)"
    )
    return None


def _environments(
    file: SuiteFile,
    table: Any,
    overrides: TuneOverrides,
    catalogue: Catalogue,
    problems: list[str],
) -> list[Any] | None:
    from rlbench.suite import EnvironmentEntry

    if overrides.environments:
        envs = [EnvironmentEntry(id=env) for env in overrides.environments]
        where = "--env"
    else:
        envs = list(table.environments or file.environments)
        where = "tune.environments"
    bad = [env.id for env in envs if not catalogue.has_environment(env.id)]
    for env_id in bad:
        pool = list(catalogue.environments) + [e.id for e in file.environments]
        problems.append(
            f"{where}: unknown environment {env_id!r}{did_you_mean(env_id, pool)}; use a "
            "Gymnasium id or one from `rlbench list`"
        )
    ids = [env.id for env in envs]
    if len(set(ids)) != len(ids):
        problems.append(f"{where}: environments must be distinct, got {ids!r}")
    return None if bad or len(set(ids)) != len(ids) else envs


def _references(
    environments: Sequence[Any], catalogue: Catalogue, problems: list[str]
) -> dict[str, tuple[float, float] | None]:
    """Each environment's (random, solved) returns; required with several environments,
    whose scores the objective normalizes to be comparable."""
    table: dict[str, tuple[float, float] | None] = {}
    for env in environments:
        ref: ReferenceScores | None = catalogue.environment(env.id).reference
        table[env.id] = (ref.random, ref.solved) if ref is not None else None
    missing = [env for env, ref in table.items() if ref is None]
    if len(table) > 1 and missing:
        problems.append(
            f"tune.environments: {', '.join(missing)} declare no reference scores; tuning on "
            "several environments normalizes each score by them (an environment plugin "
            "declares them), so tune on one environment or add them"
        )
    return table


def _space(
    table: Any,
    agent: ResolvedAgent,
    model: type[BaseModel],
    catalogue: Catalogue,
    problems: list[str],
) -> tuple[dict[str, Dimension], dict[str, Any], str]:
    """The merged space: the plugin's default (unless ``use_default_space = false``),
    overridden key by key by ``[tune.space.<label>]``. Returns (tuned, fixed, source)."""
    raw: dict[str, tuple[Any, str]] = {}
    source = "suite"
    if table.use_default_space:
        default, plugin = default_search_space(catalogue, agent.name)
        if default is not None and not isinstance(default, Mapping):
            problems.append(
                f"search space of {agent.name!r} from plugin {plugin!r}: expected a mapping "
                f"of hyperparameters, got {type(default).__name__}"
            )
        elif default is not None:
            where = f"default search space of {agent.name!r} (plugin {plugin!r})"
            raw.update({k: (v, f"{where}: {k}") for k, v in default.items()})
            source = f"plugin {plugin!r} + suite"
    overrides = table.space.get(agent.label, {})
    raw.update({k: (v, f"tune.space.{agent.label}.{k}") for k, v in overrides.items()})

    dims: dict[str, Dimension] = {}
    fixed: dict[str, Any] = {}
    for name, (value, where) in raw.items():
        dim, found = parse_dimension(value, where)
        found += _check_against_config(name, dim, where, model, agent.config)
        problems += found
        if dim is None or found:
            continue
        if isinstance(dim, Fixed):
            fixed[name] = dim.value
        else:
            dims[name] = dim
    return dims, fixed, source


def _check_against_config(
    name: str,
    dim: Dimension | None,
    where: str,
    model: type[BaseModel],
    config: Mapping[str, Any],
) -> list[str]:
    """The dimension names a hyperparameter of the agent and every value it can take is
    one the agent's config accepts."""
    fields = model.model_fields
    if name not in fields:
        return [
            f"{where}: unknown hyperparameter{did_you_mean(name, fields)}; the agent's are: "
            f"{', '.join(fields)}"
        ]
    if dim is None:
        return []
    if isinstance(dim, FloatRange) and fields[name].annotation is int:
        return [f"{where}: {name} is an integer; give integer bounds (low = 1, high = 10)"]
    if isinstance(dim, FloatRange | IntRange):
        values = {"low": dim.low, "high": dim.high}
    elif isinstance(dim, Choices):
        values = {f"choices[{i}]": v for i, v in enumerate(dim.values)}
    else:
        values = {"": dim.value}
    problems = []
    for part, value in values.items():
        try:
            model.model_validate({**config, name: value})
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                if err["loc"][:1] == (name,):
                    msg = re.sub(r"^Value error, ", "", err["msg"])
                    key = f"{where}.{part}" if part else where
                    problems.append(f"{key}: {msg[0].lower() + msg[1:]}, got {value!r}")
    return problems
