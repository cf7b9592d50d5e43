"""naive_dqn: online Q-learning with a neural network, one transition at a time.

From the posts "Implementing deep reinforcement learning algorithms in PyTorch" (first seed
post) and "Understanding PyTorch's reinforcement learning capabilities" (third).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from rlbench import AgentConfig, AgentContext, Transition
from rlbench_dqn.config import Discount, Fraction, LearningRate, LinearEpsilonConfig
from rlbench_dqn.qagent import QAgent
from rlbench_dqn.td import LossName, lane_td_loss, td_targets


class NaiveDQNConfig(LinearEpsilonConfig):
    """naive_dqn's hyperparameters (``epsilon_end`` and ``exploration_fraction`` keep
    :class:`~rlbench_dqn.config.LinearEpsilonConfig`'s defaults)."""

    learning_rate: LearningRate = 1e-3
    """Adam learning rate (both posts: 0.001)."""
    gamma: Discount = 0.99
    """Discount factor (first post: 0.99)."""
    loss: LossName = "mse"
    """TD loss: "mse" (first post) or "huber" (smooth L1, third post)."""
    epsilon_start: Fraction = 1.0
    """Exploration rate at step 0. The posts act greedily: set both epsilons to 0 for that."""


class NaiveDQN(QAgent[NaiveDQNConfig]):
    """Online DQN: one gradient step per transition, on that transition alone; no target
    network, no replay.

    Faithful to the posts: Adam at lr 1e-3, gamma 0.99, an MLP 64-32 (first post; the third
    uses 64-64: set ``hidden_sizes = [64, 64]``), MSE loss (the third post's smooth L1 is
    ``loss = "huber"``), the TD target ``r + gamma * max_a' Q(s', a')`` from the same online
    network.

    Deviations, each a bug in a post:

    * Termination vs truncation. The posts use Gym's old four-tuple ``done`` and stop
      bootstrapping at CartPole's 500-step time limit as if it were a terminal state. Here
      the target bootstraps through truncation and not through termination.
    * Gradient through the target. The third post computes the target without ``detach``,
      so the loss also pushes ``Q(s', .)`` towards ``Q(s, .)``. Targets here are computed
      under ``torch.no_grad()`` (the first post detaches too).
    * Loss on the taken action. The third post's ``smooth_l1_loss(q_values, target)``
      broadcasts one scalar target over *every* action's Q-value. Here only the taken
      action's Q-value is regressed, as Q-learning defines.
    * Exploration. Both posts act purely greedily, which on CartPole can lock onto one
      action; here epsilon-greedy decays from ``epsilon_start`` to ``epsilon_end``.
      ``epsilon_start = epsilon_end = 0`` reproduces the posts' greedy behaviour.

    With ``num_envs > 1`` the step's transitions form one minibatch (one gradient step).
    """

    Config: ClassVar[type[AgentConfig]] = NaiveDQNConfig
    default_network: ClassVar[Mapping[str, Any]] = {"name": "mlp", "hidden_sizes": [64, 32]}

    name: ClassVar[str] = "naive_dqn"

    def __init__(self, config: NaiveDQNConfig, context: AgentContext) -> None:
        super().__init__(config, context, target_network=False)

    def exploration(self) -> list[float]:
        """The linear schedule's epsilon, the same for every lane (they step in lockstep)."""
        return [self.config.epsilon_at(self.steps, self.context.total_steps)] * self.lanes

    def observe(self, t: Transition) -> Mapping[str, Any]:
        q_taken = self.q_taken(t.obs, t.action)
        with torch.no_grad():
            next_q_max = self.q(t.next_obs.flatten(2)).max(dim=-1).values
            target = td_targets(t.reward, next_q_max, t.terminated, self.config.gamma)
        loss = lane_td_loss(q_taken, target, self.config.loss)
        self.gradient_step(loss)
        self.count_steps(t)
        return self.metrics(loss)
