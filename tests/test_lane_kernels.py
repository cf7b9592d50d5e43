"""``rlbench.lanes.kernels``: each private PyTorch name it calls, hidden in turn, and the public
fallback that takes its place checked against the kernel (and both against ``torch.optim``).

The names are hidden from ``kernels.py`` only (its module global ``torch`` replaced by a view
of torch without them), so the module's own lookups (``_private``, ``_aten``) are what sees
them missing, as on a PyTorch release that dropped them; ``torch.optim``'s references keep
the real names.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import torch

from rlbench.lanes import kernels

REPO = Path(__file__).resolve().parents[1]

#: Every private name kernels.py uses: ``torch.<name>`` or ``torch.ops.aten.<name>``.
PRIVATE = {
    "_foreach_copy_": "torch",
    "_foreach_add_": "torch",
    "_foreach_mul_": "torch",
    "_foreach_addcmul_": "torch",
    "_foreach_sqrt": "torch",
    "_foreach_addcdiv_": "torch",
    "_fused_adam_": "torch",
    "tanh_backward": "aten",
    "threshold_backward": "aten",
}
RMSPROP_NAMES = [
    "_foreach_mul_",
    "_foreach_addcmul_",
    "_foreach_sqrt",
    "_foreach_add_",
    "_foreach_addcdiv_",
]

#: Parameter shapes no vector width divides (a 16-float unit on AVX-512, 8 on AVX2).
SHAPES = [(17,), (3, 5), (40,), (1,), (2, 1, 3)]


class Counted:
    """A kernel that counts its calls (also through an overload: ``kernel.grad_input``)."""

    def __init__(self, fn, name: str, calls: Counter) -> None:
        self.fn, self.name, self.calls = fn, name, calls

    def __call__(self, *args, **kwargs):
        self.calls[self.name] += 1
        return self.fn(*args, **kwargs)

    def __getattr__(self, attr):
        return Counted(getattr(self.fn, attr), self.name, self.calls)


class _Aten:
    def __init__(self, seen: TorchSeenByKernels) -> None:
        self.seen = seen

    def __getattr__(self, name):
        return self.seen.lookup(name, getattr(torch.ops.aten, name))


class _Ops:
    def __init__(self, seen: TorchSeenByKernels) -> None:
        self.aten = _Aten(seen)

    def __getattr__(self, name):
        return getattr(torch.ops, name)


class TorchSeenByKernels:
    """``torch`` as ``kernels.py`` sees it: without the ``hidden`` names, recording every
    private name looked up and counting calls to the kernels it hands out."""

    def __init__(self, hidden: set[str]) -> None:
        self.hidden = hidden
        self.looked_up: set[str] = set()
        self.calls: Counter = Counter()
        self.ops = _Ops(self)

    def lookup(self, name: str, value):
        self.looked_up.add(name)
        if name in self.hidden:
            raise AttributeError(name)
        return Counted(value, name, self.calls)

    def __getattr__(self, name):
        if name.startswith("_") and not name.startswith("__"):
            return self.lookup(name, getattr(torch, name))
        return getattr(torch, name)


@pytest.fixture
def seen_by_kernels(monkeypatch):
    """``seen_by_kernels(*hidden)``: make ``kernels.py`` see torch without ``hidden``."""

    def install(*hidden: str) -> TorchSeenByKernels:
        view = TorchSeenByKernels(set(hidden))
        monkeypatch.setattr(kernels, "torch", view)
        return view

    return install


def present(name: str) -> bool:
    """Whether this PyTorch has ``name`` (of :data:`PRIVATE`)."""
    if PRIVATE[name] == "torch":
        return hasattr(torch, name)
    return hasattr(torch.ops.aten, name)


def require(name: str) -> None:
    """Skip where this PyTorch lacks ``name`` itself: nothing to compare the fallback with."""
    if not present(name):
        pytest.skip(f"this PyTorch has no {name}")


def tensors(seed: int, scale: float = 1.0, shapes=SHAPES) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) * scale for shape in shapes]


def clones(ts: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.clone() for t in ts]


def assert_equal(got: list[torch.Tensor], expected: list[torch.Tensor], what: str = "") -> None:
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert torch.equal(g, e), f"{what} tensor {i}: max diff {(g - e).abs().max()}"


# -- the lookups themselves ------------------------------------------------------------------


def test_a_missing_name_is_none_and_a_present_one_is_the_kernel():
    assert kernels._private("_no_such_kernel_") is None
    assert kernels._aten("no_such_operator_backward") is None
    for name in filter(present, PRIVATE):
        if PRIVATE[name] == "torch":
            assert kernels._private(name) is getattr(torch, name)
        else:
            assert kernels._aten(name) is getattr(torch.ops.aten, name)


def run_every_kernel() -> None:
    """Each function of kernels.py once, on small tensors."""
    a, b, c = tensors(0), tensors(1), [t.abs() for t in tensors(2)]
    steps = [torch.ones(()) for _ in a]
    kernels.foreach_copy_(clones(a), b)
    kernels.foreach_add_scalar_(clones(steps), 1)
    kernels.foreach_polyak_(clones(a), b, 0.1)
    kernels.rmsprop_(clones(a), b, clones(c), lr=0.1, alpha=0.99, eps=1e-5)
    kernels.adam_(
        clones(a), b, clones(a), clones(c), steps, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8
    )
    kernels.tanh_backward(a[0].clone(), b[0].tanh())
    kernels.tanh_backward(a[0].clone(), b[0].tanh(), out=True)
    kernels.relu_backward(a[0], b[0].relu())
    kernels.relu_backward(a[0].clone(), b[0].relu(), out=True)


def test_every_private_name_kernels_use_has_a_test_that_hides_it(seen_by_kernels):
    """A private name added to kernels.py without an entry in PRIVATE (and so without a
    test of its fallback below) fails here."""
    view = seen_by_kernels()
    run_every_kernel()
    assert view.looked_up == set(PRIVATE)
    assert set(view.calls) == {n for n in PRIVATE if present(n)}  # and the kernels ran


@pytest.mark.parametrize("name", list(PRIVATE))
def test_hiding_a_name_is_seen_by_the_lookups_only(seen_by_kernels, name):
    view = seen_by_kernels(name)
    lookup = kernels._private if PRIVATE[name] == "torch" else kernels._aten
    assert lookup(name) is None
    run_every_kernel()  # every function still computes
    assert name not in view.calls
    # torch itself keeps the name (torch.optim's references, the other tests' kernels).
    home = torch if PRIVATE[name] == "torch" else torch.ops.aten
    require(name)
    assert getattr(home, name) is not None


# -- each private name hidden: the public path against the kernel ----------------------------


def test_foreach_copy_without_its_kernel(seen_by_kernels):
    require("_foreach_copy_")
    sources = tensors(1)
    results = {}
    for hidden in ((), ("_foreach_copy_",)):
        view = seen_by_kernels(*hidden)
        targets = tensors(0)
        kernels.foreach_copy_(targets, sources)
        assert view.calls["_foreach_copy_"] == (0 if hidden else 1)
        results[hidden] = targets
    assert_equal(results[()], sources)
    assert_equal(results[("_foreach_copy_",)], results[()])


def test_foreach_add_scalar_without_its_kernel(seen_by_kernels):
    require("_foreach_add_")
    results = {}
    for hidden in ((), ("_foreach_add_",)):
        view = seen_by_kernels(*hidden)
        counters = [torch.zeros(()) for _ in range(3)] + [torch.full((), 7.0)]
        for _ in range(5):
            kernels.foreach_add_scalar_(counters, 1)
        assert view.calls["_foreach_add_"] == (0 if hidden else 5)
        results[hidden] = counters
    assert_equal(results[()], [torch.full((), 5.0)] * 3 + [torch.full((), 12.0)])
    assert_equal(results[("_foreach_add_",)], results[()])


@pytest.mark.parametrize("hidden", ["_foreach_mul_", "_foreach_add_"])
def test_polyak_without_its_kernels(seen_by_kernels, hidden):
    """Both paths are Stable-Baselines3's ``polyak_update``: a multiplication by ``1 - tau``,
    then an addition with ``alpha=tau``, bit for bit."""
    require(hidden)
    online = tensors(1)
    results = {}
    for hide in ((), (hidden,)):
        view = seen_by_kernels(*hide)
        targets = tensors(0)
        for tau in (0.005, 0.3, 1 / 3):
            kernels.foreach_polyak_(targets, online, tau)
        assert view.calls[hidden] == (0 if hide else 3)
        results[hide] = targets
    sb3 = tensors(0)
    for tau in (0.005, 0.3, 1 / 3):
        for target, source in zip(sb3, online, strict=True):
            target.mul_(1 - tau)
            target.add_(source, alpha=tau)
    assert_equal(results[()], sb3, "kernel")
    assert_equal(results[(hidden,)], sb3, "fallback")


def rmsprop_steps(params, grads_per_step, lrs):
    square_avgs = [torch.zeros_like(p) for p in params]
    for grads, lr in zip(grads_per_step, lrs, strict=True):
        kernels.rmsprop_(params, grads, square_avgs, lr=lr, alpha=0.99, eps=1e-5)
    return params, square_avgs


def torch_rmsprop(start, grads_per_step, lrs, foreach: bool):
    params = [torch.nn.Parameter(t.clone()) for t in start]
    opt = torch.optim.RMSprop(params, lr=1.0, alpha=0.99, eps=1e-5, foreach=foreach)
    for grads, lr in zip(grads_per_step, lrs, strict=True):
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
    return [p.detach() for p in params], [opt.state[p]["square_avg"] for p in params]


@pytest.mark.parametrize("hidden", RMSPROP_NAMES)
def test_rmsprop_without_its_kernels(seen_by_kernels, hidden):
    """The foreach path is ``torch.optim.RMSprop(foreach=True)``, the fallback
    ``RMSprop(foreach=False)``, the same operations: equal bit for bit, learning rate
    changing at every step, gradients of scales from 1e-4 to 1e3."""
    require(hidden)
    start = tensors(0)
    grads_per_step = [tensors(10 + i, scale=10.0 ** (i - 4)) for i in range(8)]
    lrs = [1e-2 / (i + 1) for i in range(8)]
    results = {}
    for hide in ((), (hidden,)):
        view = seen_by_kernels(*hide)
        results[hide] = rmsprop_steps(clones(start), grads_per_step, lrs)
        assert view.calls[hidden] == (0 if hide else 8)
    foreach = torch_rmsprop(start, grads_per_step, lrs, foreach=True)
    single = torch_rmsprop(start, grads_per_step, lrs, foreach=False)
    for i, what in enumerate(("params", "square_avg")):
        assert_equal(results[()][i], foreach[i], f"kernel {what}")
        assert_equal(results[(hidden,)][i], single[i], f"fallback {what}")
        assert_equal(results[(hidden,)][i], results[()][i], f"fallback against kernel {what}")


def adam_steps(start, grads_per_step, lrs, betas=(0.9, 0.999), eps=1e-8):
    params = clones(start)
    exp_avgs = [torch.zeros_like(p) for p in params]
    exp_avg_sqs = [torch.zeros_like(p) for p in params]
    steps = [torch.zeros(()) for _ in params]
    for grads, lr in zip(grads_per_step, lrs, strict=True):
        kernels.foreach_add_scalar_(steps, 1)  # as LaneOptimizer advances them
        kernels.adam_(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            steps,
            lr=lr,
            beta1=betas[0],
            beta2=betas[1],
            eps=eps,
        )
    return params, exp_avgs, exp_avg_sqs, steps


def torch_adam(start, grads_per_step, lrs, betas=(0.9, 0.999), eps=1e-8, **how):
    params = [torch.nn.Parameter(t.clone()) for t in start]
    opt = torch.optim.Adam(params, lr=1.0, betas=betas, eps=eps, **how)
    for grads, lr in zip(grads_per_step, lrs, strict=True):
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
    state = [opt.state[p] for p in params]
    return (
        [p.detach() for p in params],
        [s["exp_avg"] for s in state],
        [s["exp_avg_sq"] for s in state],
        [s["step"] for s in state],
    )


@pytest.mark.parametrize(("betas", "eps"), [((0.9, 0.999), 1e-8), ((0.5, 0.9), 1e-5)])
def test_adam_without_the_fused_kernel(seen_by_kernels, betas, eps):
    """The fused kernel is ``torch.optim.Adam(fused=True)``; the fallback is
    ``Adam(foreach=False)``; each bit for bit (parameters, both moments, step counts) over
    several steps with a changing learning rate. (The two round apart: the fused kernel
    fuses multiply-adds; hence no comparison between them.)"""
    require("_fused_adam_")
    start = tensors(0)
    grads_per_step = [tensors(10 + i, scale=10.0 ** (i - 4)) for i in range(8)]
    lrs = [3e-3 / (1 + i) ** 0.5 for i in range(8)]
    view = seen_by_kernels()
    fused = adam_steps(start, grads_per_step, lrs, betas, eps)
    assert view.calls["_fused_adam_"] == 8
    view = seen_by_kernels("_fused_adam_")
    fallback = adam_steps(start, grads_per_step, lrs, betas, eps)
    assert view.calls["_fused_adam_"] == 0
    reference_fused = torch_adam(start, grads_per_step, lrs, betas, eps, fused=True)
    reference_single = torch_adam(start, grads_per_step, lrs, betas, eps, foreach=False)
    for i, what in enumerate(("params", "exp_avg", "exp_avg_sq", "step")):
        assert_equal(fused[i], reference_fused[i], f"fused {what}")
        assert_equal(fallback[i], reference_single[i], f"fallback {what}")
    assert any(not torch.equal(a, b) for a, b in zip(fused[0], start, strict=True))


def gradient_and_input(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 37, 19, generator=gen) * 3
    x[0, 0, :5] = 0.0  # ReLU's threshold itself
    return torch.randn(3, 37, 19, generator=gen), x.requires_grad_()


@pytest.mark.parametrize("out", [False, True])
def test_tanh_backward_without_its_kernel(seen_by_kernels, out):
    """The kernel is autograd's tanh gradient bit for bit; the fallback ``grad * (1 - y²)``
    is within rounding of it. ``out=True`` writes into ``grad``, ``out=False`` leaves it."""
    require("tanh_backward")
    grad, x = gradient_and_input(0)
    y = torch.tanh(x)
    (autograd,) = torch.autograd.grad(y, x, grad)
    results = {}
    for hidden in ((), ("tanh_backward",)):
        view = seen_by_kernels(*hidden)
        g = grad.clone()
        result = kernels.tanh_backward(g, y.detach(), out=out)
        assert view.calls["tanh_backward"] == (0 if hidden else 1)
        if out:
            assert result.data_ptr() == g.data_ptr()
        else:
            assert torch.equal(g, grad)
        results[hidden] = result
    assert torch.equal(results[()], autograd)
    torch.testing.assert_close(results[("tanh_backward",)], autograd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("out", [False, True])
def test_relu_backward_without_its_kernel(seen_by_kernels, out):
    """Both paths are autograd's ReLU gradient bit for bit: ``grad`` where ``y > 0``, else
    zero (at ``y == 0`` too). ``out=True`` writes into ``grad``, ``out=False`` leaves it."""
    require("threshold_backward")
    grad, x = gradient_and_input(1)
    y = torch.relu(x)
    (expected,) = torch.autograd.grad(y, x, grad)
    for hidden in ((), ("threshold_backward",)):
        view = seen_by_kernels(*hidden)
        g = grad.clone()
        result = kernels.relu_backward(g, y.detach(), out=out)
        assert view.calls["threshold_backward"] == (0 if hidden else 1)
        if out:
            assert result.data_ptr() == g.data_ptr()
        else:
            assert torch.equal(g, grad)
        assert torch.equal(result, expected), hidden
        assert (result[0, 0, :5] == 0).all() and (grad[0, 0, :5] != 0).all()


# -- the rule: one module owns the private names ---------------------------------------------

#: Source text that names a private PyTorch kernel: ``torch._x`` / ``torch.sub._x`` (not
#: ``torch.__version__``), ``torch.ops``, ``aten``, ``getattr(torch, "_x")``, ``from torch
#: import _x``.
PRIVATE_REFERENCE = re.compile(
    r"\btorch(?:\.[A-Za-z]\w*)*\._(?!_)\w*"
    r"|\btorch\.ops\b"
    r"|\baten\b"
    r"|getattr\(\s*torch\b[\w.]*\s*,\s*f?[\"']_(?!_)"
    r"|\bfrom\s+torch(?:\.\w+)*\s+import\s+[^\n]*\b_(?!_)\w"
)


def test_only_the_kernels_module_names_private_torch_kernels():
    kernels_path = REPO / "rlbench" / "lanes" / "kernels.py"
    assert PRIVATE_REFERENCE.search(kernels_path.read_text()), "the pattern finds nothing"
    offenders = []
    sources = sorted((REPO / "rlbench").rglob("*.py")) + sorted((REPO / "plugins").rglob("*.py"))
    assert len(sources) > 20
    for path in sources:
        if path == kernels_path:
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            match = PRIVATE_REFERENCE.search(line)
            if match:
                offenders.append(f"{path.relative_to(REPO)}:{number}: {match.group(0)}")
    assert not offenders, (
        "private PyTorch names belong in rlbench/lanes/kernels.py (with a public fallback "
        "and a test in tests/test_lane_kernels.py):\n" + "\n".join(offenders)
    )
