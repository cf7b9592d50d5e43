"""Pieces the DQN family shares: the Q-agent base, a tensor replay buffer, exploration, TD
targets, fused Adam.

Every built-in DQN is a :class:`rlbench.LaneAgent`: it trains several seeds (lanes) as one
batched computation, and a single run is one lane. So every tensor here carries the lane
dimension first (``[lanes, ...]``), and every operation keeps the lanes apart: lane ``k``
computes exactly what a one-lane agent of seed ``k`` does (see :mod:`rlbench.lanes`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
from torch.nn import functional as F
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

from rlbench import AgentConfig, AgentContext, LaneAgent, Transition
from rlbench.lanes import stack_networks

LossName = Literal["mse", "huber"]


def discrete_actions(agent_name: str, space: gym.Space) -> int:
    """Number of actions, or a clear error for a continuous action space."""
    if not isinstance(space, gym.spaces.Discrete):
        raise ValueError(
            f"{agent_name} needs a discrete action space (gymnasium.spaces.Discrete), "
            f"got {space}; choose an environment with discrete actions"
        )
    return int(space.n)


def flat_size(space: gym.Space) -> int:
    return int(math.prod(space.shape or (1,)))


def linear_schedule(step: int, start: float, end: float, duration: int) -> float:
    """``start`` at step 0, moving linearly to ``end`` at ``duration`` steps, then ``end``."""
    if step >= duration:
        return end
    return start + (end - start) * step / duration


def td_targets(
    reward: torch.Tensor, next_q_max: torch.Tensor, terminated: torch.Tensor, gamma: float
) -> torch.Tensor:
    """``r + gamma * max_a' Q(s', a')``, without the bootstrap term at a terminal state.

    Truncation (a time limit) is not terminal: its target still bootstraps.
    """
    return reward + gamma * (~terminated).to(reward.dtype) * next_q_max


class FusedAdam(torch.optim.Adam):
    """``torch.optim.Adam(fused=True)``: one kernel for all parameters instead of a Python
    loop over them (about 25% less time per gradient step for these small networks than the
    default Adam, same update rule).

    :meth:`fused_step` is :meth:`step` without the per-call Python machinery around the
    kernel (step hooks, profiler labels, grouping tensors by device, argument checks), which
    for a small network costs about as much as the kernel itself; it calls the same kernel on
    the same state, so the result is bit for bit the same (tested). It falls back to
    :meth:`step` whenever the fast path does not apply (the first step, which creates the
    state; hooks; several parameter groups or devices; options the fast path does not pass).
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float) -> None:
        super().__init__(params, lr=lr, fused=True)
        group_params = self.param_groups[0]["params"]
        self._one_device = len({(p.device, p.dtype) for p in group_params}) == 1

    def _fast_path_applies(self) -> bool:
        if len(self.param_groups) != 1 or not self._one_device:
            return False
        group = self.param_groups[0]
        return (
            group["fused"]
            and not group["amsgrad"]
            and not group["differentiable"]
            and not group.get("decoupled_weight_decay", False)
            and isinstance(group["lr"], float)
            and not self._optimizer_step_pre_hooks
            and not self._optimizer_step_post_hooks
            and not _global_optimizer_pre_hooks
            and not _global_optimizer_post_hooks
        )

    def fused_step(self) -> None:
        if not self._fast_path_applies():
            self.step()
            return
        group = self.param_groups[0]
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state.get(p)
            if not state:  # first step: step() creates the state
                self.step()
                return
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        if not params:
            return
        beta1, beta2 = group["betas"]
        with torch.no_grad():
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                [],
                steps,
                amsgrad=False,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=group["maximize"],
                grad_scale=None,
                found_inf=None,
            )


def adam(params: Iterable[torch.nn.Parameter], lr: float) -> FusedAdam:
    """Adam with the fused kernel (see :class:`FusedAdam`)."""
    return FusedAdam(params, lr)


def lane_epsilon_greedy(
    q_values: torch.Tensor,
    epsilon: float | Sequence[float],
    rngs: Sequence[np.random.Generator],
) -> torch.Tensor:
    """Greedy actions of every lane (``q_values`` is ``[lanes, n, actions]``), each replaced
    by a uniformly random one with probability epsilon (one for all lanes, or one per lane).

    Lane ``k`` draws from ``rngs[k]`` only, and only when its epsilon is above 0, so a greedy
    agent's random stream is untouched (and ``epsilon = 0`` reproduces a post's greedy
    behaviour exactly). With one environment a lane draws two scalars (``random()``, then
    ``integers(actions)`` if it explores), several microseconds cheaper than arrays; with
    ``n`` it draws ``random(n)``, then ``integers(actions, size=n)`` if any explores.
    """
    actions = q_values.argmax(dim=-1)
    lanes, n, num_actions = q_values.shape
    epsilons = [float(epsilon)] * lanes if isinstance(epsilon, (int, float)) else list(epsilon)
    if max(epsilons) <= 0.0:
        return actions
    cpu = actions.device.type == "cpu"
    # On the CPU, written in place through numpy (the tensor shares this memory): cheaper
    # than torch.where on converted arrays.
    chosen = actions.numpy() if cpu else np.zeros((lanes, n), dtype=np.int64)
    explore = None if cpu else np.zeros((lanes, n), dtype=bool)
    for k, (rng, eps) in enumerate(zip(rngs, epsilons, strict=True)):
        if eps <= 0.0:
            continue
        if n == 1:
            if rng.random() < eps:
                chosen[k, 0] = rng.integers(num_actions)
                if explore is not None:
                    explore[k, 0] = True
            continue
        lane_explore = rng.random(n) < eps
        if lane_explore.any():
            np.copyto(chosen[k], rng.integers(num_actions, size=n), where=lane_explore)
            if explore is not None:
                explore[k] = lane_explore
    if cpu:
        return actions
    return torch.where(
        torch.as_tensor(explore, device=actions.device),
        torch.as_tensor(chosen, device=actions.device),
        actions,
    )


def lane_td_loss(q_taken: torch.Tensor, target: torch.Tensor, loss: LossName) -> torch.Tensor:
    """Each lane's mean TD loss over its minibatch: ``[lanes, batch]`` in, ``[lanes]`` out.
    Summing the result and calling ``backward`` gives every lane the gradient of its own
    loss (the sum's gradient is exactly 1 for each)."""
    if loss == "mse":
        return F.mse_loss(q_taken, target, reduction="none").mean(dim=1)
    return F.smooth_l1_loss(q_taken, target, reduction="none").mean(dim=1)


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


class LaneReplayBuffer:
    """A circular buffer of transitions for every lane, preallocated as tensors on the
    agent's device: fields ``[lanes, capacity, ...]``. Lanes step in lockstep, so they all
    hold the same number of transitions; lane ``k`` is sampled with its own generator
    ``rngs[k]`` (the indices a one-lane buffer of that seed draws).

    Adding a step is one slice assignment per field (through numpy views of the same memory
    on the CPU, where that is several times cheaper than a tensor assignment); sampling is
    one index tensor."""

    FIELDS = ("obs", "next_obs", "action", "reward", "terminated")

    def __init__(
        self,
        capacity: int,
        obs_size: int,
        device: torch.device,
        rngs: tuple[np.random.Generator, ...],
    ) -> None:
        lanes = len(rngs)
        self.capacity = capacity
        self.rngs = rngs
        self.obs = torch.zeros((lanes, capacity, obs_size), dtype=torch.float32, device=device)
        self.next_obs = torch.zeros_like(self.obs)
        self.action = torch.zeros((lanes, capacity), dtype=torch.long, device=device)
        self.reward = torch.zeros((lanes, capacity), dtype=torch.float32, device=device)
        self.terminated = torch.zeros((lanes, capacity), dtype=torch.bool, device=device)
        self.lane_index = torch.arange(lanes, device=device).unsqueeze(1)
        self._np = (
            tuple(getattr(self, name).numpy() for name in self.FIELDS)
            if self.obs.device.type == "cpu"
            else None
        )
        self.position = 0
        self.size = 0

    @classmethod
    def for_agent(cls, capacity: int, context: AgentContext) -> LaneReplayBuffer:
        """A buffer of ``capacity`` transitions per lane for the agent of ``context``: its
        flattened observations, on its device, sampled with its lanes' generators."""
        obs_size = flat_size(context.observation_space)
        return cls(capacity, obs_size, context.device, context.lane_rngs)

    def __len__(self) -> int:
        return self.size

    def add(self, t: Transition) -> None:
        """Store one step of every lane: ``t``'s fields are ``[lanes, n, ...]``."""
        n = t.obs.shape[1]
        p = self.position
        where: slice | torch.Tensor = (
            slice(p, p + n) if p + n <= self.capacity else (torch.arange(n) + p) % self.capacity
        )
        values = (
            t.obs.flatten(2),
            t.next_obs.flatten(2),
            t.action.long(),
            t.reward.float(),
            t.terminated.bool(),
        )
        if self._np is not None and all(v.device.type == "cpu" for v in values):
            np_where = where if isinstance(where, slice) else where.numpy()
            for array, value in zip(self._np, values, strict=True):
                array[:, np_where] = value.detach().numpy()
        else:
            for name, value in zip(self.FIELDS, values, strict=True):
                getattr(self, name)[:, where] = value
        self.position = (p + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample_indices(self, count: int, *, replace: bool = True) -> torch.Tensor:
        """``[lanes, count]`` indices, drawn uniformly (with replacement unless
        ``replace=False``, as Python's ``random.sample`` draws); row ``k`` from ``rngs[k]``.

        One call for ``j * batch`` indices draws exactly what ``j`` calls for ``batch`` do
        (numpy's bounded integers are drawn element by element), so a training phase can draw
        all its minibatches at once."""
        if replace:
            rows = [rng.integers(self.size, size=count) for rng in self.rngs]
        else:
            rows = [rng.choice(self.size, size=count, replace=False) for rng in self.rngs]
        return torch.as_tensor(np.stack(rows)).to(self.obs.device)

    def sample(self, count: int, *, replace: bool = True) -> tuple[torch.Tensor, ...]:
        """:meth:`gather` of :meth:`sample_indices`."""
        return self.gather(self.sample_indices(count, replace=replace))

    def gather(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(obs, action, reward, next_obs, terminated)`` at ``idx`` (``[lanes, count]``),
        each ``[lanes, count, ...]``."""
        lane = self.lane_index
        return (
            self.obs[lane, idx],
            self.action[lane, idx],
            self.reward[lane, idx],
            self.next_obs[lane, idx],
            self.terminated[lane, idx],
        )


class QAgent(LaneAgent):
    """What every agent of the family shares: an online Q-network (and, with
    ``target_network=True``, a frozen copy for targets), stacked over the lanes; fused Adam;
    epsilon-greedy acting; and saving/loading all of it. Subclasses define their config and
    :meth:`observe`.

    :attr:`epsilon` is the linear schedule from ``epsilon_start`` to ``epsilon_end`` over
    ``exploration_fraction`` of the budget; an agent with another schedule overrides
    :meth:`exploration` (see ``replay_dqn``, whose epsilon decays per episode, per lane)."""

    name: ClassVar[str] = "dqn"

    def __init__(self, config: AgentConfig, context: AgentContext, *, target_network: bool) -> None:
        super().__init__(config, context)
        self.num_actions = discrete_actions(self.name, context.action_space)
        assert context.make_lane_networks is not None
        networks = context.make_lane_networks(
            flat_size(context.observation_space), self.num_actions
        )
        self.q = stack_networks(networks)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False) if target_network else None
        self.optimizer = adam(self.q.parameters(), config.learning_rate)
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

    @property
    def epsilon(self) -> float:
        c = self.config
        decay_steps = int(c.exploration_fraction * self.context.total_steps)
        return linear_schedule(self.steps, c.epsilon_start, c.epsilon_end, decay_steps)

    def exploration(self) -> Sequence[float]:
        """Each lane's exploration rate for :meth:`act` (the same schedule for all here)."""
        return [self.epsilon] * self.lanes

    def act(self, obs: torch.Tensor, *, greedy: bool = False) -> torch.Tensor:
        with torch.no_grad():
            q_values = self.q(obs.flatten(2))
        epsilon = 0.0 if greedy else self.exploration()
        return lane_epsilon_greedy(q_values, epsilon, self.context.lane_rngs)

    def q_taken(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``Q(s, a)`` of the online network: ``obs`` ``[lanes, n, ...]``, ``action``
        ``[lanes, n]``; returns ``[lanes, n]``."""
        q_values = self.q(obs.flatten(2))
        return q_values.gather(2, action.long().unsqueeze(2)).squeeze(2)

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
        return _lane_slice(self.state_dict(), lane)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.q.load_state_dict(state["q_network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])
        if self.q_target is not None:
            self.q_target.load_state_dict(state["target_network"])


def _lane_slice(value: Any, lane: int) -> Any:
    if isinstance(value, torch.Tensor):
        return value[lane : lane + 1].clone() if value.dim() > 0 else value.clone()
    if isinstance(value, dict):
        return {k: _lane_slice(v, lane) for k, v in value.items()}
    if isinstance(value, list):
        return [_lane_slice(v, lane) for v in value]
    return value
