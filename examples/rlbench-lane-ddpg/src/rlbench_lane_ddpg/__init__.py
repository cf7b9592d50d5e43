"""rlbench-lane-ddpg: DDPG (Lillicrap et al. 2016) as an rlbench lane agent.

A deterministic actor ``mu(s)`` (tanh-squashed to [-1, 1], then rescaled to the action
bounds), a critic ``Q(s, a)`` regressed onto ``r + gamma * Q'(s', mu'(s'))``, Gaussian
exploration noise, uniform replay, and target networks ``Q'``, ``mu'`` that trail the online
ones by Polyak averaging.

It is a :class:`rlbench.LaneAgent`: it trains ``context.lanes`` seeds at once, so every tensor
below carries the lane dimension first (``[lanes, batch, features]``), and lane ``k`` must
compute exactly what a one-lane run of seed ``k`` computes. Three rules keep it so:

1. lane ``k``'s randomness comes only from ``context.lane_rngs[k]`` (its initial weights
   from ``context.make_lane_networks``, which seeds network ``k`` from seed ``k``);
2. every loss is per lane (``[lanes]``), and the lanes' losses are *summed* before
   ``backward()``: the sum's gradient is each lane's own (an average would scale it);
3. the optimizers, the gradient clipping and the target updates come from
   :mod:`rlbench.lanes`, which hand each lane's parameters to their kernels on their own.

Written on rlbench's public names only (``rlbench``, ``rlbench.lanes``): read it top to
bottom (config, construction, ``act``, ``observe`` and the update, saving).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field
from rlbench import AgentConfig, AgentContext, AgentSpec, LaneAgent, Transition, hookimpl
from rlbench.lanes import (
    LaneOptimizer,
    LaneParameters,
    LaneReplayBuffer,
    flat_size,
    lane_clip_grad_norm,
    lane_slice,
    polyak_update,
    stack_networks,
)


class DDPGConfig(AgentConfig):
    """DDPG's hyperparameters: Stable-Baselines3's defaults, but for a smaller replay buffer,
    1,000 random steps (SB3: 100) and a 256-256 network (SB3: 400-300)."""

    actor_learning_rate: float = Field(1e-3, gt=0)
    """Adam learning rate of the actor."""
    critic_learning_rate: float = Field(1e-3, gt=0)
    """Adam learning rate of the critic."""
    gamma: float = Field(0.99, ge=0, le=1)
    """Discount factor."""
    tau: float = Field(0.005, gt=0, le=1)
    """Polyak coefficient of the target networks: target = (1 - tau) * target + tau * online."""
    buffer_size: int = Field(100_000, ge=1)
    """Replay capacity in transitions (per lane)."""
    batch_size: int = Field(256, ge=1)
    """Minibatch size of each gradient step."""
    learning_starts: int = Field(1_000, ge=0)
    """Environment steps of uniformly random actions, without learning, before the first
    gradient step."""
    gradient_steps: int = Field(1, ge=1)
    """Gradient steps (critic, actor, targets) after every harness step."""
    exploration_noise: float = Field(0.1, ge=0)
    """Standard deviation of the Gaussian noise added to the actor's action, in units of half
    the action range (the actor's [-1, 1] scale)."""
    max_grad_norm: float | None = Field(None, gt=0)
    """Clip each lane's actor and critic gradients to this global norm; None: no clipping."""


class LaneDDPG(LaneAgent[DDPGConfig]):
    """DDPG: a deterministic tanh actor, a critic Q(s, a), Gaussian exploration noise, replay,
    Polyak-averaged targets; for bounded Box actions."""

    Config: ClassVar[type[AgentConfig]] = DDPGConfig
    default_network: ClassVar[Mapping[str, Any]] = {"name": "mlp", "hidden_sizes": [256, 256]}
    # Two kinds of network, which a suite may shape apart ([agents.networks.critic]).
    network_roles: ClassVar[tuple[str, ...]] = ("actor", "critic")

    @classmethod
    def check_spaces(cls, observation_space: gym.Space, action_space: gym.Space) -> str | None:
        if not isinstance(action_space, gym.spaces.Box):
            return f"it needs a Box action space, got {action_space}"
        if not (np.isfinite(action_space.low).all() and np.isfinite(action_space.high).all()):
            return f"it needs bounded Box actions, got {action_space}"
        return None

    def __init__(self, config: DDPGConfig, context: AgentContext) -> None:
        super().__init__(config, context)
        reason = self.check_spaces(context.observation_space, context.action_space)
        if reason is not None:
            raise ValueError(f"lane_ddpg cannot train here: {reason}")
        obs_size = flat_size(context.observation_space)
        self.action_size = flat_size(context.action_space)
        low, high = (
            torch.as_tensor(bound, dtype=torch.float32, device=context.device).flatten()
            for bound in (context.action_space.low, context.action_space.high)
        )
        self.action_mid, self.action_half = (high + low) / 2, (high - low) / 2
        # One network per lane (network k initialised from seed k's torch stream), stacked
        # into one module: [lanes, batch, in] -> [lanes, batch, out].
        make = context.make_lane_networks
        assert make is not None
        self.actor = stack_networks(make(obs_size, self.action_size, role="actor"))
        self.critic = stack_networks(make(obs_size + self.action_size, 1, role="critic"))
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        # Each network's parameters moved into one [lanes, size] buffer, with one for their
        # gradients: what the optimizers, the clipping and the target updates work on.
        self.actor_params = LaneParameters(self.actor.parameters())
        self.critic_params = LaneParameters(self.critic.parameters())
        self.actor_target_params = LaneParameters(self.actor_target.parameters(), grad=False)
        self.critic_target_params = LaneParameters(self.critic_target.parameters(), grad=False)
        self.actor_optimizer = LaneOptimizer(self.actor_params, "adam", eps=1e-8)
        self.critic_optimizer = LaneOptimizer(self.critic_params, "adam", eps=1e-8)
        # Box actions are stored as float vectors; lane k samples with lane_rngs[k].
        self.buffer = LaneReplayBuffer.for_agent(config.buffer_size, context)
        self.steps = 0  # environment steps of one lane so far

    def to_env(self, action: torch.Tensor) -> torch.Tensor:
        """[-1, 1] (the actor's scale) to the Box's bounds."""
        return self.action_mid + self.action_half * action

    def from_env(self, action: torch.Tensor) -> torch.Tensor:
        """The Box's bounds to [-1, 1]."""
        return ((action - self.action_mid) / self.action_half).clamp(-1.0, 1.0)

    def act(self, obs: torch.Tensor, *, greedy: bool = False) -> torch.Tensor:
        lanes, n = obs.shape[:2]
        rngs, shape = self.context.lane_rngs, (n, self.action_size)
        if not greedy and self.steps < self.config.learning_starts:
            # Uniformly random actions, lane k's drawn from its own generator only.
            uniform = np.stack([rng.uniform(-1.0, 1.0, size=shape) for rng in rngs])
            action = torch.as_tensor(uniform, dtype=torch.float32, device=obs.device)
        else:
            with torch.no_grad():
                action = torch.tanh(self.actor(obs.flatten(2)))  # [lanes, n, action_size]
            if not greedy:
                sigma = self.config.exploration_noise
                noise = np.stack([rng.normal(0.0, sigma, size=shape) for rng in rngs])
                noise_t = torch.as_tensor(noise, dtype=torch.float32, device=obs.device)
                action = (action + noise_t).clamp(-1.0, 1.0)
        return self.to_env(action).reshape(lanes, n, *self.context.action_space.shape)

    def observe(self, t: Transition) -> Mapping[str, Any]:
        self.buffer.add(dataclasses.replace(t, action=self.from_env(t.action.flatten(2))))
        self.steps += t.obs.shape[1]
        if self.steps < self.config.learning_starts:
            return {}
        losses = torch.stack([self.gradient_step() for _ in range(self.config.gradient_steps)])
        critic_loss, actor_loss = losses.mean(dim=0)  # each [lanes]
        return {"critic_loss": critic_loss.tolist(), "actor_loss": actor_loss.tolist()}

    def gradient_step(self) -> torch.Tensor:
        """One DDPG update of every lane; returns its losses ``[2, lanes]``."""
        c = self.config
        b = self.buffer.sample(c.batch_size)  # fields [lanes, batch, ...]
        # Critic: Q(s, a) towards r + gamma * Q'(s', mu'(s')); a time limit is not a terminal
        # state, so only `terminated` cuts the bootstrap.
        with torch.no_grad():
            next_action = torch.tanh(self.actor_target(b.next_obs))
            next_q = self.critic_target(torch.cat([b.next_obs, next_action], -1)).squeeze(-1)
            target = b.reward + c.gamma * (~b.terminated).float() * next_q
        q = self.critic(torch.cat([b.obs, b.action], -1)).squeeze(-1)
        critic_loss = (q - target).square().mean(dim=1)  # [lanes]: each lane's own loss
        self.critic_params.zero_grad()
        critic_loss.sum().backward()  # the sum: each lane gets the gradient of its own loss
        self.step(self.critic_params, self.critic_optimizer, c.critic_learning_rate)
        # Actor: up the critic's gradient, -Q(s, mu(s)); only the actor's weights change.
        action = torch.tanh(self.actor(b.obs))
        actor_loss = -self.critic(torch.cat([b.obs, action], -1)).squeeze(-1).mean(dim=1)
        self.actor_params.zero_grad()
        actor_loss.sum().backward(inputs=self.actor_params.params)
        self.step(self.actor_params, self.actor_optimizer, c.actor_learning_rate)
        polyak_update(self.critic_target_params, self.critic_params, c.tau)
        polyak_update(self.actor_target_params, self.actor_params, c.tau)
        return torch.stack([critic_loss.detach(), actor_loss.detach()])

    def step(self, params: LaneParameters, optimizer: LaneOptimizer, lr: float) -> None:
        """Clip each lane's gradients on their own (if asked), then one Adam step per lane."""
        if self.config.max_grad_norm is not None:
            lane_clip_grad_norm(params.grad, self.config.max_grad_norm)
        optimizer.step(lr)

    def state_dict(self) -> dict[str, Any]:
        """Every lane's state, stacked ``[lanes, ...]``."""
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "steps": self.steps,
        }

    def lane_state_dict(self, lane: int) -> dict[str, Any]:
        """What a one-lane agent of lane ``lane``'s seed saves: every tensor cut to
        ``[1, ...]`` (and copied)."""
        return lane_slice(self.state_dict(), lane)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name in ("actor", "critic", "actor_target", "critic_target"):
            getattr(self, name).load_state_dict(state[name])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.steps = int(state["steps"])


@hookimpl
def rlbench_register_agents() -> list[AgentSpec]:
    return [AgentSpec(name="lane_ddpg", agent=LaneDDPG)]
