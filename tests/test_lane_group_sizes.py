"""A seed's results do not depend on the group it trains in (issue: lanes bit-identical for
every group size and position).

Each seed of the suite is trained alone, then the same 16 seeds are trained as one group of
16 and as groups of 5, 3, 2, 1 and 5 in a shuffled order (so every seed sits at a different
position than in the other groupings). Every run's curve, episodes, losses and saved state
(weights *and* optimizer moments) must be identical bit for bit. The network's layer sizes
are odd on purpose (a 2-action head, 20 hidden units): per-lane blocks whose size is not a
multiple of the CPU's vector width are where a stacked optimizer step used to round lane
``k`` differently depending on where in the group it sat.
"""

from __future__ import annotations

import json
import random
import textwrap

import pytest
import torch
from rlbench_mlp import MLPConfig, build_mlp
from test_lanes import assert_same_state, run_files

from rlbench.executor import run_suite, spread_groups
from rlbench.lanes import (
    LaneOptimizer,
    LaneParameters,
    kernels,
    lane_clip_grad_norm,
    stack_networks,
)
from rlbench.runspec import expand
from rlbench.suite import load_suite
from rlbench.training import execute_lanes

SUITE = """
name = "groups"
seeds = 16
devices = ["cpu"]
environments = ["CartPole-v1"]

[budget]
steps = 400
eval_interval = 200
eval_episodes = 1

[[agents]]
name = "dqn"
network = { name = "mlp", hidden_sizes = [20, 12] }
config = { learning_starts = 64, train_frequency = 32, gradient_steps = 4, batch_size = 8 }

[[agents]]
name = "naive_dqn"
"""

SIZES = (5, 3, 2, 1, 5)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, catalogue):
    root = tmp_path_factory.mktemp("groups")
    (root / "suite.toml").write_text(textwrap.dedent(SUITE))
    suite = load_suite(root / "suite.toml", catalogue)
    return root, catalogue, expand(suite)


@pytest.mark.parametrize("agent", ["dqn", "naive_dqn"])
def test_a_seed_computes_the_same_in_every_group_size_and_position(runs, one_thread, agent):
    root, catalogue, specs = runs
    specs = [s for s in specs if s.agent == agent]
    assert len(specs) == 16
    alone = root / agent / "alone"
    for spec in specs:
        [outcome] = execute_lanes([spec], alone, catalogue)
        assert outcome.status == "complete"

    shuffled = list(specs)
    random.Random(7).shuffle(shuffled)
    groupings = {"16": [shuffled], "5-3-2-1-5": []}
    start = 0
    for size in SIZES:
        groupings["5-3-2-1-5"].append(shuffled[start : start + size])
        start += size
    for name, groups in groupings.items():
        folder = root / agent / name
        for group in groups:
            assert all(o.status == "complete" for o in execute_lanes(group, folder, catalogue))
        for spec in specs:
            expected = run_files(alone / "runs" / spec.run_id)
            got = run_files(folder / "runs" / spec.run_id)
            for key in ("evaluations.csv", "episodes.csv", "metrics.csv"):
                assert got[key] == expected[key], f"seed {spec.seed} in groups {name}: {key}"
            assert_same_state(got["weights"], expected["weights"])


def stacked_training(seeds: list[int], kind: str, steps: int = 6) -> dict[int, list[torch.Tensor]]:
    """Train the stacked networks of ``seeds`` (one lane each) for a few steps of
    :class:`~rlbench.lanes.LaneOptimizer` on data that depends only on the lane's seed (the
    gradients through autograd into :class:`~rlbench.lanes.LaneParameters`, clipped per
    lane); return each lane's weights and optimizer moments."""
    nets = []
    for seed in seeds:
        torch.manual_seed(seed)
        nets.append(build_mlp(3, 2, MLPConfig(hidden_sizes=[20, 7])))
    q = stack_networks(nets)
    params = LaneParameters(q.parameters())
    opt = LaneOptimizer(params, kind, eps=1e-5)
    for t in range(steps):
        x = torch.stack(
            [torch.randn(5, 3, generator=torch.Generator().manual_seed(100 * s + t)) for s in seeds]
        )
        loss = q(x).pow(2).mean(dim=(1, 2))
        params.zero_grad()
        loss.backward(torch.ones_like(loss))
        lane_clip_grad_norm(params.grad, 0.5)  # clips some lanes at some steps, not all
        opt.step(1e-2 / (t + 1))
    state = opt.state_dict()
    moments = [m for name in opt.moments for m in state[name]]
    return {
        seed: [p[k].detach().clone() for p in params.params] + [m[k].clone() for m in moments]
        for k, seed in enumerate(seeds)
    }


def without_private_kernels(monkeypatch) -> None:
    """Make :mod:`rlbench.lanes.kernels` take its public fallbacks (as on a PyTorch without
    the private names)."""
    monkeypatch.setattr(kernels, "_private", lambda name: None)
    monkeypatch.setattr(kernels, "_aten", lambda name: None)


@pytest.fixture
def one_thread():
    """One torch thread, as lanes train (several threads split a product by its shape, so a
    lane's rounding would depend on its group); the caller's setting restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("path", ["private", "public"])
@pytest.mark.parametrize("kind", ["adam", "rmsprop"])
def test_the_lane_optimizer_updates_each_lane_as_alone(monkeypatch, one_thread, kind, path):
    """The optimizer on its own, at every group size the issue names and shuffled places:
    20 and 7 hidden units and 2 outputs give per-lane blocks of 60, 140, 20, 7, 14 and 2
    elements (one row of 243), most of them not a multiple of the kernel's 16-element unit;
    through PyTorch's private kernels and through their public fallbacks."""
    if path == "public":
        without_private_kernels(monkeypatch)
    alone = {s: stacked_training([s], kind)[s] for s in range(16)}
    for size in (1, 2, 3, 5, 16):
        seeds = list(range(16))
        random.Random(size).shuffle(seeds)
        for seed, tensors in stacked_training(seeds[:size], kind).items():
            assert len(tensors) == len(alone[seed])
            for got, expected in zip(tensors, alone[seed], strict=True):
                assert torch.equal(got, expected), f"seed {seed} in a group of {size}"


def test_idle_cores_get_groups_of_their_own():
    groups = [["a", "b", "c", "d", "e"], ["f"]]
    assert spread_groups(groups, 1) == groups
    assert spread_groups(groups, 3) == [["a", "b", "c"], ["d", "e"], ["f"]]
    assert sorted(map(len, spread_groups(groups, 16))) == [1] * 6  # no run is split


def test_lanes_train_on_one_thread_by_default(tmp_path, catalogue):
    """``run_suite`` without ``threads``: a lane agent's groups train on one torch thread
    (where group size cannot change a lane), and a single group is spread over the jobs."""
    (tmp_path / "s.toml").write_text(
        textwrap.dedent(SUITE).replace("seeds = 16", "seeds = 2").replace("= 400", "= 100")
    )
    suite = load_suite(tmp_path / "s.toml", catalogue)
    runs = [s for s in expand(suite) if s.agent == "naive_dqn"]
    torch.set_num_threads(2)
    result = run_suite(suite, runs, tmp_path / "results", catalogue=catalogue, jobs=1)
    assert [o.status for o in result.outcomes.values()] == ["complete"] * 2
    for spec in runs:
        run_dir = tmp_path / "results" / "groups" / "runs" / spec.run_id
        provenance = json.loads((run_dir / "provenance.json").read_text())
        assert provenance["torch_threads"] == 1
        assert provenance["lane_seeds"] == [0, 1]  # the group it trained in, recorded
    assert torch.get_num_threads() == 2  # the caller's setting is restored
