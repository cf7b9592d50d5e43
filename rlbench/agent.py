"""The agent interface: what an agent implements and what the harness hands it.

The harness owns the environment loop, seeding, evaluation, checkpointing and logging; an
agent only acts, learns from the transitions it is shown, and saves/loads its state. Every
tensor crossing this interface is batched over the ``num_envs`` environments the harness
steps for the agent (``num_envs = 1`` for the classic online DQN), so on-policy agents that
collect rollouts from several vectorized environments (PPO, A2C) use the same interface:
they buffer transitions in :meth:`Agent.observe` and update when their rollout is full.
"""

from __future__ import annotations

import inspect
import types
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import (
    Annotated,
    Any,
    ClassVar,
    Generic,
    Literal,
    TypeVar,
    Union,
    get_args,
    get_origin,
)

import gymnasium as gym
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from rlbench import snapshot


def _takes_a_number(annotation: Any, text: str) -> bool:
    """Whether ``annotation`` is a number type (or a union with one) that does not also take
    the string ``text`` (a ``str`` field, or a ``Literal`` naming it)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _takes_a_number(get_args(annotation)[0], text)
    if origin is Union or origin is types.UnionType:
        options = get_args(annotation)
        takes = [_takes_a_number(arg, text) for arg in options]
        takes_text = any(
            arg is str or (get_origin(arg) is Literal and text in get_args(arg)) for arg in options
        )
        return any(takes) and not takes_text
    return annotation in (int, float)


def numbers_not_strings(model: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """A before-validator for every field of ``model``: TOML has numbers, so a number
    written as a string (``steps = "1000"``) is refused, with the fix, instead of parsed."""
    if not isinstance(value, str) or info.field_name is None:
        return value
    field_info = model.model_fields.get(info.field_name)
    if field_info is None or not _takes_a_number(field_info.annotation, value):
        return value
    try:
        float(value)
    except ValueError:
        raise ValueError(f"write a number, not a string, got {value!r}") from None
    raise ValueError(f"write a number, not a string: {info.field_name} = {value}")


class AgentConfig(BaseModel):
    """Base class of every agent's hyperparameters.

    Subclass it with one field per hyperparameter, each with a default and a docstring
    (the docstring becomes the field's description in ``rlbench list --verbose`` and in
    validation errors). Unknown keys in a suite file are rejected.
    """

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)

    num_envs: int = Field(1, ge=1)
    """Environments the harness steps in parallel for this agent (batched transitions)."""

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_not_strings(cls, value: Any, info: ValidationInfo) -> Any:
        return numbers_not_strings(cls, value, info)


@dataclass(frozen=True)
class Transition:
    """One environment step of every parallel environment, as tensors on the agent's device.

    Shapes: ``obs`` and ``next_obs`` are ``[num_envs, *obs_shape]`` (float32), ``action`` is
    what :meth:`Agent.act` returned, ``reward``, ``terminated`` and ``truncated`` are
    ``[num_envs]``. ``next_obs`` is the observation the step produced, also when the episode
    ended there (the harness resets the environment afterwards and hands the reset
    observation to the next :meth:`Agent.act`). Bootstrap through ``truncated`` (a time limit
    is not a terminal state), never through ``terminated``.

    The tensors are read-only: the harness may pass one tensor as this step's ``next_obs``
    and the next step's ``obs`` (copy before changing one in place).
    """

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor

    @property
    def done(self) -> torch.Tensor:
        """Episode ended for whatever reason (the point where exploration schedules per
        episode advance)."""
        return self.terminated | self.truncated


@dataclass(frozen=True)
class AgentContext:
    """What the harness gives an agent at construction."""

    observation_space: gym.Space
    """The single-environment observation space."""
    action_space: gym.Space
    """The single-environment action space."""
    num_envs: int
    """Number of parallel environments whose transitions :meth:`Agent.observe` receives."""
    device: torch.device
    """Where the agent keeps its parameters; observations arrive on this device."""
    seed: int
    """The run's seed (torch's global RNG is already seeded with it)."""
    rng: np.random.Generator
    """The agent's own random stream for exploration; seeded from ``seed``."""
    total_steps: int
    """The run's training budget in environment steps (for schedules)."""
    make_network: Callable[..., torch.nn.Module]
    """``make_network(in_features, out_features, role=None)`` builds the network the suite
    chose for this agent, already on ``device``. Call it once per network (online, target,
    ...). ``role`` names one of the agent's :attr:`Agent.network_roles` (e.g. ``"actor"``),
    whose network a suite may shape apart (``[agents.networks.actor]``); ``None`` is the
    agent's one network (the suite's ``network``). A factory given here without a ``role``
    parameter (a test's ``lambda i, o: ...``) builds every role's network alike."""
    lanes: int = 1
    """How many independent seeds a :class:`LaneAgent` trains at once (1 for other agents)."""
    lane_seeds: tuple[int, ...] = ()
    """Each lane's run seed (``(seed,)`` when not given)."""
    lane_rngs: tuple[np.random.Generator, ...] = ()
    """Each lane's own random stream, seeded from its seed exactly as ``rng`` is for a run of
    that seed (``(rng,)`` when not given)."""
    make_lane_networks: Callable[..., list[torch.nn.Module]] | None = None
    """``make_lane_networks(in_features, out_features, role=None)``: one network per lane,
    network ``k`` initialised from lane ``k``'s torch random stream, as a run of that seed
    would initialise it (stack them with :func:`rlbench.lanes.stack_networks`); ``role`` as
    for :attr:`make_network`. Without lanes: ``[make_network(in_features, out_features,
    role=role)]``."""

    def __post_init__(self) -> None:
        if not self.lane_seeds:
            object.__setattr__(self, "lane_seeds", (self.seed,))
        if not self.lane_rngs:
            object.__setattr__(self, "lane_rngs", (self.rng,))
        object.__setattr__(self, "make_network", _taking_role(self.make_network))
        if self.make_lane_networks is None:
            make = self.make_network
            object.__setattr__(
                self, "make_lane_networks", lambda i, o, role=None: [make(i, o, role=role)]
            )
        else:
            object.__setattr__(self, "make_lane_networks", _taking_role(self.make_lane_networks))
        if not len(self.lane_seeds) == len(self.lane_rngs) == self.lanes:
            raise ValueError(
                f"AgentContext: {self.lanes} lanes need as many lane_seeds and lane_rngs "
                f"(got {len(self.lane_seeds)} and {len(self.lane_rngs)})"
            )


def _taking_role(make: Callable[..., Any]) -> Callable[..., Any]:
    """``make`` if it takes a ``role`` keyword, else ``make`` ignoring one: contexts built by
    hand (plugins' own tests) keep their two-argument factories."""
    try:
        params = inspect.signature(make).parameters.values()
    except (TypeError, ValueError):  # no signature to read: assume the plain two arguments
        params = ()
    if any(p.name == "role" or p.kind is p.VAR_KEYWORD for p in params):
        return make

    def ignoring_role(in_features: int, out_features: int, role: str | None = None) -> Any:
        return make(in_features, out_features)

    return ignoring_role


ConfigT = TypeVar("ConfigT", bound=AgentConfig)


class Agent(ABC, Generic[ConfigT]):
    """Base class of every agent.

    A subclass sets ``Config`` to its :class:`AgentConfig` subclass and, optionally,
    ``default_network`` to the network (name and options) used when a suite names none.
    Naming the config class as the type parameter too (``class MyAgent(Agent[MyConfig])``)
    types ``self.config`` as it; ``class MyAgent(Agent)`` works the same at run time, with
    ``self.config`` untyped to a type checker.
    """

    # A ClassVar cannot mention ConfigT (type checkers reject it): ``Config`` should be the
    # class ConfigT names, which the harness instantiates from the suite's values.
    Config: ClassVar[type[AgentConfig]] = AgentConfig
    default_network: ClassVar[Mapping[str, Any]] = {"name": "mlp", "hidden_sizes": [64, 64]}
    network_roles: ClassVar[tuple[str, ...]] = ()
    """The kinds of network the agent builds, when it builds more than one (an actor-critic's
    ``("actor", "critic")``): a suite may shape each apart (``[agents.networks.actor]``,
    validated against these names) and the agent asks for each with ``make_network(in, out,
    role="actor")``. Empty (the default): one kind, the suite's ``network``."""

    def __init__(self, config: ConfigT, context: AgentContext) -> None:
        self.config: ConfigT = config
        self.context = context

    @classmethod
    def check_spaces(cls, observation_space: gym.Space, action_space: gym.Space) -> str | None:
        """Why this agent cannot train on an environment with these (single-environment)
        spaces, in a few words, or ``None`` if it can.

        Called when a suite is validated (``rlbench validate``, ``rlbench run``), once per
        agent × environment pair, before any run starts: a pair it refuses is reported as
        ``agents[i] on environments[j]: NAME cannot train on 'ENV': REASON``. The default
        accepts every space; override it to declare what the agent supports (e.g. the DQN
        family returns a reason unless the action space is ``Discrete``).
        """
        return None

    @abstractmethod
    def act(self, obs: torch.Tensor, *, greedy: bool = False) -> torch.Tensor:
        """Choose actions for a batch of observations ``[n, *obs_shape]``.

        ``greedy=True`` is the evaluation policy (no exploration). Returns a tensor of ``n``
        actions (any device; the harness moves it to the CPU to step the environments).
        """

    @abstractmethod
    def observe(self, transition: Transition) -> Mapping[str, float]:
        """Learn from one step of every training environment.

        Called once per harness step, after :meth:`act`. The agent decides when and how much
        to learn (every step, every N steps, when its rollout is full). Returns training
        metrics to log (e.g. ``{"loss": 0.3, "epsilon": 0.1}``); an empty mapping is fine.
        """

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to restore the agent: tensors, numbers, strings, lists and dicts
        only, so that ``torch.load(path, weights_only=True)`` reads it back."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything training needs to go on from here exactly as if it had never stopped:
        weights, optimizer moments, replay or rollout buffers, counters, random generators.

        Called by the harness at each mid-run checkpoint (by default after each evaluation,
        between two :meth:`observe` calls); the result is saved with ``torch.save``. To
        resume, the harness builds the agent afresh from its config and context, exactly as
        at the start of the run, and calls :meth:`load_checkpoint_state` with it.

        The default (:func:`rlbench.snapshot.capture`) copies every tensor, array, numpy
        generator, number and string reachable from the agent's attributes, and the state
        dict of every attribute that has one (modules, optimizers); it restores them in
        place, so aliases (a numpy view of a tensor, a generator shared with a buffer) stay
        aliases. Override both methods only for state it cannot see (an object of a C
        extension, a file handle).
        """
        return snapshot.capture(self)

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`checkpoint_state` returned into this freshly built agent."""
        snapshot.restore(self, state)


class LaneAgent(Agent[ConfigT]):
    """An agent that trains ``context.lanes`` independent seeds (lanes) as one batched
    computation: stacked parameters, batched matrix products (see :mod:`rlbench.lanes`).

    The harness groups the runs of a suite that differ only in their seed and trains them as
    the lanes of one such agent (``rlbench run --lanes N`` caps a group; a single run is a
    group of one). Everything crossing the interface gains a leading lane dimension:

    - :meth:`act` receives ``[lanes, num_envs, *obs_shape]`` and returns ``[lanes, num_envs]``
      actions;
    - :meth:`observe` receives a :class:`Transition` whose fields are ``[lanes, num_envs,
      ...]`` and returns its metrics as ``{name: one value per lane}`` (a sequence or a 1-D
      tensor of length ``lanes``);
    - :meth:`lane_state_dict` returns one lane's state, as a one-lane agent of that seed would
      save it.

    Contract: lane ``k`` computes what a one-lane agent of seed ``k`` computes. Draw lane
    ``k``'s randomness only from ``context.lane_rngs[k]`` (and its initial weights from
    ``context.make_lane_networks``), and keep every operation per lane: a lane must not see
    another's data, not even through a shared reduction (sum per-lane losses; never average
    over lanes).
    """

    @abstractmethod
    def act(self, obs: torch.Tensor, *, greedy: bool = False) -> torch.Tensor:
        """Actions ``[lanes, n]`` for observations ``[lanes, n, *obs_shape]``."""

    @abstractmethod
    def observe(self, transition: Transition) -> Mapping[str, Any]:
        """Learn from one step of every lane's environments (fields ``[lanes, n, ...]``);
        returns ``{metric: per-lane values}``."""

    @abstractmethod
    def lane_state_dict(self, lane: int) -> dict[str, Any]:
        """Lane ``lane``'s state: what :meth:`state_dict` of a one-lane agent of that seed
        returns (the harness saves it as that run's weights)."""


class OneLane:
    """A plain :class:`~rlbench.agent.Agent` seen through the lane interface, as one lane:
    the harness has one training loop, and a plain agent sees exactly what it always did
    (its tensors without the lane dimension)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def act(self, obs: torch.Tensor, *, greedy: bool = False) -> torch.Tensor:
        return self.agent.act(obs[0], greedy=greedy).unsqueeze(0)

    def observe(self, t: Transition) -> Mapping[str, Any]:
        metrics = self.agent.observe(
            Transition(
                obs=t.obs[0],
                action=t.action[0],
                reward=t.reward[0],
                next_obs=t.next_obs[0],
                terminated=t.terminated[0],
                truncated=t.truncated[0],
            )
        )
        return {key: (value,) for key, value in metrics.items()}

    def lane_state_dict(self, lane: int) -> dict[str, Any]:
        return self.agent.state_dict()

    def checkpoint_state(self) -> dict[str, Any]:
        return self.agent.checkpoint_state()

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        self.agent.load_checkpoint_state(state)
