"""Speed tricks that lean on PyTorch's private names, each with the public path beside it.

:class:`FusedAdam` calls the fused Adam kernel directly (``torch._fused_adam_``) and reads
the optimizer hook registries (``torch.optim.optimizer._global_optimizer_*_hooks``) to know
when that is allowed. Private names can vanish in any PyTorch release; when one is missing,
:meth:`FusedAdam.fused_step` is the public ``step()``, which runs the same kernel on the same
state, so the results are the same either way (``tests/test_speed_paths.py`` checks both
paths).

It is also where lanes stay exact through the optimizer: see :data:`LANE_BLOCK`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch.optim import optimizer as torch_optimizer  # the module: torch.optim hides its name
from torch.optim.adam import adam as adam_functional  # public: torch.optim.adam.__all__


def _private_api() -> tuple[Callable[..., Any], Callable[..., Any], Mapping, Mapping] | None:
    """``(_foreach_add_, _fused_adam_, global pre-hooks, global post-hooks)``, or ``None``
    when this PyTorch lacks one of them."""
    names = (
        getattr(torch, "_foreach_add_", None),
        getattr(torch, "_fused_adam_", None),
        getattr(torch_optimizer, "_global_optimizer_pre_hooks", None),
        getattr(torch_optimizer, "_global_optimizer_post_hooks", None),
    )
    if any(name is None for name in names):
        return None
    return names  # type: ignore[return-value]


#: The CPU's fused Adam kernel updates a tensor in units of 16 elements (a 64-byte cache
#: line), each through SIMD vectors, and the last ``numel % vector_width`` elements of the
#: tensor one at a time; the two paths round differently (the vector path fuses multiply-adds).
#: With parameters stacked ``[lanes, ...]``, a lane whose block is not a whole number of
#: units would have some of its elements in that scalar tail or not depending on how many
#: lanes follow it, so its weights would depend on its group's size and its place in it (the
#: cause of issue 10's drift: a 2-action head's bias, 2 elements per lane). Such parameters are
#: handed to the kernel lane by lane, as views: every lane is then updated exactly as a group
#: of one updates it. Blocks of a multiple of 16 are never in a tail and stay whole (one call).
LANE_BLOCK = 16


def lane_views(tensor: torch.Tensor, split: bool) -> list[torch.Tensor]:
    """``tensor`` as the kernel should see it: its lanes as views, or itself."""
    return list(tensor.unbind(0)) if split else [tensor]


class FusedAdam(torch.optim.Adam):
    """``torch.optim.Adam(fused=True)``: one kernel for all parameters instead of a Python
    loop over them (about 25% less time per gradient step for these small networks than the
    default Adam, same update rule).

    With ``lanes > 1`` every parameter is stacked ``[lanes, ...]`` and each lane is updated
    exactly as a one-lane optimizer updates it, whatever the number of lanes and a lane's
    place among them (:data:`LANE_BLOCK`): :meth:`step` and :meth:`fused_step` both hand the
    kernel a parameter lane by lane where its per-lane block is not a multiple of
    :data:`LANE_BLOCK` elements. With ``lanes = 1`` (or ``None``: parameters not stacked)
    :meth:`step` is torch's own.

    :meth:`fused_step` is :meth:`step` without the per-call Python machinery around the
    kernel (step hooks, profiler labels, grouping tensors by device, argument checks), which
    for a small network costs about as much as the kernel itself; it calls the same kernel on
    the same state, so the result is bit for bit the same (tested). It falls back to
    :meth:`step` whenever the fast path does not apply (the first step, which creates the
    state; hooks; several parameter groups or devices; options the fast path does not pass;
    a PyTorch without the private names it calls).
    """

    def __init__(
        self, params: Iterable[torch.nn.Parameter], lr: float, lanes: int | None = None
    ) -> None:
        super().__init__(params, lr=lr, fused=True)
        group_params = self.param_groups[0]["params"]
        self._one_device = len({(p.device, p.dtype) for p in group_params}) == 1
        self._private = _private_api()
        self.lanes = lanes or 1
        # Which parameters go to the kernel lane by lane (by identity: a Parameter is not
        # hashable by value).
        self._split = {
            id(p): self.lanes > 1 and p[0].numel() % LANE_BLOCK != 0
            for group in self.param_groups
            for p in group["params"]
        }
        # The kernel's argument lists but the gradients (which backward replaces each step):
        # views of the parameters and moments, built once their state exists.
        self._lists: tuple[list[torch.Tensor], ...] | None = None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._lists = None  # the moments are new tensors

    def _kernel_lists(self, params: list[torch.nn.Parameter]) -> tuple[list[torch.Tensor], ...]:
        """``(params, exp_avgs, exp_avg_sqs, steps)`` with split parameters as lane views;
        a split parameter's one step counter appears once per lane."""
        ps: list[torch.Tensor] = []
        exp_avgs: list[torch.Tensor] = []
        exp_avg_sqs: list[torch.Tensor] = []
        steps: list[torch.Tensor] = []
        for p in params:
            state, split = self.state[p], self._split[id(p)]
            ps += lane_views(p, split)
            exp_avgs += lane_views(state["exp_avg"], split)
            exp_avg_sqs += lane_views(state["exp_avg_sq"], split)
            steps += [state["step"]] * (p.shape[0] if split else 1)
        return ps, exp_avgs, exp_avg_sqs, steps

    def _grads(self, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
        grads: list[torch.Tensor] = []
        for p in params:
            assert p.grad is not None
            grads += lane_views(p.grad, self._split[id(p)])
        return grads

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One Adam step (torch's, lane by lane where :data:`LANE_BLOCK` needs it).

        Through torch's public functional ``torch.optim.adam.adam``, which accepts views;
        it advances every step counter it is given, so a split parameter's lanes get copies
        of its counter and the counter itself advances once."""
        if not any(self._split.values()):
            # torch.optim.Adam.step itself, without the hook wrapper torch puts around it
            # once any Adam exists (this class's own step carries one already).
            adam_step = torch.optim.Adam.step
            if getattr(adam_step, "hooked", False):
                adam_step = adam_step.__wrapped__
            return adam_step(self, closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                state = self.state[p]
                if not state:  # as torch.optim.Adam creates it for the fused kernel
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if not params:
                continue
            ps, exp_avgs, exp_avg_sqs, steps = self._kernel_lists(params)
            beta1, beta2 = group["betas"]
            adam_functional(
                ps,
                self._grads(params),
                exp_avgs,
                exp_avg_sqs,
                [],
                [s.clone() for s in steps],
                fused=True,
                amsgrad=group["amsgrad"],
                beta1=beta1,
                beta2=beta2,
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=group["maximize"],
                decoupled_weight_decay=group.get("decoupled_weight_decay", False),
            )
            for p in params:
                self.state[p]["step"].add_(1)
        return loss

    def _fast_path_applies(self) -> bool:
        if self._private is None or len(self.param_groups) != 1 or not self._one_device:
            return False
        _, _, global_pre_hooks, global_post_hooks = self._private
        group = self.param_groups[0]
        return (
            group["fused"]
            and not group["amsgrad"]
            and not group["differentiable"]
            and not group.get("decoupled_weight_decay", False)
            and isinstance(group["lr"], float)
            and not self._optimizer_step_pre_hooks
            and not self._optimizer_step_post_hooks
            and not global_pre_hooks
            and not global_post_hooks
        )

    def fused_step(self) -> None:
        if not self._fast_path_applies():
            self.step()
            return
        assert self._private is not None
        foreach_add_, fused_adam_, _, _ = self._private
        group = self.param_groups[0]
        params = group["params"]
        if any(p.grad is None for p in params) or not all(self.state.get(p) for p in params):
            self.step()  # the first step creates the state; a parameter without gradient
            self._lists = None
            return
        if self._lists is None:
            self._lists = self._kernel_lists(params)
        ps, exp_avgs, exp_avg_sqs, steps = self._lists
        beta1, beta2 = group["betas"]
        with torch.no_grad():
            foreach_add_([self.state[p]["step"] for p in params], 1)
            fused_adam_(
                ps,
                self._grads(params),
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


def adam(
    params: Iterable[torch.nn.Parameter], lr: float, lanes: int | None = None
) -> FusedAdam:
    """Adam with the fused kernel (see :class:`FusedAdam`); ``lanes``: parameters are
    stacked ``[lanes, ...]`` and each lane is updated exactly as alone."""
    return FusedAdam(params, lr, lanes)
