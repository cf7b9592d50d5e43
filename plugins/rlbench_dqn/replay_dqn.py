"""replay_dqn: DQN with experience replay and epsilon-greedy exploration with decay.

From the post "PyTorch and Reinforcement Learning: Building Intelligent Agents" (fourth seed
post).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from pydantic import Field

from rlbench import AgentConfig, AgentContext, Transition
from rlbench.lanes import LaneReplayBuffer
from rlbench_dqn.config import Discount, Fraction, LearningRate, QAgentConfig
from rlbench_dqn.qagent import QAgent
from rlbench_dqn.td import LossName, lane_td_loss, td_targets


class ReplayDQNConfig(QAgentConfig):
    """replay_dqn's hyperparameters: its epsilon decays per episode (the post's schedule),
    not linearly over the budget."""

    learning_rate: LearningRate = 1e-3
    """Adam learning rate (post: 0.001)."""
    gamma: Discount = 0.99
    """Discount factor (post: 0.99)."""
    loss: LossName = "mse"
    """TD loss: "mse" (post) or "huber" (smooth L1)."""
    buffer_size: int = Field(10_000, ge=1)
    """Replay capacity in transitions (post: deque(maxlen=10000))."""
    batch_size: int = Field(32, ge=1)
    """Minibatch size; learning starts once the buffer holds more than this (post: 32)."""
    epsilon_start: Fraction = 0.1
    """Exploration rate of the first episode (post: 0.1)."""
    epsilon_decay: float = Field(0.995, gt=0, le=1)
    """Factor applied to epsilon at the end of every training episode (post: 0.995)."""
    epsilon_min: Fraction = 0.01
    """Floor of the decayed epsilon (post: 0.01)."""


class ReplayDQN(QAgent[ReplayDQNConfig]):
    """DQN with a replay buffer: every step stores the transition and takes one gradient step
    on a minibatch sampled from the buffer; epsilon decays per episode.

    Faithful to the post: an MLP with one hidden layer of 64 units, Adam at lr 1e-3, gamma
    0.99, MSE loss, a 10,000-transition buffer sampled without replacement
    (``random.sample``) in minibatches of 32 once it holds more than 32, epsilon starting at
    0.1 and multiplied by 0.995 after each episode down to 0.01, no target network (targets
    from the online network).

    Deviations, each a bug in the post or a gap it leaves:

    * Termination vs truncation. The post uses Gym's four-tuple ``done``, treating the time
      limit as terminal. Here the target bootstraps through truncation, not termination.
    * The post shows how to fill and sample the buffer but trains on the latest transition
      only; here the sampled minibatch is what the gradient step uses, as experience replay
      means (with targets under ``no_grad``).
    """

    Config: ClassVar[type[AgentConfig]] = ReplayDQNConfig
    default_network: ClassVar[Mapping[str, Any]] = {"name": "mlp", "hidden_sizes": [64]}

    name: ClassVar[str] = "replay_dqn"

    def __init__(self, config: ReplayDQNConfig, context: AgentContext) -> None:
        super().__init__(config, context, target_network=False)
        self.buffer = LaneReplayBuffer.for_agent(config.buffer_size, context)
        # Per lane: each lane's episodes end at their own steps.
        self.epsilons = [config.epsilon_start] * context.lanes

    def exploration(self) -> list[float]:
        """Each lane's epsilon, decayed once per episode that lane has finished."""
        return self.epsilons

    def observe(self, t: Transition) -> Mapping[str, Any]:
        c = self.config
        self.buffer.add(t)
        self.count_steps(t)
        # Per-episode decay, once for every environment whose episode ended this step.
        for k, ended in enumerate(t.done.sum(dim=-1).tolist()):
            for _ in range(int(ended)):
                self.epsilons[k] = max(c.epsilon_min, self.epsilons[k] * c.epsilon_decay)
        if len(self.buffer) <= c.batch_size:
            return {"epsilon": list(self.epsilons)}

        minibatch = self.buffer.sample(c.batch_size, replace=False)
        q_taken = self.q_taken(minibatch.obs, minibatch.action)
        with torch.no_grad():
            next_q_max = self.q(minibatch.next_obs).max(dim=-1).values
            target = td_targets(minibatch.reward, next_q_max, minibatch.terminated, c.gamma)
        loss = lane_td_loss(q_taken, target, c.loss)
        self.gradient_step(loss)
        return self.metrics(loss)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.epsilons = [float(e) for e in state["epsilon"]]
