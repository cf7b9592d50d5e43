"""sac: Soft Actor-Critic (Haarnoja et al. 2018, with the automatic temperature of Haarnoja et
al. 2018b), as Stable-Baselines3's ``SAC`` computes it.

- A squashed Gaussian actor: the network outputs a mean and a log standard deviation per
  action dimension (``2 * |A|`` outputs; the log-std clamped to ``[-20, 2]`` as SB3 does); an
  action is ``tanh(mean + std * noise)``, and its log-probability carries the tanh
  correction, ``log N(u) - sum(log(1 - tanh(u)^2 + 1e-6))`` (SB3's
  ``SquashedDiagGaussianDistribution``). The greedy action is ``tanh(mean)``.
- Twin critics ``Q1``, ``Q2`` on ``concat(obs, action)``, regressed onto the soft Bellman
  target ``r + gamma * (1 - terminated) * (min Q_target(s', a') - alpha * log pi(a'|s'))``
  with ``a' ~ pi(s')``: a time limit is not a terminal state, so only ``terminated`` cuts
  the bootstrap. The targets trail the critics by Polyak averaging (``tau``).
- The entropy temperature ``alpha``: with ``ent_coef = "auto"``, ``log_alpha`` is learned by
  its own Adam towards the target entropy ``-|A|``; a number fixes it.
- Uniform random actions for the first ``learning_starts`` steps, then a gradient step
  (temperature, critics, actor, targets, in SB3's order) every ``train_freq`` harness steps.

The action contract (:mod:`rlbench_offpolicy.common`): the actor works in ``[-1, 1]``;
:meth:`SAC.act` returns actions rescaled to the ``Box``'s bounds
(``low + (a + 1) / 2 * (high - low)``); the replay buffer stores the ``[-1, 1]`` action.

It is a :class:`rlbench.LaneAgent`: it trains ``context.lanes`` seeds as one batched
computation, every tensor ``[lanes, ...]``, and lane ``k`` computes exactly what a one-lane
run of seed ``k`` computes. So lane ``k``'s randomness (warm-up actions, the policy's noise
when acting and in every gradient step, replay indices) comes from ``context.lane_rngs[k]``
alone, each loss is per lane (``[lanes]``) and summed over the lanes before ``backward()``,
and each optimized group (actor; both critics; ``log_alpha``) has its own
:class:`~rlbench.lanes.LaneParameters` and :class:`~rlbench.lanes.LaneOptimizer`.

Read it top to bottom: the losses, config, construction, the policy, ``act``, ``observe``,
the gradient step, saving. :func:`critic_loss` and :func:`actor_loss` are the losses in plain
autograd form (with :meth:`SAC.policy`); the gradient step computes their gradients, and the
temperature's, by hand, which saves autograd's graph (one seed's gradient step about 15%
faster): the critics' through :func:`rlbench_offpolicy.common.backprop_twin_critics`, the
actor's through both critics to their input and back through the policy
(:meth:`SAC.actor_backprop`). Each follows autograd's formulas in autograd's order, so the
gradients equal autograd's bit for bit at the built-in layer sizes, and
``tests/test_offpolicy.py`` holds a gradient step to the same step in plain autograd.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import gymnasium as gym
import torch
from pydantic import Field, field_validator
from torch import nn

from rlbench import AgentConfig, AgentContext, LaneAgent, Transition
from rlbench.lanes import (
    LaneOptimizer,
    LaneParameters,
    LaneReplayBuffer,
    flat_size,
    kernels,
    lane_slice,
    polyak_update,
    stack_networks,
)
from rlbench_offpolicy import common

#: SB3's bounds of the actor's log standard deviation (``LOG_STD_MIN``, ``LOG_STD_MAX``).
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
#: SB3's epsilon in the tanh correction, ``log(1 - tanh(u)^2 + 1e-6)``.
TANH_EPS = 1e-6
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def critic_loss(q1: torch.Tensor, q2: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SB3's critic loss, per lane ``[lanes]``: half the sum of the two critics' mean squared
    errors against the soft Bellman target, ``q1``, ``q2``, ``target`` ``[lanes, batch]``.
    The plain form: :meth:`SAC.gradient_step` computes its gradient by hand
    (:func:`rlbench_offpolicy.common.backprop_twin_critics`), equal to autograd's of this."""
    return 0.5 * ((q1 - target).square().mean(dim=1) + (q2 - target).square().mean(dim=1))


def actor_loss(
    alpha: torch.Tensor, log_prob: torch.Tensor, q1_pi: torch.Tensor, q2_pi: torch.Tensor
) -> torch.Tensor:
    """SB3's actor loss, per lane ``[lanes]``: ``mean(alpha * log pi(a|s) - min(Q1, Q2)(s,
    a))`` over the minibatch, ``a ~ pi(s)`` reparameterised; ``alpha`` ``[lanes, 1]``, the rest
    ``[lanes, batch]``. The plain form: :meth:`SAC.gradient_step` backpropagates it by hand
    through the critics and :meth:`SAC.policy` (:meth:`SAC.actor_backprop`), equal to
    autograd's gradient of it."""
    return (alpha * log_prob - torch.min(q1_pi, q2_pi)).mean(dim=1)


class SACConfig(AgentConfig):
    """sac's hyperparameters: Stable-Baselines3's ``SAC`` defaults (SB3 2.x), RL Zoo's tuned
    values noted per field (``hyperparams/sac.yml``)."""

    learning_rate: float = Field(3e-4, gt=0)
    """Adam learning rate of the actor, the critics and log_alpha (SB3: 3e-4; RL Zoo
    Pendulum-v1: 1e-3, LunarLanderContinuous: lin_7.3e-4, BipedalWalker: 7.3e-4)."""
    buffer_size: int = Field(1_000_000, ge=1)
    """Replay capacity in transitions, per lane (SB3: 1e6; RL Zoo BipedalWalker: 3e5). Only
    what the run's budget can fill is allocated (rlbench_offpolicy.common.replay_capacity)."""
    learning_starts: int = Field(100, ge=0)
    """Environment steps of uniformly random actions before the first gradient step (SB3:
    100, which RL Zoo keeps on Pendulum-v1; RL Zoo LunarLanderContinuous, BipedalWalker and
    MuJoCo: 10000)."""
    batch_size: int = Field(256, ge=1)
    """Minibatch size of each gradient step (SB3: 256; RL Zoo BipedalWalker: 256)."""
    tau: float = Field(0.005, gt=0, le=1)
    """Polyak coefficient of the critic targets: target = (1 - tau) * target + tau * online
    (SB3: 0.005; RL Zoo LunarLanderContinuous: 0.01, BipedalWalker: 0.02)."""
    gamma: float = Field(0.99, ge=0, le=1)
    """Discount factor (SB3: 0.99; RL Zoo BipedalWalker: 0.98)."""
    train_freq: int = Field(1, ge=1)
    """Harness steps (each steps all num_envs environments) between trainings, as SB3's
    integer train_freq counts its vectorized steps (SB3: 1; RL Zoo BipedalWalker: 64).
    SB3's (n, "episode") form is not supported: lanes end their episodes at different steps."""
    gradient_steps: int = 1
    """Gradient steps per training; -1: as many as environment steps collected since the
    previous one, train_freq × num_envs (SB3: 1, and its -1; RL Zoo BipedalWalker: 64)."""
    ent_coef: float | str = "auto"
    """Entropy temperature alpha: "auto" learns it from 1.0, "auto_0.1" from 0.1, a number
    fixes it (SB3: "auto"; RL Zoo MountainCarContinuous: 0.1)."""
    target_entropy: float | Literal["auto"] = "auto"
    """Entropy the automatic temperature aims for; "auto": -|A|, minus the number of action
    dimensions (SB3: "auto")."""

    _gradient_steps = field_validator("gradient_steps")(common.check_gradient_steps)

    @field_validator("ent_coef")
    @classmethod
    def _ent_coef(cls, value: float | str) -> float | str:
        if isinstance(value, str):
            if value == "auto":
                return value
            init = value.removeprefix("auto_")
            try:
                if value.startswith("auto_") and float(init) > 0:
                    return value
            except ValueError:
                pass
            raise ValueError(f'must be "auto", "auto_<initial value>" or a number, got {value!r}')
        if value < 0:
            raise ValueError(f"a fixed entropy coefficient must be >= 0, got {value}")
        return value

    @property
    def learns_ent_coef(self) -> bool:
        return isinstance(self.ent_coef, str)


class SAC(LaneAgent[SACConfig]):
    """Soft Actor-Critic: squashed Gaussian actor, twin critics, learned entropy temperature
    (Stable-Baselines3's SAC); for bounded Box actions."""

    Config: ClassVar[type[AgentConfig]] = SACConfig
    # SB3's SAC MlpPolicy: 256-256 ReLU for the actor and each critic.
    default_network: ClassVar[Mapping[str, Any]] = {"name": "mlp", "hidden_sizes": [256, 256]}
    network_roles: ClassVar[tuple[str, ...]] = ("actor", "critic")

    @classmethod
    def check_spaces(cls, observation_space: gym.Space, action_space: gym.Space) -> str | None:
        return common.check_spaces(observation_space, action_space)

    def __init__(self, config: SACConfig, context: AgentContext) -> None:
        super().__init__(config, context)
        reason = self.check_spaces(context.observation_space, context.action_space)
        if reason is not None:
            raise ValueError(f"sac cannot train here: {reason}")
        lanes, device = context.lanes, context.device
        obs_size = flat_size(context.observation_space)
        self.actions = common.BoxActions(context.action_space, device)
        a = self.actions.size
        # One network per lane and role (network k drawn from seed k's torch stream), stacked:
        # [lanes, batch, in] -> [lanes, batch, out]. The actor outputs mean and log-std.
        make = context.make_lane_networks
        assert make is not None
        self.actor = stack_networks(make(obs_size, 2 * a, role="actor"))
        self.qf1 = stack_networks(make(obs_size + a, 1, role="critic"))
        self.qf2 = stack_networks(make(obs_size + a, 1, role="critic"))
        self.qf1_target = copy.deepcopy(self.qf1).requires_grad_(False)
        self.qf2_target = copy.deepcopy(self.qf2).requires_grad_(False)
        # Each optimized group in one [lanes, size] buffer with its gradients (both critics
        # in one, as SB3 steps them with one optimizer); the targets in one of the same layout.
        self.actor_params = LaneParameters(self.actor.parameters())
        self.critic_params = LaneParameters([*self.qf1.parameters(), *self.qf2.parameters()])
        self.critic_target_params = LaneParameters(
            [*self.qf1_target.parameters(), *self.qf2_target.parameters()], grad=False
        )
        # SB3's policies use torch's Adam defaults (eps 1e-8).
        self.actor_optimizer = LaneOptimizer(self.actor_params, "adam", eps=1e-8)
        self.critic_optimizer = LaneOptimizer(self.critic_params, "adam", eps=1e-8)
        # The temperature: log_alpha [lanes, 1], learned from log(init), or a fixed alpha.
        c = config
        self.target_entropy = -float(a) if c.target_entropy == "auto" else c.target_entropy
        if c.learns_ent_coef:
            init = float(str(c.ent_coef).removeprefix("auto").removeprefix("_") or 1.0)
            self.log_alpha: nn.Parameter | None = nn.Parameter(
                torch.full((lanes, 1), math.log(init), device=device)
            )
            self.alpha_params: LaneParameters | None = LaneParameters([self.log_alpha])
            self.alpha_optimizer: LaneOptimizer | None = LaneOptimizer(
                self.alpha_params, "adam", eps=1e-8
            )
        else:
            self.log_alpha = self.alpha_params = self.alpha_optimizer = None
        # Lane k's replay is sampled with lane_rngs[k]; Box actions are stored as vectors.
        self.buffer = LaneReplayBuffer.for_agent(
            common.replay_capacity(c.buffer_size, context), context
        )
        self.steps = 0  # environment steps of one lane so far
        self.harness_steps = 0  # act/observe rounds (train_freq counts these)
        # act()'s last exploring action: (what it returned, the same in [-1, 1]).
        self._acted: tuple[torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ the policy

    def policy(self, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions in ``[-1, 1]`` ``[lanes, n, |A|]`` and their log-probabilities ``[lanes,
        n]`` for features ``x`` ``[lanes, n, obs_size]``, with standard normal ``noise``
        ``[lanes, n, |A|]``: ``a = tanh(u)``, ``u = mean + std * noise`` (reparameterised, so
        gradients flow to the actor), ``log pi(a|s) = log N(u; mean, std) - sum log(1 - a^2 +
        1e-6)``. ``log N(u)`` is ``-noise^2 / 2 - log std - log sqrt(2 pi)`` per dimension:
        ``(u - mean) / std`` is ``noise``."""
        mean, log_std = self.actor(x).chunk(2, dim=-1)
        log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        action = torch.tanh(mean + log_std.exp() * noise)
        gaussian = -0.5 * noise.square() - log_std - HALF_LOG_2PI
        log_prob = (gaussian - torch.log(1.0 - action.square() + TANH_EPS)).sum(dim=-1)
        return action, log_prob

    def greedy(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic action in ``[-1, 1]``: ``tanh(mean)``."""
        mean, _ = self.actor(x).chunk(2, dim=-1)
        return torch.tanh(mean)

    def policy_for_backprop(
        self, x: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[Any, ...]]:
        """:meth:`policy`'s actions and log-probabilities, by the same operations, and what
        :meth:`actor_backprop` needs of the pass."""
        out, saved = self.actor.forward_for_backprop(x)
        mean, raw_log_std = out.chunk(2, dim=-1)
        log_std = raw_log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        std = log_std.exp()
        action = torch.tanh(mean + std * noise)
        squash = 1.0 - action.square() + TANH_EPS
        gaussian = -0.5 * noise.square() - log_std - HALF_LOG_2PI
        log_prob = (gaussian - torch.log(squash)).sum(dim=-1)
        return action, log_prob, (saved, raw_log_std, std, action, squash, noise)

    def actor_backprop(
        self, cache: tuple[Any, ...], grad_action: torch.Tensor, grad_log_prob: torch.Tensor
    ) -> None:
        """Backpropagate a loss's gradients with respect to :meth:`policy_for_backprop`'s
        actions ``[lanes, n, |A|]`` and log-probabilities ``[lanes, n]`` through the policy
        into the actor's weights (``actor_params.grad``): autograd's formulas in autograd's
        order, each step the derivative of the line of :meth:`policy` it follows."""
        saved, raw_log_std, std, action, squash, noise = cache
        grad_lp = grad_log_prob.unsqueeze(-1).expand_as(action)  # the sum over dimensions
        # - log(1 - a^2 + eps): the derivative through the log, then through -a^2.
        grad_action = grad_action + (grad_lp / squash) * (2.0 * action)
        grad_u = kernels.tanh_backward(grad_action, action)  # a = tanh(u)
        # u = mean + std * noise; std = exp(log_std); log pi also holds -log_std.
        grad_log_std = (grad_u * noise) * std - grad_lp
        # The clamp passes the gradient where the log-std is within its bounds.
        inside = (raw_log_std >= LOG_STD_MIN).logical_and_(raw_log_std <= LOG_STD_MAX)
        grad_raw = torch.where(inside, grad_log_std, torch.zeros((), dtype=std.dtype))
        grad_out = torch.cat([grad_u, grad_raw], dim=-1)
        self.actor.backprop(saved, grad_out, self.actor_params.grad_views)

    # ------------------------------------------------------------------ acting

    def act(self, obs: torch.Tensor, *, greedy: bool = False) -> torch.Tensor:
        n = obs.shape[1]
        x = obs.flatten(2)
        with torch.no_grad():
            if greedy:  # no draws: evaluation leaves every random stream alone
                return self.actions.to_env(self.greedy(x))
            rngs, shape = self.context.lane_rngs, (n, self.actions.size)
            if self.steps < self.config.learning_starts:
                # Uniformly random actions, lane k's from its own generator only.
                unit = common.lane_uniform(rngs, shape, obs.device)
            else:
                unit, _ = self.policy(x, common.lane_normal(rngs, shape, obs.device))
        action = self.actions.to_env(unit)
        self._acted = (action, unit)
        return action

    # ------------------------------------------------------------------ learning

    def observe(self, t: Transition) -> Mapping[str, Any]:
        # Store the step (with the [-1, 1] action) and learn on SB3's schedule.
        gradient_steps = common.record_step(self, t)
        if gradient_steps == 0:
            return {}
        metrics = torch.stack([self.gradient_step() for _ in range(gradient_steps)])
        means = metrics.mean(dim=0)  # each metric's mean over the steps, [metrics, lanes]
        names = ["critic_loss", "actor_loss", "ent_coef"]
        if self.log_alpha is not None:
            names.append("ent_coef_loss")
        return {name: means[i].tolist() for i, name in enumerate(names)}

    def gradient_step(self) -> torch.Tensor:
        """One SAC update of every lane, in SB3's order: the temperature (with the alpha
        before its step used throughout), the critics, the actor, the targets. Returns the
        metrics ``[3 or 4, lanes]``: critic loss, actor loss, alpha (and alpha's loss)."""
        c = self.config
        b = self.buffer.sample(c.batch_size)  # fields [lanes, batch, ...]
        rngs, shape = self.context.lane_rngs, (c.batch_size, self.actions.size)
        pi_noise = common.lane_normal(rngs, shape, b.obs.device)
        next_noise = common.lane_normal(rngs, shape, b.obs.device)
        # The current policy on the sampled states, kept for the actor's loss.
        action_pi, log_prob, policy_saved = self.policy_for_backprop(b.obs, pi_noise)

        # Temperature: loss -log_alpha * (log pi + target entropy), the log-probs constant.
        if self.log_alpha is not None:
            assert self.alpha_params is not None and self.alpha_optimizer is not None
            alpha = self.log_alpha.detach().exp()  # [lanes, 1], this step's alpha
            entropy_gap = (log_prob.detach() + self.target_entropy).mean(dim=1)
            alpha_loss = -(self.log_alpha.detach()[:, 0] * entropy_gap)  # [lanes]: each lane's
            # Its gradient, -entropy_gap, by hand: autograd's 0 + (-1 * gap), without a graph.
            assert self.alpha_params.grad is not None
            self.alpha_params.grad.zero_()[:, 0].sub_(entropy_gap)
            self.alpha_optimizer.step(c.learning_rate)
        else:
            alpha = torch.full((self.context.lanes, 1), float(c.ent_coef), device=b.obs.device)

        # Critics: the soft Bellman target, from the targets and the current policy at s'.
        with torch.no_grad():
            next_action, next_log_prob = self.policy(b.next_obs, next_noise)
            next_x = torch.cat([b.next_obs, next_action], dim=-1)
            next_q = torch.min(self.qf1_target(next_x), self.qf2_target(next_x)).squeeze(-1)
            soft_next_q = next_q - alpha * next_log_prob
            target = b.reward + c.gamma * (~b.terminated).float() * soft_next_q
        # critic_loss below, its gradient computed by hand (bit for bit autograd's).
        x = torch.cat([b.obs, b.action], dim=-1)
        loss = common.backprop_twin_critics(
            self.qf1, self.qf2, self.critic_params, x, target, critic_loss, coefficient=0.5
        )
        self.critic_optimizer.step(c.learning_rate)

        # Actor: minimise actor_loss through the updated critics; only the actor's weights
        # get gradients. By hand, autograd's formulas: the mean's 1/batch, then
        # d/dlog pi = alpha / batch and d/dmin Q = -1 / batch, which min() sends to the
        # smaller critic (half to each on a tie); each critic's gradient with respect to
        # its input, summed, and the action's columns of it; then through the policy.
        x_pi = torch.cat([b.obs, action_pi], dim=-1)
        q1_pi, saved1 = self.qf1.forward_for_backprop(x_pi)
        q2_pi, saved2 = self.qf2.forward_for_backprop(x_pi)
        q1_pi, q2_pi = q1_pi.squeeze(-1), q2_pi.squeeze(-1)
        loss_pi = actor_loss(alpha, log_prob, q1_pi, q2_pi)
        grad = torch.full_like(log_prob, 1.0) / c.batch_size  # [lanes, batch]
        grad_min = -grad
        tie = torch.where(q1_pi == q2_pi, grad_min / 2, grad_min)
        grad_q1 = tie.masked_fill(q1_pi > q2_pi, 0.0).unsqueeze(-1)
        grad_q2 = tie.masked_fill(q1_pi < q2_pi, 0.0).unsqueeze(-1)
        grad_x = self.qf1.backprop_to_input(saved1, grad_q1) + self.qf2.backprop_to_input(
            saved2, grad_q2
        )
        self.actor_backprop(policy_saved, grad_x[..., b.obs.shape[-1] :], grad * alpha)
        self.actor_optimizer.step(c.learning_rate)

        polyak_update(self.critic_target_params, self.critic_params, c.tau)
        metrics = [loss, loss_pi, alpha[:, 0]]
        if self.log_alpha is not None:
            metrics.append(alpha_loss.detach())
        return torch.stack(metrics)

    # ------------------------------------------------------------------ saving

    def state_dict(self) -> dict[str, Any]:
        """Every lane's weights, targets, optimizer moments and counters, stacked
        ``[lanes, ...]`` (the replay buffer is in the mid-run checkpoint, not here)."""
        state: dict[str, Any] = {
            "actor": self.actor.state_dict(),
            "qf1": self.qf1.state_dict(),
            "qf2": self.qf2.state_dict(),
            "qf1_target": self.qf1_target.state_dict(),
            "qf2_target": self.qf2_target.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "steps": self.steps,
            "harness_steps": self.harness_steps,
        }
        if self.log_alpha is not None:
            assert self.alpha_optimizer is not None
            state["log_alpha"] = self.log_alpha.detach()
            state["alpha_optimizer"] = self.alpha_optimizer.state_dict()
        return state

    def lane_state_dict(self, lane: int) -> dict[str, Any]:
        """What a one-lane agent of lane ``lane``'s seed saves: every stacked tensor cut to
        ``[1, ...]`` and copied."""
        return lane_slice(self.state_dict(), lane)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name in ("actor", "qf1", "qf2", "qf1_target", "qf2_target"):
            getattr(self, name).load_state_dict(state[name])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        if self.log_alpha is not None:
            assert self.alpha_optimizer is not None
            with torch.no_grad():
                self.log_alpha.copy_(state["log_alpha"])
            self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
        self.steps = int(state["steps"])
        self.harness_steps = int(state["harness_steps"])
