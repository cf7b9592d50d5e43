"""Every private PyTorch name the lane toolkit calls, each with the public path beside it.

Private names (``torch._fused_adam_``, ``torch._foreach_*``, ``torch.ops.aten.*_backward``)
skip the Python around a kernel (argument checks, grouping tensors by device, autograd
bookkeeping), which for the small networks of RL costs as much as the kernel itself. They
can vanish or change in any PyTorch release, so this module is the only place that uses
them: each function here calls the private kernel when this PyTorch has it and otherwise
computes the same thing through public operations. ``tests/test_lane_kernels.py`` hides
each private name in turn and checks the public path against it.

Every function takes *lists* of tensors. A lane agent passes one tensor per lane (a row of
:class:`rlbench.lanes.LaneParameters`): a kernel treats each tensor of a list on its own,
exactly as it treats the only tensor of a one-lane run, which is what keeps a lane's
arithmetic independent of its group (a vectorised kernel rounds the tail of a tensor that
is not a whole number of vectors differently from its body).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Tensors = Sequence[torch.Tensor]


def _private(name: str) -> object | None:
    """``torch.<name>`` if this PyTorch has it."""
    return getattr(torch, name, None)


def _aten(name: str) -> object | None:
    """``torch.ops.aten.<name>`` if this PyTorch has it."""
    try:
        return getattr(torch.ops.aten, name)
    except (AttributeError, RuntimeError):
        return None


def foreach_copy_(targets: Tensors, sources: Tensors) -> None:
    """``targets[i].copy_(sources[i])`` for every ``i``, in one call where possible."""
    kernel = _private("_foreach_copy_")
    if kernel is not None:
        kernel(list(targets), list(sources))  # type: ignore[operator]
        return
    with torch.no_grad():
        for target, source in zip(targets, sources, strict=True):
            target.copy_(source)


def foreach_add_scalar_(tensors: Tensors, value: float) -> None:
    """``t.add_(value)`` for every tensor (the optimizers' step counters)."""
    kernel = _private("_foreach_add_")
    if kernel is not None:
        kernel(list(tensors), value)  # type: ignore[operator]
        return
    for t in tensors:
        t.add_(value)


def foreach_polyak_(targets: Tensors, sources: Tensors, weight: float) -> None:
    """Polyak averaging, as Stable-Baselines3's ``polyak_update`` writes it:
    ``target = target * (1 - weight) + weight * source`` (a multiplication, then an addition
    with ``alpha``) for every pair."""
    mul, add = _private("_foreach_mul_"), _private("_foreach_add_")
    if mul is not None and add is not None:
        mul(list(targets), 1.0 - weight)  # type: ignore[operator]
        add(list(targets), list(sources), alpha=weight)  # type: ignore[operator]
        return
    for target, source in zip(targets, sources, strict=True):
        target.mul_(1.0 - weight).add_(source, alpha=weight)


def rmsprop_(
    params: Tensors, grads: Tensors, square_avgs: Tensors, *, lr: float, alpha: float, eps: float
) -> None:
    """One RMSprop step without momentum, not centred (``torch.optim.RMSprop``'s defaults, as
    Stable-Baselines3's A2C uses it): the operations of torch's multi-tensor RMSprop."""
    ops = [_private(f"_foreach_{n}") for n in ("mul_", "addcmul_", "sqrt", "add_", "addcdiv_")]
    if all(op is not None for op in ops):
        mul_, addcmul_, sqrt, add_, addcdiv_ = ops
        mul_(list(square_avgs), alpha)  # type: ignore[operator]
        addcmul_(list(square_avgs), list(grads), list(grads), value=1 - alpha)  # type: ignore[operator]
        avg = sqrt(list(square_avgs))  # type: ignore[operator]
        add_(avg, eps)  # type: ignore[operator]
        addcdiv_(list(params), list(grads), avg, value=-lr)  # type: ignore[operator]
        return
    # torch's _single_tensor_rmsprop: the same operations, one tensor at a time.
    for param, grad, square_avg in zip(params, grads, square_avgs, strict=True):
        square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        avg = square_avg.sqrt().add_(eps)
        param.addcdiv_(grad, avg, value=-lr)


def adam_(
    params: Tensors,
    grads: Tensors,
    exp_avgs: Tensors,
    exp_avg_sqs: Tensors,
    steps: Tensors,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """One Adam step (no weight decay, no AMSGrad) of every parameter, its ``step`` counter
    (a 0-d float tensor each) already advanced: torch's fused kernel, as
    ``torch.optim.Adam(fused=True)`` calls it.

    Without the kernel, torch's single-tensor Adam (``torch.optim.Adam(foreach=False)``), op
    for op: the same update, rounded a little differently (the fused kernel fuses
    multiply-adds)."""
    kernel = _private("_fused_adam_")
    if kernel is not None:
        kernel(  # type: ignore[operator]
            list(params),
            list(grads),
            list(exp_avgs),
            list(exp_avg_sqs),
            [],
            list(steps),
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            weight_decay=0.0,
            eps=eps,
            amsgrad=False,
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )
        return
    for param, grad, exp_avg, exp_avg_sq, step_t in zip(
        params, grads, exp_avgs, exp_avg_sqs, steps, strict=True
    ):
        step = float(step_t)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad.conj(), value=1 - beta2)
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-step_size)


def tanh_backward(grad: torch.Tensor, output: torch.Tensor, *, out: bool = False) -> torch.Tensor:
    """The gradient through ``y = tanh(x)`` from its output: ``grad * (1 - y²)``; with
    ``out=True`` written into ``grad`` (a fresh gradient nothing else holds)."""
    kernel = _aten("tanh_backward")
    if kernel is not None:
        if out:
            return kernel.grad_input(grad, output, grad_input=grad)  # type: ignore[attr-defined]
        return kernel(grad, output)  # type: ignore[operator]
    result = grad.mul_(1 - output * output) if out else grad * (1 - output * output)
    return result


def relu_backward(grad: torch.Tensor, output: torch.Tensor, *, out: bool = False) -> torch.Tensor:
    """The gradient through ``y = relu(x)`` from its output: ``grad`` where ``y > 0``, else 0;
    with ``out=True`` written into ``grad`` (a fresh gradient nothing else holds)."""
    kernel = _aten("threshold_backward")
    if kernel is not None:
        if out:
            return kernel.grad_input(grad, output, 0, grad_input=grad)  # type: ignore[attr-defined]
        return kernel(grad, output, 0)  # type: ignore[operator]
    if out:
        return grad.masked_fill_(output <= 0, 0.0)
    return torch.where(output > 0, grad, 0.0)
