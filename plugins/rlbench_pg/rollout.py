"""The on-policy rollout: ``n_steps`` steps of every lane's ``num_envs`` environments, and the
generalized advantage estimates computed over it.

Fields are stored time-major, ``[n_steps, lanes, num_envs, ...]``, so that adding a step is
one slice per field; :meth:`Rollout.samples` hands each lane its ``num_envs * n_steps``
samples as ``[lanes, samples, ...]`` (:func:`lane_major`) for the updates.
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
    # Everything but the recursion at once, for all steps (the same operations, in the same
    # order, as step by step: each element's arithmetic is unchanged).
    not_done = 1.0 - dones
    next_values = torch.cat([values[1:], last_values.unsqueeze(0)])
    deltas = rewards + gamma * next_values * not_done - values
    decay = gamma * gae_lambda * not_done
    advantages = torch.empty_like(rewards)
    running = torch.zeros_like(last_values)
    scratch = torch.empty_like(last_values)
    for t in reversed(range(rewards.shape[0])):
        # A_t = delta_t + decay_t * A_{t+1} (a multiply and an add: no fused multiply-add,
        # whose rounding would differ between the vectorised and the scalar code)
        torch.add(deltas[t], torch.mul(decay[t], running, out=scratch), out=advantages[t])
        running = advantages[t]
    return advantages, advantages + values


@dataclass
class Batch:
    """A lane-major view of a rollout (or a minibatch of one): every field ``[lanes,
    samples, ...]``. ``log_probs`` are the rollout policy's log-probabilities of its actions,
    for an agent that asks for them (PPO's ratio; A2C does not)."""

    obs: torch.Tensor
    actions: torch.Tensor
    values: torch.Tensor
    log_probs: torch.Tensor | None
    advantages: torch.Tensor
    returns: torch.Tensor

    def take(self, index: torch.Tensor) -> Batch:
        """The samples at ``index`` (``[lanes, k]``: row ``k`` indexes lane ``k``'s)."""
        lanes, k = index.shape
        n = self.advantages.shape[1]
        # One index into the lanes' samples laid end to end: index_select along one
        # dimension is a plain gather (advanced indexing with two index tensors costs
        # several times more per field).
        lane_start = torch.arange(0, lanes * n, n, device=index.device).unsqueeze(1)
        flat = (index + lane_start).view(-1)
        return Batch(
            *(
                None
                if f is None
                else f.reshape(lanes * n, *f.shape[2:])
                .index_select(0, flat)
                .view(lanes, k, *f.shape[2:])
                for f in self.fields()
            )
        )

    def rows(self, start: int, stop: int) -> Batch:
        """Samples ``start`` to ``stop`` of every lane (views)."""
        return Batch(*(None if f is None else f[:, start:stop] for f in self.fields()))

    def fields(self) -> tuple[torch.Tensor | None, ...]:
        return (self.obs, self.actions, self.values, self.log_probs, self.advantages, self.returns)


def lane_major(x: torch.Tensor) -> torch.Tensor:
    """A rollout field ``[n_steps, lanes, num_envs, ...]`` as each lane's ``num_envs *
    n_steps`` samples, ``[lanes, num_envs * n_steps, ...]``, environment-major (sample ``e *
    n_steps + t`` is environment ``e`` at step ``t``, as Stable-Baselines3's buffer flattens
    them)."""
    y = x.transpose(0, 1).transpose(1, 2)  # [L, E, T, ...]
    return y.reshape(y.shape[0], -1, *y.shape[3:]).contiguous()


def time_major(x: torch.Tensor, n_steps: int) -> torch.Tensor:
    """:func:`lane_major`'s inverse for a field without feature dimensions: ``[lanes,
    num_envs * n_steps]`` to ``[n_steps, lanes, num_envs]`` (a view)."""
    return x.view(x.shape[0], -1, n_steps).permute(2, 0, 1)


class Rollout:
    """``n_steps`` steps of ``lanes × num_envs`` environments, preallocated on ``device``:
    what the agent saw, did and got. The values and log-probabilities of the rollout's
    policy are computed once it is full, for all of its samples at once
    (:meth:`rlbench_pg.actor_critic.ActorCritic.observe`): the policy does not change while
    it collects, and one pass over ``n_steps × num_envs`` samples costs far less than
    ``n_steps`` passes over ``num_envs``."""

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
        # Each step's slice of each field, made once (indexing a tensor costs more than
        # the copy into it).
        fields = (self.obs, self.actions, self.rewards, self.dones)
        self._steps = list(zip(*(f.unbind(0) for f in fields), strict=True))
        self.position = 0

    @property
    def full(self) -> bool:
        return self.position == self.n_steps

    def add(
        self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, dones: torch.Tensor
    ) -> None:
        """Store one step (fields ``[lanes, num_envs, ...]``). ``rewards`` must already hold
        the truncation bootstrap: ``r + gamma * V(final observation)`` where the episode was
        cut off by a time limit (Stable-Baselines3 does this; a terminated step keeps ``r``).
        """
        step_obs, step_actions, step_rewards, step_dones = self._steps[self.position]
        step_obs.copy_(obs)
        step_actions.copy_(actions)
        step_rewards.copy_(rewards)
        step_dones.copy_(dones)
        self.position += 1

    def samples(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every lane's observations and actions, :func:`lane_major`; empties the rollout."""
        self.position = 0
        return lane_major(self.obs), lane_major(self.actions)

    def advantages(
        self, values: torch.Tensor, last_values: torch.Tensor, gamma: float, gae_lambda: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`gae` of the rollout from the values of its samples (``[lanes, samples]``,
        as :meth:`samples` orders them) and of the observations after its last step
        (``[lanes, num_envs]``); advantages and returns ``[lanes, samples]``, in that order
        too."""
        advantages, returns = gae(
            self.rewards,
            time_major(values, self.n_steps),
            self.dones,
            last_values,
            gamma,
            gae_lambda,
        )
        return lane_major(advantages), lane_major(returns)
