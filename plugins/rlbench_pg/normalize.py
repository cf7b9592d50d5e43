"""Running observation and reward normalisation per lane, as Stable-Baselines3's
``VecNormalize`` does it.

- Observations: ``clip((obs - mean) / sqrt(var + 1e-8), -clip_obs, clip_obs)`` with the running
  mean and variance of every observation the agent acted on while training.
- Rewards: divided by the running standard deviation of the discounted return
  (``R = gamma * R + r``, reset where an episode ends), then clipped to ``±clip_reward``;
  the mean is not subtracted.

The statistics live in float64, start at mean 0, variance 1 and a count of 1e-4 (as SB3's
``RunningMeanStd``), and are updated with the parallel-variance formula (Chan et al.). They
are updated only while training: the greedy (evaluation) policy reads them frozen.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

EPSILON = 1e-8


def lane_var(x: torch.Tensor, dim: int, correction: int = 0) -> torch.Tensor:
    """The variance of ``x`` along ``dim`` (``correction = 1``: unbiased), in two passes
    through ``mean``: torch's own ``var`` of a single row runs another algorithm than of
    several (its result for one lane differed in the last digit from the same lane in a group);
    sums along a dimension do not."""
    deviation = x - x.mean(dim=dim, keepdim=True)
    return (deviation**2).sum(dim=dim) / (x.shape[dim] - correction)


class LaneRunningMeanStd:
    """Mean and variance of samples of shape ``shape``, per lane: ``mean`` and ``var``
    ``[lanes, *shape]``, ``count`` ``[lanes]``."""

    def __init__(self, lanes: int, shape: tuple[int, ...], device: torch.device) -> None:
        self.mean = torch.zeros((lanes, *shape), dtype=torch.float64, device=device)
        self.var = torch.ones((lanes, *shape), dtype=torch.float64, device=device)
        self.count = torch.full((lanes,), 1e-4, dtype=torch.float64, device=device)

    def update(self, x: torch.Tensor) -> None:
        """Add the batch ``x`` ``[lanes, batch, *shape]`` of every lane to its statistics."""
        x = x.double()
        n = x.shape[1]
        batch_mean = x.mean(dim=1)
        batch_var = lane_var(x, dim=1)
        count = self.count.view(-1, *([1] * (self.mean.dim() - 1)))
        total = count + n
        delta = batch_mean - self.mean
        m2 = self.var * count + batch_var * n + delta**2 * count * n / total
        self.mean = self.mean + delta * n / total
        self.var = m2 / total
        self.count = self.count + n

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean.clone(), "var": self.var.clone(), "count": self.count.clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.mean = state["mean"].to(self.mean).clone()
        self.var = state["var"].to(self.var).clone()
        self.count = state["count"].to(self.count).clone()


class ObsNormalizer:
    """Observations ``[lanes, batch, obs_size]`` normalised by their running statistics."""

    def __init__(self, lanes: int, obs_size: int, clip: float, device: torch.device) -> None:
        self.rms = LaneRunningMeanStd(lanes, (obs_size,), device)
        self.clip = clip

    def __call__(self, obs: torch.Tensor, *, update: bool) -> torch.Tensor:
        """``obs`` normalised (float32), after adding it to the statistics if ``update``."""
        if update:
            self.rms.update(obs)
        mean, var = self.rms.mean.unsqueeze(1), self.rms.var.unsqueeze(1)
        scaled = (obs.double() - mean) / torch.sqrt(var + EPSILON)
        return scaled.clamp(-self.clip, self.clip).float()


class RewardNormalizer:
    """Rewards ``[lanes, num_envs]`` scaled by the running std of each lane's discounted
    returns (``returns`` ``[lanes, num_envs]``, one per environment)."""

    def __init__(
        self, lanes: int, num_envs: int, gamma: float, clip: float, device: torch.device
    ) -> None:
        self.rms = LaneRunningMeanStd(lanes, (), device)
        self.returns = torch.zeros((lanes, num_envs), dtype=torch.float64, device=device)
        self.gamma, self.clip = gamma, clip

    def __call__(self, reward: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """This step's rewards scaled (float32); updates the statistics, then forgets the
        discounted return of every environment whose episode ended."""
        self.returns = self.returns * self.gamma + reward.double()
        self.rms.update(self.returns)
        scaled = reward.double() / torch.sqrt(self.rms.var.unsqueeze(1) + EPSILON)
        self.returns = self.returns.masked_fill(done, 0.0)
        return scaled.clamp(-self.clip, self.clip).float()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self.rms.state_dict(), "returns": self.returns.clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rms.load_state_dict(state)
        self.returns = state["returns"].to(self.returns).clone()
