"""The fast paths of the harness and the DQN family against the plain code they replace.

Each shortcut (scalar exploration draws for one environment, replay writes through numpy, a
training phase's minibatches drawn at once with their targets computed together, the
harness's shared observation tensors) claims to compute exactly what the plain version does;
these tests hold it to that. The lane toolkit's own shortcuts (its optimizers, clipper and
target updates, and PyTorch's private kernels under them) are tested in
``test_lane_toolkit.py`` and ``test_lane_kernels.py``.
"""

from __future__ import annotations

import copy
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest
import torch
from rlbench_dqn.dqn import DQN, DQNConfig
from rlbench_dqn.exploration import lane_epsilon_greedy
from rlbench_mlp import MLPConfig, build_mlp

from rlbench import AgentContext, Transition
from rlbench.lanes import LaneReplayBuffer
from rlbench.runspec import expand
from rlbench.suite import load_suite
from rlbench.training import execute_run


def reference_epsilon_greedy(q_values, epsilon, rng):
    """One lane, one environment or several, through the general (array) draws."""
    actions = q_values.argmax(dim=-1)
    if epsilon > 0.0:
        n, num_actions = q_values.shape
        explore = rng.random(n) < epsilon
        if explore.any():
            random_actions = torch.as_tensor(rng.integers(num_actions, size=n))
            actions = torch.where(torch.as_tensor(explore), random_actions, actions)
    return actions


@pytest.mark.parametrize("n", [1, 3])
def test_epsilon_greedy_draws_what_the_general_path_draws(n):
    lanes = 4
    fast = tuple(np.random.default_rng(5 + k) for k in range(lanes))
    reference = [np.random.default_rng(5 + k) for k in range(lanes)]
    gen = torch.Generator().manual_seed(0)
    for i in range(200):
        q = torch.randn(lanes, n, 3, generator=gen)
        epsilons = [[0.0, 0.3, 1.0][(i + k) % 3] for k in range(lanes)]
        together = lane_epsilon_greedy(q, epsilons, fast)
        for k in range(lanes):
            expected = reference_epsilon_greedy(q[k], epsilons[k], reference[k])
            assert torch.equal(together[k], expected)
    for k in range(lanes):
        assert fast[k].random() == reference[k].random()


@pytest.mark.parametrize("box", [False, True], ids=["discrete", "box"])
def test_replay_writes_through_numpy_equal_tensor_writes(box):
    rngs = (np.random.default_rng(0), np.random.default_rng(1))
    layout = {"action_shape": (2,), "action_dtype": torch.float32} if box else {}
    fast = LaneReplayBuffer(7, 2, torch.device("cpu"), rngs, **layout)
    plain = LaneReplayBuffer(7, 2, torch.device("cpu"), rngs, **layout)
    plain._np = None  # the tensor path (the one other devices take)
    gen = torch.Generator().manual_seed(0)
    for _ in range(6):  # 2 lanes of 3 environments: wraps around a 7-slot buffer twice
        if box:
            action = torch.randn(2, 3, 2, generator=gen)
        else:
            action = torch.randint(4, (2, 3), generator=gen)
        t = Transition(
            obs=torch.randn(2, 3, 2, generator=gen),
            action=action,
            reward=torch.randn(2, 3, generator=gen),
            next_obs=torch.randn(2, 3, 2, generator=gen),
            terminated=torch.rand(2, 3, generator=gen) < 0.5,
            truncated=torch.zeros(2, 3, dtype=torch.bool),
        )
        fast.add(t)
        plain.add(t)
        for name in LaneReplayBuffer.FIELDS:
            assert torch.equal(getattr(fast, name), getattr(plain, name))
        assert (fast.position, fast.size) == (plain.position, plain.size)


def test_sampling_a_phase_at_once_draws_the_per_step_indices():
    buffer = LaneReplayBuffer(1000, 1, torch.device("cpu"), (np.random.default_rng(3),) * 1)
    buffer.size = 777
    at_once = buffer.sample_indices(64 * 5)
    buffer.rngs = (np.random.default_rng(3),)
    per_step = torch.cat([buffer.sample_indices(64) for _ in range(5)], dim=1)
    assert torch.equal(at_once, per_step)


def dqn_agent(**config) -> DQN:
    env = gym.make("CartPole-v1")
    torch.manual_seed(0)
    context = AgentContext(
        observation_space=env.observation_space,
        action_space=env.action_space,
        num_envs=1,
        device=torch.device("cpu"),
        seed=0,
        rng=np.random.default_rng(0),
        total_steps=10_000,
        make_network=lambda i, o: build_mlp(i, o, MLPConfig(hidden_sizes=[64, 64])),
    )
    return DQN(DQNConfig(**config), context)


def fill(agent: DQN, rows: int) -> None:
    gen = torch.Generator().manual_seed(2)
    b = agent.buffer  # one lane: fields [1, capacity, ...]
    b.obs[0, :rows] = torch.randn(rows, 4, generator=gen)
    b.next_obs[0, :rows] = torch.randn(rows, 4, generator=gen)
    b.action[0, :rows] = torch.randint(2, (rows,), generator=gen)
    b.reward[0, :rows] = 1.0
    b.terminated[0, :rows] = torch.rand(rows, generator=gen) < 0.1
    b.size = b.position = rows


def test_a_phase_with_targets_computed_together_trains_like_per_step_targets(monkeypatch):
    together = dqn_agent(gradient_steps=20, batch_size=32)
    per_step = dqn_agent(gradient_steps=20, batch_size=32)
    per_step.load_state_dict(copy.deepcopy(together.state_dict()))
    # The path of targets that read the online network: one call per minibatch, at its step.
    monkeypatch.setattr(per_step, "targets_depend_on_online_network", True)
    monkeypatch.setattr("rlbench_dqn.dqn.PHASE_CHUNK_ROWS", 32 * 8)  # several chunks
    for agent in (together, per_step):
        calls = []

        def counted(*args, agent=agent, calls=calls):
            calls.append(1)
            return DQN.targets(agent, *args)

        monkeypatch.setattr(agent, "targets", counted)
        fill(agent, 3000)
        losses = [agent.train_phase()["loss"][0] for _ in range(3)]
        agent.losses, agent.target_calls = losses, len(calls)
    assert per_step.target_calls == 3 * 20
    assert together.target_calls == 3 * 3  # per chunk of 8 minibatches, 1 pass: 8 + 8 + 4
    # Same indices, same targets (the same rows through the same target network); on the
    # CPU this is bit for bit, elsewhere a large and a small matrix product may round apart.
    assert together.losses == pytest.approx(per_step.losses, rel=1e-5)
    for a, b in zip(together.q.parameters(), per_step.q.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_target_sync_copies_every_parameter_and_buffer():
    agent = dqn_agent()
    with torch.no_grad():
        for p in agent.q.parameters():
            p.add_(1.0)
    agent.sync_target()
    online, target = agent.q.state_dict(), agent.q_target.state_dict()
    assert all(torch.equal(online[k], target[k]) for k in online)
    assert all(not p.requires_grad for p in agent.q_target.parameters())


RECORDER = """
    import torch
    from rlbench import Agent, AgentConfig, AgentSpec, hookimpl

    SEEN = []

    class Recorder(Agent):
        def act(self, obs, *, greedy=False):
            if not greedy:
                SEEN.append(("act", obs.clone()))
            n = obs.shape[0]
            space = self.context.action_space
            return torch.as_tensor([space.sample() for _ in range(n)])

        def observe(self, t):
            SEEN.append(("observe", {k: getattr(t, k).clone() for k in
                         ("obs", "action", "reward", "next_obs", "terminated", "truncated")}))
            return {}

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    @hookimpl
    def rlbench_register_agents():
        return [AgentSpec("recorder", Recorder)]
"""


@pytest.fixture
def recorder(inline_plugin):
    catalogue = inline_plugin("recorder_plugin", RECORDER)
    return catalogue, sys.modules["recorder_plugin"].SEEN


@pytest.mark.parametrize("num_envs", [1, 3])
def test_the_harness_hands_over_step_and_reset_observations(tmp_path, recorder, num_envs):
    """next_obs is what the step returned (also at an episode's end); the next act() sees the
    reset observation there and the step's observation everywhere else."""
    catalogue, seen = recorder
    suite = tmp_path / "s.toml"
    suite.write_text(
        textwrap.dedent(f"""
        name = "rec"
        seeds = 1
        environments = ["CartPole-v1"]
        [budget]
        steps = {150 * num_envs}
        eval_interval = {150 * num_envs}
        eval_episodes = 1
        [[agents]]
        name = "recorder"
        config = {{ num_envs = {num_envs} }}
    """)
    )
    [spec] = expand(load_suite(suite, catalogue))
    assert execute_run(spec, tmp_path / "out", catalogue).status == "complete"
    acts = [x for kind, x in seen if kind == "act"]
    observes = [x for kind, x in seen if kind == "observe"]
    assert len(acts) == len(observes) == 150
    ended = 0
    for i, t in enumerate(observes):
        assert torch.equal(t["obs"], acts[i])
        assert t["obs"].dtype == t["next_obs"].dtype == torch.float32
        assert t["reward"].shape == t["terminated"].shape == (num_envs,)
        if i + 1 < len(acts):
            done = t["terminated"] | t["truncated"]
            nxt = acts[i + 1]
            assert torch.equal(nxt[~done], t["next_obs"][~done])
            for e in torch.nonzero(done).flatten().tolist():
                ended += 1
                # CartPole ends by leaving its bounds: the terminal observation shows it,
                # the reset observation (near 0) does not.
                assert t["next_obs"][e].abs().max() > 0.2 > nxt[e].abs().max()
    assert ended >= 3
