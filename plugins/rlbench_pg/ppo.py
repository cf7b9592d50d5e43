"""ppo: Proximal Policy Optimization with the clipped surrogate (Schulman et al. 2017).

Defaults are RL Zoo's tuned CartPole-v1 settings for Stable-Baselines3's PPO
(``hyperparams/ppo.yml``: 8 envs, n_steps 32, batch_size 256, gae_lambda 0.8, gamma 0.98,
n_epochs 20, ent_coef 0.0, learning_rate lin_0.001, clip_range lin_0.2, 1e5 steps), with
SB3's defaults for the rest (vf_coef 0.5, max_grad_norm 0.5, advantage normalisation,
orthogonal initialisation, Adam with eps 1e-5, separate tanh MLPs 64-64 for actor and
critic).

Read :func:`reference_loss` first: PPO's loss in plain autograd, term by term as
Stable-Baselines3's ``ppo.py`` writes it, on one lane's networks and minibatch.
:meth:`PPO.update` computes the same loss for every lane at once, each term followed by its
gradient computed by hand (with respect to the log-probabilities, entropies and values, then
backpropagated through the stacked networks without autograd; see
:mod:`rlbench_pg.actor_critic`), and ``tests/test_pg_gradients.py`` holds that gradient to
:func:`reference_loss`'s, for every term and option.

Acting, the rollout, its truncation bootstrap and GAE are in :mod:`rlbench_pg.actor_critic`;
this file is the update. Like every built-in agent it trains several seeds at once as lanes
(a single run is one lane): every tensor in :meth:`PPO.update` is ``[lanes, ...]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from rlbench import AgentConfig
from rlbench.lanes import LaneOptimizer
from rlbench_pg.actor_critic import (
    ActorCritic,
    ActorCriticConfig,
    Schedule,
    evaluate_actions,
    explained_variance,
    scheduled,
    standardize,
)
from rlbench_pg.rollout import Batch


class PPOConfig(ActorCriticConfig):
    num_envs: int = Field(8, ge=1)
    """Environments stepped in parallel (RL Zoo CartPole-v1: 8)."""
    n_steps: int = Field(32, ge=1)
    """Steps of every environment per rollout (RL Zoo CartPole-v1: 32; 8 × 32 = 256 samples)."""
    batch_size: int = Field(256, ge=1)
    """Minibatch size (RL Zoo CartPole-v1: 256, one minibatch per epoch)."""
    n_epochs: int = Field(20, ge=1)
    """Passes over each rollout (RL Zoo CartPole-v1: 20)."""
    gamma: float = Field(0.98, ge=0, le=1)
    """Discount factor (RL Zoo CartPole-v1: 0.98)."""
    gae_lambda: float = Field(0.8, ge=0, le=1)
    """GAE(λ) (RL Zoo CartPole-v1: 0.8)."""
    learning_rate: float = Field(1e-3, gt=0)
    """Initial Adam learning rate (RL Zoo CartPole-v1: lin_0.001)."""
    learning_rate_schedule: Schedule = "linear"
    """"constant", or "linear": decays to 0 at the end of the budget (RL Zoo's lin_)."""
    clip_range: float = Field(0.2, gt=0)
    """Initial clip range ε of the surrogate: ratios outside [1-ε, 1+ε] get no gradient
    (RL Zoo CartPole-v1: lin_0.2)."""
    clip_range_schedule: Schedule = "linear"
    """"constant" or "linear", as learning_rate_schedule."""
    clip_range_vf: float | None = Field(None, gt=0)
    """Clip the new value prediction to within this of the old one (None: no value clipping;
    it depends on the reward scale)."""
    normalize_advantage: bool = True
    """Standardise the advantages of every minibatch (as SB3's PPO)."""
    adam_eps: float = Field(1e-5, gt=0)
    """Adam's epsilon (SB3's policies use 1e-5)."""


def reference_loss(
    actor: nn.Module,
    critic: nn.Module,
    log_std: torch.Tensor | None,
    batch: Batch,
    config: PPOConfig,
    clip_range: float,
) -> torch.Tensor:
    """PPO's loss on one lane's minibatch, in plain autograd (Stable-Baselines3's
    ``PPO.train``): the reference that :meth:`PPO.update`'s hand-computed gradient is tested
    against.

    ``actor`` and ``critic`` are that lane's own ``nn.Module``s; ``log_std`` is its Gaussian
    policy's log standard deviation (``[dim]``, Box actions) or ``None`` (Discrete actions:
    the actor outputs logits). ``batch`` holds the lane's samples without the lane dimension
    (``obs`` ``[n, obs_size]``; ``actions``, ``values`` and ``log_probs`` of the rollout
    policy, ``advantages`` and ``returns`` ``[n]``). ``clip_range`` is the surrogate's clip
    range at this update (its schedule applied)."""
    log_prob, entropy = evaluate_actions(actor, log_std, batch.obs, batch.actions)
    values = critic(batch.obs).squeeze(-1)

    advantages = batch.advantages
    if config.normalize_advantage and len(advantages) > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

    # The clipped surrogate: the ratio of new to old probabilities, and its clip.
    ratio = torch.exp(log_prob - batch.log_probs)
    policy_loss_1 = advantages * ratio
    policy_loss_2 = advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    policy_loss = -torch.min(policy_loss_1, policy_loss_2).mean()

    if config.clip_range_vf is None:
        values_pred = values
    else:  # keep the new value within clip_range_vf of the old one
        values_pred = batch.values + torch.clamp(
            values - batch.values, -config.clip_range_vf, config.clip_range_vf
        )
    value_loss = F.mse_loss(batch.returns, values_pred)

    entropy_loss = -torch.mean(entropy)
    return policy_loss + config.ent_coef * entropy_loss + config.vf_coef * value_loss


class PPO(ActorCritic):
    """PPO (clipped surrogate) with GAE, minibatch epochs over each rollout, value and entropy
    terms, per-lane gradient clipping and linear learning-rate and clip-range schedules.

    Every ``num_envs × n_steps`` environment steps it makes ``n_epochs`` passes over the
    rollout in minibatches of ``batch_size`` (each lane's order drawn from its own generator;
    a ``batch_size`` that holds the whole rollout takes it as it is, every epoch). At a
    truncated step the reward is bootstrapped with the value of the true final
    observation; at a terminated step it is not.
    """

    Config: ClassVar[type[AgentConfig]] = PPOConfig
    name: ClassVar[str] = "ppo"

    def make_optimizer(self) -> LaneOptimizer:
        return LaneOptimizer(self.lane_params, "adam", eps=self.cfg.adam_eps)

    def update(self, batch: Batch) -> Mapping[str, torch.Tensor]:
        c: PPOConfig = self.cfg  # type: ignore[assignment]
        # Schedules at this update, from the budget left (as SB3: progress after the rollout).
        lr = scheduled(c.learning_rate, c.learning_rate_schedule, self.progress_remaining)
        clip = scheduled(c.clip_range, c.clip_range_schedule, self.progress_remaining)
        lanes, samples = batch.advantages.shape
        assert batch.log_probs is not None
        whole = c.batch_size >= samples
        if whole and c.normalize_advantage:  # the same minibatch every epoch: standardise once
            batch.advantages = standardize(batch.advantages)
        # Each minibatch's losses and log-ratios, for the metrics.
        logged: dict[str, list[torch.Tensor]] = {"policy_loss": [], "value_loss": [], "entropy": []}
        log_ratios: list[torch.Tensor] = []

        for _ in range(c.n_epochs):
            if whole:
                # One minibatch holds the whole rollout: shuffling it (as SB3 does) would
                # change nothing but the order of its sums.
                minibatches: Iterable[Batch] = (batch,)
            else:
                # Each lane's own shuffle of its samples, from its own generator, applied
                # once per epoch; the minibatches are its consecutive slices.
                order = np.stack([rng.permutation(samples) for rng in self.context.lane_rngs])
                shuffled = batch.take(torch.as_tensor(order, device=batch.advantages.device))
                minibatches = (
                    shuffled.rows(start, start + c.batch_size)
                    for start in range(0, samples, c.batch_size)
                )
            for mb in minibatches:
                assert mb.log_probs is not None
                out = self.forward(mb.obs)
                policy = self.dist.evaluate(out.params, mb.actions)
                n = mb.advantages.shape[1]

                advantages = mb.advantages
                if c.normalize_advantage and not whole:
                    advantages = standardize(advantages)

                # The clipped surrogate: the ratio of new to old probabilities, and its clip.
                log_ratio = policy.log_prob - mb.log_probs
                ratio = log_ratio.exp()
                clipped = ratio.clamp(1 - clip, 1 + clip)
                unclipped_term, clipped_term = advantages * ratio, advantages * clipped
                policy_loss = -torch.min(unclipped_term, clipped_term).mean(dim=1)
                # Its gradient with respect to log_prob (d ratio / d log_prob = ratio):
                # -advantage * ratio / n where the unclipped term is the smaller (where
                # the two are equal the ratio is inside the clip range, or the advantage
                # is 0), 0 where the clip holds the ratio.
                grad_log_prob = torch.where(
                    unclipped_term <= clipped_term, unclipped_term * (-1.0 / n), 0.0
                )

                if c.clip_range_vf is None:
                    values_pred = out.values
                else:  # keep the new value within clip_range_vf of the old one
                    change = out.values - mb.values
                    values_pred = mb.values + change.clamp(-c.clip_range_vf, c.clip_range_vf)
                error = values_pred - mb.returns
                value_loss = error.square().mean(dim=1)
                # vf_coef * value_loss's gradient; none where the value clip holds it.
                grad_values = error * (2.0 * c.vf_coef / n)
                if c.clip_range_vf is not None:
                    grad_values = torch.where(change.abs() <= c.clip_range_vf, grad_values, 0.0)

                # -ent_coef * the mean entropy (with ent_coef 0 its gradient is left out).
                entropy_mean = policy.entropy.mean(dim=1)
                grad_entropy = (
                    torch.full_like(policy.entropy, -c.ent_coef / n) if c.ent_coef else None
                )
                grad_params, grad_log_std = policy.grad(grad_log_prob, grad_entropy)
                self.gradient_step(out, grad_params, grad_values, grad_log_std, lr)

                logged["policy_loss"].append(policy_loss)
                logged["value_loss"].append(value_loss)
                logged["entropy"].append(entropy_mean)
                log_ratios.append(log_ratio)

        with torch.no_grad():
            # Means over minibatches (as SB3 logs them); approx_kl and clip_fraction over all
            # samples of all epochs (the same where batch_size divides the rollout).
            # (Stacked [lanes, minibatches]: a lane's mean is a row's, whatever the lanes.)
            metrics = {name: torch.stack(values, 1).mean(dim=1) for name, values in logged.items()}
            log_ratio = torch.cat(log_ratios, dim=1)
            ratio = log_ratio.exp()
            metrics["approx_kl"] = ((ratio - 1) - log_ratio).mean(dim=1)
            metrics["clip_fraction"] = ((ratio - 1).abs() > clip).float().mean(dim=1)
            metrics["explained_variance"] = explained_variance(batch.values, batch.returns)
        metrics["learning_rate"] = torch.full((lanes,), lr)
        metrics["clip_range"] = torch.full((lanes,), clip)
        return metrics
