"""a2c: synchronous advantage actor-critic (Mnih et al. 2016), as Stable-Baselines3's A2C.

One gradient step per rollout of ``num_envs × n_steps`` environment steps, on the whole
rollout, with RMSprop as SB3 uses it (``use_rms_prop=True``: alpha 0.99, eps 1e-5, no
momentum, not centered; torch's RMSprop adds eps after the square root). Defaults are RL Zoo's
CartPole-v1 settings (``hyperparams/a2c.yml``: 8 envs, ent_coef 0.0, 5e5 steps) over SB3's
A2C defaults: n_steps 5, gamma 0.99, gae_lambda 1.0, learning_rate 7e-4 (constant), vf_coef
0.5, max_grad_norm 0.5, no advantage normalisation, orthogonal initialisation, separate tanh
MLPs 64-64 for actor and critic.

Read :func:`reference_loss` first: A2C's loss in plain autograd, as Stable-Baselines3's
``a2c.py`` writes it, on one lane's networks and rollout. :meth:`A2C.update` computes the same
loss for every lane at once, each term followed by its gradient computed by hand (with
respect to the log-probabilities, entropies and values, then backpropagated through the
stacked networks without autograd; see :mod:`rlbench_pg.actor_critic`), and
``tests/test_pg_gradients.py`` holds that gradient to :func:`reference_loss`'s.

Acting, the rollout, its truncation bootstrap and GAE are in :mod:`rlbench_pg.actor_critic`;
this file is the update. Every tensor in :meth:`A2C.update` is ``[lanes, ...]`` (a single
run is one lane).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from rlbench import AgentConfig
from rlbench.lanes import LaneOptimizer
from rlbench_pg.actor_critic import (
    ActorCritic,
    ActorCriticConfig,
    evaluate_actions,
    explained_variance,
    scheduled,
    standardize,
)
from rlbench_pg.rollout import Batch


class A2CConfig(ActorCriticConfig):
    num_envs: int = Field(8, ge=1)
    """Environments stepped in parallel (RL Zoo CartPole-v1: 8)."""
    n_steps: int = Field(5, ge=1)
    """Steps of every environment per rollout and update (SB3's default, 5)."""
    use_rms_prop: bool = True
    """RMSprop (alpha 0.99) as SB3's A2C; False uses Adam."""
    rms_prop_eps: float = Field(1e-5, gt=0)
    """Epsilon of RMSprop (or of Adam when use_rms_prop is False)."""


def reference_loss(
    actor: nn.Module,
    critic: nn.Module,
    log_std: torch.Tensor | None,
    batch: Batch,
    config: A2CConfig,
) -> torch.Tensor:
    """A2C's loss on one lane's rollout, in plain autograd (Stable-Baselines3's
    ``A2C.train``): the reference that :meth:`A2C.update`'s hand-computed gradient is tested
    against.

    ``actor`` and ``critic`` are that lane's own ``nn.Module``s; ``log_std`` is its Gaussian
    policy's log standard deviation (``[dim]``, Box actions) or ``None`` (Discrete actions:
    the actor outputs logits). ``batch`` holds the lane's samples without the lane dimension
    (``obs`` ``[n, obs_size]``; ``actions``, ``advantages`` and ``returns`` ``[n]``)."""
    log_prob, entropy = evaluate_actions(actor, log_std, batch.obs, batch.actions)
    values = critic(batch.obs).squeeze(-1)

    advantages = batch.advantages
    if config.normalize_advantage and len(advantages) > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

    policy_loss = -(advantages * log_prob).mean()
    value_loss = F.mse_loss(batch.returns, values)
    entropy_loss = -torch.mean(entropy)
    return policy_loss + config.ent_coef * entropy_loss + config.vf_coef * value_loss


class A2C(ActorCritic):
    """A2C: one RMSprop step per n-step rollout on the policy-gradient, value and entropy
    losses, GAE(λ) advantages (λ = 1: n-step returns), per-lane gradient clipping.

    At a truncated step the reward is bootstrapped with the value of the true final
    observation; at a terminated step it is not.
    """

    Config: ClassVar[type[AgentConfig]] = A2CConfig
    name: ClassVar[str] = "a2c"
    uses_log_probs: ClassVar[bool] = False  # the update recomputes them, with gradients

    def make_optimizer(self) -> LaneOptimizer:
        c: A2CConfig = self.cfg  # type: ignore[assignment]
        kind = "rmsprop" if c.use_rms_prop else "adam"
        return LaneOptimizer(self.lane_params, kind, eps=c.rms_prop_eps, alpha=0.99)

    def update(self, batch: Batch) -> Mapping[str, torch.Tensor]:
        c = self.cfg
        lr = scheduled(c.learning_rate, c.learning_rate_schedule, self.progress_remaining)

        out = self.forward(batch.obs)
        policy = self.dist.evaluate(out.params, batch.actions)
        n = batch.advantages.shape[1]

        advantages = batch.advantages
        if c.normalize_advantage:
            advantages = standardize(advantages)

        # The policy gradient loss, and its gradient with respect to log_prob.
        policy_loss = -(advantages * policy.log_prob).mean(dim=1)
        grad_log_prob = advantages * (-1.0 / n)
        error = out.values - batch.returns
        value_loss = error.square().mean(dim=1)
        grad_values = error * (2.0 * c.vf_coef / n)  # vf_coef * value_loss's gradient
        entropy_mean = policy.entropy.mean(dim=1)
        # -ent_coef * the mean entropy (with ent_coef 0 its gradient is left out).
        grad_entropy = torch.full_like(policy.entropy, -c.ent_coef / n) if c.ent_coef else None

        grad_params, grad_log_std = policy.grad(grad_log_prob, grad_entropy)
        self.gradient_step(out, grad_params, grad_values, grad_log_std, lr)

        lanes = policy_loss.shape[0]
        return {
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "entropy": entropy_mean,
            "explained_variance": explained_variance(batch.values, batch.returns),
            "learning_rate": torch.full((lanes,), lr),
        }
