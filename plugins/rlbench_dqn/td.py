"""Temporal-difference targets and losses, written on the last dimension: a tensor may carry
any leading dimensions (the built-in agents' lanes), which are kept apart."""

from __future__ import annotations

from typing import Literal

import torch
from torch.nn import functional as F

LossName = Literal["mse", "huber"]


def td_targets(
    reward: torch.Tensor, next_q_max: torch.Tensor, terminated: torch.Tensor, gamma: float
) -> torch.Tensor:
    """``r + gamma * max_a' Q(s', a')``, without the bootstrap term at a terminal state.

    Truncation (a time limit) is not terminal: its target still bootstraps.
    """
    return reward + gamma * (~terminated).to(reward.dtype) * next_q_max


def lane_td_loss(q_taken: torch.Tensor, target: torch.Tensor, loss: LossName) -> torch.Tensor:
    """Each lane's mean TD loss over its minibatch: ``[lanes, batch]`` in, ``[lanes]`` out.
    Summing the result and calling ``backward`` gives every lane the gradient of its own
    loss (the sum's gradient is exactly 1 for each)."""
    if loss == "mse":
        return F.mse_loss(q_taken, target, reduction="none").mean(dim=-1)
    return F.smooth_l1_loss(q_taken, target, reduction="none").mean(dim=-1)


def lane_td_grad(q_taken: torch.Tensor, target: torch.Tensor, loss: LossName) -> torch.Tensor:
    """The gradient of :func:`lane_td_loss` with respect to ``q_taken`` (``[lanes, batch]``),
    computed without autograd. With ``d = q_taken - target`` and ``n`` the batch size, MSE is
    ``mean(d²)``, whose gradient is ``2d / n``; Huber (smooth L1, beta 1) is ``mean(d²/2)``
    where ``|d| < 1`` and ``mean(|d| - 1/2)`` elsewhere, whose gradient is
    ``clamp(d, -1, 1) / n``."""
    d = q_taken - target
    if loss == "mse":
        return d.mul_(2.0 / d.shape[-1])
    return d.clamp_(-1.0, 1.0).mul_(1.0 / d.shape[-1])
