"""The Q-agent base of the DQN family: networks stacked over the lanes, fused Adam,
epsilon-greedy acting, target syncs, per-lane gradient steps, and saving all of it.

Every built-in DQN is a :class:`rlbench.LaneAgent`: it trains several seeds (lanes) as one
batched computation, and a single run is one lane. So every tensor here carries the lane
dimension first (``[lanes, ...]``), and every operation keeps the lanes apart: lane ``k``
computes exactly what a one-lane agent of seed ``k`` does (see :mod:`rlbench.lanes`).
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import gymnasium as gym
import torch

from rlbench import AgentContext, LaneAgent, Transition
from rlbench.lanes import lane_slice, stack_networks
from rlbench_dqn.config import QAgentConfig
from rlbench_dqn.exploration import lane_epsilon_greedy
from rlbench_dqn.fastpath import adam
from rlbench_dqn.spaces import discrete_actions, flat_size

QConfigT = TypeVar("QConfigT", bound=QAgentConfig)


class QAgent(LaneAgent[QConfigT]):
    """What every agent of the family shares: an online Q-network (and, with
    ``target_network=True``, a frozen copy for targets), stacked over the lanes; fused Adam;
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
        self.q_target = copy.deepcopy(self.q).requires_grad_(False) if target_network else None
        self.optimizer = adam(self.q.parameters(), config.learning_rate, lanes=context.lanes)
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.steps = 0
        # (target tensor, online tensor) for every parameter and buffer: a sync is a copy
        # of each, as load_state_dict does, without its per-call key matching.
        self.sync_pairs = (
            list(
                zip(self.q_target.state_dict().values(), self.q.state_dict().values(), strict=True)
            )
            if self.q_target is not None
            else []
        )

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
        """Copy the online network's parameters and buffers into the target network."""
        with torch.no_grad():
            for target, online in self.sync_pairs:
                target.copy_(online)

    def gradient_step(self, loss: torch.Tensor, max_grad_norm: float | None = None) -> None:
        """One optimizer step of every lane on its own loss (``loss`` is ``[lanes]``): what
        ``zero_grad(set_to_none=True)``, ``backward``, ``clip_grad_norm_`` and ``step`` do,
        per lane, with less Python around them."""
        for p in self.params:
            p.grad = None
        loss.backward(torch.ones_like(loss))  # the gradient of loss.sum(), one node fewer
        if max_grad_norm is not None:
            lane_clip_grad_norm(self.params, max_grad_norm)
        self.optimizer.fused_step()

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
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])
        if self.q_target is not None:
            self.q_target.load_state_dict(state["target_network"])


def lane_clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> None:
    """``torch.nn.utils.clip_grad_norm_`` of each lane's own parameters: parameters are
    stacked ``[lanes, ...]``, and lane ``k``'s gradients are scaled by ``max_norm / (norm_k +
    1e-6)`` (at most 1), ``norm_k`` the global norm of lane ``k``'s gradients alone (the
    norm of its per-tensor norms, as torch computes it). When no lane needs clipping the
    gradients are left alone (multiplying by 1 would not change them)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    lanes = grads[0].shape[0]
    with torch.no_grad():
        norms = [torch.linalg.vector_norm(g.reshape(lanes, -1), dim=1) for g in grads]
        total = torch.linalg.vector_norm(torch.stack(norms, 1), dim=1)
        coef = (total + 1e-6).reciprocal_().mul_(float(max_norm)).clamp_(max=1.0)
        if coef.device.type == "cpu" and bool((coef == 1.0).all()):
            return
        for g in grads:
            g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))
