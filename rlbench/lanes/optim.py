"""Per-lane parameters, optimizers and gradient clipping: exact per lane, whatever the group.

A lane's update must not depend on the group it trains in. Torch's fused Adam over a stacked
parameter runs one vectorised loop over all lanes' elements, so where a lane's block is not a
multiple of the vector width some of its elements fall into the kernel's scalar tail in one
group and not in another, and round differently. So the kernels must get each lane's
elements as tensors of their own.

Here the parameters an optimizer steps move into one buffer ``[lanes, size]`` (each parameter
a view of its columns, :class:`LaneParameters`): lane ``k``'s row holds all of its
parameters, contiguous, and the kernels (:mod:`rlbench.lanes.kernels`) get one tensor per
lane, the row, which they process exactly as a one-lane run processes its only row. One row
per lane (not one tensor per lane and parameter) is also what makes a step cheap: a 64-64
actor-critic has 12 parameters, and at 16 lanes per-parameter views were 192 tensors for
every kernel to walk, per step.

An agent computes its gradients into :attr:`LaneParameters.grad` either by hand
(:meth:`rlbench.lanes.StackedNetwork.backprop` into :attr:`LaneParameters.grad_views`) or
through autograd (:meth:`LaneParameters.zero_grad`, then ``loss.backward()``), clips them
with :func:`lane_clip_grad_norm` and steps with :class:`LaneOptimizer`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import torch

from rlbench.lanes import kernels

OptimizerName = Literal["adam", "rmsprop"]

# On the autograd path (LaneParameters.zero_grad) autograd adds each gradient into its view
# of the [lanes, size] buffer in place, as intended, and warns once per process that such a
# view is not laid out like a dense parameter ("may impair performance"): here that layout
# is the point. Only this message is silenced.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")


class LaneParameters:
    """``params`` (each ``[lanes, ...]``) moved into one buffer :attr:`flat` ``[lanes, size]``:
    each parameter's data becomes a view of its columns (the same ``nn.Parameter`` objects, so
    the modules holding them, their ``state_dict`` and ``load_state_dict`` are unchanged).
    Their gradients go into :attr:`grad`, of the same layout: :attr:`grad_views` is one view
    of it per parameter. :attr:`rows` and :attr:`grad_rows` are each lane's row, the tensors
    the optimizer kernels step.

    ``grad=False`` keeps no gradient buffer (a target network's parameters).
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], *, grad: bool = True) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("LaneParameters needs at least one parameter")
        self.lanes = self.params[0].shape[0] if self.params[0].dim() else 0
        if any(p.dim() == 0 or p.shape[0] != self.lanes for p in self.params):
            raise ValueError(
                "LaneParameters: every parameter must be stacked [lanes, ...] with the same "
                f"lanes; got shapes {[tuple(p.shape) for p in self.params]}"
            )
        self.sizes = [p[0].numel() for p in self.params]
        first = self.params[0]
        self.flat = torch.empty(
            (self.lanes, sum(self.sizes)), dtype=first.dtype, device=first.device
        )
        for p, view in zip(self.params, self.views(self.flat), strict=True):
            view.copy_(p.detach())
            p.data = view
        self.rows: list[torch.Tensor] = list(self.flat.unbind(0))
        self.grad = torch.zeros_like(self.flat) if grad else None
        self.grad_views: list[torch.Tensor] = self.views(self.grad) if grad else []
        self.grad_rows: list[torch.Tensor] = list(self.grad.unbind(0)) if grad else []

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """``flat`` (``[lanes, size]``, laid out as :attr:`flat`) cut into one view per
        parameter, each of that parameter's shape."""
        views, start = [], 0
        for p, size in zip(self.params, self.sizes, strict=True):
            views.append(flat[:, start : start + size].view(p.shape))
            start += size
        return views

    def zero_grad(self) -> None:
        """Zero :attr:`grad` and make each parameter's ``.grad`` its view of it, so that
        ``loss.backward()`` accumulates every gradient into :attr:`grad` (the autograd path;
        an agent that backpropagates by hand writes :attr:`grad_views` instead)."""
        if self.grad is None:
            raise ValueError("these LaneParameters keep no gradients (grad=False)")
        self.grad.zero_()
        for p, view in zip(self.params, self.grad_views, strict=True):
            if p.grad is not view:
                p.grad = view


class LaneOptimizer:
    """Adam (as ``torch.optim.Adam``) or RMSprop (as ``torch.optim.RMSprop`` without momentum,
    the way Stable-Baselines3's A2C uses it) on :class:`LaneParameters`, each lane on its own.

    The learning rate is given at every :meth:`step`, so that a schedule needs no optimizer
    bookkeeping. Both run torch's own kernels (Adam's fused kernel, RMSprop's foreach
    operations) on the lanes' rows of the parameters, gradients and moments. A lane's row
    steps exactly as ``torch.optim.RMSprop(foreach=True)`` steps its parameters, and as
    ``torch.optim.Adam(fused=True)`` steps the row taken as one tensor (against the same
    parameters as separate tensors, Adam's fused kernel rounds each tensor's last, partial
    vector differently, so an element can differ by an ulp; ``tests/test_lane_toolkit.py``).
    Whatever the group, a lane steps exactly as it does alone.
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
        if params.grad is None:
            raise ValueError("LaneOptimizer needs LaneParameters that keep gradients")
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
        self._rows = params.rows
        self._grad_rows = params.grad_rows
        self._moment_rows = {name: list(m.unbind(0)) for name, m in self.moments.items()}

    @torch.no_grad()
    def step(self, lr: float) -> None:
        """One step of every lane from the gradients in ``params.grad``: the kernels of
        ``torch.optim.Adam(fused=True)`` and ``torch.optim.RMSprop(foreach=True)``, called
        directly (:mod:`rlbench.lanes.kernels`; their functional wrappers group the tensors
        by device and dtype on every call: 23 µs of a 30 µs Adam step, 40 of a 76 µs RMSprop
        step, for one lane's row)."""
        self.steps += 1
        kernels.foreach_add_scalar_(self._step_tensors, 1)
        if self.kind == "adam":
            beta1, beta2 = self.betas
            kernels.adam_(
                self._rows,
                self._grad_rows,
                self._moment_rows["exp_avg"],
                self._moment_rows["exp_avg_sq"],
                self._step_tensors,
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                eps=self.eps,
            )
        else:
            kernels.rmsprop_(
                self._rows,
                self._grad_rows,
                self._moment_rows["square_avg"],
                lr=lr,
                alpha=self.alpha,
                eps=self.eps,
            )

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
    """Each lane's gradients clipped to a global norm with ``torch.nn.utils.clip_grad_norm_``'s
    formula: ``grad`` ``[lanes, size]`` (:attr:`LaneParameters.grad`), row ``k`` multiplied by
    ``min(1, max_norm / (norm_k + 1e-6))``, ``norm_k`` the Euclidean norm of lane ``k``'s
    gradients (torch takes it as the norm of per-tensor norms: the same number, rounded
    within a few units of the last place). Returns the norms before clipping, ``[lanes]``. A
    lane with non-finite gradients gets what ``clip_grad_norm_`` gives it (NaN where a gradient
    was infinite, NaN throughout for a NaN); the other lanes are untouched."""
    with torch.no_grad():
        norms = torch.linalg.vector_norm(grad, dim=1)
        # A factor of 1 changes no gradient: where every lane's norm is clearly below
        # max_norm (most steps of most agents), each lane's factor would be exactly 1, and
        # the arithmetic and the pass over every gradient are skipped (on the CPU, where
        # asking costs no device sync). The margin covers the factor's float32 rounding.
        if grad.device.type == "cpu" and float(norms.max()) < float(max_norm) * (1 - 1e-5) - 1e-6:
            return norms
        coef = (float(max_norm) / (norms + 1e-6)).clamp_(max=1.0)
        grad.mul_(coef.unsqueeze(1))
    return norms
