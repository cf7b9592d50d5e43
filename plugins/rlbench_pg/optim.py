"""Optimizers and gradient clipping over parameters stacked ``[lanes, ...]``, exact per lane.

A lane's update must not depend on the group it trains in. Torch's fused Adam over a stacked
parameter runs one vectorised loop over all lanes' elements, so where a lane's block is not a
multiple of the vector width some of its elements fall into the kernel's scalar tail in one
group and not in another, and round differently. Here every stacked tensor is cut into its
lanes (``unbind(0)``: contiguous views of the same memory), and the optimizer kernels get one
tensor per lane and parameter: each lane's slice is processed exactly as a one-lane run
processes its whole tensor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch.optim.adam import adam
from torch.optim.rmsprop import rmsprop

OptimizerName = Literal["adam", "rmsprop"]


def lane_views(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Every lane of every tensor, lane-major within a tensor: ``[t0[0], t0[1], ..., t1[0],
    ...]`` (views sharing the tensors' memory)."""
    return [lane for t in tensors for lane in t.detach().unbind(0)]


class LaneOptimizer:
    """Adam (as ``torch.optim.Adam``) or RMSprop (as ``torch.optim.RMSprop`` without momentum,
    the way Stable-Baselines3's A2C uses it) on stacked parameters, each lane on its own.

    The learning rate is given at every :meth:`step`, so that a schedule needs no optimizer
    bookkeeping. Both call torch's own functional optimizers (``torch.optim.adam.adam`` with
    the fused kernel, ``torch.optim.rmsprop.rmsprop`` with its foreach kernels), on per-lane
    views of the parameters, gradients and moments.
    """

    def __init__(
        self,
        params: Sequence[torch.nn.Parameter],
        kind: OptimizerName,
        *,
        eps: float,
        betas: tuple[float, float] = (0.9, 0.999),
        alpha: float = 0.99,
    ) -> None:
        self.params = list(params)
        self.kind: OptimizerName = kind
        self.eps, self.betas, self.alpha = eps, betas, alpha
        self.lanes = self.params[0].shape[0]
        # Adam: first and second moments; RMSprop: the running average of squared gradients.
        names = ("exp_avg", "exp_avg_sq") if kind == "adam" else ("square_avg",)
        self.moments = {name: [torch.zeros_like(p.detach()) for p in self.params] for name in names}
        self.steps = 0
        # One step counter per view: the kernels increment every tensor of the list.
        self._step_tensors = [
            torch.zeros((), dtype=torch.float32, device=p.device)
            for p in self.params
            for _ in range(self.lanes)
        ]
        self._param_views = lane_views(self.params)
        self._moment_views = {name: lane_views(ts) for name, ts in self.moments.items()}

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lr: float) -> None:
        params = [p for p in self.params if p.grad is not None]
        if len(params) != len(self.params):
            raise RuntimeError("LaneOptimizer.step: every parameter needs a gradient")
        grads = lane_views([p.grad for p in self.params])  # type: ignore[misc]
        self.steps += 1
        if self.kind == "adam":
            beta1, beta2 = self.betas
            adam(
                self._param_views,
                grads,
                self._moment_views["exp_avg"],
                self._moment_views["exp_avg_sq"],
                [],
                self._step_tensors,
                fused=True,
                amsgrad=False,
                beta1=beta1,
                beta2=beta2,
                lr=lr,
                weight_decay=0.0,
                eps=self.eps,
                maximize=False,
            )
        else:
            rmsprop(
                self._param_views,
                grads,
                self._moment_views["square_avg"],
                [],
                [],
                self._step_tensors,
                foreach=True,
                lr=lr,
                alpha=self.alpha,
                eps=self.eps,
                weight_decay=0.0,
                momentum=0.0,
                centered=False,
            )

    def state_dict(self) -> dict[str, Any]:
        """Every lane's moments (``[lanes, ...]`` tensors, one list per moment, in parameter
        order) and the number of steps taken."""
        return {"steps": self.steps, **{k: list(v) for k, v in self.moments.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        with torch.no_grad():
            for name, tensors in self.moments.items():
                for target, saved in zip(tensors, state[name], strict=True):
                    target.copy_(saved)
            for step in self._step_tensors:
                step.fill_(float(state["steps"]))
        self.steps = int(state["steps"])


def lane_clip_grad_norm(params: Sequence[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` of each lane's own parameters: lane ``k``'s
    gradients are scaled by ``min(1, max_norm / (norm_k + 1e-6))``, ``norm_k`` the global
    norm of lane ``k``'s gradients alone (the norm of its per-tensor norms, as torch
    computes it). Returns the norms before clipping, ``[lanes]``."""
    grads = [p.grad for p in params if p.grad is not None]
    lanes = grads[0].shape[0]
    with torch.no_grad():
        norms = [torch.linalg.vector_norm(g.reshape(lanes, -1), dim=1) for g in grads]
        total = torch.linalg.vector_norm(torch.stack(norms, 1), dim=1)
        coef = (float(max_norm) / (total + 1e-6)).clamp_(max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))
    return total
