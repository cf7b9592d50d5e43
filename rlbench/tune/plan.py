"""The tuning plan: a validated suite's ``[tune]`` table (plus command-line overrides)
resolved into :class:`TunePlan`, plain picklable data that worker processes rebuild their
trials from.

Tuning reads a suite and never the other way round: :func:`resolve_plan` is where the
``[tune]`` table is checked against the agent's config and its plugin's default search
space (``rlbench tune`` and ``rlbench validate`` call it; ``rlbench run`` does not need it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from rlbench.devices import resolve_device
from rlbench.errors import SuiteError, did_you_mean
from rlbench.plugins import Catalogue
from rlbench.specs import ReferenceScores
from rlbench.suite import (
    AgentEntry,
    EnvironmentEntry,
    ResolvedAgent,
    Suite,
    SuiteFile,
    TuneTable,
    resolve_agent,
)
from rlbench.tune.space import Choices, Dimension, Fixed, FloatRange, IntRange, parse_dimension

#: Tuning seeds are _TUNING_SEED_BASE, _TUNING_SEED_BASE + 1, ...: the same for every trial
#: (so trials are compared on equal terms) and never among a suite's own seeds, so that
#: ``rlbench run`` on the best configuration evaluates it on seeds it was not tuned on.
_TUNING_SEED_BASE = 10_000


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


def objective_label(plan: TunePlan) -> str:
    """What a trial's value is, in words."""
    what = "normalized score" if plan.normalized else "final evaluation return"
    envs = ", ".join(env for env, _ in plan.environments)
    return f"{plan.objective.upper()} over seeds of the {what} ({envs})"


def resolve_plan(
    suite: Suite, catalogue: Catalogue, overrides: TuneOverrides | None = None
) -> TunePlan:
    """The tuning plan of a validated suite and the command line's overrides. Raises
    :class:`SuiteError` listing every problem (the same format as a suite's). Asks the
    agent's plugins for its default search space (once per catalogue)."""
    plan, problems = _plan(suite.file, suite.agents, catalogue, overrides or TuneOverrides())
    if problems or plan is None:
        raise SuiteError(str(suite.path), problems)
    return plan


def _plan(
    file: SuiteFile,
    agents: Sequence[ResolvedAgent],
    catalogue: Catalogue,
    overrides: TuneOverrides,
) -> tuple[TunePlan | None, list[str]]:
    table = file.tune or TuneTable()
    problems: list[str] = []
    target = _target(file, agents, catalogue, overrides.agent or table.agent, problems)
    environments = _environments(file, table, overrides, catalogue, problems)
    seeds_per_trial = overrides.seeds_per_trial or table.seeds_per_trial
    seeds = tuple(range(_TUNING_SEED_BASE, _TUNING_SEED_BASE + seeds_per_trial))
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
    dims, fixed = _space(table, resolved, spec.config_model, catalogue, problems)
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
    configs = {entry.display: dict(entry.config) for entry in file.agents}
    if name is None:
        return (agents[0], configs.get(agents[0].label, {})) if agents else None
    for by in ("label", "name"):
        for agent in agents:
            if getattr(agent, by) == name:
                return agent, configs.get(agent.label, {})
    if name in catalogue.agents:
        resolved = resolve_agent(AgentEntry(name=name), "tune.agent", catalogue, [], problems)
        return (resolved, {}) if resolved is not None else None
    pool = [a.label for a in agents] + list(catalogue.agents)
    problems.append(
        f"tune.agent: unknown agent {name!r}{did_you_mean(name, pool)}; give the label of an "
        "[[agents]] entry or a registered agent (`rlbench list`)"
    )
    return None


def _environments(
    file: SuiteFile,
    table: TuneTable,
    overrides: TuneOverrides,
    catalogue: Catalogue,
    problems: list[str],
) -> list[EnvironmentEntry] | None:
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
    environments: Sequence[EnvironmentEntry], catalogue: Catalogue, problems: list[str]
) -> dict[str, tuple[float, float] | None]:
    """Each environment's (random, solved) returns; required with several environments,
    whose scores the objective normalizes to be comparable."""
    table: dict[str, tuple[float, float] | None] = {}
    for env in environments:
        ref: ReferenceScores | None = catalogue.environment(env.id).reference_for(env.kwargs)
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
    table: TuneTable,
    agent: ResolvedAgent,
    model: type[BaseModel],
    catalogue: Catalogue,
    problems: list[str],
) -> tuple[dict[str, Dimension], dict[str, Any]]:
    """The merged space: the plugin's default (unless ``use_default_space = false``),
    overridden key by key by ``[tune.space.<label>]``. Returns (tuned, fixed)."""
    raw: dict[str, tuple[Any, str]] = {}
    if table.use_default_space:
        default = catalogue.search_space(agent.name)
        if default is not None:
            plugin = catalogue.search_space_plugin(agent.name)
            where = f"default search space of {agent.name!r} (plugin {plugin!r})"
            raw.update({k: (v, f"{where}: {k}") for k, v in default.items()})
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
    return dims, fixed


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
