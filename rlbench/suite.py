"""Suite files: TOML in, a completely validated :class:`Suite` out.

Every problem in a file is collected and reported at once, each naming the key and what is
expected; unknown agent, network and environment names get a did-you-mean.
"""

from __future__ import annotations

import contextlib
import json
import re
import tomllib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from rlbench.agent import numbers_not_strings
from rlbench.errors import SuiteError, did_you_mean
from rlbench.plugins import Catalogue

DEVICE_PATTERN = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
#: Suite names and labels name folders and run ids: kept short enough for any file system.
NAME_LENGTH = 64
#: Seeds are 64-bit (torch.manual_seed takes nothing larger).
SEED_LIMIT = 2**64
#: More seeds than this in one suite is a typo (a count of 10**9 would expand forever).
MAX_SEED_COUNT = 10_000
#: Greedy episodes per evaluation beyond this take longer than any training budget.
MAX_EVAL_EPISODES = 10_000
#: Step counts are 64-bit signed integers in the training loop.
STEP_LIMIT = 2**63


def _safe_name(value: str) -> str:
    # A suite's name is a folder, a label is the start of every run id: both must be one
    # plain path component, never "..", "/tmp/x" or "a/../../b".
    if not re.match(NAME_PATTERN, value) or len(value) > NAME_LENGTH:
        raise ValueError(
            f"use up to {NAME_LENGTH} letters, digits, '_', '.' and '-', starting with a letter "
            f"or digit (it names a folder), got {value!r}"
        )
    return value


SafeName = Annotated[str, AfterValidator(_safe_name)]

#: The characters a path part is made of; anything else in a name is replaced (see slug).
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
#: A slug is cut to this length, so that a run id made of several stays well below the
#: 255 bytes a path component may have (the run id's hash keeps cut names apart).
SLUG_LENGTH = 64


def slug(name: str) -> str:
    """``name`` as one safe path component, for run ids: every run of characters other
    than letters, digits, ``_``, ``.`` and ``-`` becomes ``-`` ("ALE/Pong-v5" ->
    "ALE-Pong-v5"), and a leading ``.`` or ``-`` goes, so no slug is ``..``, hidden, or read
    as an option. A name of safe characters that starts with a letter or digit (every
    suite name and label) is its own slug."""
    return _UNSAFE.sub("-", name).lstrip(".-")[:SLUG_LENGTH] or "_"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_not_strings(cls, value: Any, info: ValidationInfo) -> Any:
        return numbers_not_strings(cls, value, info)


class BudgetOverride(_Strict):
    """An environment's own budget: the keys of [budget] it changes for its runs."""

    steps: int | None = Field(None, gt=0, lt=STEP_LIMIT)
    """Training budget per run on this environment, in environment steps."""
    eval_interval: int | None = Field(None, gt=0, lt=STEP_LIMIT)
    """Environment steps between evaluations on this environment."""
    eval_episodes: int | None = Field(None, gt=0, le=MAX_EVAL_EPISODES)
    """Greedy episodes per evaluation on this environment."""
    eval_max_episode_steps: int | None = Field(None, gt=0, lt=STEP_LIMIT)
    """Cut this environment's evaluation episodes at this length."""


class EnvironmentEntry(_Strict):
    id: str
    """A registered environment name or any Gymnasium id, e.g. "CartPole-v1"."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments passed to the environment's constructor (gym.make)."""
    budget: BudgetOverride | None = None
    """This environment's own budget, merged over the suite's [budget] key by key."""


def _environment_entries(value: Any) -> Any:
    """An environment may be written as its plain id: "CartPole-v1" is {id = "CartPole-v1"}."""
    if isinstance(value, list):
        return [{"id": v} if isinstance(v, str) else v for v in value]
    return value


EnvironmentList = Annotated[list[EnvironmentEntry], BeforeValidator(_environment_entries)]


class AgentEntry(_Strict):
    name: str
    """The agent's registered name (`rlbench list` shows them)."""
    label: SafeName | None = None
    """Name in tables and run ids; defaults to `name`. Needed to compare two configs of one
    agent in one suite."""
    config: dict[str, Any] = Field(default_factory=dict)
    """Hyperparameter overrides; the rest keep the agent's defaults."""
    network: dict[str, Any] | None = None
    """`name` of a network plugin plus its options; defaults to the agent's own choice. Every
    network the agent builds is this one, unless `networks` shapes its role."""
    networks: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per network role the agent declares (its `network_roles`, e.g. actor and critic), that
    role's network: merged over `network` key by key (replacing it when it names another
    network)."""
    env_config: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per environment id of this suite, hyperparameter overrides merged over `config` for
    the runs on that environment (RL Zoo's per-environment settings)."""

    @property
    def display(self) -> str:
        return self.label or self.name


class Budget(_Strict):
    steps: int = Field(gt=0, lt=STEP_LIMIT)
    """Training budget per run, in environment steps (summed over parallel environments)."""
    eval_interval: int = Field(gt=0, lt=STEP_LIMIT)
    """Environment steps between evaluations (one more runs at the end)."""
    eval_episodes: int = Field(10, gt=0, le=MAX_EVAL_EPISODES)
    """Greedy episodes per evaluation."""
    eval_max_episode_steps: int | None = Field(None, gt=0, lt=STEP_LIMIT)
    """Cut evaluation episodes at this length (for environments without a time limit)."""


class TuneTable(_Strict):
    """The optional ``[tune]`` table: what ``rlbench tune`` tunes (docs/tuning.md)."""

    agent: str | None = None
    """Label of the [[agents]] entry to tune (or a registered agent name); default: the
    first entry. Its config is the starting point that the search space overrides."""
    environments: EnvironmentList | None = Field(None, min_length=1)
    """Environments every trial trains on; default: the suite's environments that
    ``rlbench run`` trains the agent on."""
    trials: int = Field(20, gt=0)
    """Finished trials to reach (complete, pruned or failed); --trials overrides."""
    seeds_per_trial: int = Field(3, gt=0)
    """Seeds each trial trains (seeds 10000, 10001, ...: never the suite's own)."""
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    """"tpe", "random", or "grid" (every combination of the dimensions' choices)."""
    pruner: Literal["median", "hyperband", "none"] = "median"
    """"median", "hyperband" (successive halving) or "none"."""
    warmup_steps: int | None = Field(None, ge=0)
    """Environment steps of a trial before it can be pruned; default: a quarter of the first
    tuned environment's steps."""
    objective: Literal["iqm", "mean"] = "iqm"
    """Aggregate of the final evaluation returns over seeds (and environments)."""
    seed: int = Field(0, ge=0)
    """Seed of the sampler."""
    use_default_space: bool = True
    """Start from the agent plugin's default search space; false: tune only [tune.space]."""
    space: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per agent label, {hyperparameter: {low, high, log, step} | {choices} | value}."""


class SuiteFile(_Strict):
    name: SafeName
    """The suite's name; results go to <results>/<name>/."""
    description: str = ""
    seeds: int | list[int]
    """A count n (seeds 0..n-1) or an explicit list of seeds."""
    devices: list[str] = Field(default_factory=lambda: ["cpu"], min_length=1)
    """Any of "cpu", "cuda", "cuda:N", "auto" (cuda when available, else cpu)."""
    environments: EnvironmentList = Field(min_length=1)
    agents: list[AgentEntry] = Field(min_length=1)
    budget: Budget
    skip_incompatible: bool = False
    """Skip the agent × environment pairs an agent's check_spaces refuses (listed by `rlbench
    validate` and in the report) instead of refusing the suite."""
    tune: TuneTable | None = None
    """Optional: what `rlbench tune` tunes (docs/tuning.md)."""
    log: list[str] = Field(default_factory=list)
    """Experiment trackers `rlbench run` and `rlbench tune` log to (registered loggers:
    "tensorboard", "mlflow", "wandb", or a plugin's); `--log` overrides. Logging changes no
    result file."""

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, value: Any, info: ValidationInfo) -> Any:
        value = numbers_not_strings(cls, value, info)
        expected = (
            f"expected a count of seeds (integer from 1 to {MAX_SEED_COUNT}) or a list of "
            "distinct integer seeds from 0 to 2**64 - 1"
        )
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 < value <= MAX_SEED_COUNT:
                raise ValueError(f"{expected}, got {value!r}")
            return value
        if not isinstance(value, list) or not 0 < len(value) <= MAX_SEED_COUNT:
            shown = f"a list of {len(value)}" if isinstance(value, list) and value else repr(value)
            raise ValueError(f"{expected}, got {shown}")
        for i, seed in enumerate(value):
            if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < SEED_LIMIT:
                raise ValueError(f"{expected}; seeds[{i}] is {seed!r}")
        if len(set(value)) != len(value):
            raise ValueError(f"{expected}; {value!r} repeats a seed")
        return value

    @field_validator("devices", mode="after")
    @classmethod
    def _devices(cls, value: list[str]) -> list[str]:
        bad = [d for d in value if not DEVICE_PATTERN.match(d)]
        if bad:
            raise ValueError(f'expected "cpu", "cuda", "cuda:N" or "auto", got {bad!r}')
        return value

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


@dataclass(frozen=True)
class ResolvedAgent:
    """An agent entry with its config and network filled in from the plugin's defaults."""

    name: str
    label: str
    config: dict[str, Any]
    network: dict[str, Any]
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The network of each role the suite shapes differently from ``network`` (resolved);
    a role not here builds ``network``."""
    env_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The resolved config on each environment id the entry's ``env_config`` names."""

    def config_for(self, env_id: str) -> dict[str, Any]:
        """The agent's config for its runs on ``env_id``."""
        return self.env_configs.get(env_id, self.config)


@dataclass(frozen=True)
class SkippedPair:
    """An agent × environment pair left out of a suite by ``skip_incompatible``."""

    label: str
    env_index: int
    env: str
    reason: str

    def describe(self) -> str:
        """One line: ``LABEL on 'ENV': REASON``."""
        return f"{self.label} on {self.env!r}: {self.reason}"


@dataclass
class Suite:
    """A validated suite: everything a run needs, resolved against the installed plugins."""

    path: Path
    file: SuiteFile
    agents: list[ResolvedAgent]
    source: str
    unavailable: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    """Values that work but are probably not meant (``<path>: <key>: <why>``, one line each)."""
    skipped: list[SkippedPair] = field(default_factory=list)
    """The pairs ``skip_incompatible`` leaves out, in suite order."""

    @property
    def name(self) -> str:
        return self.file.name

    def budget_for(self, env_index: int) -> Budget:
        """The budget of the runs on ``environments[env_index]``: [budget] with that
        environment's own ``budget`` keys over it."""
        return _merged_budget(self.file, env_index)

    def unavailable_problems(self) -> list[str]:
        """One line per agent entry and environment that a plugin which failed to load may
        have provided (``<key>: cannot run: <why>``): `rlbench run` fails only their runs,
        `rlbench validate` refuses the suite."""
        problems = [
            f"agents[{i}].name: cannot run: {self.unavailable[entry.display]}"
            for i, entry in enumerate(self.file.agents)
            if entry.display in self.unavailable
        ]
        problems += [
            f"environments[{j}]: cannot run: {self.unavailable[env.id]}"
            for j, env in enumerate(self.file.environments)
            if env.id in self.unavailable
        ]
        return problems

    def skips(self, label: str, env_index: int) -> bool:
        """Whether ``skip_incompatible`` leaves out agent ``label`` on that environment."""
        return any(p.label == label and p.env_index == env_index for p in self.skipped)


def load_suite(
    path: str | Path, catalogue: Catalogue, *, log: Sequence[str] | None = None
) -> Suite:
    """Read, parse and validate a suite file, raising :class:`SuiteError` with every
    problem found. ``log``, when given, replaces the file's ``log`` (``rlbench run --log``:
    the command's loggers, which the caller checks)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        hint = ""
        if isinstance(exc, FileNotFoundError) and path.parent.is_dir():
            # A mistyped name: the suite files beside it.
            beside = [str(p) for p in sorted(path.parent.glob("*.toml")) if p.is_file()]
            hint = did_you_mean(str(path), beside)
        raise SuiteError(str(path), [f"cannot read the file: {exc.strerror}{hint}"]) from None
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SuiteError(
            str(path),
            [
                f"line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                f"{exc.start}); a suite file is TOML, saved as UTF-8"
            ],
        ) from None
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(str(path), [f"invalid TOML: {exc}"]) from None
    if log is not None:
        data = {**data, "log": list(log)}
    return validate_suite(data, catalogue, path=path, source=source)


def validate_suite(
    data: Mapping[str, Any], catalogue: Catalogue, *, path: Path, source: str = ""
) -> Suite:
    try:
        file = SuiteFile.model_validate(data)
    except ValidationError as exc:
        problems = _pydantic_problems(exc, SuiteFile)
        # Plugin names can still be checked when the structure around them is wrong.
        problems += _name_problems(data, catalogue)
        raise SuiteError(str(path), problems) from None

    problems: list[str] = []
    unavailable: dict[str, str] = {}
    labels: dict[str, int] = {}
    agents: list[ResolvedAgent] = []
    agent_classes: dict[int, Any] = {}
    env_ids = [env.id for env in file.environments]
    for i, entry in enumerate(file.agents):
        where = f"agents[{i}]"
        if entry.display in labels:
            problems.append(
                f'{where}.label: "{entry.display}" is already used by '
                f"agents[{labels[entry.display]}]; give each entry of one agent its own label"
            )
        labels[entry.display] = i
        resolved = resolve_agent(entry, where, catalogue, env_ids, problems, unavailable)
        if resolved is not None:
            agents.append(resolved)
            if entry.name in catalogue.agents:
                agent_classes[i] = catalogue.agent(entry.name).agent

    problems += [
        f"log[{i}]: {problem}"
        for i, name in enumerate(file.log)
        for problem in catalogue.logger_problems([name])
    ]

    spaces: dict[int, tuple[Any, Any]] = {}
    for i, env in enumerate(file.environments):
        if not catalogue.has_environment(env.id):
            if catalogue.broken:
                unavailable[env.id] = _safe_message(catalogue.environment, env.id)
                continue
            pool = list(catalogue.environments) + _gym_ids()
            problems.append(
                f"environments[{i}]: unknown environment {env.id!r}{did_you_mean(env.id, pool)};"
                " use a Gymnasium id or one from `rlbench list`"
            )
            continue
        found = _environment_spaces(catalogue, env, f"environments[{i}]", problems)
        if found is not None:
            spaces[i] = found
    refused = _space_problems(file, agent_classes, spaces)
    skipped: list[SkippedPair] = []
    if file.skip_incompatible:
        skipped = [pair for _, pair in refused]
        if refused and len(skipped) == len(file.agents) * len(file.environments):
            problems.append(
                "skip_incompatible: no agent can train on any environment of this suite, "
                "so nothing would run; pair each agent with an environment it supports"
            )
    else:
        problems += [line for line, _ in refused]
    if problems:
        raise SuiteError(str(path), problems)
    return Suite(
        path=path,
        file=file,
        agents=agents,
        source=source,
        unavailable=unavailable,
        warnings=[f"{path}: {w}" for w in _budget_warnings(file)],
        skipped=skipped,
    )


def _environment_spaces(
    catalogue: Catalogue, entry: EnvironmentEntry, where: str, problems: list[str]
) -> tuple[Any, Any] | None:
    """The (observation, action) spaces of one instance of the environment, made and closed
    here so that kwargs it rejects (or a missing dependency) are found before any run
    starts; ``None`` after appending the problem."""
    env = spec = None
    try:
        # Warnings a constructor gives are the runs' to show, not validation's (twice).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec = catalogue.environment(entry.id)
            env = spec.create(**entry.kwargs)
            return env.observation_space, env.action_space
    except Exception as exc:
        missing = spec.missing_dependency(exc) if spec is not None else None
        if missing:  # an optional package (an extra), not the kwargs
            problems.append(f"{where}: {entry.id!r} {missing}")
            return None
        given = f" with kwargs {entry.kwargs}" if entry.kwargs else ""
        problems.append(
            f"{where}: {entry.id!r} cannot be made{given}: {_one_line(exc)}"
            + ("; check the kwargs against the environment's constructor" if given else "")
        )
        return None
    finally:
        if env is not None:
            with contextlib.suppress(Exception):  # a probe that fails to close did its job
                env.close()


def _space_problems(
    file: SuiteFile, agent_classes: Mapping[int, Any], spaces: Mapping[int, tuple[Any, Any]]
) -> list[tuple[str, SkippedPair]]:
    """Each agent × environment pair whose spaces the agent declares it cannot handle, as the
    problem's line and the pair ``skip_incompatible`` would skip. An agent declares them with
    a classmethod ``check_spaces(observation_space, action_space)`` returning ``None`` or why
    not; an agent without one is not checked."""
    refused = []
    for i, agent_cls in agent_classes.items():
        check = getattr(agent_cls, "check_spaces", None)
        if not callable(check):
            continue
        label = file.agents[i].display
        for j, (observation_space, action_space) in spaces.items():
            try:
                reason = check(observation_space, action_space)
            except Exception as exc:
                reason = f"its check_spaces raised {_one_line(exc)}"
            if reason:
                env_id = file.environments[j].id
                line = (
                    f"agents[{i}] on environments[{j}]: {label} cannot train on {env_id!r}: "
                    f"{reason}"
                )
                refused.append((line, SkippedPair(label, j, env_id, str(reason))))
    return refused


def _merged_budget(file: SuiteFile, env_index: int) -> Budget:
    own = file.environments[env_index].budget
    if own is None:
        return file.budget
    # Each key was validated on its own and Budget has no rule across keys: the merge is valid.
    return file.budget.model_copy(update=own.model_dump(exclude_none=True))


def _budget_warnings(file: SuiteFile) -> list[str]:
    warned = []
    for j, env in enumerate(file.environments):
        budget = _merged_budget(file, j)
        if budget.eval_interval <= budget.steps:
            continue
        own = env.budget
        if own is None or (own.steps is None and own.eval_interval is None):
            key, steps = "budget.eval_interval", "budget.steps"
        else:
            key, steps = f"environments[{j}].budget.eval_interval", "its steps"
        line = (
            f"{key}: {budget.eval_interval} is more than {steps} ({budget.steps}), so only "
            "the final evaluation runs; lower it for a learning curve"
        )
        if line not in warned:
            warned.append(line)
    return warned


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def resolve_agent(
    entry: AgentEntry,
    where: str,
    catalogue: Catalogue,
    env_ids: list[str],
    problems: list[str],
    unavailable: dict[str, str] | None = None,
) -> ResolvedAgent | None:
    """An ``[[agents]]`` entry (at ``where`` in the file) with its config validated against
    the agent's model, for the environments ``env_ids``; problems are appended, and an agent
    a broken plugin may have provided is noted in ``unavailable`` (its runs fail alone)."""
    if unavailable is None:
        unavailable = {}
    problems += _env_config_name_problems(entry, where, env_ids)
    if entry.name not in catalogue.agents:
        if catalogue.broken:
            # A broken plugin may have provided it: only this agent's runs fail.
            unavailable[entry.display] = _safe_message(catalogue.agent, entry.name)
            return ResolvedAgent(
                entry.name,
                entry.display,
                dict(entry.config),
                dict(entry.network or {}),
                {role: dict(net) for role, net in entry.networks.items()},
                {env: {**entry.config, **over} for env, over in entry.env_config.items()},
            )
        problems.append(
            f"{where}.name: unknown agent {entry.name!r}"
            f"{did_you_mean(entry.name, catalogue.agents)}; `rlbench list` shows the agents"
        )
        return None
    spec = catalogue.agent(entry.name)
    config = _resolve_config(spec.config_model, entry.config, f"{where}.config", problems)
    env_configs: dict[str, dict[str, Any]] = {}
    for env_id, override in entry.env_config.items():
        if env_id not in env_ids:
            continue  # reported above
        # Only the problems of the override's own keys: the rest are config's, said once.
        merged = _resolve_config(
            spec.config_model,
            {**entry.config, **override},
            f"{where}.env_config.{_toml_key(env_id)}",
            problems,
            only=None if config is not None else set(override),
        )
        if merged is not None:
            env_configs[env_id] = merged

    network = dict(entry.network) if entry.network is not None else dict(spec.agent.default_network)
    network_name = network.pop("name", None) or spec.agent.default_network["name"]
    base = _resolve_network(network_name, network, f"{where}.network", catalogue, problems)
    if base is None:
        return None
    networks = _resolve_roles(entry, spec.agent, base, where, catalogue, problems)
    if config is None:
        config = {}
    return ResolvedAgent(entry.name, entry.display, config, base, networks, env_configs)


def _resolve_config(
    model: type[BaseModel],
    values: Mapping[str, Any],
    prefix: str,
    problems: list[str],
    *,
    only: set[str] | None = None,
) -> dict[str, Any] | None:
    """``values`` validated by the agent's config model and dumped with its defaults, or
    ``None`` after appending the problems (those of the keys in ``only``, when given)."""
    try:
        return model.model_validate(values).model_dump(mode="json")
    except ValidationError as exc:
        if only is None:
            problems += _pydantic_problems(exc, model, prefix=prefix)
        else:
            problems += [
                line
                for err, line in zip(
                    exc.errors(include_url=False),
                    _pydantic_problems(exc, model, prefix=prefix),
                    strict=True,
                )
                if err["loc"] and err["loc"][0] in only
            ]
        return None


def _resolve_network(
    name: str, options: Mapping[str, Any], where: str, catalogue: Catalogue, problems: list[str]
) -> dict[str, Any] | None:
    """``{"name": name, **options}`` with the network's defaults filled in, or ``None`` after
    appending the problems (``where`` is the table's key, e.g. ``agents[0].network``)."""
    if name not in catalogue.networks:
        problems.append(
            f"{where}.name: unknown network {name!r}"
            f"{did_you_mean(name, catalogue.networks)}; `rlbench list` shows the networks"
        )
        return None
    net_spec = catalogue.network(name)
    try:
        resolved = net_spec.config_model.model_validate(dict(options)).model_dump(mode="json")
    except ValidationError as exc:
        problems += _pydantic_problems(exc, net_spec.config_model, prefix=where)
        return None
    return {"name": name, **resolved}


def _resolve_roles(
    entry: AgentEntry,
    agent_cls: Any,
    base: dict[str, Any],
    where: str,
    catalogue: Catalogue,
    problems: list[str],
) -> dict[str, dict[str, Any]]:
    """The network of each role ``entry.networks`` shapes, where it differs from ``base`` (so
    that a table repeating ``network`` changes no run id)."""
    roles: tuple[str, ...] = tuple(getattr(agent_cls, "network_roles", ()))
    networks: dict[str, dict[str, Any]] = {}
    for role, table in entry.networks.items():
        key = f"{where}.networks.{_toml_key(role)}"
        if role not in roles:
            if roles:
                why = (
                    f"{entry.name} builds no {role!r} network{did_you_mean(role, roles)}; "
                    f"its roles: {', '.join(roles)}"
                )
            else:
                why = f"{entry.name} builds one kind of network: shape it with {where}.network"
            problems.append(f"{key}: {why}")
            continue
        options = dict(table)
        name = options.pop("name", None) or base["name"]
        if name == base["name"]:  # the same network: the role's keys over network's
            options = {k: v for k, v in base.items() if k != "name"} | options
        resolved = _resolve_network(name, options, key, catalogue, problems)
        if resolved is not None and resolved != base:
            networks[role] = resolved
    return networks


def _env_config_name_problems(entry: AgentEntry, where: str, env_ids: list[str]) -> list[str]:
    return [
        f"{where}.env_config.{_toml_key(env_id)}: {env_id!r} is not an environment of this "
        f"suite{did_you_mean(env_id, env_ids)}; key it by an id in `environments`"
        for env_id in entry.env_config
        if env_id not in env_ids
    ]


def _toml_key(key: str) -> str:
    """``key`` as TOML writes it in a dotted key: bare when it can be, else quoted."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _name_problems(data: Mapping[str, Any], catalogue: Catalogue) -> list[str]:
    problems = []
    agents = data.get("agents")
    if isinstance(agents, list) and not catalogue.broken:
        for i, entry in enumerate(agents):
            name = entry.get("name") if isinstance(entry, dict) else None
            if isinstance(name, str) and name not in catalogue.agents:
                problems.append(
                    f"agents[{i}].name: unknown agent {name!r}"
                    f"{did_you_mean(name, catalogue.agents)}; `rlbench list` shows the agents"
                )
    return problems


def _safe_message(lookup: Any, name: str) -> str:
    try:
        lookup(name)
    except Exception as exc:
        return str(exc)
    return ""


def _gym_ids() -> list[str]:
    import gymnasium as gym

    return list(gym.registry)


def _format_loc(loc: tuple[Any, ...], prefix: str) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _pydantic_problems(
    exc: ValidationError, model: type[BaseModel], *, prefix: str = ""
) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        key = _format_loc(loc, prefix)
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_keys(model, loc)
            hint = did_you_mean(str(loc[-1]), allowed) if allowed else ""
            expected = f"; expected one of: {', '.join(sorted(allowed))}" if allowed else ""
            problems.append(f"{key}: unknown key{hint}{expected}")
        elif kind == "missing":
            problems.append(f"{key}: required key is missing")
        else:
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            given = err.get("input")
            suffix = "" if kind == "value_error" else f", got {given!r}"
            problems.append(f"{key}: {msg[0].lower() + msg[1:]}{suffix}")
    return problems


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model that rejected an unknown key."""
    current: type[BaseModel] | None = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        info = current.model_fields.get(part)
        current = _model_of(info.annotation) if info is not None else None
        if current is None:
            return []
    return list(current.model_fields)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None
