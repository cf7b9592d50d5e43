"""The on-policy rollout: ``n_steps`` steps of every lane's ``num_envs`` environments, and the
generalized advantage estimates computed over it.

Fields are stored time-major, ``[n_steps, lanes, num_envs, ...]``, so that adding a step is
one slice per field; :meth:`Rollout.flat` hands each lane its ``num_envs * n_steps`` samples
as ``[lanes, samples, ...]`` (environment-major, as Stable-Baselines3's buffer flattens
them) for the updates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_values: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016) over a rollout.

    ``rewards``, ``values`` and ``dones`` are ``[n_steps, ...]``: the reward of step ``t``
    (already bootstrapped at a truncation, see :meth:`Rollout.add`), the value of the
    observation it was taken from, and 1.0 where the episode ended at step ``t`` (terminated
    or truncated: the trace is cut either way). ``last_values`` is the value of the
    observation after the last step. Returns ``(advantages, returns)``, ``returns =
    advantages + values`` (the value targets):

    ``delta_t = r_t + gamma * V_{t+1} * (1 - done_t) - V_t``,
    ``A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}``.
    """
    advantages = torch.empty_like(rewards)
    running = torch.zeros_like(last_values)
    next_values = last_values
    for t in reversed(range(rewards.shape[0])):
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_values * not_done - values[t]
        running = delta + gamma * gae_lambda * not_done * running
        advantages[t] = running
        next_values = values[t]
    return advantages, advantages + values


@dataclass
class Batch:
    """A lane-major view of a rollout (or a minibatch of one): every field ``[lanes,
    samples, ...]``."""

    obs: torch.Tensor
    actions: torch.Tensor
    values: torch.Tensor
    log_probs: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor

    def take(self, index: torch.Tensor) -> Batch:
        """The samples at ``index`` (``[lanes, k]``: row ``k`` indexes lane ``k``'s)."""
        lane = torch.arange(index.shape[0], device=index.device).unsqueeze(1)
        return Batch(*(field[lane, index] for field in self.fields()))

    def fields(self) -> tuple[torch.Tensor, ...]:
        return (self.obs, self.actions, self.values, self.log_probs, self.advantages, self.returns)


class Rollout:
    """``n_steps`` steps of ``lanes × num_envs`` environments, preallocated on ``device``."""

    def __init__(
        self,
        n_steps: int,
        lanes: int,
        num_envs: int,
        obs_size: int,
        action_shape: tuple[int, ...],
        discrete: bool,
        device: torch.device,
    ) -> None:
        shape = (n_steps, lanes, num_envs)
        self.n_steps = n_steps
        self.obs = torch.zeros((*shape, obs_size), device=device)
        action_dtype = torch.long if discrete else torch.float32
        self.actions = torch.zeros((*shape, *action_shape), dtype=action_dtype, device=device)
        self.rewards = torch.zeros(shape, device=device)
        self.dones = torch.zeros(shape, device=device)
        self.values = torch.zeros(shape, device=device)
        self.log_probs = torch.zeros(shape, device=device)
        self.position = 0

    @property
    def full(self) -> bool:
        return self.position == self.n_steps

    def add(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        dones: torch.Tensor,
        values: torch.Tensor,
        log_probs: torch.Tensor,
    ) -> None:
        """Store one step (fields ``[lanes, num_envs, ...]``). ``rewards`` must already hold
        the truncation bootstrap: ``r + gamma * V(final observation)`` where the episode was
        cut off by a time limit (Stable-Baselines3 does this; a terminated step keeps ``r``).
        """
        t = self.position
        self.obs[t] = obs
        self.actions[t] = actions
        self.rewards[t] = rewards
        self.dones[t] = dones
        self.values[t] = values
        self.log_probs[t] = log_probs
        self.position += 1

    def advantages(
        self, last_values: torch.Tensor, gamma: float, gae_lambda: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`gae` of the full rollout, ``[n_steps, lanes, num_envs]`` each."""
        return gae(self.rewards, self.values, self.dones, last_values, gamma, gae_lambda)

    def flat(self, advantages: torch.Tensor, returns: torch.Tensor) -> Batch:
        """The rollout as each lane's ``num_envs * n_steps`` samples, and empties it."""

        def per_lane(x: torch.Tensor) -> torch.Tensor:
            # [T, L, E, ...] -> [L, E, T, ...] -> [L, E * T, ...]
            y = x.transpose(0, 1).transpose(1, 2)
            return y.reshape(y.shape[0], -1, *y.shape[3:]).contiguous()

        self.position = 0
        return Batch(
            obs=per_lane(self.obs),
            actions=per_lane(self.actions),
            values=per_lane(self.values),
            log_probs=per_lane(self.log_probs),
            advantages=per_lane(advantages),
            returns=per_lane(returns),
        )
