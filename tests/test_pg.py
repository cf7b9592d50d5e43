"""The built-in policy-gradient agents, ppo and a2c: their pieces against hand computations
and torch.distributions, their normalisation state, the lane contract, and a run end to end.
"""

from __future__ import annotations

import json
import math
import textwrap

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import rlbench_cmd
from rlbench_mlp import MLPConfig, build_mlp
from rlbench_pg.a2c import A2C, A2CConfig
from rlbench_pg.distributions import LaneCategorical, LaneDiagGaussian
from rlbench_pg.ppo import PPO, PPOConfig
from rlbench_pg.rollout import gae
from test_lanes import assert_same_state, run_files

from rlbench import AgentContext, Transition
from rlbench.lanes import LaneOptimizer, LaneParameters
from rlbench.runspec import expand
from rlbench.suite import load_suite
from rlbench.training import execute_lanes, execute_run


def test_gae_by_hand_with_a_termination_and_a_truncation():
    """One environment, four steps: the episode terminates at step 1 and a new one is
    truncated at step 3. The agent has already added gamma * V(final obs) = 0.9 * 2.0 to step
    3's reward (the truncation bootstrap); GAE cuts the trace at both ends."""
    gamma, lam = 0.9, 0.5
    rewards = torch.tensor([1.0, 2.0, 0.5, 1.0 + 0.9 * 2.0])
    values = torch.tensor([0.5, 1.5, 1.0, 0.25])
    dones = torch.tensor([0.0, 1.0, 0.0, 1.0])
    last_value = torch.tensor(100.0)  # after a done step: must not count
    advantages, returns = gae(rewards, values, dones, last_value, gamma, lam)
    # Step 3: delta = 2.8 - 0.25 (no bootstrap after a done step; the trace stops).
    a3 = 2.8 - 0.25
    # Step 2: delta = 0.5 + 0.9 * 0.25 - 1.0; A = delta + 0.9 * 0.5 * A3.
    a2 = (0.5 + 0.9 * 0.25 - 1.0) + 0.45 * a3
    # Step 1 terminated: delta = 2.0 - 1.5, nothing after it.
    a1 = 2.0 - 1.5
    # Step 0: delta = 1.0 + 0.9 * 1.5 - 0.5; A = delta + 0.45 * A1.
    a0 = (1.0 + 0.9 * 1.5 - 0.5) + 0.45 * a1
    expected = torch.tensor([a0, a1, a2, a3])
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, expected + values)
    # lambda = 1 is the discounted n-step return minus the value.
    adv1, _ = gae(rewards, values, dones, last_value, gamma, 1.0)
    assert adv1[0].item() == pytest.approx(1.0 + 0.9 * 2.0 - 0.5)


def test_categorical_matches_torch_distributions():
    logits = torch.randn(3, 7, 4)
    actions = torch.randint(0, 4, (3, 7))
    log_prob, entropy = LaneCategorical(4).log_prob_entropy(logits, actions)
    reference = torch.distributions.Categorical(logits=logits)
    torch.testing.assert_close(log_prob, reference.log_prob(actions))
    torch.testing.assert_close(entropy, reference.entropy())
    # Sampling: frequencies follow the probabilities.
    probs = torch.tensor([[[0.1, 0.6, 0.3]]]).expand(1, 20_000, 3)
    sampled = LaneCategorical(3).sample(probs.log(), [np.random.default_rng(0)])
    counts = torch.bincount(sampled[0], minlength=3) / 20_000
    torch.testing.assert_close(counts, torch.tensor([0.1, 0.6, 0.3]), atol=0.01, rtol=0)


def test_diagonal_gaussian_matches_torch_distributions():
    dist = LaneDiagGaussian((2,), lanes=3, log_std_init=0.0, device=torch.device("cpu"))
    with torch.no_grad():
        dist.log_std.copy_(torch.randn(3, 2))
    mean = torch.randn(3, 5, 2)
    actions = torch.randn(3, 5, 2) * 3
    log_prob, entropy = dist.log_prob_entropy(mean, actions)
    reference = torch.distributions.Normal(mean, dist.log_std.detach().exp().unsqueeze(1))
    torch.testing.assert_close(log_prob, reference.log_prob(actions).sum(-1))
    torch.testing.assert_close(entropy, reference.entropy().sum(-1))
    # A sample is raw (not clipped to any bounds), noise of the policy's std around the mean.
    with torch.no_grad():
        rngs = [np.random.default_rng(k) for k in range(3)]
        sampled = dist.sample(mean * 100, rngs)
        noise = (sampled - mean * 100) / dist.log_std.exp().unsqueeze(1)
    assert sampled.shape == (3, 5, 2) and sampled.abs().max() > 2
    expected = torch.as_tensor(
        np.stack([np.random.default_rng(k).standard_normal((5, 2)) for k in range(3)]),
        dtype=torch.float32,
    )
    torch.testing.assert_close(noise, expected, atol=1e-3, rtol=0)  # means of order 100
    assert torch.equal(dist.mode(mean), mean)


def make_agent(agent_cls, config, action_space, lanes=1, obs_size=3, make_networks=None):
    """An agent on a Box observation space of ``obs_size``; its networks from
    ``make_networks(in, out)`` (one per lane), MLPs 8 wide by default."""
    if make_networks is None:

        def make_networks(i, o):
            return [build_mlp(i, o, MLPConfig(hidden_sizes=[8])) for _ in range(lanes)]

    context = AgentContext(
        observation_space=gym.spaces.Box(-np.inf, np.inf, shape=(obs_size,), dtype=np.float32),
        action_space=action_space,
        num_envs=config.num_envs,
        device=torch.device("cpu"),
        seed=0,
        rng=np.random.default_rng(0),
        total_steps=1_000,
        make_network=lambda i, o: make_networks(i, o)[0],
        lanes=lanes,
        lane_seeds=tuple(range(lanes)),
        lane_rngs=tuple(np.random.default_rng(k) for k in range(lanes)),
        make_lane_networks=make_networks,
    )
    return agent_cls(config, context)


def step(agent, obs, reward=1.0, terminated=False, truncated=False, next_obs=None):
    action = agent.act(obs)
    shape = obs.shape[:2]
    transition = Transition(
        obs=obs,
        action=action,
        reward=torch.full(shape, reward),
        next_obs=obs + 1 if next_obs is None else next_obs,
        terminated=torch.full(shape, terminated),
        truncated=torch.full(shape, truncated),
    )
    return agent.observe(transition)


def test_truncation_bootstraps_with_the_final_observation_and_termination_does_not():
    agent = make_agent(A2C, A2CConfig(num_envs=1, n_steps=3, gamma=0.9), gym.spaces.Discrete(2))
    obs, final = torch.zeros(1, 1, 3), torch.full((1, 1, 3), 5.0)
    step(agent, obs, reward=1.0, truncated=True, next_obs=final)
    step(agent, obs, reward=1.0, terminated=True, truncated=True, next_obs=final)
    step_rewards = agent.rollout.rewards[:2, 0, 0].clone()
    with torch.no_grad():
        v_final = agent.value(final.flatten(2))[0, 0]
    torch.testing.assert_close(step_rewards[0], 1.0 + 0.9 * v_final)
    assert step_rewards[1] == 1.0  # terminated (even if also truncated): no bootstrap
    assert agent.rollout.dones[:2, 0, 0].tolist() == [1.0, 1.0]


def test_zoo_schedules_are_written_as_the_zoo_writes_them():
    config = PPOConfig.model_validate({"learning_rate": "lin_3e-4", "clip_range": "lin_0.1"})
    assert config.learning_rate == 3e-4 and config.learning_rate_schedule == "linear"
    assert config.clip_range == 0.1 and config.clip_range_schedule == "linear"
    assert PPOConfig().learning_rate_schedule == "linear"  # the Zoo's CartPole setting
    assert A2CConfig().learning_rate_schedule == "constant"
    with pytest.raises(ValueError, match="is linear"):
        PPOConfig.model_validate(
            {"learning_rate": "lin_1e-3", "learning_rate_schedule": "constant"}
        )


def test_normalisation_statistics_are_saved_restored_and_frozen_when_greedy():
    config = PPOConfig(
        num_envs=2, n_steps=4, batch_size=4, n_epochs=1, normalize_obs=True, normalize_reward=True
    )
    agent = make_agent(PPO, config, gym.spaces.Box(-1, 1, (1,)))
    rng = np.random.default_rng(1)
    for _ in range(6):
        obs = torch.as_tensor(rng.normal(3.0, 2.0, (1, 2, 3)), dtype=torch.float32)
        step(agent, obs, reward=float(rng.normal()))
    state = agent.state_dict()
    assert state["obs_rms"]["count"].item() == pytest.approx(12 + 1e-4)
    assert state["obs_rms"]["mean"].shape == (1, 3)
    assert state["reward_rms"]["returns"].shape == (1, 2)
    # The running mean is the observations' mean (they are all it has seen).
    assert state["obs_rms"]["mean"].mean().item() == pytest.approx(3.0, abs=1.0)
    saved = torch.load(_roundtrip(state), weights_only=True)

    frozen = {k: v.clone() for k, v in agent.obs_norm.rms.state_dict().items()}
    with torch.inference_mode():
        agent.act(torch.full((1, 1, 3), 100.0), greedy=True)
    for key, value in agent.obs_norm.rms.state_dict().items():
        assert torch.equal(value, frozen[key]), key

    fresh = make_agent(PPO, config, gym.spaces.Box(-1, 1, (1,)))
    fresh.load_state_dict(saved)
    probe = torch.randn(1, 4, 3)
    with torch.inference_mode():
        assert torch.equal(fresh.act(probe, greedy=True), agent.act(probe, greedy=True))
    assert torch.equal(fresh.obs_norm.rms.var, agent.obs_norm.rms.var)
    assert torch.equal(fresh.reward_norm.returns, agent.reward_norm.returns)


def _roundtrip(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_greedy_actions_are_the_mode():
    agent = make_agent(PPO, PPOConfig(num_envs=1), gym.spaces.Box(-2, 2, (2,)))
    obs = torch.randn(1, 3, 3)
    with torch.no_grad():
        mean = agent.actor(obs)
    assert torch.equal(agent.act(obs, greedy=True), mean)
    discrete = make_agent(A2C, A2CConfig(num_envs=1), gym.spaces.Discrete(3))
    with torch.no_grad():
        assert torch.equal(discrete.act(obs, greedy=True), discrete.actor(obs).argmax(-1))


def test_lane_optimizer_steps_each_lane_as_alone():
    """Lane 0 of a 3-lane stack gets what a one-lane stack gets, bit for bit, with blocks of
    17 elements (not a multiple of any vector width)."""
    for kind in ("adam", "rmsprop"):
        results = []
        for lanes in (3, 1):
            g = torch.Generator().manual_seed(0)
            base = torch.randn(3, 17, generator=g)
            param = torch.nn.Parameter(base[:lanes].clone())
            params = LaneParameters([param])
            opt = LaneOptimizer(params, kind, eps=1e-5)
            for i in range(4):
                # The gradient of (param * sin(base * (i + 1))).sum(dim=1), each lane's.
                params.grad.copy_(torch.sin(base[:lanes] * (i + 1)))
                opt.step(1e-2)
            results.append(param.detach()[:1])
        assert torch.equal(results[0], results[1]), kind


@pytest.mark.parametrize("kind", ["adam", "rmsprop"])
def test_lane_optimizer_steps_as_torchs_optimizer(kind):
    """One lane's step is torch.optim.Adam(fused=True)'s or RMSprop(foreach=True)'s (as SB3's
    A2C configures it), bit for bit, learning rate changing at every step."""
    g = torch.Generator().manual_seed(0)
    start = torch.randn(1, 37, generator=g)
    ours = torch.nn.Parameter(start.clone())
    params = LaneParameters([ours])
    optimizer = LaneOptimizer(params, kind, eps=1e-5)
    theirs = torch.nn.Parameter(start.clone())
    if kind == "adam":
        reference = torch.optim.Adam([theirs], lr=1.0, eps=1e-5, fused=True)
    else:
        reference = torch.optim.RMSprop([theirs], lr=1.0, alpha=0.99, eps=1e-5, foreach=True)
    for i in range(5):
        target = torch.sin(start * (i + 1))
        params.grad.copy_(torch.autograd.grad(((ours - target) ** 2).sum(), ours)[0])
        optimizer.step(1e-2 / (i + 1))
        theirs.grad = torch.autograd.grad(((theirs - target) ** 2).sum(), theirs)[0]
        for group in reference.param_groups:
            group["lr"] = 1e-2 / (i + 1)
        reference.step()
        assert torch.equal(ours.detach(), theirs.detach()), (kind, i)


LANE_SUITE = """
name = "pg-lanes"
seeds = [0, 1, 2]
devices = ["cpu"]
environments = ["CartPole-v1", "Pendulum-v1"]

[budget]
steps = 480
eval_interval = 240
eval_episodes = 2
eval_max_episode_steps = 60

[[agents]]
name = "ppo"
network = { name = "mlp", hidden_sizes = [24] }
[agents.config]
num_envs = 3
n_steps = 5
batch_size = 4
n_epochs = 2
clip_range_vf = 0.5
normalize_obs = true
normalize_reward = true

[[agents]]
name = "a2c"
network = { name = "mlp", hidden_sizes = [24] }
config = { num_envs = 3, n_steps = 5, normalize_advantage = true }
"""


@pytest.mark.parametrize("agent", ["ppo", "a2c"])
def test_lane_k_of_a_group_is_the_separate_run_of_seed_k(tmp_path, catalogue, agent):
    """Every lane of a group of 3, and of a group of 2 in another order, computes what the
    separate one-lane run of its seed computes, bit for bit: curves, episodes, metrics and
    saved state, on a discrete and a continuous task (odd sizes everywhere: 3 environments,
    rollouts of 15, minibatches of 4, a hidden layer of 24)."""
    path = tmp_path / "lanes.toml"
    path.write_text(textwrap.dedent(LANE_SUITE))
    suite = load_suite(path, catalogue)
    torch.set_num_threads(1)
    for env in ("CartPole-v1", "Pendulum-v1"):
        runs = [s for s in expand(suite) if s.agent == agent and s.env == env]
        by_seed = {s.seed: s for s in runs}
        groups = {"three": runs, "two": [by_seed[2], by_seed[0]]}
        for name, group in groups.items():
            outcomes = execute_lanes(group, tmp_path / name, catalogue)
            assert [o.status for o in outcomes] == ["complete"] * len(group), outcomes
        for spec in runs:
            assert execute_run(spec, tmp_path / "alone", catalogue).status == "complete"
            alone = run_files(tmp_path / "alone" / "runs" / spec.run_id)
            for name, group in groups.items():
                if spec not in group:
                    continue
                grouped = run_files(tmp_path / name / "runs" / spec.run_id)
                for key in ("evaluations.csv", "episodes.csv", "metrics.csv"):
                    assert alone[key] == grouped[key], (env, name, spec.seed, key)
                assert_same_state(alone["weights"], grouped["weights"])
        # The lanes are independent seeds, not copies of one.
        curves = [
            run_files(tmp_path / "three" / "runs" / s.run_id)["evaluations.csv"] for s in runs
        ]
        assert curves[0] != curves[1] != curves[2]
        metrics = run_files(tmp_path / "three" / "runs" / runs[0].run_id)["metrics.csv"]
        assert metrics and "value_loss" in metrics[0]


SMOKE_SUITE = """
name = "pg-smoke"
seeds = 2
devices = ["cpu"]
environments = ["CartPole-v1"]

[budget]
steps = 1024
eval_interval = 512
eval_episodes = 2

[[agents]]
name = "ppo"
config = { n_epochs = 2 }

[[agents]]
name = "a2c"
"""


def test_rlbench_run_trains_ppo_and_a2c_on_cartpole(tmp_path):
    path = tmp_path / "smoke.toml"
    path.write_text(textwrap.dedent(SMOKE_SUITE))
    proc = rlbench_cmd(
        "run", str(path), "--results", str(tmp_path), "-j", "1", "--threads", "1", "--no-report"
    )
    assert proc.returncode == 0, proc.stderr
    assert "ppo" in proc.stdout and "a2c" in proc.stdout
    runs = sorted((tmp_path / "pg-smoke" / "runs").iterdir())
    assert len(runs) == 4
    for run_dir in runs:
        status = json.loads((run_dir / "status.json").read_text())
        assert status["status"] == "complete", status
        assert status["lanes"] == 2  # the two seeds trained as lanes
        assert math.isfinite(status["final_return_mean"])
        weights = torch.load(run_dir / "weights.pt", weights_only=True)
        assert weights["actor"]["weights.0"].shape[0] == 1  # one lane's state


def test_rlbench_list_shows_ppo_and_a2c():
    proc = rlbench_cmd("list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for name in ("ppo", "a2c"):
        assert any(line.startswith(f"│ {name} ") for line in lines), proc.stdout


def test_validate_refuses_a_space_neither_agent_handles(tmp_path, catalogue):
    assert PPO.check_spaces(gym.spaces.Box(-1, 1, (2,)), gym.spaces.MultiBinary(3))
    assert PPO.check_spaces(gym.spaces.Discrete(3), gym.spaces.Discrete(2))
    assert A2C.check_spaces(gym.spaces.Box(-1, 1, (2,)), gym.spaces.Box(-1, 1, (1,))) is None
    assert A2C.check_spaces(gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(2)) is None
