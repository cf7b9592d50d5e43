"""One run end to end: what it writes, that it is reproducible, and how it fails."""

from __future__ import annotations

import json
import textwrap

import pandas as pd
import pytest
import torch

from rlbench import records
from rlbench.runspec import RunSpec, expand
from rlbench.suite import load_suite
from rlbench.training import execute_run


def tiny_runs(write_suite, catalogue, **fields) -> list[RunSpec]:
    return expand(load_suite(write_suite(**fields), catalogue))


def test_a_run_writes_every_record(tmp_path, write_suite, catalogue):
    spec = tiny_runs(write_suite, catalogue)[0]
    outcome = execute_run(spec, tmp_path, catalogue)
    assert outcome.status == "complete"
    run = tmp_path / "runs" / spec.run_id
    assert json.loads((run / "config.json").read_text()) == spec.to_json()
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "complete" and status["env_steps"] == 300
    assert status["steps_per_second"] > 0 and status["wall_time_s"] > 0
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["torch"] == torch.__version__ and prov["plugins"]["rlbench"]
    assert prov["device"] == "cpu" and prov["python"].startswith("3.")
    curve = pd.read_csv(run / "evaluations.csv")
    assert curve["step"].tolist() == [0, 150, 300]
    assert (curve["episodes"] == 2).all() and (curve["return_mean"] > 0).all()
    episodes = pd.read_csv(run / "episodes.csv")
    assert len(episodes) > 3 and episodes["length"].sum() <= 300
    assert set(pd.read_csv(run / "metrics.csv").columns) >= {"step", "loss", "epsilon"}
    weights = torch.load(run / "weights.pt", weights_only=True)
    assert "q_network" in weights
    assert not list(run.glob("*.tmp")), "temporary files left behind"


def test_same_seed_config_and_device_give_the_same_curve(tmp_path, write_suite, catalogue):
    specs = tiny_runs(write_suite, catalogue, steps=400, eval_interval=100)
    naive_seed0, naive_seed1 = specs[0], specs[1]
    curves = []
    for i, spec in enumerate([naive_seed0, naive_seed0, naive_seed1]):
        execute_run(spec, tmp_path / str(i), catalogue)
        curve = pd.read_csv(tmp_path / str(i) / "runs" / spec.run_id / "evaluations.csv")
        curves.append(curve.drop(columns="wall_time_s"))
    pd.testing.assert_frame_equal(curves[0], curves[1])
    assert not curves[0].equals(curves[2]), "different seeds gave identical curves"
    episodes = [
        pd.read_csv(tmp_path / str(i) / "runs" / naive_seed0.run_id / "episodes.csv")
        for i in (0, 1)
    ]
    pd.testing.assert_frame_equal(*episodes)


def test_run_ids_are_stable_and_follow_the_config(write_suite, catalogue):
    a = tiny_runs(write_suite, catalogue)
    b = tiny_runs(write_suite, catalogue)
    assert [r.run_id for r in a] == [r.run_id for r in b]
    assert len({r.run_id for r in a}) == len(a)
    longer = tiny_runs(write_suite, catalogue, steps=301)
    assert a[0].run_id != longer[0].run_id
    assert a[0].run_id.startswith("naive_dqn__CartPole-v1__seed0__cpu__")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_cuda_runs_are_skipped_with_the_reason_where_there_is_no_cuda(
    tmp_path, write_suite, catalogue
):
    spec = tiny_runs(write_suite, catalogue, devices='["cuda"]')[0]
    outcome = execute_run(spec, tmp_path, catalogue)
    assert outcome.status == "skipped"
    assert "CUDA is not available" in outcome.error
    status = json.loads((tmp_path / "runs" / spec.run_id / "status.json").read_text())
    assert status == {"status": "skipped", "reason": outcome.error}


def test_auto_device_is_cpu_without_cuda(write_suite, catalogue):
    runs = tiny_runs(write_suite, catalogue, devices='["auto"]')
    assert {r.device for r in runs} == {"cuda" if torch.cuda.is_available() else "cpu"}


BAD_AGENTS = """
    import math
    from rlbench import AgentSpec, hookimpl
    from rlbench_dqn.naive_dqn import NaiveDQN

    class Crashing(NaiveDQN):
        def observe(self, t):
            if self.steps >= 20:
                raise RuntimeError("the agent crashed on purpose")
            return super().observe(t)

    class Diverging(NaiveDQN):
        def observe(self, t):
            metrics = dict(super().observe(t))
            if self.steps >= 30:
                metrics["loss"] = [math.nan] * self.context.lanes
            return metrics

    @hookimpl
    def rlbench_register_agents():
        return [AgentSpec("crashing", Crashing), AgentSpec("diverging", Diverging)]
"""


@pytest.fixture
def bad_catalogue(inline_plugin):
    return inline_plugin("bad_agents_plugin", BAD_AGENTS)


@pytest.mark.parametrize(
    ("agent", "message"),
    [
        ("crashing", "RuntimeError: the agent crashed on purpose"),
        ("diverging", "DivergedError: training diverged at step 30: loss = nan"),
    ],
)
def test_a_failing_run_is_recorded_as_failed(tmp_path, bad_catalogue, agent, message):
    suite_text = f"""
        name = "bad"
        seeds = 1
        environments = ["CartPole-v1"]
        [budget]
        steps = 100
        eval_interval = 50
        [[agents]]
        name = "{agent}"
    """
    path = tmp_path / "bad.toml"
    path.write_text(textwrap.dedent(suite_text))
    [spec] = expand(load_suite(path, bad_catalogue))
    outcome = execute_run(spec, tmp_path / "out", bad_catalogue)
    assert outcome.status == "failed" and outcome.error == message
    run = tmp_path / "out" / "runs" / spec.run_id
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and status["error"] == message
    assert "Traceback" in (run / "error.txt").read_text()
    assert not records.RunDir(tmp_path / "out", spec.run_id).is_complete()


@pytest.mark.cuda
@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
)
def test_a_run_on_cuda_completes_and_records_the_gpu(tmp_path, write_suite, catalogue):
    spec = tiny_runs(write_suite, catalogue, devices='["cuda"]')[1]  # dqn: replay on the GPU
    outcome = execute_run(spec, tmp_path, catalogue)
    assert outcome.status == "complete", outcome.error
    run = tmp_path / "runs" / spec.run_id
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["device"] == "cuda" and prov["device_name"] == torch.cuda.get_device_name(0)
    weights = torch.load(run / "weights.pt", weights_only=True, map_location="cpu")
    assert "q_network" in weights


def test_runs_listed_but_never_started_are_loaded_as_such(tmp_path, write_suite, catalogue):
    from rlbench.executor import write_manifest
    from rlbench.results import load_runs, summary_table

    suite = load_suite(write_suite(), catalogue)
    runs = expand(suite)
    write_manifest(suite, runs, tmp_path)
    execute_run(runs[0], tmp_path, catalogue)  # the others never start (say, Ctrl-C)
    table = load_runs(tmp_path)
    assert table["run_id"].tolist() == [r.run_id for r in runs]
    assert table["status"].tolist() == ["complete"] + ["not started"] * (len(runs) - 1)
    summary = summary_table(table).set_index("label")
    assert summary.loc["naive_dqn", "n"] == 1 and summary.loc["naive_dqn", "not_complete"] == 1
    assert summary.loc["dqn", "not_complete"] == 2


BOX_PLUGIN = """
    import gymnasium as gym
    import numpy as np
    import torch
    from rlbench import Agent, AgentSpec, EnvironmentSpec, hookimpl

    RECEIVED = []  # every action a Pendulum's step() was given, training and evaluation
    RETURNED = []  # every action the agent returned while training (Transition.action)

    class Recording(gym.Wrapper):
        def step(self, action):
            RECEIVED.append(float(np.asarray(action)[0]))
            return super().step(action)

    class Overshoot(Agent):
        '''Torques of 5, -7 and 0.5 in turn: Pendulum's bounds are [-2, 2].'''

        calls = 0

        def act(self, obs, *, greedy=False):
            self.calls += 1
            value = (5.0, -7.0, 0.5)[self.calls % 3]
            return torch.full((obs.shape[0], 1), value)

        def observe(self, t):
            RETURNED.extend(t.action[:, 0].tolist())
            return {}

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    @hookimpl
    def rlbench_register_agents():
        return [AgentSpec("overshoot", Overshoot)]

    @hookimpl
    def rlbench_register_environments():
        make = lambda: gym.make("Pendulum-v1")
        return [EnvironmentSpec("RecordingPendulum", make, wrappers=(Recording,))]
"""


def test_a_box_action_is_clipped_to_the_bounds_and_the_agent_sees_what_it_returned(
    tmp_path, inline_plugin
):
    import sys

    catalogue = inline_plugin("box_plugin", BOX_PLUGIN)
    suite_text = """
        name = "box"
        seeds = 1
        environments = ["RecordingPendulum"]
        [budget]
        steps = 30
        eval_interval = 30
        eval_episodes = 1
        eval_max_episode_steps = 10
        [[agents]]
        name = "overshoot"
    """
    path = tmp_path / "box.toml"
    path.write_text(textwrap.dedent(suite_text))
    [spec] = expand(load_suite(path, catalogue))
    plugin = sys.modules["box_plugin"]
    plugin.RECEIVED.clear(), plugin.RETURNED.clear()
    assert execute_run(spec, tmp_path / "out", catalogue).status == "complete"
    assert len(plugin.RETURNED) == 30 and set(plugin.RETURNED) == {5.0, -7.0, 0.5}
    assert len(plugin.RECEIVED) == 30 + 2 * 10  # training, and two evaluations of 10 steps
    assert set(plugin.RECEIVED) == {2.0, -2.0, 0.5}


def test_rlbench_evaluate_gives_the_run_s_final_evaluation_again(tmp_path, write_suite, catalogue):
    from rlbench.saved_agent import evaluate_saved, load_agent
    from tests.conftest import rlbench_cmd

    runs = tiny_runs(write_suite, catalogue, seeds=1, steps=600, eval_interval=300)
    [spec] = [r for r in runs if r.agent == "dqn"]
    assert execute_run(spec, tmp_path, catalogue).status == "complete"
    run = tmp_path / "runs" / spec.run_id
    final = pd.read_csv(run / "evaluations.csv").iloc[-1]
    again = evaluate_saved(run, catalogue)
    for key, value in again.items():
        assert value == final[key], key
    # The agent played with the trained weights, not with its seed's initial ones.
    _, loaded = load_agent(run, catalogue)
    saved = torch.load(run / "weights.pt", weights_only=True)["q_network"]
    for name, tensor in loaded.state_dict()["q_network"].items():
        assert torch.equal(tensor, saved[name]), name

    shown = rlbench_cmd("--no-plugin-autoload", "evaluate", str(run))
    assert shown.returncode == 0, shown.stderr
    # The mean as evaluations.csv writes it, digit for digit.
    csv_mean = (run / "evaluations.csv").read_text().splitlines()[-1].split(",")[1]
    assert shown.stdout.startswith(f"return {csv_mean} ± ")
    assert f"over {spec.eval_episodes} episodes" in shown.stdout
    longer = evaluate_saved(run, catalogue, episodes=4)
    assert longer["episodes"] == 4

    (run / "weights.pt").unlink()
    missing = rlbench_cmd("--no-plugin-autoload", "evaluate", str(run))
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"error: {run}: no weights.pt (the run has not completed)"


PLAIN_MLP_AGENT = """
    import math
    import torch
    from rlbench import Agent, AgentSpec, hookimpl

    class PlainMLP(Agent):
        '''A plain agent (not a LaneAgent) on the mlp network plugin.'''

        def __init__(self, config, context):
            super().__init__(config, context)
            obs_size = math.prod(context.observation_space.shape)
            self.net = context.make_network(obs_size, int(context.action_space.n))

        def act(self, obs, *, greedy=False):
            with torch.no_grad():
                return self.net(obs).argmax(dim=1)

        def observe(self, t):
            return {}

        def state_dict(self):
            return {"net": self.net.state_dict()}

        def load_state_dict(self, state):
            self.net.load_state_dict(state["net"])

    @hookimpl
    def rlbench_register_agents():
        return [AgentSpec("plain_mlp", PlainMLP)]
"""


def test_a_plain_agent_trains_on_one_torch_thread_by_default(tmp_path, inline_plugin):
    """Without --threads every agent gets one torch thread, plain agents too (more only slow
    small networks down), whatever the caller's setting and the machine's cores; and the
    run's provenance records it."""
    from rlbench.executor import run_suite

    catalogue = inline_plugin("plain_mlp_plugin", PLAIN_MLP_AGENT)
    path = tmp_path / "plain.toml"
    path.write_text(
        textwrap.dedent("""
            name = "plain"
            seeds = 1
            environments = ["CartPole-v1"]
            [budget]
            steps = 20
            eval_interval = 20
            eval_episodes = 1
            [[agents]]
            name = "plain_mlp"
        """)
    )
    suite = load_suite(path, catalogue)
    [spec] = expand(suite)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = run_suite(suite, [spec], tmp_path / "out", catalogue=catalogue, jobs=1)
        assert torch.get_num_threads() == 2  # the caller's setting is restored
    finally:
        torch.set_num_threads(previous)
    assert result.outcomes[spec.run_id].status == "complete"
    run = tmp_path / "out" / "plain" / "runs" / spec.run_id
    assert json.loads((run / "provenance.json").read_text())["torch_threads"] == 1
