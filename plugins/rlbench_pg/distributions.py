"""Action distributions of the policy-gradient agents, for every lane at once.

The actor network outputs the distribution's parameters, ``[lanes, n, param_size]``:

- ``Discrete(n)``: :class:`LaneCategorical`, the actor's outputs are logits.
- ``Box``: :class:`LaneDiagGaussian`, a diagonal Gaussian whose mean is the actor's output and
  whose log standard deviation is a state-independent parameter per lane and action dimension
  (as Stable-Baselines3's ``DiagGaussianDistribution``). Its samples are returned raw
  (unclipped): the harness clips what it sends to the environment, and the log-probability
  is the raw sample's.

Sampling draws lane ``k``'s noise from ``rngs[k]`` only (numpy), one call per lane, so a lane
samples the same actions whatever group it trains in. Greedy actions are the mode (the
argmax, the mean).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn

LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


@dataclass
class Evaluated:
    """A policy evaluated on a batch of its actions: ``log_prob`` and ``entropy`` ``[lanes,
    batch]``, and ``grad(g_log_prob, g_entropy)``, which maps the gradients of a loss with
    respect to them (``[lanes, batch]``; ``g_entropy`` ``None`` for a loss without the
    entropy) to its gradients with respect to the actor's output (``[lanes, batch,
    param_size]``) and to the distribution's own parameter (the Gaussian's log standard
    deviation, ``[lanes, dim]``; ``None`` for the categorical)."""

    log_prob: torch.Tensor
    entropy: torch.Tensor
    grad: Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor | None]]


class LaneCategorical(nn.Module):
    """A categorical distribution over ``n`` actions from logits ``[lanes, batch, n]``;
    actions are ``[lanes, batch]`` integers.

    Everything is computed along dimension 1 of the logits seen as ``[lanes, n, batch]``
    (``logits.transpose(1, 2)``, a view of how a narrow linear head lays them out in memory,
    see :mod:`rlbench.lanes`): torch's softmax and sums along a last dimension of a few
    actions run one row at a time, along a middle one they run vectorised over the rows
    (16 lanes x 256 rows x 2 actions, one thread: 199 µs against 9 µs for a softmax)."""

    def __init__(self, num_actions: int) -> None:
        super().__init__()
        self.param_size = num_actions
        self.action_shape: tuple[int, ...] = ()

    def sample(self, logits: torch.Tensor, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
        """An action per row by inverse transform sampling (one uniform per row from the
        lane's generator)."""
        n = logits.shape[1]
        cdf = torch.softmax(logits.transpose(1, 2), dim=1).cumsum(dim=1)
        u = torch.as_tensor(
            np.stack([rng.random(n, dtype=np.float32) for rng in rngs]), device=logits.device
        )
        # The cdf's last entry may round below 1: the clamp keeps u beyond it in range.
        return (cdf < u.unsqueeze(1)).sum(dim=1).clamp_(max=self.param_size - 1)

    def log_prob_entropy(
        self, logits: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``log p(actions)`` and the entropy, both ``[lanes, batch]`` (as
        ``torch.distributions.Categorical`` computes them)."""
        policy = self.evaluate(logits, actions)
        return policy.log_prob, policy.entropy

    def evaluate(self, logits: torch.Tensor, actions: torch.Tensor) -> Evaluated:
        """The log-probabilities of ``actions`` and the entropies, with their gradient."""
        log_probs = torch.log_softmax(logits.transpose(1, 2), dim=1)  # [lanes, n, batch]
        probs = log_probs.exp()
        index = actions.long().unsqueeze(1)
        log_prob = log_probs.gather(1, index).squeeze(1)
        entropy = -(log_probs * probs).sum(dim=1)

        def grad(
            g_log_prob: torch.Tensor, g_entropy: torch.Tensor | None
        ) -> tuple[torch.Tensor, None]:
            # d log p(a) / d logits = onehot(a) - p;  d entropy / d logits = -p (log p + H).
            g = probs * g_log_prob.neg().unsqueeze(1)
            g.scatter_add_(1, index, g_log_prob.unsqueeze(1))
            if g_entropy is not None:
                h = log_probs + entropy.unsqueeze(1)
                g.sub_(h.mul_(probs).mul_(g_entropy.unsqueeze(1)))
            return g.transpose(1, 2), None

        return Evaluated(log_prob, entropy, grad)

    def mode(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.transpose(1, 2).argmax(dim=1)


class LaneDiagGaussian(nn.Module):
    """A diagonal Gaussian: mean ``[lanes, batch, dim]`` from the actor, log standard deviation
    :attr:`log_std` ``[lanes, dim]`` (a parameter, initialised to ``log_std_init``). Actions
    are ``[lanes, batch, *action_shape]`` floats."""

    def __init__(
        self, action_shape: tuple[int, ...], lanes: int, log_std_init: float, device: torch.device
    ) -> None:
        super().__init__()
        self.action_shape = action_shape
        self.param_size = int(math.prod(action_shape))
        self.log_std = nn.Parameter(
            torch.full((lanes, self.param_size), float(log_std_init), device=device)
        )

    def sample(self, mean: torch.Tensor, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
        """``mean + std * noise``, standard normal noise from each lane's generator."""
        lanes, n, dim = mean.shape
        noise = np.stack([rng.standard_normal((n, dim)) for rng in rngs])
        std = self.log_std.unsqueeze(1).exp()  # [lanes, 1, dim]
        flat = mean + std * torch.as_tensor(noise, dtype=mean.dtype, device=mean.device)
        return flat.reshape(lanes, n, *self.action_shape)

    def log_prob_entropy(
        self, mean: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``log p(actions)`` and the entropy, both ``[lanes, batch]``, summed over the action
        dimensions (as ``torch.distributions.Normal`` computes each dimension's)."""
        policy = self.evaluate(mean, actions)
        return policy.log_prob, policy.entropy

    def evaluate(self, mean: torch.Tensor, actions: torch.Tensor) -> Evaluated:
        """The log-probabilities of ``actions`` and the entropies, with their gradient (the
        second gradient is the log standard deviation's, ``[lanes, dim]``)."""
        log_std = self.log_std.detach().unsqueeze(1)  # [lanes, 1, dim]: the same for every row
        diff = actions.reshape(mean.shape) - mean
        inv_var = (-2 * log_std).exp()
        # -(a - mean)^2 / (2 std^2) - log std - log sqrt(2 pi): what depends on the row in two
        # operations over the batch, the rest on [lanes, 1, dim].
        log_prob = diff.square() * (-0.5 * inv_var) - (log_std + LOG_SQRT_2PI)
        # The entropy does not depend on the row: one value per lane, seen for every row.
        entropy = (log_std + (0.5 + LOG_SQRT_2PI)).sum(dim=-1).expand(mean.shape[:2])
        # (a sum over one dimension is the value itself)
        log_prob = log_prob.squeeze(-1) if self.param_size == 1 else log_prob.sum(dim=-1)

        def grad(
            g_log_prob: torch.Tensor, g_entropy: torch.Tensor | None
        ) -> tuple[torch.Tensor, torch.Tensor]:
            # d log p / d mean = (a - mean) / std^2;  d log p / d log std = (a - mean)^2 /
            # std^2 - 1;  d entropy / d log std = 1 (every dimension, every row).
            g = g_log_prob.unsqueeze(-1)
            z = diff * inv_var
            g_mean = z * g
            g_log_std = (z.mul_(diff).sub_(1.0).mul_(g)).sum(dim=1)
            if g_entropy is not None:
                g_log_std += g_entropy.sum(dim=1, keepdim=True)
            return g_mean, g_log_std

        return Evaluated(log_prob, entropy, grad)

    def mode(self, mean: torch.Tensor) -> torch.Tensor:
        return mean.reshape(*mean.shape[:2], *self.action_shape)


Distribution = LaneCategorical | LaneDiagGaussian


def make_distribution(
    space: gym.Space, lanes: int, log_std_init: float, device: torch.device
) -> Distribution:
    """The distribution for an action space (``Discrete`` or ``Box``; anything else is an
    error naming the space)."""
    if isinstance(space, gym.spaces.Discrete):
        return LaneCategorical(int(space.n))
    if isinstance(space, gym.spaces.Box):
        return LaneDiagGaussian(tuple(space.shape), lanes, log_std_init, device)
    raise ValueError(f"no action distribution for {space}: use a Discrete or Box action space")
