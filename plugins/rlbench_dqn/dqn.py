"""dqn: the standard DQN (Mnih et al. 2015) — replay, target network, linear epsilon decay.

The reference the blog-post variants are measured against. Defaults are RL Zoo's tuned
CartPole-v1 settings for Stable-Baselines3's DQN, which solve CartPole in 50k steps.

Like every built-in DQN it trains several seeds at once as lanes of one batched computation
(stacked networks, one replay buffer and random stream per lane; :mod:`rlbench.lanes`), and a
single run is one lane. The lane dimension is a leading batch dimension that every tensor
below carries (``[lanes, batch, ...]``); the maths works on the last dimensions, so it reads
as the single-seed algorithm.

Read :func:`reference_loss` first: the loss in plain autograd, as CleanRL's ``dqn.py`` writes
it. :meth:`DQN.train_phase` computes the same loss's gradient by hand (the loss's derivative
with respect to the taken action's Q-value, backpropagated through the stacked MLP without
autograd: about half the tensor operations of autograd's graph), and
``tests/test_dqn_gradients.py`` holds it to :func:`reference_loss`'s gradient.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer
from torch import nn
from torch.nn import functional as F

from rlbench import AgentConfig, AgentContext, Transition
from rlbench.lanes import LaneReplayBuffer, ReplaySample
from rlbench_dqn.config import Fraction, LearningRate, LinearEpsilonConfig
from rlbench_dqn.qagent import QAgent
from rlbench_dqn.td import LossName, lane_td_grad, lane_td_loss, td_targets

#: A training phase gathers its minibatches in chunks of at most this many rows and bytes of
#: replay (one chunk with the CartPole defaults: 128 minibatches of 64).
PHASE_CHUNK_ROWS = 16_384
PHASE_CHUNK_BYTES = 64 * 2**20
#: Rows per forward pass of the target network when a phase's targets are computed together.
TARGET_PASS_ROWS = 512


class DQNConfig(LinearEpsilonConfig):
    """dqn's hyperparameters (``gamma`` and ``epsilon_start`` keep
    :class:`~rlbench_dqn.config.LinearEpsilonConfig`'s defaults)."""

    learning_rate: LearningRate = 2.3e-3
    """Adam learning rate."""
    loss: LossName = "huber"
    """TD loss: "huber" (smooth L1, as in the Nature DQN's error clipping) or "mse"."""
    epsilon_end: Fraction = 0.04
    """Exploration rate after the decay."""
    exploration_fraction: Fraction = 0.16
    """Fraction of the training budget over which epsilon decays linearly."""
    buffer_size: int = Field(100_000, ge=1)
    """Replay capacity in transitions."""
    batch_size: int = Field(64, ge=1)
    """Minibatch size of each gradient step."""
    learning_starts: int = Field(1000, ge=0)
    """Environment steps of pure collection before the first gradient step."""
    train_frequency: int = Field(256, ge=1)
    """Environment steps between training phases."""
    gradient_steps: int = 128
    """Gradient steps per training phase; -1: as many as environment steps since the previous
    phase boundary (``train_frequency`` with one environment), Stable-Baselines3's -1."""
    random_actions_before_learning: bool = False
    """Act uniformly at random (not epsilon-greedy) while the agent has taken fewer than
    ``learning_starts`` environment steps, as Stable-Baselines3's DQN does. The epsilon schedule
    still counts those steps, as SB3's does."""
    target_update_interval: int = Field(10, ge=1)
    """Environment steps between copies of the online weights into the target network."""
    max_grad_norm: float = Field(10.0, gt=0)
    """Gradients are clipped to this global norm."""

    @field_validator("gradient_steps")
    @classmethod
    def _gradient_steps(cls, value: int) -> int:
        if value != -1 and value < 1:
            raise ValueError(
                f"must be at least 1, or -1 for as many as the environment steps between "
                f"training phases (got {value})"
            )
        return value

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A run's identity (its directory name) hashes its dumped config: left out while off,
        # the option added later keeps every existing run's identity, and its results, valid.
        data = handler(self)
        if not self.random_actions_before_learning:
            data.pop("random_actions_before_learning", None)
        return data


def reference_loss(
    q_network: nn.Module,
    target_network: nn.Module,
    batch: ReplaySample,
    gamma: float,
    loss: LossName = "huber",
) -> torch.Tensor:
    """DQN's loss on one lane's minibatch, in plain autograd: the reference that
    :meth:`DQN.train_phase`'s hand-computed gradient is tested against.

    ``batch`` holds one lane's transitions (``obs`` ``[batch, obs_size]``, ``action``,
    ``reward`` and ``terminated`` ``[batch]``); the networks are that lane's own
    ``nn.Module``s. The target bootstraps through truncation, not termination (a time limit
    is not a terminal state), and carries no gradient."""
    with torch.no_grad():
        next_q_max = target_network(batch.next_obs).max(dim=1).values
        td_target = batch.reward + gamma * next_q_max * (~batch.terminated).float()
    q_taken = q_network(batch.obs).gather(1, batch.action.long().unsqueeze(1)).squeeze(1)
    if loss == "mse":
        return F.mse_loss(q_taken, td_target)
    return F.smooth_l1_loss(q_taken, td_target)


class DQN(QAgent[DQNConfig]):
    """DQN with experience replay, a target network and linearly decaying epsilon-greedy.

    Every ``train_frequency`` environment steps (after ``learning_starts``) it takes
    ``gradient_steps`` minibatch steps on uniformly sampled replay; the target network is a
    copy of the online one refreshed every ``target_update_interval`` environment steps (as
    Stable-Baselines3 counts it). Targets bootstrap through truncation, not termination.
    Gradients are clipped to ``max_grad_norm`` per lane.

    RL Zoo's settings are written as the Zoo writes them: ``gradient_steps = -1`` takes as many
    gradient steps as environment steps were taken since the previous phase boundary (a
    multiple of ``train_frequency``, crossed or not), and ``random_actions_before_learning``
    acts uniformly at random during ``learning_starts``. Lane ``k`` draws those actions from
    ``context.lane_rngs[k]`` alone, so the lanes stay exact.
    """

    Config: ClassVar[type[AgentConfig]] = DQNConfig
    default_network: ClassVar[Mapping[str, Any]] = {"name": "mlp", "hidden_sizes": [256, 256]}

    name: ClassVar[str] = "dqn"

    targets_depend_on_online_network: ClassVar[bool] = False
    """Whether :meth:`targets` reads the online network ``self.q`` (Double DQN's do). If
    not, a training phase computes all its targets before its first gradient step, in a few
    large passes; if so, each minibatch's targets are computed at its own step, with the
    online network as the previous steps left it. A subclass whose :meth:`targets` reads
    ``self.q`` sets it to True."""

    def __init__(self, config: DQNConfig, context: AgentContext) -> None:
        super().__init__(config, context, target_network=True)
        self.buffer = LaneReplayBuffer.for_agent(config.buffer_size, context)
        self.phase_boundary = 0
        """The step count when observe last crossed a multiple of ``train_frequency``."""
        self.phase_gradient_steps = config.gradient_steps
        """Gradient steps of the training phase under way (resolved from -1 at its start)."""

    def act(self, obs: torch.Tensor, *, greedy: bool = False) -> torch.Tensor:
        c = self.config
        if greedy or not c.random_actions_before_learning or self.steps >= c.learning_starts:
            return super().act(obs, greedy=greedy)
        # SB3's warm-up: every environment's action uniformly at random, lane k from its own
        # stream (the network is not consulted, so nothing else draws from it).
        n = obs.shape[1]
        actions = np.stack(
            [rng.integers(self.num_actions, size=n) for rng in self.context.lane_rngs]
        )
        return torch.as_tensor(actions, device=obs.device)

    def exploration(self) -> list[float]:
        """The linear schedule's epsilon, the same for every lane (they step in lockstep)."""
        return [self.config.epsilon_at(self.steps, self.context.total_steps)] * self.lanes

    def observe(self, t: Transition) -> Mapping[str, Any]:
        c = self.config
        self.buffer.add(t)
        before = self.steps
        self.count_steps(t, sync_every=c.target_update_interval)
        if self.steps // c.train_frequency == before // c.train_frequency:
            return {}
        since_boundary = self.steps - self.phase_boundary
        self.phase_boundary = self.steps
        if self.steps <= c.learning_starts:
            return {}
        self.phase_gradient_steps = since_boundary if c.gradient_steps == -1 else c.gradient_steps
        return self.train_phase()

    @torch.no_grad()
    def train_phase(self) -> Mapping[str, Any]:
        """``phase_gradient_steps`` minibatch steps on uniformly sampled replay; the metrics
        are each lane's mean loss over the phase.

        Each step is :func:`reference_loss`'s gradient step, computed by hand: the forward
        pass keeps what backpropagation needs, the loss's gradient with respect to the
        Q-values is ``dloss/dq_taken`` at the taken action and 0 elsewhere, and the network
        backpropagates it into ``q_params.grad`` (:meth:`rlbench.lanes.StackedNetwork.
        backprop`: by hand through an MLP, autograd through any other network)."""
        c = self.config
        taken: list[torch.Tensor] = []  # each step's Q(s, a) and target, for the metrics
        targets: list[torch.Tensor] = []
        for minibatch, target in self.phase_minibatches():
            if target is None:  # targets that read the online network: this step's
                target = self.targets(minibatch.reward, minibatch.next_obs, minibatch.terminated)
            q_values, saved = self.q.forward_for_backprop(minibatch.obs)  # [lanes, batch, A]
            action = minibatch.action.unsqueeze(-1)
            q_taken = q_values.gather(-1, action).squeeze(-1)
            grad_q_taken = lane_td_grad(q_taken, target, c.loss)
            grad_q = torch.zeros_like(q_values).scatter_(-1, action, grad_q_taken.unsqueeze(-1))
            self.q.backprop(saved, grad_q, self.q_params.grad_views)
            self.apply_gradients(c.max_grad_norm)
            taken.append(q_taken)
            targets.append(target)
        # Every step's loss at once, each lane's mean over the phase: [lanes, steps, batch],
        # so that every reduction runs along one lane's own contiguous row (a reduction across
        # the lanes' dimension would sum in an order that depends on the number of lanes).
        losses = lane_td_loss(torch.stack(taken, dim=1), torch.stack(targets, dim=1), c.loss)
        return self.metrics(losses.mean(dim=1))

    def targets(
        self, reward: torch.Tensor, next_obs: torch.Tensor, terminated: torch.Tensor
    ) -> torch.Tensor:
        """TD targets ``r + gamma * max_a' Q_target(s', a')`` of sampled transitions, without
        the bootstrap term at a terminal state: ``reward`` and ``terminated`` are ``[lanes,
        batch]``, ``next_obs`` is ``[lanes, batch, obs_size]``. Called under
        ``torch.no_grad()``; a variant that changes only the target (Double DQN) overrides it
        (and sets :attr:`targets_depend_on_online_network` if it reads the online network).
        """
        assert self.q_target is not None
        next_q_max = self.q_target(next_obs).max(dim=-1).values
        return td_targets(reward, next_q_max, terminated, self.config.gamma)

    # What follows makes a training phase fast without changing what it computes.

    def phase_minibatches(self) -> Iterator[tuple[ReplaySample, torch.Tensor | None]]:
        """The phase's ``phase_gradient_steps`` minibatches in order, each ``[lanes, batch_size,
        ...]``, with its TD targets, or ``None`` when they must be computed at their step
        (:attr:`targets_depend_on_online_network`).

        All minibatches of the phase are drawn at once (the same indices, in the same order,
        as one draw per step) and gathered together (in chunks if the observations are
        large). Targets that read only the target network come from a few large forward
        passes before the first step: the target network does not change during a phase (it
        is synced between environment steps), so these are the targets each step would
        compute.
        """
        c = self.config
        batch = c.batch_size
        idx = self.buffer.sample_indices(batch * self.phase_gradient_steps)
        per_step = self.targets_depend_on_online_network
        chunk_rows = self._chunk_rows()
        for start in range(0, idx.shape[1], chunk_rows):
            chunk = self.buffer.gather(idx[:, start : start + chunk_rows])
            steps = chunk.obs.shape[1] // batch
            if per_step:
                targets: list[torch.Tensor | None] | torch.Tensor = [None] * steps
            else:
                with torch.no_grad():
                    targets = minibatches(
                        self.fixed_targets(chunk.reward, chunk.next_obs, chunk.terminated), steps
                    )
            # Minibatch-major, so that minibatch j is one contiguous [lanes, batch, ...] block
            # where a network reads it; the fields no network reads here stay views.
            target_inputs = minibatches if per_step else minibatch_views
            split = ReplaySample(
                obs=minibatches(chunk.obs, steps),
                action=minibatches(chunk.action, steps),
                reward=target_inputs(chunk.reward, steps),
                next_obs=target_inputs(chunk.next_obs, steps),
                terminated=target_inputs(chunk.terminated, steps),
            )
            for j in range(steps):
                yield ReplaySample(*(field[j] for field in split)), targets[j]

    def _chunk_rows(self) -> int:
        """Rows per lane of replay one chunk of a phase gathers: a whole number of
        minibatches within ``PHASE_CHUNK_ROWS`` and ``PHASE_CHUNK_BYTES``."""
        batch = self.config.batch_size
        row_bytes = 4 * (2 * self.buffer.obs.shape[2] + 4) * self.lanes
        return batch * max(
            1, min(PHASE_CHUNK_ROWS // batch, PHASE_CHUNK_BYTES // (row_bytes * batch))
        )

    def fixed_targets(
        self, reward: torch.Tensor, next_obs: torch.Tensor, terminated: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`targets` of many minibatches (``[lanes, rows]``) in passes of
        ``TARGET_PASS_ROWS`` rows per lane, whose activations stay in a core's cache: about
        40% faster than one pass over 8,192 rows (and than 128 passes of 64)."""
        n = TARGET_PASS_ROWS
        return torch.cat(
            [
                self.targets(
                    reward[:, i : i + n],
                    next_obs[:, i : i + n].contiguous(),
                    terminated[:, i : i + n],
                )
                for i in range(0, reward.shape[1], n)
            ],
            dim=1,
        )


def minibatches(x: torch.Tensor, steps: int) -> torch.Tensor:
    """``[lanes, steps * batch, ...]`` as ``[steps, lanes, batch, ...]``, contiguous."""
    return minibatch_views(x, steps).contiguous()


def minibatch_views(x: torch.Tensor, steps: int) -> torch.Tensor:
    """``[lanes, steps * batch, ...]`` as ``[steps, lanes, batch, ...]``: a view, no copy."""
    lanes, rows = x.shape[:2]
    return x.reshape(lanes, steps, rows // steps, *x.shape[2:]).transpose(0, 1)
