"""The built-in DQNs: the pieces that make them correct, and each agent's contract."""

from __future__ import annotations

import io
import re
from dataclasses import fields

import gymnasium as gym
import numpy as np
import pytest
import torch
from rlbench_dqn.exploration import lane_epsilon_greedy, linear_schedule
from rlbench_dqn.td import td_targets
from rlbench_mlp import MLPConfig, build_mlp

from rlbench import AgentContext, LaneAgent, Transition
from rlbench.lanes import LaneReplayBuffer

AGENTS = ["naive_dqn", "target_dqn", "replay_dqn", "dqn"]


def make_context(env: gym.Env, seed: int = 0, num_envs: int = 1) -> AgentContext:
    torch.manual_seed(seed)
    return AgentContext(
        observation_space=env.observation_space,
        action_space=env.action_space,
        num_envs=num_envs,
        device=torch.device("cpu"),
        seed=seed,
        rng=np.random.default_rng(seed),
        total_steps=1000,
        make_network=lambda i, o: build_mlp(i, o, MLPConfig(hidden_sizes=[16])),
    )


def transition(obs, action, reward, next_obs, terminated, truncated) -> Transition:
    return Transition(
        obs=torch.as_tensor(np.asarray(obs), dtype=torch.float32),
        action=torch.as_tensor(action),
        reward=torch.as_tensor(reward, dtype=torch.float32),
        next_obs=torch.as_tensor(np.asarray(next_obs), dtype=torch.float32),
        terminated=torch.as_tensor(terminated),
        truncated=torch.as_tensor(truncated),
    )


def lanes(t: Transition) -> Transition:
    """``t`` as the one lane of a lane agent (every field ``[1, ...]``)."""
    return Transition(**{f.name: getattr(t, f.name)[None] for f in fields(t)})


def test_targets_bootstrap_through_truncation_not_termination():
    reward = torch.tensor([1.0, 1.0, 1.0])
    next_q = torch.tensor([10.0, 10.0, 10.0])
    terminated = torch.tensor([False, True, False])  # the third one is a time-limit cut
    targets = td_targets(reward, next_q, terminated, gamma=0.5)
    assert targets.tolist() == [6.0, 1.0, 6.0]


def test_greedy_exploration_leaves_the_random_stream_untouched():
    rngs = (np.random.default_rng(0),)
    q = torch.tensor([[[0.0, 1.0], [2.0, 1.0]]])  # one lane, two environments
    assert lane_epsilon_greedy(q, 0.0, rngs).tolist() == [[1, 0]]
    assert rngs[0].random() == np.random.default_rng(0).random()
    actions = torch.stack([lane_epsilon_greedy(q, 1.0, rngs) for _ in range(200)])
    assert set(actions.flatten().tolist()) == {0, 1}


def test_linear_schedule():
    assert linear_schedule(0, 1.0, 0.1, 100) == 1.0
    assert linear_schedule(50, 1.0, 0.1, 100) == pytest.approx(0.55)
    assert linear_schedule(1000, 1.0, 0.1, 100) == 0.1


def test_replay_buffer_wraps_around_and_samples_what_was_stored():
    buffer = LaneReplayBuffer(4, 1, torch.device("cpu"), (np.random.default_rng(0),))
    for i in range(6):
        buffer.add(lanes(transition([[i]], [i % 2], [float(i)], [[i + 1]], [False], [False])))
    assert len(buffer) == 4
    assert sorted(buffer.reward[0].tolist()) == [2.0, 3.0, 4.0, 5.0]
    sample = buffer.sample(4, replace=False)
    assert sorted(sample.reward[0].tolist()) == [2.0, 3.0, 4.0, 5.0]
    assert torch.equal(sample.next_obs.squeeze(2), sample.obs.squeeze(2) + 1)
    assert torch.equal(sample.action, sample.obs.squeeze(2).long() % 2)
    assert not sample.terminated.any()


#: The public lane toolkit (``rlbench.lanes``'s docstring and ``docs/writing-plugins.md``),
#: by the module that defines each name.
LANE_TOOLKIT = {
    "networks": [
        "StackedNetwork",
        "StackedSequential",
        "VmappedNetwork",
        "lane_slice",
        "stack_networks",
    ],
    "optim": ["LaneOptimizer", "LaneParameters", "OptimizerName", "lane_clip_grad_norm"],
    "replay": ["LaneReplayBuffer", "ReplaySample", "action_layout"],
    "spaces": ["flat_size"],
    "targets": ["hard_update", "polyak_update"],
}


def test_the_lane_toolkit_exports_exactly_its_public_names():
    import importlib

    import rlbench.lanes

    expected = sorted(name for names in LANE_TOOLKIT.values() for name in names)
    assert sorted(rlbench.lanes.__all__) == expected
    assert len(set(rlbench.lanes.__all__)) == len(rlbench.lanes.__all__)  # no name twice
    for module, names in LANE_TOOLKIT.items():
        home = importlib.import_module(f"rlbench.lanes.{module}")
        for name in names:
            assert getattr(rlbench.lanes, name) is getattr(home, name), name
    namespace: dict[str, object] = {}
    exec("from rlbench.lanes import *", namespace)  # what a plugin may write
    assert sorted(k for k in namespace if k != "__builtins__") == expected
    # Every class and function the package's docstring documents is among them.
    documented = re.findall(
        r":(?:class|func):`~?(?:rlbench\.lanes\.)?(\w+)`", rlbench.lanes.__doc__ or ""
    )
    assert documented and set(documented) <= set(expected), set(documented) - set(expected)


#: Small settings under which each agent learns within 40 steps of one environment.
TINY_CONFIGS = {
    "dqn": {"learning_starts": 8, "train_frequency": 4, "gradient_steps": 2, "batch_size": 4},
    "replay_dqn": {"batch_size": 4},
    "ppo": {"num_envs": 1, "n_steps": 8, "batch_size": 4, "n_epochs": 2},
    "a2c": {"num_envs": 1, "n_steps": 5},
}
#: The metric each agent reports when it learns.
LOSS_METRIC = {"ppo": "policy_loss", "a2c": "policy_loss"}


def tensors(state) -> dict[str, torch.Tensor]:
    """Every tensor of a (nested) state dict, by its path."""
    out: dict[str, torch.Tensor] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, torch.Tensor):
            out[prefix] = value.clone()
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(f"{prefix}.{i}", v)

    walk("", state)
    return out


@pytest.mark.parametrize("name", [*AGENTS, "ppo", "a2c"])
def test_agent_learns_from_transitions_and_round_trips_its_state(name, catalogue):
    env = gym.make("CartPole-v1")
    spec = catalogue.agent(name)
    config = spec.config_model.model_validate(TINY_CONFIGS.get(name, {}))
    agent = spec.agent(config, make_context(env))
    # The built-ins train seeds as lanes (rlbench.LaneAgent): tensors carry a lane dimension.
    is_lane_agent = isinstance(agent, LaneAgent)

    def act(obs: torch.Tensor, greedy: bool = False) -> torch.Tensor:
        if is_lane_agent:
            return agent.act(obs[None], greedy=greedy)[0]
        return agent.act(obs, greedy=greedy)

    obs, _ = env.reset(seed=0)
    before = tensors(agent.state_dict())
    losses = []
    metric = LOSS_METRIC.get(name, "loss")
    for _ in range(40):
        action = act(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0))
        assert action.shape == (1,) and not action.is_floating_point()  # the action contract
        next_obs, reward, term, trunc, _ = env.step(action.item())
        t = transition([obs], action, [reward], [next_obs], [term], [trunc])
        if is_lane_agent:
            t = lanes(t)
        metrics = agent.observe(t)
        if metric in metrics:
            losses.append(metrics[metric][0] if is_lane_agent else metrics[metric])
        obs = env.reset()[0] if term or trunc else next_obs
    assert losses and all(np.isfinite(losses))
    after = tensors(agent.state_dict())
    weights = [k for k in before if k.startswith((".q_network", ".actor", ".critic"))]
    assert weights and any(not torch.equal(before[k], after[k]) for k in weights), "no change"

    buffer = io.BytesIO()
    torch.save(agent.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = spec.agent(config, make_context(env, seed=1))
    fresh.load_state_dict(state)
    assert tensors(fresh.state_dict()).keys() == after.keys()
    for key, value in tensors(fresh.state_dict()).items():
        assert torch.equal(value, after[key]), key
    probe = torch.randn(5, 4)
    if is_lane_agent:
        fresh_act = fresh.act(probe[None], greedy=True)[0]
    else:
        fresh_act = fresh.act(probe, greedy=True)
    assert torch.equal(fresh_act, act(probe, greedy=True))


@pytest.mark.parametrize("name", AGENTS)
def test_continuous_actions_are_refused_with_a_clear_error(name, catalogue):
    env = gym.make("Pendulum-v1")
    spec = catalogue.agent(name)
    with pytest.raises(ValueError, match=f"{name} needs a discrete action space"):
        spec.agent(spec.config_model(), make_context(env))


@pytest.mark.parametrize("name", AGENTS)
def test_every_agent_explores_from_its_epsilon_start(name, catalogue):
    # replay_dqn's config has no linear schedule (its epsilon decays per episode): each agent
    # reads only the fields its own config has.
    spec = catalogue.agent(name)
    config = spec.config_model()
    agent = spec.agent(config, make_context(gym.make("CartPole-v1")))
    assert agent.exploration() == [config.epsilon_start]
    assert agent.state_dict()["epsilon"].tolist() == [config.epsilon_start]


def test_replay_dqn_decays_epsilon_per_episode(catalogue):
    env = gym.make("CartPole-v1")
    spec = catalogue.agent("replay_dqn")
    agent = spec.agent(spec.config_model(), make_context(env, num_envs=2))
    t = transition(
        [[0.0] * 4] * 2, [0, 1], [1.0, 1.0], [[0.0] * 4] * 2, [True, False], [False, True]
    )
    agent.observe(lanes(t))
    assert agent.epsilons == [pytest.approx(0.1 * 0.995**2)]


def test_target_network_syncs_on_its_interval(catalogue):
    env = gym.make("CartPole-v1")
    spec = catalogue.agent("target_dqn")
    agent = spec.agent(spec.config_model(target_update_interval=3), make_context(env))
    t = lanes(transition([[0.1] * 4], [0], [1.0], [[0.2] * 4], [False], [False]))
    agent.observe(t)
    agent.observe(t)
    online, target = agent.q.state_dict(), agent.q_target.state_dict()
    assert not all(torch.equal(online[k], target[k]) for k in online)
    agent.observe(t)
    online, target = agent.q.state_dict(), agent.q_target.state_dict()
    assert all(torch.equal(online[k], target[k]) for k in online)


def dqn_on_cartpole(catalogue, num_envs: int = 1, seed: int = 0, **config):
    spec = catalogue.agent("dqn")
    cfg = spec.config_model.model_validate({"batch_size": 4, "num_envs": num_envs, **config})
    return spec.agent(cfg, make_context(gym.make("CartPole-v1"), seed=seed, num_envs=num_envs))


def feed(agent, num_envs: int, steps: int) -> list[dict]:
    """``steps`` transitions of ``num_envs`` CartPole-shaped environments (fixed values: the
    tests below count what the agent does with them, not what it learns)."""
    metrics = []
    for i in range(steps // num_envs):
        obs = torch.full((1, num_envs, 4), 0.01 * i)
        t = Transition(
            obs=obs,
            action=agent.act(obs),
            reward=torch.ones(1, num_envs),
            next_obs=obs + 0.01,
            terminated=torch.zeros(1, num_envs, dtype=torch.bool),
            truncated=torch.zeros(1, num_envs, dtype=torch.bool),
        )
        metrics.append(agent.observe(t))
    return metrics


def count_gradient_steps(agent) -> list[int]:
    """Wrap ``agent.apply_gradients`` (one optimizer step, whether the gradients came from
    autograd or were backpropagated by hand) to count its calls; returns the live tally of
    the agent's step count at each."""
    calls: list[int] = []
    step = agent.apply_gradients

    def counted(*args, **kwargs):
        calls.append(agent.steps)
        return step(*args, **kwargs)

    agent.apply_gradients = counted
    return calls


@pytest.mark.parametrize("num_envs", [1, 3])
def test_dqn_gradient_steps_minus_one_takes_one_per_environment_step(catalogue, num_envs):
    # SB3's gradient_steps = -1: each phase takes as many gradient steps as environment steps
    # since the previous phase boundary. With three environments and train_frequency 4 the
    # boundaries fall at steps 6, 9, 12, 18, 21, 24, 30, ... (6, 3, 3, 6, ... steps apart).
    agent = dqn_on_cartpole(
        catalogue, num_envs, learning_starts=8, train_frequency=4, gradient_steps=-1
    )
    calls = count_gradient_steps(agent)
    feed(agent, num_envs, 60)
    per_phase = [calls.count(s) for s in sorted(set(calls))]
    if num_envs == 1:  # one per step: train_frequency per phase, from step 12 on
        assert sorted(set(calls)) == list(range(12, 61, 4)) and set(per_phase) == {4}
    else:
        assert sorted(set(calls)) == [9, 12, 18, 21, 24, 30, 33, 36, 42, 45, 48, 54, 57, 60]
        assert per_phase == [3, 3, 6, 3, 3, 6, 3, 3, 6, 3, 3, 6, 3, 3]
    # Every environment step after the first trained phase's boundary is matched by one.
    assert len(calls) == 60 - (8 if num_envs == 1 else 6)


def test_dqn_gradient_steps_minus_one_is_train_frequency_with_one_environment(catalogue):
    a = dqn_on_cartpole(catalogue, learning_starts=8, train_frequency=4, gradient_steps=-1)
    b = dqn_on_cartpole(catalogue, learning_starts=8, train_frequency=4, gradient_steps=4)
    ma, mb = feed(a, 1, 40), feed(b, 1, 40)
    assert ma == mb and any("loss" in m for m in ma)
    for key, value in a.q.state_dict().items():
        assert torch.equal(value, b.q.state_dict()[key])


@pytest.mark.parametrize("steps", [0, -2])
def test_dqn_refuses_gradient_steps_other_than_minus_one_below_one(tmp_path, catalogue, steps):
    from rlbench.errors import SuiteError
    from rlbench.suite import load_suite

    path = tmp_path / "suite.toml"
    path.write_text(ZOO_DQN_LANES.replace("gradient_steps = -1", f"gradient_steps = {steps}"))
    with pytest.raises(SuiteError) as error:
        load_suite(path, catalogue)
    assert str(error.value) == (
        f"{path}: agents[0].config.gradient_steps: must be at least 1, or -1 for as many as "
        f"the environment steps between training phases (got {steps})"
    )


def test_dqn_acts_uniformly_at_random_before_learning_starts_when_asked(catalogue):
    agent = dqn_on_cartpole(
        catalogue, 2, seed=3, learning_starts=10, random_actions_before_learning=True
    )
    probe = np.random.default_rng(3)  # the lane's stream, as make_context seeds it
    obs = torch.zeros(1, 2, 4)
    greedy = agent.act(obs, greedy=True)
    for _ in range(5):  # steps 0-9: what the stream's integers(2, size=2) draws, nothing else
        expected = probe.integers(2, size=2)
        assert agent.act(obs).tolist() == [expected.tolist()]
        feed_one = Transition(
            obs,
            agent.act(obs, greedy=True),
            torch.ones(1, 2),
            obs,
            torch.zeros(1, 2, dtype=torch.bool),
            torch.zeros(1, 2, dtype=torch.bool),
        )
        agent.observe(feed_one)
    assert torch.equal(agent.act(obs, greedy=True), greedy)  # evaluation stays greedy
    # From learning_starts on, epsilon-greedy as without the option (epsilon 1 at the start of
    # the decay: a draw of random(2) and integers(2, size=2) from the same stream).
    assert agent.steps == 10
    explore = probe.random(2) < agent.exploration()[0]
    choice = probe.integers(2, size=2)
    expected = np.where(explore, choice, greedy[0].numpy())
    assert agent.act(obs).tolist() == [expected.tolist()]


def test_dqn_random_actions_are_off_by_default_and_leave_run_identities_alone(catalogue):
    config = catalogue.agent("dqn").config_model()
    assert config.random_actions_before_learning is False
    assert "random_actions_before_learning" not in config.model_dump(mode="json")
    on = config.model_copy(update={"random_actions_before_learning": True})
    assert on.model_dump(mode="json")["random_actions_before_learning"] is True


ZOO_DQN_LANES = """
name = "zoo_dqn_lanes"
seeds = [0, 1]
devices = ["cpu"]
environments = ["CartPole-v1"]

[budget]
steps = 600
eval_interval = 300
eval_episodes = 2

[[agents]]
name = "dqn"
network = { name = "mlp", hidden_sizes = [16] }
[agents.config]
learning_starts = 300
train_frequency = 50
gradient_steps = -1
random_actions_before_learning = true
batch_size = 16
num_envs = 2
"""


def test_dqn_zoo_options_keep_lane_k_the_separate_run_of_seed_k(tmp_path, catalogue):
    import csv

    from rlbench.runspec import expand
    from rlbench.suite import load_suite
    from rlbench.training import execute_lanes, execute_run

    path = tmp_path / "suite.toml"
    path.write_text(ZOO_DQN_LANES)
    specs = expand(load_suite(path, catalogue))
    torch.set_num_threads(1)
    assert [o.status for o in execute_lanes(specs, tmp_path / "g", catalogue)] == ["complete"] * 2

    def run_files(root, spec):
        run = root / "runs" / spec.run_id
        with (run / "episodes.csv").open(newline="") as f:
            episodes = list(csv.DictReader(f))
        return episodes, torch.load(run / "weights.pt", weights_only=True)["q_network"]

    grouped = []
    for spec in specs:
        assert execute_run(spec, tmp_path / "a", catalogue).status == "complete"
        (ea, wa), (eg, wg) = run_files(tmp_path / "a", spec), run_files(tmp_path / "g", spec)
        assert ea == eg
        assert all(torch.equal(wa[k], wg[k]) for k in wa)
        grouped.append(eg)
    assert grouped[0] != grouped[1]


def test_pg_agents_return_raw_float_actions_for_a_box_space(catalogue):
    # The action contract for Box: a float tensor [lanes, n, *shape], the policy's raw sample
    # (the harness clips it for env.step); greedy=True is the Gaussian's mean.
    env = gym.make("Pendulum-v1")  # Box(-2, 2, (1,))
    for name in ("ppo", "a2c"):
        spec = catalogue.agent(name)
        config = spec.config_model.model_validate({"num_envs": 64, "log_std_init": 2.0})
        agent = spec.agent(config, make_context(env, num_envs=64))
        obs = torch.zeros(1, 64, 3)
        sample = agent.act(obs)
        assert sample.shape == (1, 64, 1) and sample.dtype == torch.float32
        assert (sample.abs() > 2).any(), "raw samples beyond the bounds are not clipped"
        greedy = agent.act(obs, greedy=True)
        assert greedy.shape == (1, 64, 1) and torch.equal(greedy, agent.act(obs, greedy=True))


def test_the_budget_counts_transitions_over_all_environments(tmp_path, catalogue):
    # budget.steps = 31 with num_envs = 3: 11 harness steps of 3 environments, 33 transitions
    # (the next multiple of num_envs), and the agent counted all of them.
    import json

    from rlbench.runspec import expand
    from rlbench.suite import load_suite
    from rlbench.training import execute_run

    path = tmp_path / "suite.toml"
    path.write_text(
        ZOO_DQN_LANES.replace("seeds = [0, 1]", "seeds = [0]")
        .replace("steps = 600", "steps = 31")
        .replace("eval_interval = 300", "eval_interval = 15")
        .replace("num_envs = 2", "num_envs = 3")
    )
    [spec] = expand(load_suite(path, catalogue))
    assert execute_run(spec, tmp_path / "out", catalogue).status == "complete"
    run = tmp_path / "out" / "runs" / spec.run_id
    assert json.loads((run / "status.json").read_text())["env_steps"] == 33
    evaluated_at = [line.split(",")[0] for line in (run / "evaluations.csv").read_text().split()]
    assert evaluated_at[1:] == ["0", "15", "30", "33"]
    assert torch.load(run / "weights.pt", weights_only=True)["steps"] == 33


def test_a_dqn_state_saved_with_torch_adam_moments_still_loads():
    """rlbench 0.1's DQNs saved their optimizer as a ``torch.optim.Adam`` state dict (one
    entry per parameter); such a weights.pt loads into today's LaneOptimizer unchanged."""
    from rlbench_dqn.dqn import DQN, DQNConfig

    env = gym.make("CartPole-v1")
    agent = DQN(DQNConfig(), make_context(env))
    params = list(agent.q.parameters())
    torch_adam = torch.optim.Adam(params, lr=1e-3)
    for p in params:
        p.grad = torch.randn_like(p)
    for _ in range(3):
        torch_adam.step()
    old_state = {**agent.state_dict(), "optimizer": torch_adam.state_dict()}

    fresh = DQN(DQNConfig(), make_context(env, seed=1))
    fresh.load_state_dict(old_state)
    assert fresh.optimizer.steps == 3
    moments = fresh.optimizer.state_dict()
    for i, p in enumerate(params):
        assert torch.equal(moments["exp_avg"][i], torch_adam.state[p]["exp_avg"])
        assert torch.equal(moments["exp_avg_sq"][i], torch_adam.state[p]["exp_avg_sq"])
    for a, b in zip(fresh.q.parameters(), params, strict=True):
        assert torch.equal(a, b)
