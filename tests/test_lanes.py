"""Lanes: several seeds trained as one batched computation give each seed's own results.

The claim users rely on (README, ``rlbench run --lanes``): lane ``k`` of a group computes
what the separate run of seed ``k`` computes, bit for bit on the CPU, so grouping changes
nothing but speed. These tests compare whole runs (curves, episodes, losses, saved weights),
not just first steps.
"""

from __future__ import annotations

import csv
import json
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import rlbench_cmd
from rlbench_dqn.exploration import lane_epsilon_greedy
from rlbench_mlp import MLPConfig, build_mlp

from rlbench.executor import lane_groups
from rlbench.lanes import StackedSequential, VmappedNetwork, stack_networks
from rlbench.runspec import expand
from rlbench.suite import load_suite
from rlbench.training import execute_lanes, execute_run

SUITE = """
name = "lanes"
seeds = [0, 1, 2]
devices = ["cpu"]
environments = ["CartPole-v1"]

[budget]
steps = 2400
eval_interval = 800
eval_episodes = 3

[[agents]]
name = "dqn"
network = {{ name = "mlp", hidden_sizes = [64, 64] }}
[agents.config]
learning_starts = 200
train_frequency = 100
gradient_steps = 8
num_envs = {num_envs}

[[agents]]
name = "naive_dqn"
"""


def write(tmp_path: Path, num_envs: int = 1) -> Path:
    path = tmp_path / "lanes.toml"
    path.write_text(textwrap.dedent(SUITE.format(num_envs=num_envs)))
    return path


def run_files(run_dir: Path) -> dict[str, object]:
    """What a run leaves that must not depend on grouping: its curve and episodes (less
    wall-clock columns), its training losses, and its saved weights."""
    out: dict[str, object] = {}
    for name in ("evaluations.csv", "episodes.csv", "metrics.csv"):
        with (run_dir / name).open(newline="") as f:
            rows = list(csv.DictReader(f))
        out[name] = [{k: v for k, v in row.items() if k != "wall_time_s"} for row in rows]
    out["weights"] = torch.load(run_dir / "weights.pt", weights_only=True)
    return out


def assert_same_state(a: object, b: object) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for key in a:
            assert_same_state(a[key], b[key])
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same_state(x, y)
    else:
        assert a == b


@pytest.mark.parametrize("num_envs", [1, 2])
def test_lane_k_of_a_group_is_the_separate_run_of_seed_k(tmp_path, catalogue, num_envs):
    suite = load_suite(write(tmp_path, num_envs), catalogue)
    dqn_runs = [spec for spec in expand(suite) if spec.agent == "dqn"]
    torch.set_num_threads(1)
    grouped = execute_lanes(dqn_runs, tmp_path / "grouped", catalogue)
    assert [o.status for o in grouped] == ["complete"] * 3
    for spec in dqn_runs:
        alone = execute_run(spec, tmp_path / "alone", catalogue)
        assert alone.status == "complete"
        a = run_files(tmp_path / "alone" / "runs" / spec.run_id)
        g = run_files(tmp_path / "grouped" / "runs" / spec.run_id)
        assert a["evaluations.csv"] == g["evaluations.csv"]
        assert a["episodes.csv"] == g["episodes.csv"]
        assert a["metrics.csv"] == g["metrics.csv"]
        assert_same_state(a["weights"], g["weights"])
        status = json.loads(
            (tmp_path / "grouped" / "runs" / spec.run_id / "status.json").read_text()
        )
        assert status["lanes"] == 3
    # The lanes are independent seeds, not copies of one.
    curves = [run_files(tmp_path / "grouped" / "runs" / s.run_id)["episodes.csv"] for s in dqn_runs]
    assert curves[0] != curves[1] != curves[2]


def test_rlbench_run_groups_lanes_transparently(tmp_path):
    """``rlbench run`` trains each agent's seeds as one group by default; ``--lanes 1``
    trains them one by one; the results and the summary table are the same."""
    suite = write(tmp_path)
    for lanes in ("1", "16"):
        proc = rlbench_cmd(
            "run", str(suite), "--results", str(tmp_path / lanes), "--lanes", lanes,
            "-j", "2", "--threads", "1", "--no-report",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    runs_1 = tmp_path / "1" / "lanes" / "runs"
    runs_16 = tmp_path / "16" / "lanes" / "runs"
    assert len(list(runs_1.iterdir())) == 6
    for run_dir in sorted(runs_1.iterdir()):
        one, grouped = run_files(run_dir), run_files(runs_16 / run_dir.name)
        for key in ("evaluations.csv", "episodes.csv", "metrics.csv"):
            assert one[key] == grouped[key], (run_dir.name, key)
        assert_same_state(one["weights"], grouped["weights"])
        assert json.loads((run_dir / "status.json").read_text())["lanes"] == 1
        assert json.loads((runs_16 / run_dir.name / "status.json").read_text())["lanes"] == 3
    summary_1 = (tmp_path / "1" / "lanes" / "summary.csv").read_text()
    assert summary_1 == (tmp_path / "16" / "lanes" / "summary.csv").read_text()


PLAIN_AGENT = '''
    import torch
    from rlbench import Agent, AgentSpec, hookimpl

    class Plain(Agent):
        """A plain agent (not a LaneAgent): always action 0."""

        def act(self, obs, *, greedy=False):
            return torch.zeros(obs.shape[0], dtype=torch.long)

        def observe(self, t):
            return {}

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    @hookimpl
    def rlbench_register_agents():
        return [AgentSpec("plain", Plain)]
'''


@pytest.fixture
def with_plain(inline_plugin):
    return inline_plugin("plain_agent_plugin", PLAIN_AGENT)


def plain_suite(tmp_path: Path) -> Path:
    path = write(tmp_path)
    path.write_text(path.read_text() + '\n[[agents]]\nname = "plain"\n')
    return path


def test_lane_groups_join_only_runs_that_differ_in_their_seed(tmp_path, with_plain):
    runs = expand(load_suite(plain_suite(tmp_path), with_plain))
    groups = lane_groups(runs, with_plain, max_lanes=2)
    shapes = [[(s.agent, s.seed) for s in g] for g in groups]
    # The DQNs train in lanes (at most 2 here); "plain" is a plain Agent: one run per group.
    assert shapes == [
        [("dqn", 0), ("dqn", 1)],
        [("naive_dqn", 0), ("naive_dqn", 1)],
        [("dqn", 2)],
        [("naive_dqn", 2)],
        [("plain", 0)],
        [("plain", 1)],
        [("plain", 2)],
    ]
    assert [len(g) for g in lane_groups(runs, with_plain, max_lanes=1)] == [1] * 9


def test_execute_lanes_refuses_runs_that_differ_in_more_than_the_seed(tmp_path, with_plain):
    runs = expand(load_suite(plain_suite(tmp_path), with_plain))
    dqn, naive, plain = runs[0:3], runs[3:6], runs[6:9]
    with pytest.raises(ValueError, match="differ only in their seed"):
        execute_lanes([dqn[0], naive[0]], tmp_path / "out", with_plain)
    with pytest.raises(ValueError, match="does not train in lanes"):
        execute_lanes(plain[:2], tmp_path / "out", with_plain)
    # A plain agent's single run goes through the same loop, as one lane.
    [outcome] = execute_lanes(plain[:1], tmp_path / "out", with_plain)
    assert outcome.status == "complete"


@pytest.mark.parametrize("n", [1, 3])
def test_each_lane_explores_with_its_own_stream(n):
    q = torch.randn(4, n, 3, generator=torch.Generator().manual_seed(0))
    lane_rngs = tuple(np.random.default_rng(k) for k in range(4))
    single_rngs = [(np.random.default_rng(k),) for k in range(4)]
    for _ in range(50):
        together = lane_epsilon_greedy(q, 0.5, lane_rngs)
        for k in range(4):
            alone = lane_epsilon_greedy(q[k : k + 1], 0.5, single_rngs[k])  # a one-lane agent
            assert torch.equal(together[k], alone[0])


class TwoHeads(torch.nn.Module):
    """Not an nn.Sequential: stacked through torch.func.vmap."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Linear(4, 8)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.body(x)))


@pytest.mark.parametrize(
    ("build", "kind"),
    [
        (lambda: build_mlp(4, 2, MLPConfig(hidden_sizes=[16, 16], activation="tanh")),
         StackedSequential),
        (TwoHeads, VmappedNetwork),
    ],
)  # fmt: skip
def test_stacked_networks_compute_each_network_and_save_its_weights(build, kind):
    torch.manual_seed(0)
    networks = [build() for _ in range(3)]
    stacked = stack_networks(networks)
    assert isinstance(stacked, kind)
    x = torch.randn(3, 5, 4)
    out = stacked(x)
    assert out.shape == (3, 5, 2)
    for k, net in enumerate(networks):
        torch.testing.assert_close(out[k], net(x[k]), rtol=1e-6, atol=1e-6)
        fresh = build()
        fresh.load_state_dict(stacked.lane_state_dict(k))
        assert torch.equal(fresh(x[k]), net(x[k]))


DIVERGING_LANE = """
    import torch
    from rlbench import AgentSpec, LaneAgent, hookimpl

    class OneBadLane(LaneAgent):
        '''Lane 1's loss is NaN from step 30 on; the others are fine.'''

        steps = 0

        def act(self, obs, *, greedy=False):
            return torch.zeros(obs.shape[:2], dtype=torch.long)

        def observe(self, t):
            self.steps += 1
            bad = self.steps >= 30
            return {"loss": [float("nan") if bad and k == 1 else 0.5
                             for k in range(self.context.lanes)]}

        def state_dict(self):
            return {"steps": self.steps}

        def lane_state_dict(self, lane):
            return {"steps": self.steps}

        def load_state_dict(self, state):
            self.steps = state["steps"]

    class BadLaneThenCrash(OneBadLane):
        '''Lane 1 diverges at step 30, then the agent crashes at step 60.'''

        def observe(self, t):
            if self.steps >= 60:
                raise RuntimeError("crashed on purpose")
            return super().observe(t)

    @hookimpl
    def rlbench_register_agents():
        return [AgentSpec("one_bad_lane", OneBadLane), AgentSpec("then_crash", BadLaneThenCrash)]
"""


def test_a_diverging_lane_fails_alone(tmp_path, inline_plugin):
    catalogue = inline_plugin("bad_lane_plugin", DIVERGING_LANE)
    suite = tmp_path / "s.toml"
    suite.write_text(
        textwrap.dedent("""
        name = "bad"
        seeds = 3
        environments = ["CartPole-v1"]
        [budget]
        steps = 100
        eval_interval = 50
        eval_episodes = 1
        [[agents]]
        name = "one_bad_lane"
    """)
    )
    runs = expand(load_suite(suite, catalogue))
    outcomes = execute_lanes(runs, tmp_path / "out", catalogue)
    assert [o.status for o in outcomes] == ["complete", "failed", "complete"]
    assert outcomes[1].error == "DivergedError: training diverged at step 30: loss = nan"
    error = (tmp_path / "out" / "runs" / runs[1].run_id / "error.txt").read_text()
    assert "Traceback" in error and "DivergedError" in error

    # A crash later fails the lanes still training; the diverged lane keeps its own error.
    crash = [replace(spec, agent="then_crash", label="then_crash") for spec in runs]
    outcomes = execute_lanes(crash, tmp_path / "out", catalogue)
    assert [o.error for o in outcomes] == [
        "RuntimeError: crashed on purpose",
        "DivergedError: training diverged at step 30: loss = nan",
        "RuntimeError: crashed on purpose",
    ]
