"""The built-in off-policy agents, sac and td3: registration and the spaces they refuse, the
action contract, SAC's log-probability against torch.distributions, TD3's delayed updates,
and through the harness the lane contract, an exact resume after an interruption and
``rlbench evaluate``. Budgets are tiny (a few hundred steps, 16-unit networks): these check
the plumbing; tests/test_offpolicy_learning.py checks that they learn."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import rlbench_cmd
from rlbench_mlp import MLPConfig, build_mlp
from rlbench_offpolicy import common
from rlbench_offpolicy.sac import SAC, SACConfig
from rlbench_offpolicy.sac import critic_loss as sac_critic_loss
from rlbench_offpolicy.td3 import TD3, TD3Config
from rlbench_offpolicy.td3 import critic_loss as td3_critic_loss
from run_files import differences, statuses, without_resume_fields
from test_lanes import assert_same_state
from test_lanes import run_files as lane_files

from rlbench import AgentContext, Transition, checkpoint
from rlbench.errors import SuiteError
from rlbench.executor import run_suite
from rlbench.lanes import polyak_update
from rlbench.runspec import expand
from rlbench.saved_agent import evaluate_saved, load_agent
from rlbench.suite import load_suite
from rlbench.training import execute_lanes, execute_run
from rlbench.tune.plan import TuneOverrides, resolve_plan

OBS = gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
#: Bounds that are neither symmetric nor alike: the rescaling must handle each dimension.
ACTIONS = gym.spaces.Box(
    np.array([-1.0, 0.0], dtype=np.float32), np.array([3.0, 0.5], dtype=np.float32)
)
AGENTS = {"sac": (SAC, SACConfig), "td3": (TD3, TD3Config)}


# ---------------------------------------------------------------- the agents on their own


def make_agent(
    name: str,
    seeds: tuple[int, ...] = (0,),
    action_space=ACTIONS,
    hidden: tuple[int, ...] = (16,),
    **config: Any,
):
    """A lane agent of ``seeds`` built as the harness builds one: each lane's generator seeded
    from its seed, network k of each role drawn from seed k's torch stream (MLPs of
    ``hidden`` units)."""
    torch_states: dict[int, torch.Tensor] = {}

    def make_lane_networks(n_in: int, n_out: int, role: str | None = None) -> list:
        outside, networks = torch.random.get_rng_state(), []
        for seed in seeds:
            if seed in torch_states:
                torch.random.set_rng_state(torch_states[seed])
            else:
                torch.manual_seed(seed)
            networks.append(build_mlp(n_in, n_out, MLPConfig(hidden_sizes=list(hidden))))
            torch_states[seed] = torch.random.get_rng_state()
        torch.random.set_rng_state(outside)
        return networks

    rngs = tuple(np.random.default_rng(seed) for seed in seeds)
    context = AgentContext(
        observation_space=OBS,
        action_space=action_space,
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
    agent_cls, config_cls = AGENTS[name]
    defaults = {"learning_starts": 8, "batch_size": 4}
    return agent_cls(config_cls(**{**defaults, **config}), context)


def step(agent, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
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


def test_rlbench_list_shows_sac_and_td3():
    proc = rlbench_cmd("list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for name in ("sac", "td3"):
        assert any(line.startswith(f"│ {name} ") and "offpolicy" in line for line in lines), (
            proc.stdout
        )


@pytest.mark.parametrize(("name", "hidden"), [("sac", [256, 256]), ("td3", [400, 300])])
def test_the_default_networks_are_sb3s_mlp_policy_defaults(name, hidden):
    # Stable-Baselines3 2.x's MlpPolicy defaults (sac/policies.py: 256-256; td3/policies.py:
    # 400-300, the TD3 paper's), which RL Zoo's MuJoCo entries use: they name no net_arch.
    proc = rlbench_cmd("--no-plugin-autoload", "list", "-v")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    block = out[out.index(f"\n{name}  [offpolicy") :]
    block = block[: block.index("\n", block.index("default network:"))]
    assert f"  default network: mlp, hidden_sizes={hidden}" in block


@pytest.mark.parametrize("agent_cls", [SAC, TD3])
def test_check_spaces_accepts_only_bounded_box_actions_and_box_observations(agent_cls):
    assert agent_cls.check_spaces(OBS, ACTIONS) is None
    assert "Box action space" in agent_cls.check_spaces(OBS, gym.spaces.Discrete(2))
    unbounded = gym.spaces.Box(-np.inf, np.inf, shape=(1,))
    assert "finite bounds" in agent_cls.check_spaces(OBS, unbounded)
    assert "Box observations" in agent_cls.check_spaces(gym.spaces.Discrete(4), ACTIONS)


def test_a_suite_pairing_them_with_discrete_actions_is_refused_with_the_reason(tmp_path, catalogue):
    path = tmp_path / "bad.toml"
    path.write_text(
        'name = "bad"\nseeds = 1\nenvironments = ["CartPole-v1"]\n'
        "[budget]\nsteps = 100\neval_interval = 100\n"
        '[[agents]]\nname = "sac"\n'
        '[[agents]]\nname = "td3"\n'
    )
    with pytest.raises(SuiteError) as caught:
        load_suite(path, catalogue)
    for i, name in enumerate(("sac", "td3")):
        assert (
            f"agents[{i}] on environments[0]: {name} cannot train on 'CartPole-v1': it needs a "
            "Box action space (continuous actions), got Discrete(2)"
        ) in caught.value.problems


@pytest.mark.parametrize("name", ["sac", "td3"])
def test_actions_stay_in_the_bounds_and_the_replay_keeps_the_unit_action(name):
    noisy = {"exploration_noise": 5.0} if name == "td3" else {}
    agent = make_agent(name, seeds=(0, 1), **noisy)
    low, high = torch.as_tensor(ACTIONS.low), torch.as_tensor(ACTIONS.high)
    for i in range(20):  # 8 uniform warm-up steps, then the policy's
        position = agent.buffer.position
        action, _ = step(agent, i)
        assert action.shape == (2, 1, 2)  # [lanes, num_envs, *action_shape]
        assert bool(((action >= low) & (action <= high)).all()), action
        stored = agent.buffer.action[:, position]  # what the replay kept: [-1, 1]
        assert bool((stored.abs() <= 1).all())
        torch.testing.assert_close(agent.actions.to_env(stored.unsqueeze(1)), action)
    # The rescaling: -1 and 1 are the bounds, and to_unit undoes to_env.
    ends = torch.tensor([[[-1.0, -1.0], [1.0, 1.0]]])
    assert torch.equal(agent.actions.to_env(ends)[0], torch.stack([low, high]))
    unit = torch.rand(2, 5, 2) * 2 - 1
    torch.testing.assert_close(agent.actions.to_unit(agent.actions.to_env(unit)), unit)
    # Greedy actions draw nothing and do not depend on the call.
    states = [rng.bit_generator.state for rng in agent.context.lane_rngs]
    obs = torch.zeros(2, 3, 3)
    greedy = agent.act(obs, greedy=True)
    assert torch.equal(greedy, agent.act(obs, greedy=True))
    assert [rng.bit_generator.state for rng in agent.context.lane_rngs] == states
    with torch.no_grad():
        out = agent.actor(obs)
        mean = out.chunk(2, dim=-1)[0] if name == "sac" else out
        torch.testing.assert_close(greedy, agent.actions.to_env(torch.tanh(mean)))


def test_each_lane_draws_its_noise_from_its_own_generator():
    together = common.lane_normal([np.random.default_rng(k) for k in range(3)], (4, 2), "cpu")
    for k in range(3):
        alone = common.lane_normal([np.random.default_rng(k)], (4, 2), "cpu")
        assert torch.equal(together[k], alone[0])


def test_sac_log_prob_is_the_tanh_squashed_gaussian_of_torch_distributions():
    agent = make_agent("sac", seeds=(0, 1), action_space=ACTIONS)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64, 3, generator=generator)
    # |u| stays below about 3, where 1e-6 is a small part of 1 - tanh(u)^2 (above, the
    # inverse tanh that torch.distributions takes of the action loses the digits anyway).
    noise = torch.randn(2, 64, 2, generator=generator).clamp(-1.0, 1.0)
    with torch.no_grad():
        action, log_prob = agent.policy(x, noise)
        mean, log_std = agent.actor(x).chunk(2, dim=-1)
    std = log_std.clamp(-20, 2).exp()
    u = mean + std * noise
    torch.testing.assert_close(action, torch.tanh(u))
    assert float(u.abs().max()) < 3
    squashed = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, std), [torch.distributions.TanhTransform()]
    )
    # SB3's log(1 - tanh(u)^2 + 1e-6) against the exact Jacobian: equal up to the 1e-6.
    torch.testing.assert_close(log_prob, squashed.log_prob(action).sum(-1), atol=1e-3, rtol=1e-4)
    # And SB3's formula term by term: the Gaussian's log-density of u, less the correction.
    gaussian = torch.distributions.Normal(mean, std).log_prob(u)
    sb3 = (gaussian - torch.log(1 - torch.tanh(u) ** 2 + 1e-6)).sum(-1)
    torch.testing.assert_close(log_prob, sb3)
    # A log-std beyond SB3's bounds is clamped to [-20, 2].
    with torch.no_grad():
        agent.actor.biases[-1][:, :, 2:] += 50.0  # the log-std outputs
        _, clamped = agent.policy(x, torch.zeros_like(noise))
        mean, _ = agent.actor(x).chunk(2, dim=-1)
    at_max = torch.distributions.Normal(mean, math.exp(2.0)).log_prob(mean)
    correction = torch.log(1 - torch.tanh(mean) ** 2 + 1e-6)
    torch.testing.assert_close(clamped, (at_max - correction).sum(-1))


@pytest.mark.parametrize("ent_coef", ["auto", "auto_0.1", 0.05])
def test_sac_entropy_coefficient_learned_from_its_start_or_fixed(ent_coef):
    agent = make_agent("sac", ent_coef=ent_coef)
    metrics: dict[str, Any] = {}
    for i in range(12):
        metrics = step(agent, i)[1] or metrics
    start = {"auto": 1.0, "auto_0.1": 0.1}.get(ent_coef, ent_coef)
    if ent_coef == 0.05:
        assert agent.log_alpha is None and metrics["ent_coef"] == [pytest.approx(0.05)]
        assert "ent_coef_loss" not in metrics
    else:
        alpha = float(agent.log_alpha.detach().exp())
        assert alpha != start and alpha == pytest.approx(start, rel=0.05)
        assert agent.target_entropy == -2.0  # -|A|
    with pytest.raises(ValueError, match="auto"):
        SACConfig(ent_coef="automatic")


def test_td3_updates_actor_and_targets_every_policy_delay_critic_updates():
    agent = make_agent("td3", policy_delay=3, learning_starts=4)
    watched = {
        "critic": agent.critic_params.flat,
        "actor": agent.actor_params.flat,
        "actor_target": agent.actor_target_params.flat,
        "critic_target": agent.critic_target_params.flat,
    }
    for i in range(20):
        before = {k: v.clone() for k, v in watched.items()}
        updates = agent.n_updates
        _, metrics = step(agent, i)
        changed = {k for k, v in watched.items() if not torch.equal(before[k], v)}
        if agent.n_updates == updates:  # still warming up
            assert not changed and not metrics
        elif agent.n_updates % 3 == 0:
            assert changed == set(watched) and "actor_loss" in metrics
        else:
            assert changed == {"critic"} and set(metrics) == {"critic_loss"}
    assert agent.n_updates == 20 - 4


@pytest.mark.parametrize("name", ["sac", "td3"])
def test_a_checkpoint_restores_an_agent_that_goes_on_exactly(name):
    agent = make_agent(name, seeds=(0, 1))
    for i in range(15):
        step(agent, i)
    saved = agent.checkpoint_state()
    resumed = make_agent(name, seeds=(0, 1))
    resumed.load_checkpoint_state(saved)
    for i in range(15, 25):
        a, metrics_a = step(agent, i)
        b, metrics_b = step(resumed, i)
        assert torch.equal(a, b) and metrics_a == metrics_b
    assert_same_state(agent.state_dict(), resumed.state_dict())


def autograd_gradient_step(agent) -> None:
    """One gradient step of ``agent`` (sac or td3) in plain autograd: every loss backpropagated
    by ``backward()``, the critics' from the agent's ``critic_loss``. What the agents' hand
    computed gradients (the critics', sac's temperature's) must equal bit for bit."""
    c, b = agent.config, agent.buffer.sample(agent.config.batch_size)
    rngs, shape = agent.context.lane_rngs, (c.batch_size, agent.actions.size)
    if isinstance(agent, SAC):
        pi_noise, next_noise = (common.lane_normal(rngs, shape, b.obs.device) for _ in range(2))
        action_pi, log_prob = agent.policy(b.obs, pi_noise)
        if agent.log_alpha is not None:
            alpha = agent.log_alpha.detach().exp()
            gap = (log_prob.detach() + agent.target_entropy).mean(dim=1)
            agent.alpha_params.zero_grad()
            (-(agent.log_alpha[:, 0] * gap)).sum().backward()
            agent.alpha_optimizer.step(c.learning_rate)
        else:
            alpha = torch.full((agent.context.lanes, 1), float(c.ent_coef))
        with torch.no_grad():
            next_action, next_log_prob = agent.policy(b.next_obs, next_noise)
            next_x = torch.cat([b.next_obs, next_action], dim=-1)
            next_q = torch.min(agent.qf1_target(next_x), agent.qf2_target(next_x)).squeeze(-1)
            target = b.reward + c.gamma * (~b.terminated).float() * (next_q - alpha * next_log_prob)
        loss = sac_critic_loss
    else:
        agent.n_updates += 1
        noise = common.lane_normal(rngs, shape, b.obs.device)
        with torch.no_grad():
            smoothing = (noise * c.target_policy_noise).clamp(
                -c.target_noise_clip, c.target_noise_clip
            )
            next_action = (torch.tanh(agent.actor_target(b.next_obs)) + smoothing).clamp(-1, 1)
            next_x = torch.cat([b.next_obs, next_action], dim=-1)
            next_q = torch.min(agent.qf1_target(next_x), agent.qf2_target(next_x)).squeeze(-1)
            target = b.reward + c.gamma * (~b.terminated).float() * next_q
        loss = td3_critic_loss
    x = torch.cat([b.obs, b.action], dim=-1)
    agent.critic_params.zero_grad()
    loss(agent.qf1(x).squeeze(-1), agent.qf2(x).squeeze(-1), target).sum().backward()
    agent.critic_optimizer.step(c.learning_rate)
    if isinstance(agent, SAC):
        x_pi = torch.cat([b.obs, action_pi], dim=-1)
        min_q_pi = torch.min(agent.qf1(x_pi), agent.qf2(x_pi)).squeeze(-1)
        actor_loss = (alpha * log_prob - min_q_pi).mean(dim=1)
    elif agent.n_updates % c.policy_delay == 0:
        x_pi = torch.cat([b.obs, torch.tanh(agent.actor(b.obs))], dim=-1)
        actor_loss = -agent.qf1(x_pi).squeeze(-1).mean(dim=1)
    else:
        return
    agent.actor_params.zero_grad()
    actor_loss.sum().backward(inputs=agent.actor_params.params)
    agent.actor_optimizer.step(c.learning_rate)
    polyak_update(agent.critic_target_params, agent.critic_params, c.tau)
    if not isinstance(agent, SAC):
        polyak_update(agent.actor_target_params, agent.actor_params, c.tau)


#: Batch sizes whose 1/batch is and is not exact; sac's from 171 on, where its actor's
#: narrow output layer (2 actions) takes the same product as at the built-in settings (batch
#: x 48 inputs >= rlbench.lanes.networks.NARROW_PRODUCT_FROM): below it autograd's product
#: for the layer's input gradient differs from the hand path's in rounding.
GRADIENT_CASES = [
    ("sac", {"batch_size": 171}),
    ("sac", {"batch_size": 256, "ent_coef": 0.2}),
    ("td3", {"batch_size": 100}),
    ("td3", {"batch_size": 4, "policy_delay": 1}),
]
NARROW_CASES = [
    ("sac", {"batch_size": 100}),
    ("sac", {"batch_size": 4, "ent_coef": 0.2}),
    ("td3", {"batch_size": 100}),
    ("td3", {"batch_size": 4, "policy_delay": 1}),
]


def fast_and_plain(name: str, hidden: tuple[int, ...], config: dict[str, Any], twins: bool = False):
    """Two equal three-lane agents past learning_starts, the first after 4 of its own gradient
    steps, the second after the same 4 in plain autograd. ``twins``: Q2 made a copy of Q1
    before them and the critics' optimizer stopped (Adam would part the copies by rounding,
    the two critics' weights lying at different columns of one buffer), so that every
    min(Q1, Q2) of the actor's loss is a tie."""
    agents = [make_agent(name, seeds=(0, 1, 2), hidden=hidden, **config) for _ in range(2)]
    for agent in agents:
        for i in range(110):  # with the agents' own gradient steps from step 8 on
            step(agent, i)
        if twins:
            for second, first in ((agent.qf2, agent.qf1), (agent.qf2_target, agent.qf1_target)):
                second.load_state_dict(first.state_dict())
            agent.critic_optimizer.step = lambda lr: None
    fast, plain = agents
    assert_same_state(fast.state_dict(), plain.state_dict())
    for _ in range(4):
        fast.gradient_step()
        autograd_gradient_step(plain)
    return fast, plain


@pytest.mark.parametrize(("name", "config"), GRADIENT_CASES)
@pytest.mark.parametrize("twins", [False, True])
def test_the_hand_computed_gradients_are_autograds_bit_for_bit(name, config, twins):
    """64-unit layers (products as baddbmm, as every built-in setting), batch sizes whose
    1/batch is and is not exact, critics apart and tied: the agent's gradient steps and the
    same steps in plain autograd leave every weight, target and optimizer moment equal."""
    fast, plain = fast_and_plain(name, (64, 48), config, twins)
    assert torch.equal(fast.critic_params.grad, plain.critic_params.grad)
    assert torch.equal(fast.actor_params.grad, plain.actor_params.grad)
    if twins:
        assert torch.equal(fast.qf1.weights[1], fast.qf2.weights[1])
    assert_same_state(fast.state_dict(), plain.state_dict())
    # And both drew the same random numbers.
    states = [[r.bit_generator.state for r in a.context.lane_rngs] for a in (fast, plain)]
    assert states[0] == states[1]


@pytest.mark.parametrize(("name", "config"), NARROW_CASES)
def test_with_narrow_layers_the_gradients_agree_to_rounding(name, config):
    """A hidden layer of fewer than 32 units is a narrow product with its bias added apart
    (rlbench.lanes.networks.NARROW_OUTPUT), and small batches take another product in
    autograd: there the two agree to float32 rounding, not bit for bit."""
    fast, plain = fast_and_plain(name, (16,), config)
    for group in ("critic", "actor"):
        params = [getattr(agent, f"{group}_params").flat for agent in (fast, plain)]
        torch.testing.assert_close(*params)
        # Adam's moments: its steps hardly depend on the gradient's scale, its moments do.
        moments = [getattr(agent, f"{group}_optimizer").moments for agent in (fast, plain)]
        for moment, value in moments[0].items():
            torch.testing.assert_close(value, moments[1][moment])


def test_gradient_steps_minus_one_takes_as_many_as_steps_collected():
    agent = make_agent("td3", learning_starts=0, train_freq=3, gradient_steps=-1)
    for i in range(9):
        step(agent, i)
    assert agent.n_updates == 9  # three trainings of 3 x 1 environment steps
    with pytest.raises(ValueError, match="at least 1, or -1"):
        TD3Config(gradient_steps=0)


# ----------------------------------------------------------------- through the harness

LANE_SUITE = """
name = "offpolicy"
seeds = [0, 1, 2]
devices = ["cpu"]
environments = ["Pendulum-v1"]

[budget]
steps = 300
eval_interval = 150
eval_episodes = 1

[[agents]]
name = "sac"
network = { name = "mlp", hidden_sizes = [16] }
config = { learning_starts = 50, batch_size = 24 }

[[agents]]
name = "td3"
network = { name = "mlp", hidden_sizes = [16] }
[agents.networks.critic]
hidden_sizes = [24]
[agents.config]
num_envs = 2
learning_starts = 50
batch_size = 24
train_freq = 2
gradient_steps = -1
"""


@pytest.fixture(scope="module")
def lane_results(tmp_path_factory, catalogue) -> tuple[Path, list]:
    """Each agent's three seeds trained as one group of three, as a group of two in another
    order (seeds 2 and 0), and one by one."""
    root = tmp_path_factory.mktemp("offpolicy_lanes")
    path = root / "lanes.toml"
    path.write_text(textwrap.dedent(LANE_SUITE))
    runs = expand(load_suite(path, catalogue))
    torch.set_num_threads(1)
    for agent in ("sac", "td3"):
        group = [s for s in runs if s.agent == agent]
        by_seed = {s.seed: s for s in group}
        for name, lanes in (("three", group), ("two", [by_seed[2], by_seed[0]])):
            outcomes = execute_lanes(lanes, root / name, catalogue)
            assert [o.status for o in outcomes] == ["complete"] * len(lanes), outcomes
        for spec in group:
            assert execute_run(spec, root / "alone", catalogue).status == "complete"
    return root, runs


@pytest.mark.parametrize("agent", ["sac", "td3"])
def test_lane_k_of_a_group_is_the_separate_run_of_seed_k(lane_results, agent):
    """Curves, episodes, training metrics and saved weights of every lane, in a group of 3
    and in a group of 2 at another place, are those of its seed trained alone, bit for bit
    (td3 with 2 environments per lane and gradient_steps = -1, a wider critic network)."""
    root, runs = lane_results
    group = [s for s in runs if s.agent == agent]
    for spec in group:
        alone = lane_files(root / "alone" / "runs" / spec.run_id)
        for name in ("three", "two"):
            if name == "two" and spec.seed == 1:
                continue
            grouped = lane_files(root / name / "runs" / spec.run_id)
            for key in ("evaluations.csv", "episodes.csv", "metrics.csv"):
                assert alone[key] == grouped[key], (name, spec.seed, key)
            assert_same_state(alone["weights"], grouped["weights"])
    curves = [lane_files(root / "three" / "runs" / s.run_id)["evaluations.csv"] for s in group]
    assert curves[0] != curves[1] != curves[2]  # three seeds, not three copies
    metrics = lane_files(root / "three" / "runs" / group[0].run_id)["metrics.csv"]
    assert {"critic_loss", "actor_loss"} <= set(metrics[-1])
    assert all(math.isfinite(float(v)) for v in metrics[-1].values())


@pytest.mark.parametrize("agent", ["sac", "td3"])
def test_rlbench_evaluate_replays_the_final_evaluation_of_a_grouped_run(
    lane_results, catalogue, agent
):
    root, runs = lane_results
    spec = next(s for s in runs if s.agent == agent and s.seed == 1)
    run = root / "three" / "runs" / spec.run_id
    final = pd.read_csv(run / "evaluations.csv").iloc[-1]
    again = evaluate_saved(run, catalogue)
    for key, value in again.items():
        assert value == final[key], key
    _, loaded = load_agent(run, catalogue)  # a one-lane agent with the lane's weights
    assert_same_state(
        loaded.state_dict()["actor"], torch.load(run / "weights.pt", weights_only=True)["actor"]
    )
    if agent == "sac":  # and once through the command line
        shown = rlbench_cmd("--no-plugin-autoload", "evaluate", str(run))
        assert shown.returncode == 0, shown.stderr
        csv_mean = (run / "evaluations.csv").read_text().splitlines()[-1].split(",")[1]
        assert shown.stdout.startswith(f"return {csv_mean} ± ")


RESUME_SUITE = """
name = "opck"
seeds = 2
devices = ["cpu"]
environments = ["Pendulum-v1"]

[budget]
steps = 600
eval_interval = 150
eval_episodes = 1

[[agents]]
name = "sac"
network = { name = "mlp", hidden_sizes = [16] }
config = { learning_starts = 50, batch_size = 16 }

[[agents]]
name = "td3"
network = { name = "mlp", hidden_sizes = [16] }
config = { learning_starts = 50, batch_size = 16 }
"""


def test_an_interrupted_run_resumes_to_the_files_of_an_uninterrupted_one(
    tmp_path, catalogue, monkeypatch
):
    """Both groups stop after their second mid-run checkpoint (step 300: replay buffer,
    optimizers, targets, counters, random streams and environments mid-episode saved) and
    resume; every file of every run is what an uninterrupted run writes."""
    path = tmp_path / "suite.toml"
    path.write_text(textwrap.dedent(RESUME_SUITE))
    suite = load_suite(path, catalogue)
    runs = expand(suite)
    run_suite(suite, runs, tmp_path / "uninterrupted", catalogue=catalogue)

    save, stopped = checkpoint.save, set()

    def save_then_stop(run_dir, state):
        save(run_dir, state)
        group = tuple(state["run_ids"])
        if state["step"] == 300 and group not in stopped:  # each group's second checkpoint
            stopped.add(group)
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_stop)
    for _ in range(2):  # one group per suite run is interrupted
        assert run_suite(suite, runs, tmp_path / "resumed", catalogue=catalogue).interrupted
    monkeypatch.undo()
    run_suite(suite, runs, tmp_path / "resumed", catalogue=catalogue)
    runs_dir = tmp_path / "resumed" / "opck" / "runs"
    found = statuses(runs_dir)
    assert len(found) == 4 and {s["status"] for s in found.values()} == {"complete"}
    assert {s.get("resumed_from_step") for s in found.values()} == {300}
    assert all(s["resume_exact"] for s in found.values())
    without_resume_fields(runs_dir)
    assert differences(tmp_path / "uninterrupted" / "opck" / "runs", runs_dir) == []


# ----------------------------------------------------------------- tuning


@pytest.mark.parametrize("agent", ["sac", "td3"])
def test_default_search_space_validates_against_the_config(tmp_path, catalogue, agent):
    space, plugin = catalogue.search_space(agent), catalogue.search_space_plugin(agent)
    assert plugin == "offpolicy"
    assert {"learning_rate", "gamma", "batch_size", "buffer_size", "tau", "train_freq"} <= set(
        space
    )
    path = tmp_path / "tune.toml"
    path.write_text(
        'name = "t"\nseeds = 1\nenvironments = ["Pendulum-v1"]\n'
        "[budget]\nsteps = 1000\neval_interval = 500\n"
        f'[[agents]]\nname = "{agent}"\n'
    )
    plan = resolve_plan(load_suite(path, catalogue), catalogue, TuneOverrides(agent=agent))
    assert plan.agent == agent and plan.fixed == {"gradient_steps": -1}
    assert {"learning_rate", "gamma", "tau", "train_freq"} <= set(plan.dims)
