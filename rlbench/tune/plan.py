"""The tuning plan: a validated suite's ``[tune]`` table (plus command-line overrides)
resolved into :class:`TunePlan`, plain picklable data that worker processes rebuild their
trials from.

Tuning reads a suite and never the other way round: :func:`resolve_plan` is where the
``[tune]`` table is checked against the agent's config and its plugin's default search
space (``rlbench tune`` and ``rlbench validate`` call it; ``rlbench run`` does not need it).

A trial trains its target as ``rlbench run`` trains it: the plan's :attr:`TunePlan.runs`
come from :func:`rlbench.runspec.expand` on the suite narrowed to the tuned agent, the tuned
environments and the tuning seeds, so each environment has its own budget, the agent's
``env_config`` for it and the agent's network roles. A trial puts the search space's values
(fixed and sampled) on top of each run's config: they override ``config`` and
``env_config`` alike.
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
from rlbench.runspec import RunSpec, expand
from rlbench.specs import ReferenceScores
from rlbench.suite import (
    AgentEntry,
    BudgetOverride,
    EnvironmentEntry,
    ResolvedAgent,
    Suite,
    TuneTable,
    resolve_agent,
)
from rlbench.tune.space import Choices, Dimension, Fixed, FloatRange, IntRange, parse_dimension

#: Tuning seeds are _TUNING_SEED_BASE, _TUNING_SEED_BASE + 1, ...: the same for every trial
#: (so trials are compared on equal terms) and never among a suite's own seeds, so that
#: ``rlbench run`` on the best configuration evaluates it on seeds it was not tuned on.
_TUNING_SEED_BASE = 10_000
#: The keys of a run's budget (a RunSpec's and a suite's [budget]'s).
BUDGET_KEYS = ("steps", "eval_interval", "eval_episodes", "eval_max_episode_steps")


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
    env_config: dict[str, dict[str, Any]]
    """The tuned entry's own ``env_config`` overrides, of the tuned environments."""
    resolved_config: dict[str, Any]
    """The entry's full config with the agent's defaults (on environments without an
    ``env_config``)."""
    network: dict[str, Any]
    networks: dict[str, dict[str, Any]]
    """The resolved network of each role the entry shapes apart from ``network``."""
    environments: tuple[tuple[str, dict[str, Any]], ...]
    runs: tuple[RunSpec, ...]
    """Every environment x tuning seed, in the order a trial trains them (environments,
    then seeds), as ``rlbench run`` resolves them: each environment's budget, the agent's
    config for it (``env_config`` merged) and its networks. A trial's runs are these with
    the search space's values on top of their config (:meth:`trial_config`)."""
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
    """The suite's ``[budget]`` (this and the next three): what an environment without a
    budget of its own trains with. Each run's own is in :attr:`runs`."""
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
        """Environment steps a trial trains: every run's budget, summed."""
        return sum(run.steps for run in self.runs)

    @property
    def steps_label(self) -> str:
        """Each environment's steps per run, in words: ``600`` or ``600 (CartPole-v1),
        400 (Acrobot-v1)``."""
        steps = {run.env: run.steps for run in self.runs}
        if len(set(steps.values())) == 1:
            return str(next(iter(steps.values())))
        return ", ".join(f"{n} ({env})" for env, n in steps.items())

    def budget_of(self, env: str) -> dict[str, Any]:
        """The budget of the runs on ``env``: ``{steps, eval_interval, eval_episodes,
        eval_max_episode_steps}``."""
        run = next(run for run in self.runs if run.env == env)
        return {key: getattr(run, key) for key in BUDGET_KEYS}

    def trial_config(self, run: RunSpec, params: Mapping[str, Any]) -> dict[str, Any]:
        """The unvalidated config of ``run`` in a trial that sampled ``params``: the search
        space's fixed and sampled values over the run's config (``config`` with the
        environment's ``env_config``)."""
        return {**run.agent_config, **self.fixed, **params}

    def fingerprint(self) -> str:
        """What makes two trials comparable: a study's trials must all share it."""
        keys = (
            "agent", "resolved_config", "network", "environments", "fixed", "seeds",
            "steps", "eval_interval", "eval_episodes", "eval_max_episode_steps", "objective",
        )  # fmt: skip
        data = {k: v for k, v in asdict(self).items() if k in keys}
        data["dims"] = {name: dim.to_raw() for name, dim in sorted(self.dims.items())}
        data["environments"] = [list(e) for e in self.environments]
        if any(self._differs(run) for run in self.runs):
            # Only then: a study of a target without per-environment settings keeps the
            # fingerprint it was created with, and resumes.
            # Not the device: "auto" may resolve differently on the machines of one study.
            data["runs"] = [
                {k: v for k, v in run.identity().items() if k != "device"} for run in self.runs
            ]
        return json.dumps(data, sort_keys=True, default=str)

    def _differs(self, run: RunSpec) -> bool:
        """Whether ``run`` trains with more than the base config, network and [budget]."""
        return (
            run.agent_config != self.resolved_config
            or bool(run.networks)
            or any(getattr(run, key) != getattr(self, key) for key in BUDGET_KEYS)
        )


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
    plan, problems = _plan(suite, catalogue, overrides or TuneOverrides())
    if problems or plan is None:
        raise SuiteError(str(suite.path), problems)
    return plan


def _plan(
    suite: Suite, catalogue: Catalogue, overrides: TuneOverrides
) -> tuple[TunePlan | None, list[str]]:
    file = suite.file
    table = file.tune or TuneTable()
    problems: list[str] = []
    target = _target(suite, catalogue, overrides.agent or table.agent, problems)
    label = target[0].label if target is not None else None
    environments = _environments(suite, label, table, overrides, catalogue, problems)
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
    resolved, entry = target
    known = {a.label for a in suite.agents} | set(catalogue.agents) | {resolved.label}
    for name in table.space:
        if name not in known:
            problems.append(
                f"tune.space.{name}: no [[agents]] entry has this label"
                f"{did_you_mean(name, known)}; key it by the label of the agent it tunes"
            )
    runs = _runs(suite, resolved, environments, seeds)
    spec = catalogue.agent(resolved.name)
    configs: list[dict[str, Any]] = []  # the agent's config on each environment, once each
    for run in runs:
        if run.agent_config not in configs:
            configs.append(run.agent_config)
    dims, fixed = _space(table, resolved, spec.config_model, configs, catalogue, problems)
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
    steps_per_trial = sum(run.steps for run in runs)
    # A quarter of the first environment's budget: of [budget].steps when it has none of its own.
    warmup = table.warmup_steps if table.warmup_steps is not None else runs[0].steps // 4
    if warmup >= steps_per_trial:
        problems.append(
            f"tune.warmup_steps: {warmup} leaves nothing to prune; a trial trains "
            f"{steps_per_trial} environment steps"
        )
    if problems:
        return None, problems
    tuned_ids = {env.id for env in environments}
    budget = file.budget
    plan = TunePlan(
        suite=file.name,
        agent=resolved.name,
        label=resolved.label,
        base_config=dict(entry.config),
        env_config={e: dict(c) for e, c in entry.env_config.items() if e in tuned_ids},
        resolved_config=dict(resolved.config),
        network=dict(resolved.network),
        networks={role: dict(net) for role, net in resolved.networks.items()},
        environments=tuple((env.id, dict(env.kwargs)) for env in environments),
        runs=tuple(runs),
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
    suite: Suite, catalogue: Catalogue, name: str | None, problems: list[str]
) -> tuple[ResolvedAgent, AgentEntry] | None:
    """The agent entry to tune, resolved and as the suite writes it: an [[agents]] entry by
    label, then by agent name, else a registered agent with its defaults."""
    agents = suite.agents
    entries = {entry.display: entry for entry in suite.file.agents}
    if name is None:
        return (agents[0], entries[agents[0].label]) if agents else None
    for by in ("label", "name"):
        for agent in agents:
            if getattr(agent, by) == name:
                return agent, entries[agent.label]
    if name in catalogue.agents:
        entry = AgentEntry(name=name)
        resolved = resolve_agent(entry, "tune.agent", catalogue, [], problems)
        return (resolved, entry) if resolved is not None else None
    pool = [a.label for a in agents] + list(catalogue.agents)
    problems.append(
        f"tune.agent: unknown agent {name!r}{did_you_mean(name, pool)}; give the label of an "
        "[[agents]] entry or a registered agent (`rlbench list`)"
    )
    return None


def _environments(
    suite: Suite,
    label: str | None,
    table: TuneTable,
    overrides: TuneOverrides,
    catalogue: Catalogue,
    problems: list[str],
) -> list[EnvironmentEntry] | None:
    """The tuned environments, each as the suite has it: an id among the suite's
    environments is that entry (its kwargs and budget), with the keys a ``[tune]
    environments`` entry gives on top. By default, the suite's environments that ``rlbench
    run`` trains the agent ``label`` on (``skip_incompatible`` may leave some out)."""
    file = suite.file
    if overrides.environments:
        envs = [EnvironmentEntry(id=env) for env in overrides.environments]
        where = "--env"
    elif table.environments:
        envs = list(table.environments)
        where = "tune.environments"
    else:
        envs = [e for j, e in enumerate(file.environments) if not suite.skips(label or "", j)]
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
    if bad or len(set(ids)) != len(ids):
        return None
    resolved = [_as_in_suite(env, suite) for env in envs]
    for env in resolved:
        for pair in suite.skipped:
            skipped = file.environments[pair.env_index]
            if pair.label == label and (skipped.id, skipped.kwargs) == (env.id, env.kwargs):
                problems.append(
                    f"{where}: {label} cannot train on {env.id!r} ({pair.reason}); "
                    "skip_incompatible leaves it out of the suite's runs, so tune on "
                    "another environment"
                )
    return resolved


def _as_in_suite(env: EnvironmentEntry, suite: Suite) -> EnvironmentEntry:
    """``env`` as the suite's environment of the same id (kwargs, budget), with the keys
    ``env`` gives itself on top: its kwargs replace the suite's, its budget keys override
    the suite's. An id the suite does not have is ``env`` itself ([budget] applies)."""
    own = next((e for e in suite.file.environments if e.id == env.id), None)
    if own is None or env is own:
        return env
    kwargs = env.kwargs if "kwargs" in env.model_fields_set else own.kwargs
    budget = own.budget
    if env.budget is not None:
        base = own.budget or BudgetOverride()
        budget = base.model_copy(update=env.budget.model_dump(exclude_none=True))
    return EnvironmentEntry(id=env.id, kwargs=dict(kwargs), budget=budget)


def _runs(
    suite: Suite,
    agent: ResolvedAgent,
    environments: Sequence[EnvironmentEntry],
    seeds: Sequence[int],
) -> list[RunSpec]:
    """The runs ``rlbench run`` would train for ``agent`` on ``environments`` with
    ``seeds`` (on the suite's first device): :func:`rlbench.runspec.expand` of the suite
    narrowed to them, so that budgets, configs and networks resolve in one place."""
    narrowed = suite.file.model_copy(
        update={
            "environments": list(environments),
            "agents": [],
            "seeds": list(seeds),
            "devices": suite.file.devices[:1],
            "skip_incompatible": False,
            "tune": None,
        }
    )
    return expand(Suite(path=suite.path, file=narrowed, agents=[agent], source=suite.source))


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
    configs: Sequence[Mapping[str, Any]],
    catalogue: Catalogue,
    problems: list[str],
) -> tuple[dict[str, Dimension], dict[str, Any]]:
    """The merged space: the plugin's default (unless ``use_default_space = false``),
    overridden key by key by ``[tune.space.<label>]``, every value checked against each of
    ``configs`` (the agent's config on each environment). Returns (tuned, fixed)."""
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
        for config in configs:
            found += [
                p for p in _check_against_config(name, dim, where, model, config) if p not in found
            ]
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
