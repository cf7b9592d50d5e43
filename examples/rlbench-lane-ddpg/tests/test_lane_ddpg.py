"""Tests a lane-agent author writes: the agent is registered and refuses what it cannot train
on; its actions stay in the bounds; a checkpoint resumes exactly; and, through the harness,
lane k of a group computes exactly what the run of seed k computes alone. Run with
``pip install -e '.[test]' && pytest`` from the package directory (about 20 seconds)."""

from __future__ import annotations

import csv
import io
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from rlbench import AgentContext, Transition
from rlbench.plugins import load_catalogue
from rlbench.suite import load_suite

from rlbench_lane_ddpg import DDPGConfig, LaneDDPG

SUITE = Path(__file__).resolve().parents[1] / "suite.toml"
OBS = gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
ACTIONS = gym.spaces.Box(-2.0, 2.0, shape=(1,), dtype=np.float32)


# ---------------------------------------------------------------- the agent on its own


def make_agent(seeds: tuple[int, ...] = (0,), **config: Any) -> LaneDDPG:
    """A lane agent of ``seeds`` built as the harness builds one: each lane's generator
    seeded from its seed, network k of each role drawn from seed k's torch stream."""
    torch_states: dict[int, torch.Tensor] = {}

    def make_lane_networks(n_in: int, n_out: int, role: str | None = None) -> list:
        outside, networks = torch.random.get_rng_state(), []
        for seed in seeds:
            if seed in torch_states:
                torch.random.set_rng_state(torch_states[seed])
            else:
                torch.manual_seed(seed)
            layers = [torch.nn.Linear(n_in, 16), torch.nn.ReLU(), torch.nn.Linear(16, n_out)]
            networks.append(torch.nn.Sequential(*layers))
            torch_states[seed] = torch.random.get_rng_state()
        torch.random.set_rng_state(outside)
        return networks

    rngs = tuple(np.random.default_rng(seed) for seed in seeds)
    context = AgentContext(
        observation_space=OBS,
        action_space=ACTIONS,
        num_envs=1,
        device=torch.device("cpu"),
        seed=seeds[0],
        rng=rngs[0],
        total_steps=1_000,
        make_network=lambda n_in, n_out: make_lane_networks(n_in, n_out)[0],
        lanes=len(seeds),
        lane_seeds=seeds,
        lane_rngs=rngs,
        make_lane_networks=make_lane_networks,
    )
    defaults = {"learning_starts": 8, "batch_size": 4, "max_grad_norm": 1.0}
    return LaneDDPG(DDPGConfig(**{**defaults, **config}), context)


def step(agent: LaneDDPG, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """One made-up environment step of every lane: the agent's action and its metrics."""
    lanes = agent.context.lanes
    obs = torch.full((lanes, 1, 3), math.sin(i))
    action = agent.act(obs)
    metrics = agent.observe(
        Transition(
            obs=obs,
            action=action,
            reward=-action.square().sum(-1),
            next_obs=torch.full((lanes, 1, 3), math.sin(i + 1)),
            terminated=torch.full((lanes, 1), i % 7 == 6),
            truncated=torch.full((lanes, 1), i % 5 == 4),
        )
    )
    return action, dict(metrics)


def assert_same(a: object, b: object) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b


def test_registered_by_this_package():
    catalogue = load_catalogue()
    assert not catalogue.broken, [b.describe() for b in catalogue.broken]
    provided = catalogue.agents["lane_ddpg"]
    assert provided.spec.agent is LaneDDPG
    assert provided.plugin.distribution == "rlbench-lane-ddpg"


def test_suite_file_validates():
    suite = load_suite(SUITE, load_catalogue())
    assert [(a.name, a.label) for a in suite.agents] == [
        ("lane_ddpg", "lane_ddpg"),
        ("lane_ddpg", "lane_ddpg-64"),
    ]


def test_it_refuses_discrete_and_unbounded_actions():
    assert "Box action space" in LaneDDPG.check_spaces(OBS, gym.spaces.Discrete(2))
    unbounded = gym.spaces.Box(-np.inf, np.inf, shape=(1,))
    assert "bounded" in LaneDDPG.check_spaces(OBS, unbounded)
    assert LaneDDPG.check_spaces(OBS, ACTIONS) is None


def test_actions_stay_in_the_bounds_and_greedy_ones_are_the_actors():
    agent = make_agent(seeds=(0, 1), exploration_noise=5.0)
    for i in range(12):
        action, _ = step(agent, i)
        assert action.shape == (2, 1, 1)  # [lanes, num_envs, *action_shape]
        assert bool((action.abs() <= 2.0).all())
    obs = torch.zeros(2, 1, 3)
    greedy = agent.act(obs, greedy=True)
    with torch.no_grad():
        torch.testing.assert_close(greedy, 2.0 * torch.tanh(agent.actor(obs)))
    assert torch.equal(greedy, agent.act(obs, greedy=True))  # no noise, no draws


def test_a_checkpoint_resumes_exactly():
    """What the harness does at a mid-run checkpoint: save ``checkpoint_state()`` with
    torch.save, build a fresh agent from the same config and context, restore it; the two
    then compute the same actions, losses and weights."""
    agent = make_agent(seeds=(0, 1))
    for i in range(20):
        step(agent, i)
    saved = io.BytesIO()
    torch.save(agent.checkpoint_state(), saved)
    resumed = make_agent(seeds=(0, 1))
    resumed.load_checkpoint_state(torch.load(io.BytesIO(saved.getvalue()), weights_only=False))
    for i in range(20, 30):
        a, metrics_a = step(agent, i)
        b, metrics_b = step(resumed, i)
        assert torch.equal(a, b) and metrics_a == metrics_b
    assert_same(agent.state_dict(), resumed.state_dict())


# ----------------------------------------------------------------- through the harness

LANES_SUITE = """
name = "lanes"
seeds = [0, 1, 2]
devices = ["cpu"]
environments = ["Pendulum-v1"]

[budget]
steps = 600
eval_interval = 300
eval_episodes = 1

[[agents]]
name = "lane_ddpg"
config = { learning_starts = 200, batch_size = 32, max_grad_norm = 1.0 }
network = { name = "mlp", hidden_sizes = [32] }
"""


def rlbench_cli(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "rlbench", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def run_files(run_dir: Path) -> dict[str, Any]:
    """What must not depend on grouping: curve, episodes, metrics (less wall-clock times)
    and saved weights."""
    files: dict[str, Any] = {}
    for name in ("evaluations.csv", "episodes.csv", "metrics.csv"):
        with (run_dir / name).open(newline="") as f:
            files[name] = [
                {k: v for k, v in row.items() if k != "wall_time_s"} for row in csv.DictReader(f)
            ]
    files["weights"] = torch.load(run_dir / "weights.pt", weights_only=True)
    return files


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three seeds on Pendulum-v1 trained as one group of three lanes, and one by one."""
    root = tmp_path_factory.mktemp("lanes")
    (root / "lanes.toml").write_text(textwrap.dedent(LANES_SUITE))
    for lanes in ("3", "1"):
        out = str(root / f"lanes{lanes}")
        rlbench_cli("run", str(root / "lanes.toml"), "--results", out, "--lanes", lanes, "-j", "1")
    return root


def test_lane_k_of_a_group_is_the_run_of_seed_k_alone(results: Path):
    grouped = sorted((results / "lanes3" / "lanes" / "runs").iterdir())
    assert len(grouped) == 3
    for run_dir in grouped:
        alone = run_files(results / "lanes1" / "lanes" / "runs" / run_dir.name)
        in_group = run_files(run_dir)
        for name in ("evaluations.csv", "episodes.csv", "metrics.csv"):
            assert in_group[name] == alone[name], (run_dir.name, name)
        assert_same(in_group["weights"], alone["weights"])
    # The lanes are three seeds, not three copies of one.
    curves = [run_files(run_dir)["episodes.csv"] for run_dir in grouped]
    assert curves[0] != curves[1] != curves[2]


def test_pendulum_smoke(results: Path):
    """It trains on Pendulum-v1 and records evaluations and losses (600 steps learn nothing
    yet: this checks the plumbing, not the learning), and a grouped run's weights.pt loads
    into a one-lane agent that plays its final evaluation again."""
    runs = sorted((results / "lanes3" / "lanes" / "runs").iterdir())
    for run_dir in runs:
        files = run_files(run_dir)
        evaluations = files["evaluations.csv"]
        assert [int(row["step"]) for row in evaluations] == [0, 300, 600]
        assert all(-3000 < float(row["return_mean"]) <= 0 for row in evaluations)
        losses = files["metrics.csv"][-1]
        assert math.isfinite(float(losses["critic_loss"]))
        assert math.isfinite(float(losses["actor_loss"]))
    again = rlbench_cli("evaluate", str(runs[1]))
    final = float(run_files(runs[1])["evaluations.csv"][-1]["return_mean"])
    assert float(again.stdout.split()[1]) == final, again.stdout  # "return -1234.5 ± ..."
