"""What PPO and A2C share: an actor and a critic stacked over the lanes, acting, collecting the
rollout (with the truncation bootstrap and optional normalisation), and saving all of it.

An agent here is a :class:`rlbench.LaneAgent`: it trains ``context.lanes`` seeds at once and
a single run is one lane, so every tensor carries the lane dimension first. Lane ``k``'s
randomness comes only from ``context.lane_rngs[k]`` (action noise, minibatch order, the
orthogonal initialisation), its losses are summed with the others' (never averaged), its
gradients clipped on their own and its optimizer step computed on its own slice of every
parameter (:mod:`rlbench.lanes.optim`), so that lane ``k`` computes what a one-lane run of seed
``k`` computes. A subclass defines its config, its optimizer and :meth:`ActorCritic.update`.

Gradients are computed by hand, not by autograd: an update writes its loss, and next to it
the loss's gradient with respect to the log-probabilities, entropies and values (a line or
two each, derived in comments); the distribution maps those to the actor's output
(:meth:`rlbench_pg.distributions.LaneCategorical.evaluate`), and each network
backpropagates them (:meth:`rlbench.lanes.StackedNetwork.backprop`: by hand through a stacked
MLP, through autograd for any other network). For networks this small the time goes to the
number of tensor operations, not to arithmetic, and autograd's graph of a PPO minibatch has
about twice as many. ``tests/test_pg_gradients.py`` checks every term and option against
autograd's gradient of each agent's ``reference_loss`` (:func:`rlbench_pg.ppo.reference_loss`,
:func:`rlbench_pg.a2c.reference_loss`: the loss as Stable-Baselines3 writes it).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import gymnasium as gym
import torch
from pydantic import Field, model_validator
from torch import nn

from rlbench import AgentConfig, AgentContext, LaneAgent, Transition
from rlbench.lanes import (
    LaneOptimizer,
    LaneParameters,
    flat_size,
    lane_clip_grad_norm,
    lane_slice,
    stack_networks,
)
from rlbench_pg.distributions import LaneCategorical, make_distribution
from rlbench_pg.normalize import ObsNormalizer, RewardNormalizer, lane_var
from rlbench_pg.rollout import Batch, Rollout

Schedule = Literal["constant", "linear"]

#: Fields that RL Zoo writes with their schedule: ``learning_rate = "lin_1e-3"`` is
#: ``learning_rate = 1e-3`` with ``learning_rate_schedule = "linear"``.
ZOO_SCHEDULED = {"learning_rate": "learning_rate_schedule", "clip_range": "clip_range_schedule"}


class ActorCriticConfig(AgentConfig):
    """Hyperparameters every actor-critic agent here has (Stable-Baselines3's names)."""

    n_steps: int = Field(5, ge=1)
    """Steps of every environment per rollout (a rollout holds num_envs × n_steps samples)."""
    gamma: float = Field(0.99, ge=0, le=1)
    """Discount factor."""
    gae_lambda: float = Field(1.0, ge=0, le=1)
    """GAE(λ): 1 gives Monte-Carlo n-step returns, 0 one-step TD."""
    learning_rate: float = Field(7e-4, gt=0)
    """Initial learning rate; RL Zoo's "lin_7e-4" is 7e-4 with the linear schedule."""
    learning_rate_schedule: Schedule = "constant"
    """"constant", or "linear": decays to 0 at the end of the budget (RL Zoo's lin_)."""
    ent_coef: float = Field(0.0, ge=0)
    """Weight of the entropy bonus in the loss."""
    vf_coef: float = Field(0.5, ge=0)
    """Weight of the value loss in the loss."""
    max_grad_norm: float = Field(0.5, gt=0)
    """Each lane's gradients are clipped to this global norm."""
    normalize_advantage: bool = False
    """Standardise the advantages of every (mini)batch."""
    ortho_init: bool = True
    """Orthogonal initialisation: gain √2 for hidden layers, 0.01 for the policy head, 1 for
    the value head, zero biases (as Stable-Baselines3)."""
    log_std_init: float = 0.0
    """Initial log standard deviation of the Gaussian policy (Box actions only)."""
    normalize_obs: bool = False
    """Normalise observations by their running mean and variance (RL Zoo's normalize)."""
    normalize_reward: bool = False
    """Scale rewards by the running std of the discounted return (RL Zoo's normalize)."""
    clip_obs: float = Field(10.0, gt=0)
    """Normalised observations are clipped to ±clip_obs."""
    clip_reward: float = Field(10.0, gt=0)
    """Normalised rewards are clipped to ±clip_reward."""

    @model_validator(mode="before")
    @classmethod
    def _zoo_schedules(cls, data: Any) -> Any:
        """Accept RL Zoo's ``"lin_<value>"`` for a scheduled field."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        for key, schedule_key in ZOO_SCHEDULED.items():
            value = data.get(key)
            if isinstance(value, str) and value.startswith("lin_"):
                if data.get(schedule_key, "linear") != "linear":
                    raise ValueError(f'{key} = "{value}" is linear, but {schedule_key} is not')
                try:
                    data[key] = float(value.removeprefix("lin_"))
                except ValueError:
                    raise ValueError(
                        f'{key} = "{value}": write lin_ and a number, e.g. "lin_1e-3"'
                    ) from None
                data[schedule_key] = "linear"
        return data


@dataclass
class Forward:
    """The actor's and the critic's outputs on a batch, and what each network keeps of the
    pass to backpropagate through it (:meth:`ActorCritic.gradient_step`)."""

    params: torch.Tensor
    """The actor's output: the distribution's parameters ``[lanes, n, param_size]``."""
    values: torch.Tensor
    """The critic's values ``[lanes, n]``."""
    actor_saved: Any
    critic_saved: Any


def scheduled(value: float, schedule: Schedule, progress_remaining: float) -> float:
    """A scheduled hyperparameter: ``value``, or ``value * progress_remaining`` (1 at the start
    of training, 0 at the end of the budget), as RL Zoo's ``linear_schedule``."""
    return value if schedule == "constant" else value * progress_remaining


def standardize(advantages: torch.Tensor) -> torch.Tensor:
    """Each lane's advantages ``[lanes, samples]`` less their mean, over their standard
    deviation (unbiased, + 1e-8), as Stable-Baselines3 normalises a minibatch's; a single
    sample is left as it is."""
    n = advantages.shape[1]
    if n < 2:
        return advantages
    # lane_var's two passes, the deviation kept for the result.
    deviation = advantages - advantages.mean(dim=1, keepdim=True)
    std = ((deviation**2).sum(dim=1, keepdim=True) / (n - 1)).sqrt()
    return deviation / (std + 1e-8)


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - Var(target - predicted) / Var(target)`` per lane (``[lanes, samples]`` in,
    ``[lanes]`` out); 0 where the targets do not vary (SB3 logs NaN there, which rlbench would
    count as divergence)."""
    # Both variances in one pass: [lanes, 2, samples].
    var_target, var_error = lane_var(torch.stack([target, target - predicted], 1), 2).unbind(1)
    return torch.where(var_target > 0, 1 - var_error / var_target, 0.0)


def evaluate_actions(
    actor: nn.Module, log_std: torch.Tensor | None, obs: torch.Tensor, actions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One lane's policy on ``obs`` ``[n, obs_size]``, in plain autograd, as
    Stable-Baselines3's ``evaluate_actions``: the log-probabilities of ``actions`` and the
    entropies, ``[n]`` each. ``log_std`` is the Gaussian policy's log standard deviation
    (``[dim]``, Box actions: the actor gives the mean; both summed over action dimensions)
    or ``None`` (Discrete actions: the actor gives the logits). The agents' reference losses
    read it; their updates compute the same by hand (:mod:`rlbench_pg.distributions`)."""
    out = actor(obs)
    if log_std is None:
        dist = torch.distributions.Categorical(logits=out)
        return dist.log_prob(actions), dist.entropy()
    gaussian = torch.distributions.Normal(out, log_std.exp())
    log_prob = gaussian.log_prob(actions.reshape(out.shape)).sum(-1)
    return log_prob, gaussian.entropy().sum(-1)


def orthogonal_init(network: nn.Module, head_gain: float, generator: torch.Generator) -> None:
    """Stable-Baselines3's initialisation of every ``nn.Linear`` of ``network``: orthogonal
    weights with gain √2, the last layer (the head) with ``head_gain``, biases 0. Drawn on the
    CPU from ``generator`` (the lane's), then copied to the network's device."""
    linears = [m for m in network.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for i, layer in enumerate(linears):
            gain = head_gain if i == len(linears) - 1 else math.sqrt(2)
            weight = torch.empty(layer.weight.shape)
            nn.init.orthogonal_(weight, gain=gain, generator=generator)
            layer.weight.copy_(weight)
            if layer.bias is not None:
                layer.bias.zero_()


class ActorCritic(LaneAgent):
    """Base of the policy-gradient agents: separate actor and critic networks (the suite's
    network, ``tanh`` MLP 64-64 by default as Stable-Baselines3's ``MlpPolicy``; the roles
    ``actor`` and ``critic`` can each be shaped apart), a
    categorical or diagonal-Gaussian policy, a rollout of ``num_envs × n_steps`` steps.

    Collection (:meth:`observe`): each step's reward, where the episode was truncated (not
    terminated), gets ``gamma * V(final observation)`` added, the value of the true final
    observation the step produced (as Stable-Baselines3 does); GAE cuts its trace at every
    episode end. When the rollout is full, :meth:`update` learns from it.
    """

    Config: ClassVar[type[AgentConfig]] = ActorCriticConfig
    default_network: ClassVar[Mapping[str, Any]] = {
        "name": "mlp",
        "hidden_sizes": [64, 64],
        "activation": "tanh",
    }
    network_roles: ClassVar[tuple[str, ...]] = ("actor", "critic")
    name: ClassVar[str] = "actor_critic"
    #: Whether :meth:`update` needs the rollout policy's log-probabilities (``Batch.log_probs``).
    uses_log_probs: ClassVar[bool] = True

    @classmethod
    def check_spaces(cls, observation_space: gym.Space, action_space: gym.Space) -> str | None:
        """Why this agent cannot train on these spaces, or ``None`` if it can."""
        if not isinstance(observation_space, gym.spaces.Box):
            return f"it needs Box observations, got {observation_space}"
        if isinstance(action_space, gym.spaces.Discrete):
            if int(action_space.start) != 0:
                return f"its Discrete actions must start at 0, got {action_space}"
            return None
        if isinstance(action_space, gym.spaces.Box):
            return None
        return f"it needs Discrete or Box actions, got {action_space}"

    def __init__(self, config: ActorCriticConfig, context: AgentContext) -> None:
        super().__init__(config, context)
        reason = self.check_spaces(context.observation_space, context.action_space)
        if reason is not None:
            raise ValueError(f"{self.name} cannot train here: {reason}")
        self.cfg = config
        lanes, device = context.lanes, context.device
        obs_size = flat_size(context.observation_space)
        self.dist = make_distribution(context.action_space, lanes, config.log_std_init, device)
        assert context.make_lane_networks is not None
        # The suite may shape each apart ([agents.networks.actor], [agents.networks.critic]).
        actors = context.make_lane_networks(obs_size, self.dist.param_size, role="actor")
        critics = context.make_lane_networks(obs_size, 1, role="critic")
        if config.ortho_init:
            for rng, actor, critic in zip(context.lane_rngs, actors, critics, strict=True):
                generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
                orthogonal_init(actor, 0.01, generator)
                orthogonal_init(critic, 1.0, generator)
        self.actor = stack_networks(actors)
        self.critic = stack_networks(critics)
        # Every parameter in one [lanes, size] buffer: one row per lane for clipping and the
        # optimizer (rlbench.lanes.optim).
        self.lane_params = LaneParameters(
            [*self.actor.parameters(), *self.critic.parameters(), *self.dist.parameters()]
        )
        # Each network's (and the distribution's) gradients: views of lane_params.grad.
        grads = self.lane_params.grad_views
        n_actor = len(list(self.actor.parameters()))
        n_critic = len(list(self.critic.parameters()))
        self._grad_views = (
            grads[:n_actor],
            grads[n_actor : n_actor + n_critic],
            grads[n_actor + n_critic :],
        )
        self.optimizer = self.make_optimizer()
        self.obs_norm = (
            ObsNormalizer(lanes, obs_size, config.clip_obs, device)
            if config.normalize_obs
            else None
        )
        self.reward_norm = (
            RewardNormalizer(lanes, config.num_envs, config.gamma, config.clip_reward, device)
            if config.normalize_reward
            else None
        )
        self.rollout = Rollout(
            config.n_steps,
            lanes,
            config.num_envs,
            obs_size,
            self.dist.action_shape,
            isinstance(self.dist, LaneCategorical),
            device,
        )
        self.steps = 0  # environment steps of one lane so far
        # What act() computed for the observations observe() will store: (the obs tensor it
        # was given, its features).
        self._acted: tuple[torch.Tensor, torch.Tensor] | None = None

    @abstractmethod
    def make_optimizer(self) -> LaneOptimizer:
        """The optimizer of :attr:`lane_params`."""

    @abstractmethod
    def update(self, batch: Batch) -> Mapping[str, torch.Tensor]:
        """Learn from a full rollout (``batch``: every lane's samples, with advantages and
        returns); returns metrics, each ``[lanes]``."""

    @property
    def progress_remaining(self) -> float:
        """1 at the start of training, 0 at the end of the budget (for schedules)."""
        return max(0.0, 1.0 - self.steps / max(self.context.total_steps, 1))

    def features(self, obs: torch.Tensor, *, update: bool = False) -> torch.Tensor:
        """``obs`` ``[lanes, n, *obs_shape]`` as the networks see it: flattened, and normalised
        when ``normalize_obs`` is set (its statistics updated with it only if ``update``)."""
        x = obs.flatten(2)
        return x if self.obs_norm is None else self.obs_norm(x, update=update)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x).squeeze(-1)

    def act(self, obs: torch.Tensor, *, greedy: bool = False) -> torch.Tensor:
        """Greedy: the policy's mode (argmax, Gaussian mean), statistics untouched. Otherwise a
        sample from the policy (a raw, unclipped Gaussian sample for Box actions)."""
        with torch.no_grad():
            if greedy:
                return self.dist.mode(self.actor(self.features(obs)))
            x = self.features(obs, update=True)
            self._acted = (obs, x)
            return self.dist.sample(self.actor(x), self.context.lane_rngs)

    def observe(self, t: Transition) -> Mapping[str, Any]:
        c = self.cfg
        with torch.no_grad():
            if self._acted is not None and self._acted[0] is t.obs:
                x = self._acted[1]
            else:  # observations act() did not see
                x = self.features(t.obs)
            self._acted = None
            reward = t.reward.float()
            if self.reward_norm is not None:
                reward = self.reward_norm(reward, t.done)
            # A time limit is not a terminal state: bootstrap with the value of the true
            # final observation. A terminated step keeps its reward alone.
            if bool(t.truncated.any()):
                cut_off = t.truncated & ~t.terminated
                final_values = self.value(self.features(t.next_obs))
                reward = reward + c.gamma * final_values * cut_off.float()
            self.rollout.add(x, t.action, reward, t.done.float())
            self.steps += t.obs.shape[1]
            if not self.rollout.full:
                return {}
            batch = self.rollout_batch(self.features(t.next_obs))
        metrics = self.update(batch)
        return {key: value.detach().tolist() for key, value in metrics.items()}

    def rollout_batch(self, last_x: torch.Tensor) -> Batch:
        """The full rollout as a :class:`Batch`, with the values (one pass of the critic over
        its samples and ``last_x``, the features of the observations after its last step),
        the GAE advantages and returns, and the log-probabilities of its actions when
        :attr:`uses_log_probs`."""
        obs, actions = self.rollout.samples()
        samples = obs.shape[1]
        values = self.value(torch.cat([obs, last_x], dim=1))
        values, last_values = values[:, :samples], values[:, samples:]
        advantages, returns = self.rollout.advantages(
            values, last_values, self.cfg.gamma, self.cfg.gae_lambda
        )
        log_probs = None
        if self.uses_log_probs:
            log_probs, _ = self.dist.log_prob_entropy(self.actor(obs), actions)
        return Batch(obs, actions, values, log_probs, advantages, returns)

    def forward(self, x: torch.Tensor) -> Forward:
        """The actor's and the critic's pass over features ``x`` for a gradient step."""
        params, actor_saved = self.actor.forward_for_backprop(x)
        values, critic_saved = self.critic.forward_for_backprop(x)
        return Forward(params, values.squeeze(-1), actor_saved, critic_saved)

    def gradient_step(
        self,
        forward: Forward,
        grad_params: torch.Tensor,
        grad_values: torch.Tensor,
        grad_log_std: torch.Tensor | None,
        lr: float,
    ) -> torch.Tensor:
        """One optimizer step of every lane on its own loss, from the loss's gradients with
        respect to the outputs of ``forward``: the actor's (``[lanes, n, param_size]``), the
        values (``[lanes, n]``) and the Gaussian's log-std (``[lanes, dim]``; ``None`` for a
        categorical policy). Each lane's gradients are clipped to ``max_grad_norm`` on
        their own. Returns the gradient norms before clipping."""
        actor_grads, critic_grads, dist_grads = self._grad_views
        self.actor.backprop(forward.actor_saved, grad_params, actor_grads)
        self.critic.backprop(forward.critic_saved, grad_values.unsqueeze(-1), critic_grads)
        if grad_log_std is not None:
            dist_grads[0].copy_(grad_log_std)
        norms = lane_clip_grad_norm(self.lane_params.grad, self.cfg.max_grad_norm)
        self.optimizer.step(lr)
        return norms

    def state_dict(self) -> dict[str, Any]:
        """Every lane's state, stacked ``[lanes, ...]``: networks, log-std, optimizer moments,
        normalisation statistics, and the step count."""
        state: dict[str, Any] = {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "distribution": self.dist.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "steps": self.steps,
        }
        if self.obs_norm is not None:
            state["obs_rms"] = self.obs_norm.rms.state_dict()
        if self.reward_norm is not None:
            state["reward_rms"] = self.reward_norm.state_dict()
        return state

    def lane_state_dict(self, lane: int) -> dict[str, Any]:
        """Lane ``lane``'s state: :meth:`state_dict` of a one-lane agent (every stacked tensor
        cut to ``[1, ...]`` and copied)."""
        return lane_slice(self.state_dict(), lane)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.dist.load_state_dict(state["distribution"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])
        if self.obs_norm is not None:
            self.obs_norm.rms.load_state_dict(state["obs_rms"])
        if self.reward_norm is not None:
            self.reward_norm.load_state_dict(state["reward_rms"])
