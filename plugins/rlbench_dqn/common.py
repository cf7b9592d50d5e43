"""Pieces the DQN family shares: a tensor replay buffer, exploration, TD targets."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
from torch.nn import functional as F
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

from rlbench import Agent, AgentConfig, AgentContext, Transition

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


def epsilon_greedy(
    q_values: torch.Tensor, epsilon: float, rng: np.random.Generator
) -> torch.Tensor:
    """Greedy actions, each replaced by a uniformly random one with probability epsilon.

    Draws from ``rng`` only when ``epsilon > 0``, so a pure-greedy agent's random stream is
    untouched (and a run with ``epsilon = 0`` reproduces a post's greedy behaviour exactly).
    """
    actions = q_values.argmax(dim=-1)
    if epsilon <= 0.0:
        return actions
    n, num_actions = q_values.shape
    cpu = actions.device.type == "cpu"
    if n == 1:
        # Scalar draws: the same numbers (and the same stream) as the array draws below,
        # several microseconds cheaper; one environment acts this way every step.
        if rng.random() < epsilon:
            random_action = int(rng.integers(num_actions))
            if cpu:
                actions.numpy()[0] = random_action
            else:
                actions = torch.full_like(actions, random_action)
        return actions
    explore = rng.random(n) < epsilon
    if explore.any():
        random_actions = rng.integers(num_actions, size=n)
        if cpu:
            # In place through numpy: cheaper than torch.where on converted arrays.
            np.copyto(actions.numpy(), random_actions, where=explore)
        else:
            actions = torch.where(
                torch.as_tensor(explore, device=actions.device),
                torch.as_tensor(random_actions, device=actions.device),
                actions,
            )
    return actions


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


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> None:
    """``torch.nn.utils.clip_grad_norm_(params, max_norm)``, bit for bit (tested), in about
    half the time for a small network: the same norms, without torch's per-call grouping of
    the tensors by device and type. On the CPU the clip coefficient is computed from the
    total norm in float32 scalars (the operations torch applies to its one-element tensor,
    so the same value), and the gradients are left alone when it is exactly 1 (multiplying
    by 1 would not change them). Falls back to torch's function unless the gradients are
    float32 on one CPU or CUDA device."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    first = grads[0]
    if (
        first.device.type not in ("cpu", "cuda")
        or first.dtype != torch.float32
        or any(g.device != first.device or g.dtype != first.dtype for g in grads)
    ):
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return
    with torch.no_grad():
        total_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
        if first.device.type == "cpu":
            # torch: clamp(max_norm / (total_norm + 1e-6), max=1), where Tensor.__rdiv__
            # multiplies by the reciprocal; each step rounds to float32.
            one = np.float32(1.0)
            coef = min(
                one / (np.float32(total_norm.item()) + np.float32(1e-6)) * np.float32(max_norm),
                one,
            )
            if coef != one:  # (a NaN coefficient multiplies too, as in torch)
                torch._foreach_mul_(grads, float(coef))
        else:  # no host synchronisation on a GPU
            coef_t = (total_norm + 1e-6).reciprocal_().mul_(float(max_norm)).clamp_(max=1.0)
            torch._foreach_mul_(grads, coef_t)


def td_loss(q_taken: torch.Tensor, target: torch.Tensor, loss: LossName) -> torch.Tensor:
    if loss == "mse":
        return F.mse_loss(q_taken, target)
    return F.smooth_l1_loss(q_taken, target)


class ReplayBuffer:
    """A circular buffer of transitions, preallocated as tensors on the agent's device.

    Adding a batch of ``num_envs`` transitions is one slice assignment per field (through
    numpy views of the same memory on the CPU, where that is several times cheaper than a
    tensor assignment); sampling is one index tensor. Indices come from the agent's numpy
    generator so runs are reproducible.
    """

    FIELDS = ("obs", "next_obs", "action", "reward", "terminated")

    def __init__(
        self,
        capacity: int,
        obs_size: int,
        device: torch.device,
        rng: np.random.Generator,
    ) -> None:
        self.capacity = capacity
        self.rng = rng
        self.obs = torch.zeros((capacity, obs_size), dtype=torch.float32, device=device)
        self.next_obs = torch.zeros_like(self.obs)
        self.action = torch.zeros(capacity, dtype=torch.long, device=device)
        self.reward = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.terminated = torch.zeros(capacity, dtype=torch.bool, device=device)
        # numpy views sharing the tensors' memory (CPU only): the cheap path for add().
        self._np = (
            tuple(getattr(self, name).numpy() for name in self.FIELDS)
            if self.obs.device.type == "cpu"
            else None
        )
        self.position = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, t: Transition) -> None:
        n = t.obs.shape[0]
        p = self.position
        where: slice | torch.Tensor = (
            slice(p, p + n) if p + n <= self.capacity else (torch.arange(n) + p) % self.capacity
        )
        values = (
            t.obs.flatten(1),
            t.next_obs.flatten(1),
            t.action.long(),
            t.reward.float(),
            t.terminated.bool(),
        )
        if self._np is not None and all(v.device.type == "cpu" for v in values):
            np_where = where if isinstance(where, slice) else where.numpy()
            for array, value in zip(self._np, values, strict=True):
                array[np_where] = value.detach().numpy()
        else:
            for name, value in zip(self.FIELDS, values, strict=True):
                getattr(self, name)[where] = value
        self.position = (p + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample_indices(self, count: int, *, replace: bool = True) -> torch.Tensor:
        """``count`` indices drawn uniformly (with replacement unless ``replace=False``).

        One call for ``k * batch`` indices draws exactly what ``k`` calls for ``batch`` do
        (numpy's bounded integers are drawn element by element), so a training phase can draw
        all its minibatches at once."""
        if replace:
            idx = torch.as_tensor(self.rng.integers(self.size, size=count))
        else:
            idx = torch.as_tensor(self.rng.choice(self.size, size=count, replace=False))
        return idx.to(self.obs.device)

    def gather(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(obs, action, reward, next_obs, terminated)`` at ``idx``."""
        return (
            self.obs[idx],
            self.action[idx],
            self.reward[idx],
            self.next_obs[idx],
            self.terminated[idx],
        )

    def sample(self, batch_size: int, *, replace: bool = True) -> tuple[torch.Tensor, ...]:
        """``(obs, action, reward, next_obs, terminated)``, drawn uniformly (with replacement
        unless ``replace=False``, as Python's ``random.sample`` does)."""
        return self.gather(self.sample_indices(batch_size, replace=replace))


class QAgent(Agent):
    """What every agent of the family shares: an online Q-network (and, with
    ``target_network=True``, a frozen copy for targets), fused Adam, epsilon-greedy acting,
    and saving/loading all of it. Subclasses define their config and :meth:`observe`.

    ``epsilon`` is the linear schedule from ``epsilon_start`` to ``epsilon_end`` over
    ``exploration_fraction`` of the budget; an agent with another schedule assigns
    ``self.epsilon`` itself (see ``replay_dqn``)."""

    name: ClassVar[str] = "dqn"

    def __init__(self, config: AgentConfig, context: AgentContext, *, target_network: bool) -> None:
        super().__init__(config, context)
        self.num_actions = discrete_actions(self.name, context.action_space)
        self.q = context.make_network(flat_size(context.observation_space), self.num_actions)
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
    def epsilon(self) -> float:
        c = self.config
        decay_steps = int(c.exploration_fraction * self.context.total_steps)
        return linear_schedule(self.steps, c.epsilon_start, c.epsilon_end, decay_steps)

    def act(self, obs: torch.Tensor, *, greedy: bool = False) -> torch.Tensor:
        with torch.no_grad():
            q_values = self.q(obs.flatten(1))
        return epsilon_greedy(q_values, 0.0 if greedy else self.epsilon, self.context.rng)

    def count_steps(self, t: Transition, sync_every: int | None = None) -> None:
        """Advance the step counter by this transition's environments and, when the count
        crosses a multiple of ``sync_every``, copy the online weights into the target."""
        before = self.steps
        self.steps += t.obs.shape[0]
        if sync_every is not None and self.steps // sync_every > before // sync_every:
            self.sync_target()

    def sync_target(self) -> None:
        """Copy the online network's parameters and buffers into the target network."""
        with torch.no_grad():
            for target, online in self.sync_pairs:
                target.copy_(online)

    def gradient_step(self, loss: torch.Tensor, max_grad_norm: float | None = None) -> None:
        """One optimizer step on ``loss``: what ``zero_grad(set_to_none=True)``, ``backward``,
        ``clip_grad_norm_`` and ``step`` do, with less Python around them."""
        for p in self.params:
            p.grad = None
        loss.backward()
        if max_grad_norm is not None:
            clip_grad_norm(self.params, max_grad_norm)
        self.optimizer.fused_step()

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "q_network": self.q.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "steps": self.steps,
            "epsilon": float(self.epsilon),
        }
        if self.q_target is not None:
            state["target_network"] = self.q_target.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.q.load_state_dict(state["q_network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])
        if self.q_target is not None:
            self.q_target.load_state_dict(state["target_network"])


# --- Lanes: the same pieces for several seeds at once (see rlbench.lanes) -------------------


def lane_epsilon_greedy(
    q_values: torch.Tensor, epsilon: float, rngs: tuple[np.random.Generator, ...]
) -> torch.Tensor:
    """:func:`epsilon_greedy` of every lane: ``q_values`` is ``[lanes, n, actions]``, lane
    ``k`` explores with ``rngs[k]`` and draws exactly what :func:`epsilon_greedy` draws for
    ``q_values[k]`` (so a lane acts as the one-lane run of its seed)."""
    actions = q_values.argmax(dim=-1)
    if epsilon <= 0.0:
        return actions
    lanes, n, num_actions = q_values.shape
    if actions.device.type == "cpu":
        chosen = actions.numpy()  # written in place: the tensor shares this memory
        for k, rng in enumerate(rngs):
            if n == 1:  # scalar draws, as epsilon_greedy makes for one environment
                if rng.random() < epsilon:
                    chosen[k, 0] = rng.integers(num_actions)
                continue
            explore = rng.random(n) < epsilon
            if explore.any():
                np.copyto(chosen[k], rng.integers(num_actions, size=n), where=explore)
        return actions
    explore = np.zeros((lanes, n), dtype=bool)
    random_actions = np.zeros((lanes, n), dtype=np.int64)
    for k, rng in enumerate(rngs):
        if n == 1:
            if rng.random() < epsilon:
                explore[k, 0], random_actions[k, 0] = True, rng.integers(num_actions)
            continue
        explore[k] = rng.random(n) < epsilon
        if explore[k].any():
            random_actions[k] = rng.integers(num_actions, size=n)
    return torch.where(
        torch.as_tensor(explore, device=actions.device),
        torch.as_tensor(random_actions, device=actions.device),
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
    """:class:`ReplayBuffer` for every lane at once: fields ``[lanes, capacity, ...]``, lane
    ``k`` sampled with its own generator ``rngs[k]`` (the indices a one-lane buffer of that
    seed draws). Lanes step in lockstep, so they all hold the same number of transitions."""

    FIELDS = ReplayBuffer.FIELDS

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

    def sample_indices(self, count: int) -> torch.Tensor:
        """``[lanes, count]`` indices, drawn uniformly with replacement; row ``k`` is what
        :meth:`ReplayBuffer.sample_indices` draws from ``rngs[k]``."""
        idx = np.stack([rng.integers(self.size, size=count) for rng in self.rngs])
        return torch.as_tensor(idx).to(self.obs.device)

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
