"""rlbench-double-dqn: Double DQN (van Hasselt, Guez & Silver, 2016) as an rlbench plugin.

DQN's target ``r + gamma * max_a' Q_target(s', a')`` uses the same network to choose the
next action and to value it, so noise in the estimates turns into a systematic
overestimation. Double DQN splits the two: the online network chooses
``a* = argmax_a' Q(s', a')`` and the target network values it::

    target = r + gamma * Q_target(s', a*)        (no bootstrap term when s' is terminal)

Everything else (replay, target-network sync, epsilon schedule, loss, optimizer,
hyperparameters and their defaults) is rlbench's built-in ``dqn``, so this package
subclasses it, overrides the one method that computes TD targets, and declares that its
targets read the online network (so DQN computes them at each gradient step).

rlbench finds this module through the entry point in ``pyproject.toml``::

    [project.entry-points.rlbench]
    double_dqn = "rlbench_double_dqn"
"""

from __future__ import annotations

from typing import ClassVar

import torch
from rlbench import AgentConfig, AgentSpec, hookimpl
from rlbench_dqn.dqn import DQN, DQNConfig
from rlbench_dqn.td import td_targets


class DoubleDQNConfig(DQNConfig):
    """Double DQN's hyperparameters: exactly DQN's, with the same defaults, so that a suite
    comparing ``dqn`` and ``double_dqn`` changes nothing but the target."""


class DoubleDQN(DQN):
    """Double DQN: DQN whose TD target lets the online network choose the next action and
    the target network value it.

    Identical to rlbench's ``dqn`` (replay, target network, linearly decaying epsilon-greedy,
    Huber loss, gradient clipping) except for :meth:`targets`, which reads the online network
    (hence ``targets_depend_on_online_network``).
    """

    Config: ClassVar[type[AgentConfig]] = DoubleDQNConfig
    name: ClassVar[str] = "double_dqn"  # used in error messages
    # The online network chooses the next action, and it changes at every gradient step:
    # DQN computes these targets per minibatch, not all of a training phase's ahead.
    targets_depend_on_online_network: ClassVar[bool] = True

    def targets(
        self, reward: torch.Tensor, next_obs: torch.Tensor, terminated: torch.Tensor
    ) -> torch.Tensor:
        """``r + gamma * Q_target(s', argmax_a' Q(s', a'))``, without the bootstrap term at a
        terminal state (truncation still bootstraps). Called by :meth:`DQN.train_phase` under
        ``torch.no_grad()`` for each sampled minibatch: ``reward`` and ``terminated`` are
        ``[lanes, batch_size]``, ``next_obs`` is ``[lanes, batch_size, obs_size]`` (``dqn``
        trains several seeds at once as lanes; a single run has one)."""
        next_action = self.q(next_obs).argmax(dim=-1, keepdim=True)  # online network chooses
        next_q = self.q_target(next_obs).gather(-1, next_action).squeeze(-1)  # target values
        return td_targets(reward, next_q, terminated, self.config.gamma)


@hookimpl
def rlbench_register_agents() -> list[AgentSpec]:
    return [AgentSpec(name="double_dqn", agent=DoubleDQN)]
