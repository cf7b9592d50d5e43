"""The hyperparameters the Q agents share, each declared once with its constraint.

An agent's config (in the agent's own module) subclasses :class:`QAgentConfig`, or
:class:`LinearEpsilonConfig` when its exploration rate follows the linear schedule. Where
the agent's default differs, or its docstring cites its blog post, it redeclares the field
with the type below (which carries the constraint) and its own default and docstring.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from rlbench import AgentConfig
from rlbench_dqn.exploration import linear_schedule
from rlbench_dqn.td import LossName

LearningRate = Annotated[float, Field(gt=0)]
Discount = Annotated[float, Field(ge=0, le=1)]
#: An exploration rate, or a fraction of the training budget.
Fraction = Annotated[float, Field(ge=0, le=1)]


class QAgentConfig(AgentConfig):
    """What :class:`~rlbench_dqn.qagent.QAgent` and every TD update read."""

    learning_rate: LearningRate = 1e-3
    """Adam learning rate."""
    gamma: Discount = 0.99
    """Discount factor."""
    loss: LossName = "mse"
    """TD loss: "mse" or "huber" (smooth L1)."""


class LinearEpsilonConfig(QAgentConfig):
    """A Q agent whose exploration rate decays linearly over the start of the budget."""

    epsilon_start: Fraction = 1.0
    """Exploration rate at step 0."""
    epsilon_end: Fraction = 0.05
    """Exploration rate after the decay."""
    exploration_fraction: Fraction = 0.1
    """Fraction of the training budget over which epsilon decays linearly."""

    def epsilon_at(self, step: int, total_steps: int) -> float:
        """The exploration rate after ``step`` of ``total_steps`` environment steps."""
        decay_steps = int(self.exploration_fraction * total_steps)
        return linear_schedule(step, self.epsilon_start, self.epsilon_end, decay_steps)
