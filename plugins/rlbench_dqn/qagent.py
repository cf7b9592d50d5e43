"""The Q-agent base of the DQN family: networks stacked over the lanes, Adam,
epsilon-greedy acting, target syncs, per-lane gradient steps, and saving all of it.

Every built-in DQN is a :class:`rlbench.LaneAgent` built on the public lane toolkit
(:mod:`rlbench.lanes`): it trains several seeds (lanes) as one batched computation, and a
single run is one lane. So every tensor here carries the lane dimension first (``[lanes,
...]``), and every operation keeps the lanes apart: lane ``k`` computes exactly what a
one-lane agent of seed ``k`` does.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import gymnasium as gym
import torch

from rlbench import AgentContext, LaneAgent, Transition
from rlbench.lanes import (
    LaneOptimizer,
    LaneParameters,
    flat_size,
    hard_update,
    lane_clip_grad_norm,
    lane_slice,
    stack_networks,
)
from rlbench_dqn.config import QAgentConfig
from rlbench_dqn.exploration import lane_epsilon_greedy
from rlbench_dqn.spaces import discrete_actions

QConfigT = TypeVar("QConfigT", bound=QAgentConfig)


class QAgent(LaneAgent[QConfigT]):
    """What every agent of the family shares: an online Q-network (and, with
    ``target_network=True``, a frozen copy for targets), stacked over the lanes; Adam
    (:class:`rlbench.lanes.LaneOptimizer`, torch's defaults: betas 0.9 and 0.999, eps 1e-8);
    epsilon-greedy acting; and saving/loading all of it. Subclasses define their config (a
    :class:`~rlbench_dqn.config.QAgentConfig`), their exploration schedule
    (:meth:`exploration`) and :meth:`observe`."""

    name: ClassVar[str] = "dqn"

    @classmethod
    def check_spaces(cls, observation_space: gym.Space, action_space: gym.Space) -> str | None:
        """A Q-network has one output per action: the action space must be ``Discrete``."""
        if not isinstance(action_space, gym.spaces.Discrete):
            return f"it needs a Discrete action space, got {action_space}"
        return None

    def __init__(self, config: QConfigT, context: AgentContext, *, target_network: bool) -> None:
        super().__init__(config, context)
        self.num_actions = discrete_actions(self.name, context.action_space)
        assert context.make_lane_networks is not None
        networks = context.make_lane_networks(
            flat_size(context.observation_space), self.num_actions
        )
        self.q = stack_networks(networks)
        # The online parameters in one [lanes, size] buffer (rlbench.lanes.optim); the target
        # network's in one of the same layout, so that a sync is one copy.
        self.q_params = LaneParameters(self.q.parameters())
        self.q_target = copy.deepcopy(self.q).requires_grad_(False) if target_network else None
        self.target_params = (
            LaneParameters(self.q_target.parameters(), grad=False)
            if self.q_target is not None
            else None
        )
        self.optimizer = LaneOptimizer(self.q_params, "adam", eps=1e-8)
        self.steps = 0

    @property
    def lanes(self) -> int:
        return self.context.lanes

    @abstractmethod
    def exploration(self) -> Sequence[float]:
        """Each lane's exploration rate for :meth:`act` now."""

    def act(self, obs: torch.Tensor, *, greedy: bool = False) -> torch.Tensor:
        with torch.no_grad():
            q_values = self.q(obs.flatten(2))
        epsilon = 0.0 if greedy else self.exploration()
        return lane_epsilon_greedy(q_values, epsilon, self.context.lane_rngs)

    def q_taken(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``Q(s, a)`` of the online network: ``obs`` ``[lanes, n, *obs_shape]``, ``action``
        ``[lanes, n]``; returns ``[lanes, n]``."""
        q_values = self.q(obs.flatten(2))  # [lanes, n, actions]
        return q_values.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)

    def count_steps(self, t: Transition, sync_every: int | None = None) -> None:
        """Advance the step counter by this transition's environments and, when the count
        crosses a multiple of ``sync_every``, copy the online weights into the target."""
        before = self.steps
        self.steps += t.obs.shape[1]
        if sync_every is not None and self.steps // sync_every > before // sync_every:
            self.sync_target()

    def sync_target(self) -> None:
        """Copy the online network's parameters into the target network."""
        assert self.target_params is not None
        hard_update(self.target_params, self.q_params)

    def gradient_step(self, loss: torch.Tensor, max_grad_norm: float | None = None) -> None:
        """One optimizer step of every lane on its own loss (``loss`` is ``[lanes]``, built
        with autograd): what ``zero_grad``, ``backward``, ``clip_grad_norm_`` and ``step`` do,
        per lane."""
        self.q_params.zero_grad()
        loss.backward(torch.ones_like(loss))  # the gradient of loss.sum(), one node fewer
        self.apply_gradients(max_grad_norm)

    def apply_gradients(self, max_grad_norm: float | None = None) -> None:
        """Clip each lane's gradients (in ``q_params.grad``) to ``max_grad_norm`` and take
        one Adam step of every lane."""
        if max_grad_norm is not None:
            lane_clip_grad_norm(self.q_params.grad, max_grad_norm)
        self.optimizer.step(self.config.learning_rate)

    def metrics(self, loss: torch.Tensor) -> dict[str, list[float]]:
        """Each lane's loss and exploration rate, as :meth:`observe` returns them."""
        return {"loss": loss.detach().tolist(), "epsilon": list(self.exploration())}

    def state_dict(self) -> dict[str, Any]:
        """Every lane's state, stacked (parameters and optimizer moments ``[lanes, ...]``)."""
        state: dict[str, Any] = {
            "q_network": self.q.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "steps": self.steps,
            "epsilon": torch.tensor(self.exploration(), dtype=torch.float64),
        }
        if self.q_target is not None:
            state["target_network"] = self.q_target.state_dict()
        return state

    def lane_state_dict(self, lane: int) -> dict[str, Any]:
        """Lane ``lane``'s state as a one-lane agent's :meth:`state_dict` (every stacked
        tensor cut to ``[1, ...]``, copied so that saving it does not save the others)."""
        return lane_slice(self.state_dict(), lane)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.q.load_state_dict(state["q_network"])
        self.optimizer.load_state_dict(_lane_optimizer_state(state["optimizer"]))
        self.steps = int(state["steps"])
        if self.q_target is not None:
            self.q_target.load_state_dict(state["target_network"])


def _lane_optimizer_state(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """A :class:`~rlbench.lanes.LaneOptimizer` state; a ``torch.optim.Adam`` state (what
    rlbench 0.1's DQNs saved, one entry per parameter in order) is converted to it."""
    if "state" not in state:
        return state
    entries = [state["state"][i] for i in sorted(state["state"])]
    return {
        "steps": int(entries[0]["step"]) if entries else 0,
        "exp_avg": [e["exp_avg"] for e in entries],
        "exp_avg_sq": [e["exp_avg_sq"] for e in entries],
    }
