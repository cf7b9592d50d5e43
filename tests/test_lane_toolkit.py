"""The lane toolkit's training pieces (``rlbench.lanes``): each lane of a group against what
``torch.optim``, ``torch.nn.utils.clip_grad_norm_``, autograd and Stable-Baselines3's target
updates compute for that lane's parameters alone, and the replay buffer for ``Box`` actions.

Several parameters of awkward sizes (17, 3x5, ...: no vector width divides them) in groups of
three lanes, lane 1 compared: a lane in the middle of the ``[lanes, size]`` buffer, where a
kernel given the whole buffer instead of the lane's row can round it differently (the fused
Adam kernel does; for the element-wise ones, ``..._hands_each_lanes_row_to_its_kernel``).
"""

from __future__ import annotations

import copy
import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from rlbench_mlp import MLPConfig, build_mlp

from rlbench import AgentContext, Transition
from rlbench.lanes import (
    LaneOptimizer,
    LaneParameters,
    LaneReplayBuffer,
    action_layout,
    hard_update,
    lane_clip_grad_norm,
    polyak_update,
    stack_networks,
)

SHAPES = [(17,), (3, 5), (2, 1, 3), (40,)]
LANES = 3


def stacked(seed: int, lanes: int = LANES, shapes=SHAPES, scale: float = 1.0):
    """Parameters ``[lanes, *shape]`` for ``shapes``, lane ``k``'s values from ``seed + k``
    (so lane ``k``'s data does not depend on the group)."""
    gens = [torch.Generator().manual_seed(seed + k) for k in range(lanes)]
    per_lane = [[torch.randn(s, generator=g) * scale for s in shapes] for g in gens]
    return [
        torch.nn.Parameter(torch.stack([lane[i] for lane in per_lane])) for i in range(len(shapes))
    ]


def lane_grads(step: int, lanes: int = LANES, shapes=SHAPES) -> list[torch.Tensor]:
    """Each lane's gradients at ``step``, scales from 1e-3 to 1e3 over the steps."""
    return [g.detach() for g in stacked(1000 + 10 * step, lanes, shapes, 10.0 ** (step % 7 - 3))]


# -- LaneOptimizer -----------------------------------------------------------------------


class Reference:
    """A torch optimizer (``make(params)``) on one lane's parameters: as separate tensors, or
    as its row (one tensor)."""

    def __init__(self, tensors: list[torch.Tensor], make, row: bool) -> None:
        self.row = row
        if row:
            self.params = [torch.nn.Parameter(torch.cat([t.flatten() for t in tensors]))]
        else:
            self.params = [torch.nn.Parameter(t) for t in tensors]
        self.shapes = [t.shape for t in tensors]
        self.optimizer = make(self.params)

    def step(self, grads: list[torch.Tensor], lr: float) -> None:
        if self.row:
            self.params[0].grad = torch.cat([g.flatten() for g in grads])
        else:
            for p, g in zip(self.params, grads, strict=True):
                p.grad = g.clone()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()

    def values(self, key: str | None = None) -> list[torch.Tensor]:
        """The parameters (or a state entry), one per original parameter."""
        tensors = [p.detach() if key is None else self.optimizer.state[p][key] for p in self.params]
        if not self.row:
            return tensors
        out, start = [], 0
        for shape in self.shapes:
            size = int(np.prod(shape))
            out.append(tensors[0][start : start + size].view(shape))
            start += size
        return out


def train_lane_and_reference(kind: str, make, *, row: bool, steps: int = 8, lane: int = 1):
    """Step a group of ``LANES`` lanes with :class:`LaneOptimizer` and a :class:`Reference`
    of ``make`` on lane ``lane``'s parameters alone, the learning rate changing at every
    step; yield ``(step, params, ours, theirs)`` after each step."""
    params = stacked(0)
    lane_params = LaneParameters(params)
    ours = LaneOptimizer(lane_params, kind, eps=1e-5)
    theirs = Reference([p.detach()[lane].clone() for p in params], make, row)
    for i in range(steps):
        grads = lane_grads(i)
        for view, g in zip(lane_params.grad_views, grads, strict=True):
            view.copy_(g)
        lr = 1e-2 / (i + 1)
        ours.step(lr)
        theirs.step([g[lane] for g in grads], lr)
        yield i, params, ours, theirs


def assert_lane_is(params, ours: LaneOptimizer, theirs: Reference, lane: int, exact: bool):
    state = ours.state_dict()
    pairs = [(p.detach()[lane], r) for p, r in zip(params, theirs.values(), strict=True)]
    for name in ours.moments:
        pairs += [(m[lane], r) for m, r in zip(state[name], theirs.values(name), strict=True)]
    for got, expected in pairs:
        if exact:
            assert torch.equal(got, expected), (got - expected).abs().max()
        else:
            torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)


def fused_adam(params):
    return torch.optim.Adam(params, lr=1.0, eps=1e-5, fused=True)


def test_lane_optimizer_rmsprop_is_torchs_on_each_lanes_parameters_alone():
    """RMSprop as Stable-Baselines3's A2C configures it (``alpha=0.99, eps=1e-5``,
    ``foreach=True``) on lane 1's four parameters: weights and square averages, bit for
    bit, learning rate changing at every step."""

    def make(ps):
        return torch.optim.RMSprop(ps, lr=1.0, alpha=0.99, eps=1e-5, foreach=True)

    for _, params, ours, theirs in train_lane_and_reference("rmsprop", make, row=False):
        assert_lane_is(params, ours, theirs, lane=1, exact=True)


def test_lane_optimizer_adam_is_torchs_fused_adam_on_each_lanes_row():
    """Adam is ``torch.optim.Adam(fused=True)``'s kernel on each lane's row (its parameters,
    contiguous, as one tensor): bit for bit, moments and steps too."""
    for i, params, ours, theirs in train_lane_and_reference("adam", fused_adam, row=True):
        assert_lane_is(params, ours, theirs, lane=1, exact=True)
        assert ours.steps == i + 1
        assert float(theirs.optimizer.state[theirs.params[0]]["step"]) == i + 1


def test_lane_optimizer_adam_is_torchs_fused_adam_on_separate_parameters_up_to_rounding():
    """Against ``Adam(fused=True)`` on lane 1's parameters as separate tensors: equal to
    within a unit or two in the last place, not always bit for bit. The fused kernel rounds
    a tensor's tail (what is left after its whole vectors) apart from its body, and an
    element in the tail of a parameter of its own can sit in the body of the lane's row (on
    an AVX-512 CPU, a few element updates in a few thousand, by an ulp). The lane contract is
    untouched: a one-lane run steps the same row. (``torch.optim.Adam``'s default,
    ``foreach=True``, rounds apart from both anyway.)"""
    for _, params, ours, theirs in train_lane_and_reference("adam", fused_adam, row=False):
        assert_lane_is(params, ours, theirs, lane=1, exact=False)


def test_lane_optimizer_adam_without_the_fused_kernel_is_torchs_single_tensor_adam(monkeypatch):
    """Where PyTorch lacks ``_fused_adam_``: ``Adam(foreach=False)`` on the lane's separate
    parameters, bit for bit (element-wise operations round a tail as its body)."""
    from rlbench.lanes import kernels

    real = kernels._private
    monkeypatch.setattr(kernels, "_private", lambda n: None if n == "_fused_adam_" else real(n))

    def make(ps):
        return torch.optim.Adam(ps, lr=1.0, eps=1e-5, foreach=False)

    for _, params, ours, theirs in train_lane_and_reference("adam", make, row=False):
        assert_lane_is(params, ours, theirs, lane=1, exact=True)


@pytest.mark.parametrize("kind", ["adam", "rmsprop"])
def test_lane_optimizer_state_round_trips_mid_training(kind):
    """A fresh optimizer loaded with a state continues exactly as the one that saved it."""
    runs = []
    for reload in (False, True):
        params = stacked(0)
        lane_params = LaneParameters(params)
        opt = LaneOptimizer(lane_params, kind, eps=1e-5)
        for i in range(6):
            if reload and i == 3:
                state = copy.deepcopy(opt.state_dict())
                opt = LaneOptimizer(lane_params, kind, eps=1e-5)
                opt.load_state_dict(state)
                assert opt.steps == 3
            for view, g in zip(lane_params.grad_views, lane_grads(i), strict=True):
                view.copy_(g)
            opt.step(1e-2)
        runs.append((lane_params.flat.clone(), {k: m.clone() for k, m in opt.moments.items()}))
    assert torch.equal(runs[0][0], runs[1][0])
    for name in runs[0][1]:
        assert torch.equal(runs[0][1][name], runs[1][1][name])


def spy(monkeypatch, name: str) -> list[tuple]:
    """Record the arguments of every call to ``rlbench.lanes.kernels.<name>``."""
    from rlbench.lanes import kernels

    calls: list[tuple] = []
    real = getattr(kernels, name)

    def recording(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(kernels, name, recording)
    return calls


def assert_rows(tensors, rows: list[torch.Tensor]) -> None:
    """``tensors`` are ``rows`` themselves: one tensor per lane, its row of the buffer."""
    assert len(tensors) == len(rows)
    for t, row in zip(tensors, rows, strict=True):
        assert t.shape == row.shape and t.data_ptr() == row.data_ptr()


@pytest.mark.parametrize("kind", ["adam", "rmsprop"])
def test_the_optimizer_hands_each_lanes_row_to_its_kernel(monkeypatch, kind):
    """The kernels get one tensor per lane, its row. Element-wise kernels on this CPU round
    a tensor's tail as its body, so a kernel given the whole ``[lanes, size]`` buffer would
    still pass the comparisons above for RMSprop; the rows are what keeps a lane's rounding
    its own where a kernel does not (the fused Adam kernel here, other kernels elsewhere)."""
    calls = spy(monkeypatch, "adam_" if kind == "adam" else "rmsprop_")
    params = LaneParameters(stacked(0))
    opt = LaneOptimizer(params, kind, eps=1e-5)
    opt.step(1e-3)
    [args] = calls
    assert_rows(args[0], params.rows)
    assert_rows(args[1], params.grad_rows)
    for moment, name in zip(args[2:], opt.moments, strict=False):
        assert_rows(moment, list(opt.moments[name].unbind(0)))
    if kind == "adam":
        assert len(args[4]) == LANES and all(t.shape == () for t in args[4])


def test_polyak_update_hands_each_lanes_row_to_its_kernel(monkeypatch):
    calls = spy(monkeypatch, "foreach_polyak_")
    online, target = online_and_target(LANES)
    polyak_update(target, online, 0.1)
    [(targets, sources, tau)] = calls
    assert_rows(targets, target.rows)
    assert_rows(sources, online.rows)
    assert tau == 0.1


# -- lane_clip_grad_norm ---------------------------------------------------------------------


def clip_case(scales: list[float], seed: int = 0):
    """``LaneParameters`` of ``len(scales)`` lanes whose gradients are lane ``k``'s random
    gradients times ``scales[k]``, and each lane's gradients as separate tensors."""
    lanes = len(scales)
    params = LaneParameters(stacked(seed, lanes))
    grads = lane_grads(seed, lanes)
    for view, g in zip(params.grad_views, grads, strict=True):
        view.copy_(g * torch.tensor(scales).view(-1, *[1] * (g.dim() - 1)))
    per_lane = [[view[k].clone() for view in params.grad_views] for k in range(lanes)]
    return params, per_lane


def torch_clip(grads: list[torch.Tensor], max_norm: float) -> tuple[list[torch.Tensor], float]:
    tensors = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for t, g in zip(tensors, grads, strict=True):
        t.grad = g.clone()
    norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    return [t.grad for t in tensors], norm


@pytest.mark.parametrize("scale", [1e-6, 1e-2, 1.0, 30.0, 1e4])
@pytest.mark.parametrize("max_norm", [0.5, 10.0])
def test_lane_clip_grad_norm_is_torchs_clip_of_each_lane(scale, max_norm):
    """Each lane clipped (or not) as ``clip_grad_norm_`` clips its gradients alone; the
    returned norms are torch's total norms. A lane that is not clipped is untouched, bit for
    bit (whatever its neighbours do); a clipped one agrees to rounding (torch takes the norm
    of per-tensor norms, the clipper the norm of the lane's row)."""
    scales = [scale, scale * 7.0, scale / 7.0]
    params, per_lane = clip_case(scales, seed=int(scale * 1000) % 97)
    norms = lane_clip_grad_norm(params.grad, max_norm)
    assert norms.shape == (3,)
    for k in range(3):
        expected, norm = torch_clip(per_lane[k], max_norm)
        torch.testing.assert_close(norms[k], norm, rtol=1e-6, atol=0)
        got = [view[k] for view in params.grad_views]
        if norm < max_norm:
            for g, before in zip(got, per_lane[k], strict=True):
                assert torch.equal(g, before)
        else:
            clipped = torch.linalg.vector_norm(torch.cat([g.flatten() for g in got]))
            assert clipped.item() == pytest.approx(max_norm, rel=1e-5)
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-6, atol=0)


def test_lane_clip_grad_norm_clips_some_lanes_and_leaves_the_others_bit_for_bit():
    params, per_lane = clip_case([1e3, 1e-3, 1e3, 1e-3])
    lane_clip_grad_norm(params.grad, 1.0)
    for k in (1, 3):
        for view, before in zip(params.grad_views, per_lane[k], strict=True):
            assert torch.equal(view[k], before)
    for k in (0, 2):
        row = params.grad[k]
        assert torch.linalg.vector_norm(row).item() == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_lane_clip_grad_norm_on_non_finite_gradients_touches_that_lane_only(bad):
    """Lane 0 has one non-finite gradient: its gradients become torch's clip of them (NaN
    where that gradient was, and throughout for NaN), its norm non-finite; lane 1 is
    clipped on its own and lane 2, under the norm, untouched."""
    params, per_lane = clip_case([1.0, 1e3, 1e-3])
    params.grad_views[1][0, 2, 3] = bad
    per_lane[0][1][2, 3] = bad
    norms = lane_clip_grad_norm(params.grad, 1.0)
    expected, norm = torch_clip(per_lane[0], 1.0)
    assert not torch.isfinite(norms[0]) and not torch.isfinite(norm)
    assert torch.isnan(norms[0]) == torch.isnan(norm)
    lane0 = [view[0] for view in params.grad_views]
    assert torch.isnan(lane0[1][2, 3])
    for g, e in zip(lane0, expected, strict=True):
        torch.testing.assert_close(g, e, equal_nan=True, rtol=0, atol=0)
    assert torch.isfinite(params.grad[1:]).all()
    lane1, _ = torch_clip(per_lane[1], 1.0)
    for view, e in zip(params.grad_views, lane1, strict=True):
        torch.testing.assert_close(view[1], e, rtol=1e-6, atol=0)
    for view, before in zip(params.grad_views, per_lane[2], strict=True):
        assert torch.equal(view[2], before)


# -- LaneParameters and autograd -------------------------------------------------------------


def stacked_mlp(lanes: int = LANES):
    nets = []
    for k in range(lanes):
        torch.manual_seed(k)
        nets.append(build_mlp(5, 3, MLPConfig(hidden_sizes=[17, 9], activation="tanh")))
    return nets, stack_networks(nets)


def lane_losses(q, seed: int) -> torch.Tensor:
    x = torch.randn(q.lanes, 6, 5, generator=torch.Generator().manual_seed(seed))
    return q(x).pow(2).mean(dim=(1, 2))


def test_lane_parameters_keep_the_modules_weights_as_views_of_one_buffer():
    nets, q = stacked_mlp()
    before = copy.deepcopy(q.state_dict())
    params = LaneParameters(q.parameters())
    assert params.flat.shape == (LANES, sum(p[0].numel() for p in q.parameters()))
    for p, view in zip(q.parameters(), params.views(params.flat), strict=True):
        assert p.data_ptr() == view.data_ptr() and p.shape == view.shape
    assert all(torch.equal(before[k], v) for k, v in q.state_dict().items())
    with torch.no_grad():
        params.rows[1].add_(1.0)
    state = q.lane_state_dict(1)
    reference = nets[1].state_dict()
    assert all(torch.equal(state[k], reference[k] + 1.0) for k in reference)


def test_zero_grad_then_backward_fills_the_flat_gradient_buffer():
    """``zero_grad`` and ``loss.backward()``: autograd accumulates every parameter's gradient
    into its view of :attr:`LaneParameters.grad`, equal to ``torch.autograd.grad`` of the
    same loss; a second round does not add the first's gradients; without ``zero_grad``
    they accumulate, as torch's ``.grad`` does."""
    _, q = stacked_mlp()
    params = LaneParameters(q.parameters())
    for seed in (0, 1):
        expected = torch.autograd.grad(lane_losses(q, seed).sum(), params.params)
        params.zero_grad()
        loss = lane_losses(q, seed)
        loss.backward(torch.ones_like(loss))
        for p, view, e in zip(params.params, params.grad_views, expected, strict=True):
            assert p.grad is view  # accumulated in place, not replaced
            assert torch.equal(view, e)
        flat = torch.cat([e.flatten(1) for e in expected], dim=1)
        assert torch.equal(params.grad, flat)
    loss = lane_losses(q, 1)
    loss.backward(torch.ones_like(loss))  # no zero_grad: accumulates
    assert torch.equal(params.grad, 2 * flat)
    params.params[0].grad = None  # what optimizer.zero_grad(set_to_none=True) would do
    params.zero_grad()
    assert params.params[0].grad is params.grad_views[0]
    assert not params.grad.any()


def test_lane_parameters_refuse_what_they_cannot_stack():
    with pytest.raises(ValueError, match="at least one"):
        LaneParameters([])
    with pytest.raises(ValueError, match="same lanes"):
        LaneParameters([torch.nn.Parameter(torch.zeros(3, 2)), torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match="same lanes"):
        LaneParameters([torch.nn.Parameter(torch.zeros(()))])
    target = LaneParameters(stacked(0), grad=False)
    assert target.grad is None and target.grad_rows == []
    with pytest.raises(ValueError, match="no gradients"):
        target.zero_grad()
    with pytest.raises(ValueError, match="keep gradients"):
        LaneOptimizer(target, "adam", eps=1e-8)


# -- hard_update and polyak_update -----------------------------------------------------------


def online_and_target(lanes: int, first_lane: int = 0):
    """Lanes ``first_lane .. first_lane + lanes - 1`` of the same data at every group size."""
    online = [p[first_lane : first_lane + lanes] for p in stacked(0, first_lane + lanes)]
    target = [p[first_lane : first_lane + lanes] for p in stacked(50, first_lane + lanes)]
    return (
        LaneParameters([torch.nn.Parameter(p.detach().clone()) for p in online]),
        LaneParameters([torch.nn.Parameter(p.detach().clone()) for p in target], grad=False),
    )


TAUS = (0.005, 0.3, 1 / 3, 1.0)


@pytest.mark.parametrize("update", ["hard", "polyak"])
def test_a_lanes_target_update_is_its_one_lane_update(update):
    group_online, group_target = online_and_target(LANES)
    for _ in range(2):
        for tau in TAUS:
            if update == "hard":
                hard_update(group_target, group_online)
            else:
                polyak_update(group_target, group_online, tau)
        with torch.no_grad():
            group_online.flat.mul_(0.9)
    for k in range(LANES):
        online, target = online_and_target(1, first_lane=k)
        for _ in range(2):
            for tau in TAUS:
                if update == "hard":
                    hard_update(target, online)
                else:
                    polyak_update(target, online, tau)
            with torch.no_grad():
                online.flat.mul_(0.9)
        assert torch.equal(group_target.flat[k], target.flat[0]), k
        for p, q in zip(group_target.params, target.params, strict=True):
            assert torch.equal(p.detach()[k], q.detach()[0])


def test_polyak_update_is_stable_baselines3s_formula_on_each_lanes_parameters():
    """``target.mul_(1 - tau)``, then ``target.add_(online, alpha=tau)``, parameter by
    parameter (Stable-Baselines3's ``polyak_update``), bit for bit for every lane."""
    online, target = online_and_target(LANES)
    sb3 = [[p.detach()[k].clone() for p in target.params] for k in range(LANES)]
    for tau in TAUS[:3] * 3:
        polyak_update(target, online, tau)
        for k in range(LANES):
            for t, o in zip(sb3[k], online.params, strict=True):
                t.mul_(1 - tau)
                t.add_(o.detach()[k], alpha=tau)
        for k in range(LANES):
            for p, expected in zip(target.params, sb3[k], strict=True):
                assert torch.equal(p.detach()[k], expected), (tau, k)
    assert not torch.equal(target.flat, online.flat)


def test_hard_update_copies_every_lane_into_the_target_network():
    _, q = stacked_mlp()
    q_target = copy.deepcopy(q).requires_grad_(False)
    online = LaneParameters(q.parameters())
    target = LaneParameters(q_target.parameters(), grad=False)
    with torch.no_grad():
        online.flat.add_(torch.arange(LANES).unsqueeze(1))
    hard_update(target, online)
    assert torch.equal(target.flat, online.flat)
    assert target.flat.data_ptr() != online.flat.data_ptr()
    for key, value in q.state_dict().items():
        assert torch.equal(q_target.state_dict()[key], value)


@pytest.mark.parametrize("update", [hard_update, lambda t, o: polyak_update(t, o, 0.5)])
def test_target_updates_refuse_mismatched_layouts(update):
    online = LaneParameters(stacked(0, shapes=[(4,), (5,)]))
    fewer_lanes = LaneParameters(stacked(0, lanes=2, shapes=[(4,), (5,)]), grad=False)
    other_order = LaneParameters(stacked(0, shapes=[(5,), (4,)]), grad=False)
    other_sizes = LaneParameters(stacked(0, shapes=[(4,), (6,)]), grad=False)
    for target in (fewer_lanes, other_order, other_sizes):
        before = target.flat.clone()
        with pytest.raises(ValueError, match="differ in layout"):
            update(target, online)
        assert torch.equal(target.flat, before)


# -- LaneReplayBuffer with Box actions -----------------------------------------------------


def context(action_space: gym.Space, lanes: int = LANES, seed: int = 5) -> AgentContext:
    return AgentContext(
        observation_space=gym.spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float32),
        action_space=action_space,
        num_envs=2,
        device=torch.device("cpu"),
        seed=seed,
        rng=np.random.default_rng(seed),
        total_steps=1_000,
        make_network=lambda i, o: build_mlp(i, o, MLPConfig(hidden_sizes=[8])),
        lanes=lanes,
        lane_seeds=tuple(range(seed, seed + lanes)),
        lane_rngs=tuple(np.random.default_rng(seed + k) for k in range(lanes)),
    )


BOX = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)


def box_transition(step: int, lanes: int = LANES, first_lane: int = 0, n: int = 2) -> Transition:
    """Step ``step``'s transition of lanes ``first_lane ..``: lane ``k``'s values depend only
    on ``k`` and ``step``."""
    rows = []
    for k in range(first_lane, first_lane + lanes):
        gen = torch.Generator().manual_seed(1000 * k + step)
        rows.append(
            (
                torch.randn(n, 3, generator=gen),
                torch.randn(n, 2, generator=gen),
                torch.randn(n, generator=gen),
                torch.randn(n, 3, generator=gen),
                torch.rand(n, generator=gen) < 0.3,
            )
        )
    obs, action, reward, next_obs, terminated = (torch.stack(f) for f in zip(*rows, strict=True))
    return Transition(
        obs=obs,
        action=action,
        reward=reward,
        next_obs=next_obs,
        terminated=terminated,
        truncated=torch.zeros_like(terminated),
    )


@pytest.mark.parametrize(
    ("space", "shape", "dtype"),
    [
        (gym.spaces.Discrete(4), (), torch.long),
        (BOX, (2,), torch.float32),
        (gym.spaces.Box(-1.0, 1.0, shape=(2, 3), dtype=np.float64), (6,), torch.float32),
        (gym.spaces.MultiDiscrete([3, 2]), (2,), torch.long),
    ],
)
def test_for_agent_lays_out_the_agents_actions(space, shape, dtype):
    assert action_layout(space) == (shape, dtype)
    buffer = LaneReplayBuffer.for_agent(11, context(space))
    assert buffer.action.shape == (LANES, 11, *shape) and buffer.action.dtype == dtype
    assert buffer.obs.shape == buffer.next_obs.shape == (LANES, 11, 3)
    assert buffer.reward.shape == buffer.terminated.shape == (LANES, 11)
    assert len(buffer.rngs) == LANES and len(buffer) == 0


@pytest.mark.parametrize(
    "space",
    [
        gym.spaces.MultiBinary(3),
        gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3))),
        gym.spaces.Dict({"a": gym.spaces.Discrete(2)}),
    ],
)
def test_action_layout_refuses_a_space_it_cannot_store(space):
    with pytest.raises(ValueError, match="Discrete, Box or MultiDiscrete"):
        action_layout(space)
    with pytest.raises(ValueError, match="Discrete, Box or MultiDiscrete"):
        LaneReplayBuffer.for_agent(4, context(space))


def test_box_actions_wrap_around_as_float_vectors():
    """Capacity 5, two environments per step: the third step wraps around (slots 4 and 0),
    and after four steps the buffer holds the last five transitions, each where it was
    written; float64 actions are stored as float32."""
    buffer = LaneReplayBuffer.for_agent(5, context(BOX))
    written = []
    for step in range(4):
        t = box_transition(step)
        if step == 1:
            t = dataclasses.replace(t, action=t.action.double())
        buffer.add(t)
        written.append(t)
        assert len(buffer) == min(2 * (step + 1), 5)
        assert buffer.position == 2 * (step + 1) % 5
    slots = {}  # slot -> (step, env) that wrote it last
    for step in range(4):
        for env in range(2):
            slots[(2 * step + env) % 5] = (step, env)
    for slot, (step, env) in slots.items():
        t = written[step]
        assert torch.equal(buffer.obs[:, slot], t.obs[:, env])
        assert torch.equal(buffer.next_obs[:, slot], t.next_obs[:, env])
        assert torch.equal(buffer.action[:, slot], t.action[:, env].float())
        assert torch.equal(buffer.reward[:, slot], t.reward[:, env])
        assert torch.equal(buffer.terminated[:, slot], t.terminated[:, env])
    assert buffer.action.dtype == torch.float32


def test_a_box_action_of_any_shape_is_stored_flat():
    space = gym.spaces.Box(-1.0, 1.0, shape=(2, 1), dtype=np.float32)
    buffer = LaneReplayBuffer.for_agent(4, context(space))
    t = box_transition(0)
    buffer.add(dataclasses.replace(t, action=t.action.unsqueeze(-1)))
    assert torch.equal(buffer.action[:, :2], t.action)
    sample = buffer.sample(3)
    assert sample.action.shape == (LANES, 3, 2)


@pytest.mark.parametrize("replace", [True, False])
def test_a_lanes_samples_are_a_one_lane_buffers(replace):
    """Lane ``k`` of a group draws the indices (and so the transitions) that a one-lane
    buffer of the same generator seed, holding lane ``k``'s transitions, draws."""
    group = LaneReplayBuffer.for_agent(9, context(BOX))
    alone = [LaneReplayBuffer.for_agent(9, context(BOX, lanes=1, seed=5 + k)) for k in range(3)]
    for step in range(7):  # 14 transitions into 9 slots: wrapped
        group.add(box_transition(step))
        for k, buffer in enumerate(alone):
            buffer.add(box_transition(step, lanes=1, first_lane=k))
    for _ in range(3):
        idx = group.sample_indices(4, replace=replace)
        sample = group.gather(idx)
        assert sample.action.shape == (LANES, 4, 2) and sample.obs.shape == (LANES, 4, 3)
        for k, buffer in enumerate(alone):
            one_idx = buffer.sample_indices(4, replace=replace)
            assert torch.equal(idx[k], one_idx[0])
            one = buffer.gather(one_idx)
            for field in sample._fields:
                assert torch.equal(getattr(sample, field)[k], getattr(one, field)[0]), field
    assert not torch.equal(idx[0], idx[1])  # the lanes draw from different streams
