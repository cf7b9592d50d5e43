"""td3: Twin Delayed DDPG (Fujimoto et al. 2018), as Stable-Baselines3's ``TD3`` computes it.

- A deterministic actor ``mu(s) = tanh(network(s))`` in ``[-1, 1]``, explored with Gaussian
  noise (``exploration_noise``, SB3's ``NormalActionNoise`` as RL Zoo sets it) added and
  clipped to ``[-1, 1]``.
- Twin critics ``Q1``, ``Q2`` on ``concat(obs, action)``, regressed onto ``r + gamma * (1 -
  terminated) * min Q_target(s', a')``: a time limit is not a terminal state, so only
  ``terminated`` cuts the bootstrap.
- Target policy smoothing: ``a' = clip(mu_target(s') + clip(noise, -c, c), -1, 1)``, noise
  of std ``target_policy_noise`` (0.2) clipped at ``target_noise_clip`` (0.5), on the
  ``[-1, 1]`` scale.
- Delayed updates: the actor (up ``Q1(s, mu(s))``) and the Polyak averaging of the actor's
  and the critics' targets happen every ``policy_delay`` (2) critic updates, counted over
  the whole run as SB3's ``_n_updates``.
- Uniform random actions for the first ``learning_starts`` steps (the exploration noise
  added to them, as SB3 adds it to every action it collects), then a gradient step every
  ``train_freq`` harness steps.

The action contract (:mod:`rlbench_offpolicy.common`): the actor works in ``[-1, 1]``;
:meth:`TD3.act` returns actions rescaled to the ``Box``'s bounds
(``low + (a + 1) / 2 * (high - low)``); the replay buffer stores the ``[-1, 1]`` action.

It is a :class:`rlbench.LaneAgent`: it trains ``context.lanes`` seeds as one batched
computation, every tensor ``[lanes, ...]``, and lane ``k`` computes exactly what a one-lane
run of seed ``k`` computes. So lane ``k``'s randomness (warm-up actions, exploration noise,
the target smoothing noise, replay indices) comes from ``context.lane_rngs[k]`` alone, each
loss is per lane (``[lanes]``) and summed over the lanes before ``backward()``, and the actor
and the critics each have their own :class:`~rlbench.lanes.LaneParameters` and
:class:`~rlbench.lanes.LaneOptimizer`.

Read it top to bottom: the losses, config, construction, ``act``, ``observe``, the gradient
step, saving. :func:`critic_loss` and :func:`actor_loss` are the losses in plain autograd
form; the gradient step computes their gradients by hand (the critics' through
:func:`rlbench_offpolicy.common.backprop_twin_critics`, the actor's through Q1 to its input
and back through the tanh and the actor), autograd's formulas in autograd's order, so bit for
bit autograd's gradients at the built-in layer sizes (``tests/test_offpolicy.py`` holds a
gradient step to the same step in plain autograd).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

import gymnasium as gym
import torch
from pydantic import Field, field_validator

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


def critic_loss(q1: torch.Tensor, q2: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SB3's critic loss, per lane ``[lanes]``: the sum of the two critics' mean squared errors
    against the target, ``q1``, ``q2``, ``target`` ``[lanes, batch]``. The plain form:
    :meth:`TD3.gradient_step` computes its gradient by hand
    (:func:`rlbench_offpolicy.common.backprop_twin_critics`), equal to autograd's of this."""
    return (q1 - target).square().mean(dim=1) + (q2 - target).square().mean(dim=1)


def actor_loss(q1_pi: torch.Tensor) -> torch.Tensor:
    """SB3's actor loss, per lane ``[lanes]``: ``-mean(Q1(s, mu(s)))`` over the minibatch,
    ``q1_pi`` ``[lanes, batch]``, ``mu(s) = tanh(actor(s))``. The plain form:
    :meth:`TD3.gradient_step` backpropagates it by hand through Q1 and the actor, equal to
    autograd's gradient of it."""
    return -q1_pi.mean(dim=1)


class TD3Config(AgentConfig):
    """td3's hyperparameters: Stable-Baselines3's ``TD3`` defaults (SB3 2.x), with RL Zoo's
    Gaussian exploration noise; RL Zoo's tuned values noted per field (``hyperparams/td3.yml``).
    """

    learning_rate: float = Field(1e-3, gt=0)
    """Adam learning rate of the actor and the critics (SB3: 1e-3; RL Zoo Pendulum-v1 and
    the Bullet tasks: 1e-3)."""
    buffer_size: int = Field(1_000_000, ge=1)
    """Replay capacity in transitions, per lane (SB3: 1e6; RL Zoo Pendulum-v1: 200000). Only
    what the run's budget can fill is allocated (rlbench_offpolicy.common.replay_capacity)."""
    learning_starts: int = Field(100, ge=0)
    """Environment steps of uniformly random actions before the first gradient step (SB3:
    100; RL Zoo Pendulum-v1, LunarLanderContinuous, BipedalWalker: 10000)."""
    batch_size: int = Field(256, ge=1)
    """Minibatch size of each gradient step (SB3: 256; RL Zoo BipedalWalkerHardcore: 256)."""
    tau: float = Field(0.005, gt=0, le=1)
    """Polyak coefficient of the actor's and critics' targets: target = (1 - tau) * target +
    tau * online (SB3: 0.005)."""
    gamma: float = Field(0.99, ge=0, le=1)
    """Discount factor (SB3: 0.99; RL Zoo Pendulum-v1, LunarLanderContinuous: 0.98)."""
    train_freq: int = Field(1, ge=1)
    """Harness steps (each steps all num_envs environments) between trainings, as SB3's
    integer train_freq counts its vectorized steps (SB3: 1). RL Zoo's Pendulum-v1 writes
    [1, "episode"], which is not supported (lanes end their episodes at different steps); on
    Pendulum-v1's fixed 200-step episodes train_freq = 200 with gradient_steps = -1 is the
    same schedule."""
    gradient_steps: int = 1
    """Gradient (critic) steps per training; -1: as many as environment steps collected since
    the previous one, train_freq × num_envs (SB3: 1, and its -1; RL Zoo Pendulum-v1: -1)."""
    policy_delay: int = Field(2, ge=1)
    """Critic updates per actor update and target update (SB3: 2, the paper's d = 2)."""
    target_policy_noise: float = Field(0.2, ge=0)
    """Std of the Gaussian noise added to the target actor's action, on the [-1, 1] scale
    (SB3: 0.2, the paper's)."""
    target_noise_clip: float = Field(0.5, ge=0)
    """That noise is clipped to ±target_noise_clip (SB3: 0.5, the paper's)."""
    exploration_noise: float = Field(0.1, ge=0)
    """Std of the Gaussian exploration noise added to the actor's action, on the [-1, 1]
    scale, then clipped to [-1, 1] (SB3's NormalActionNoise sigma; SB3's default is no noise,
    RL Zoo sets noise_type normal, noise_std 0.1 on Pendulum-v1 and most tasks)."""

    _gradient_steps = field_validator("gradient_steps")(common.check_gradient_steps)


class TD3(LaneAgent[TD3Config]):
    """Twin Delayed DDPG: deterministic tanh actor, twin critics, target policy smoothing,
    delayed actor and target updates (Stable-Baselines3's TD3); for bounded Box actions."""

    Config: ClassVar[type[AgentConfig]] = TD3Config
    # SB3's TD3 MlpPolicy (the paper's networks): 400-300 ReLU for the actor and each critic.
    default_network: ClassVar[Mapping[str, Any]] = {"name": "mlp", "hidden_sizes": [400, 300]}
    network_roles: ClassVar[tuple[str, ...]] = ("actor", "critic")

    @classmethod
    def check_spaces(cls, observation_space: gym.Space, action_space: gym.Space) -> str | None:
        return common.check_spaces(observation_space, action_space)

    def __init__(self, config: TD3Config, context: AgentContext) -> None:
        super().__init__(config, context)
        reason = self.check_spaces(context.observation_space, context.action_space)
        if reason is not None:
            raise ValueError(f"td3 cannot train here: {reason}")
        obs_size = flat_size(context.observation_space)
        self.actions = common.BoxActions(context.action_space, context.device)
        a = self.actions.size
        # One network per lane and role (network k drawn from seed k's torch stream), stacked:
        # [lanes, batch, in] -> [lanes, batch, out].
        make = context.make_lane_networks
        assert make is not None
        self.actor = stack_networks(make(obs_size, a, role="actor"))
        self.qf1 = stack_networks(make(obs_size + a, 1, role="critic"))
        self.qf2 = stack_networks(make(obs_size + a, 1, role="critic"))
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.qf1_target = copy.deepcopy(self.qf1).requires_grad_(False)
        self.qf2_target = copy.deepcopy(self.qf2).requires_grad_(False)
        # Each optimized group in one [lanes, size] buffer with its gradients (both critics
        # in one, as SB3 steps them with one optimizer); each target in one of its layout.
        self.actor_params = LaneParameters(self.actor.parameters())
        self.critic_params = LaneParameters([*self.qf1.parameters(), *self.qf2.parameters()])
        self.actor_target_params = LaneParameters(self.actor_target.parameters(), grad=False)
        self.critic_target_params = LaneParameters(
            [*self.qf1_target.parameters(), *self.qf2_target.parameters()], grad=False
        )
        # SB3's policies use torch's Adam defaults (eps 1e-8).
        self.actor_optimizer = LaneOptimizer(self.actor_params, "adam", eps=1e-8)
        self.critic_optimizer = LaneOptimizer(self.critic_params, "adam", eps=1e-8)
        # Lane k's replay is sampled with lane_rngs[k]; Box actions are stored as vectors.
        capacity = common.replay_capacity(config.buffer_size, context)
        self.buffer = LaneReplayBuffer.for_agent(capacity, context)
        self.steps = 0  # environment steps of one lane so far
        self.harness_steps = 0  # act/observe rounds (train_freq counts these)
        self.n_updates = 0  # critic updates so far (policy_delay counts these, as SB3)
        # act()'s last exploring action: (what it returned, the same in [-1, 1]).
        self._acted: tuple[torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ acting

    def act(self, obs: torch.Tensor, *, greedy: bool = False) -> torch.Tensor:
        n = obs.shape[1]
        with torch.no_grad():
            if greedy:  # no noise, no draws: evaluation leaves every random stream alone
                return self.actions.to_env(torch.tanh(self.actor(obs.flatten(2))))
            rngs, shape = self.context.lane_rngs, (n, self.actions.size)
            if self.steps < self.config.learning_starts:
                # Uniformly random actions, lane k's from its own generator only.
                unit = common.lane_uniform(rngs, shape, obs.device)
            else:
                unit = torch.tanh(self.actor(obs.flatten(2)))
            noise = self.config.exploration_noise * common.lane_normal(rngs, shape, obs.device)
            unit = (unit + noise).clamp(-1.0, 1.0)
        action = self.actions.to_env(unit)
        self._acted = (action, unit)
        return action

    # ------------------------------------------------------------------ learning

    def observe(self, t: Transition) -> Mapping[str, Any]:
        # Store the step (with the [-1, 1] action) and learn on SB3's schedule.
        gradient_steps = common.record_step(self, t)
        if gradient_steps == 0:
            return {}
        critic_losses, actor_losses = [], []
        for _ in range(gradient_steps):
            critic_loss, actor_loss = self.gradient_step()
            critic_losses.append(critic_loss)
            if actor_loss is not None:
                actor_losses.append(actor_loss)
        # Each metric's mean over this training's steps (the actor's over those it took).
        metrics = {"critic_loss": torch.stack(critic_losses).mean(dim=0).tolist()}
        if actor_losses:
            metrics["actor_loss"] = torch.stack(actor_losses).mean(dim=0).tolist()
        return metrics

    def gradient_step(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One TD3 update of every lane: the critics; every ``policy_delay``-th time also the
        actor and the targets. Returns the losses ``[lanes]`` (the actor's, or ``None``)."""
        c = self.config
        self.n_updates += 1
        b = self.buffer.sample(c.batch_size)  # fields [lanes, batch, ...]
        shape = (c.batch_size, self.actions.size)
        noise = common.lane_normal(self.context.lane_rngs, shape, b.obs.device)
        # Critics: towards r + gamma * min Q_target(s', a'), a' the smoothed target action.
        with torch.no_grad():
            smoothing = (noise * c.target_policy_noise).clamp(
                -c.target_noise_clip, c.target_noise_clip
            )
            next_action = (torch.tanh(self.actor_target(b.next_obs)) + smoothing).clamp(-1.0, 1.0)
            next_x = torch.cat([b.next_obs, next_action], dim=-1)
            next_q = torch.min(self.qf1_target(next_x), self.qf2_target(next_x)).squeeze(-1)
            target = b.reward + c.gamma * (~b.terminated).float() * next_q
        # critic_loss below, its gradient computed by hand (bit for bit autograd's).
        x = torch.cat([b.obs, b.action], dim=-1)
        loss = common.backprop_twin_critics(
            self.qf1, self.qf2, self.critic_params, x, target, critic_loss, coefficient=1.0
        )
        self.critic_optimizer.step(c.learning_rate)
        if self.n_updates % c.policy_delay != 0:
            return loss, None

        # Delayed: the actor up Q1(s, mu(s)) (only its weights change), then every target.
        # actor_loss's gradient by hand, autograd's formulas: -1 / batch for each Q1 value,
        # Q1 backpropagated to its input, the action's columns of it through the tanh and
        # the actor.
        out, saved = self.actor.forward_for_backprop(b.obs)
        action = torch.tanh(out)
        q1_pi, saved_q1 = self.qf1.forward_for_backprop(torch.cat([b.obs, action], dim=-1))
        loss_pi = actor_loss(q1_pi.squeeze(-1))
        grad_q1 = -(torch.full_like(q1_pi, 1.0) / c.batch_size)
        grad_x = self.qf1.backprop_to_input(saved_q1, grad_q1)
        grad_out = kernels.tanh_backward(grad_x[..., b.obs.shape[-1] :], action)
        self.actor.backprop(saved, grad_out, self.actor_params.grad_views)
        self.actor_optimizer.step(c.learning_rate)
        polyak_update(self.critic_target_params, self.critic_params, c.tau)
        polyak_update(self.actor_target_params, self.actor_params, c.tau)
        return loss, loss_pi

    # ------------------------------------------------------------------ saving

    def state_dict(self) -> dict[str, Any]:
        """Every lane's weights, targets, optimizer moments and counters, stacked
        ``[lanes, ...]`` (the replay buffer is in the mid-run checkpoint, not here)."""
        return {
            "actor": self.actor.state_dict(),
            "qf1": self.qf1.state_dict(),
            "qf2": self.qf2.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "qf1_target": self.qf1_target.state_dict(),
            "qf2_target": self.qf2_target.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "steps": self.steps,
            "harness_steps": self.harness_steps,
            "n_updates": self.n_updates,
        }

    def lane_state_dict(self, lane: int) -> dict[str, Any]:
        """What a one-lane agent of lane ``lane``'s seed saves: every stacked tensor cut to
        ``[1, ...]`` and copied."""
        return lane_slice(self.state_dict(), lane)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name in ("actor", "qf1", "qf2", "actor_target", "qf1_target", "qf2_target"):
            getattr(self, name).load_state_dict(state[name])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.steps = int(state["steps"])
        self.harness_steps = int(state["harness_steps"])
        self.n_updates = int(state["n_updates"])
