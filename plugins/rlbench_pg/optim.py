"""Optimizers and gradient clipping over parameters stacked ``[lanes, ...]``, exact per lane.

A lane's update must not depend on the group it trains in. Torch's fused Adam over a stacked
parameter runs one vectorised loop over all lanes' elements, so where a lane's block is not a
multiple of the vector width some of its elements fall into the kernel's scalar tail in one
group and not in another, and round differently. So the kernels must get each lane's
elements as tensors of their own.

Here every parameter of the agent moves into one buffer ``[lanes, size]`` (each parameter a
view of its columns, :class:`LaneParameters`): lane ``k``'s row holds all of its parameters,
contiguous, and the optimizer kernels get one tensor per lane, the row, which they process
exactly as a one-lane run processes its only row. One row per lane (not one tensor per lane
and parameter) is also what makes a step cheap: a 64-64 actor-critic has 12 parameters, and
at 16 lanes per-parameter views were 192 tensors for every kernel to walk, per step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

OptimizerName = Literal["adam", "rmsprop"]


class LaneParameters:
    """``params`` (each ``[lanes, ...]``) moved into one buffer :attr:`flat` ``[lanes, size]``:
    each parameter's data becomes a view of its columns (the same ``nn.Parameter`` objects, so
    the modules holding them, their ``state_dict`` and ``load_state_dict`` are unchanged).
    Their gradients go into :attr:`grad`, of the same layout: :attr:`grad_views` is one view
    of it per parameter.
    """

    def __init__(self, params: Sequence[torch.nn.Parameter]) -> None:
        self.params = list(params)
        self.lanes = self.params[0].shape[0]
        self.sizes = [p[0].numel() for p in self.params]
        first = self.params[0]
        self.flat = torch.empty(
            (self.lanes, sum(self.sizes)), dtype=first.dtype, device=first.device
        )
        self.grad = torch.zeros_like(self.flat)
        for p, view in zip(self.params, self.views(self.flat), strict=True):
            view.copy_(p.detach())
            p.data = view
        self.grad_views = self.views(self.grad)

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """``flat`` (``[lanes, size]``, laid out as :attr:`flat`) cut into one view per
        parameter, each of that parameter's shape."""
        views, start = [], 0
        for p, size in zip(self.params, self.sizes, strict=True):
            views.append(flat[:, start : start + size].view(p.shape))
            start += size
        return views


class LaneOptimizer:
    """Adam (as ``torch.optim.Adam``) or RMSprop (as ``torch.optim.RMSprop`` without momentum,
    the way Stable-Baselines3's A2C uses it) on :class:`LaneParameters`, each lane on its own.

    The learning rate is given at every :meth:`step`, so that a schedule needs no optimizer
    bookkeeping. Both run torch's own kernels (Adam's fused kernel, RMSprop's foreach
    operations) on the lanes' rows of the parameters, gradients and moments: a lane steps
    exactly as ``torch.optim.Adam(fused=True)`` or ``torch.optim.RMSprop(foreach=True)``
    steps its parameters (``tests/test_pg.py``).
    """

    def __init__(
        self,
        params: LaneParameters,
        kind: OptimizerName,
        *,
        eps: float,
        betas: tuple[float, float] = (0.9, 0.999),
        alpha: float = 0.99,
    ) -> None:
        self.params = params
        self.kind: OptimizerName = kind
        self.eps, self.betas, self.alpha = eps, betas, alpha
        # Adam: first and second moments; RMSprop: the running average of squared gradients.
        names = ("exp_avg", "exp_avg_sq") if kind == "adam" else ("square_avg",)
        self.moments = {name: torch.zeros_like(params.flat) for name in names}
        self.steps = 0
        # One step counter per row: the kernels increment every tensor of the list.
        self._step_tensors = [
            torch.zeros((), dtype=torch.float32, device=params.flat.device)
            for _ in range(params.lanes)
        ]
        self._rows = list(params.flat.unbind(0))
        self._grad_rows = list(params.grad.unbind(0))
        self._moment_rows = {name: list(m.unbind(0)) for name, m in self.moments.items()}

    @torch.no_grad()
    def step(self, lr: float) -> None:
        """One step of every lane from the gradients in ``params.grad``: the kernels
        ``torch.optim.adam.adam(fused=True)`` and ``torch.optim.rmsprop.rmsprop(foreach=True)``
        run, called directly (their functional wrappers group the tensors by device and
        dtype on every call: 23 µs of a 30 µs Adam step, 40 of a 76 µs RMSprop step, for
        one lane's row)."""
        self.steps += 1
        torch._foreach_add_(self._step_tensors, 1)
        if self.kind == "adam":
            beta1, beta2 = self.betas
            torch._fused_adam_(
                self._rows,
                self._grad_rows,
                self._moment_rows["exp_avg"],
                self._moment_rows["exp_avg_sq"],
                [],
                self._step_tensors,
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                weight_decay=0.0,
                eps=self.eps,
                amsgrad=False,
                maximize=False,
                grad_scale=None,
                found_inf=None,
            )
        else:  # torch's _multi_tensor_rmsprop without momentum, not centered
            square_avg = self._moment_rows["square_avg"]
            torch._foreach_mul_(square_avg, self.alpha)
            torch._foreach_addcmul_(
                square_avg, self._grad_rows, self._grad_rows, value=1 - self.alpha
            )
            avg = torch._foreach_sqrt(square_avg)
            torch._foreach_add_(avg, self.eps)
            torch._foreach_addcdiv_(self._rows, self._grad_rows, avg, value=-lr)

    def state_dict(self) -> dict[str, Any]:
        """Every lane's moments (one list per moment of ``[lanes, ...]`` tensors, one per
        parameter, in parameter order) and the number of steps taken."""
        return {
            "steps": self.steps,
            **{name: self.params.views(m) for name, m in self.moments.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        with torch.no_grad():
            for name, moment in self.moments.items():
                views = self.params.views(moment)
                for target, saved in zip(views, state[name], strict=True):
                    target.copy_(saved)
            for step in self._step_tensors:
                step.fill_(float(state["steps"]))
        self.steps = int(state["steps"])


def lane_clip_grad_norm(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Each lane's gradients clipped to a global norm, as ``torch.nn.utils.clip_grad_norm_``
    clips one model's: ``grad`` ``[lanes, size]`` (:attr:`LaneParameters.grad`), row ``k``
    scaled by ``min(1, max_norm / (norm_k + 1e-6))``, ``norm_k`` its Euclidean norm. Returns
    the norms before clipping, ``[lanes]``. A lane with non-finite gradients gets NaN
    gradients, the other lanes are untouched."""
    with torch.no_grad():
        norms = torch.linalg.vector_norm(grad, dim=1)
        coef = (float(max_norm) / (norms + 1e-6)).clamp_(max=1.0)
        grad.mul_(coef.unsqueeze(1))
    return norms
