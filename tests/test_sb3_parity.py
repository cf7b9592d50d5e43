"""rlbench's ``sac`` and ``td3`` update their networks as Stable-Baselines3's SAC and TD3 do.

Each agent and SB3's model start from the same weights; every gradient step, SB3's ``train``
is handed the minibatch and the standard normal noise that rlbench's step drew (its replay
``sample`` and its noise source replaced for the call). After many steps, every network of
both (actor, critics, targets, the temperature) must compute the same outputs on held-out
inputs, to float32 rounding: the two run different kernels (stacked ``baddbmm`` against
``nn.Linear``, a hand-computed backward pass against autograd, rlbench's lane Adam against
torch's), so the check is a tolerance far below how far training moved the networks. The
test also asserts that they moved that far.

Rounding does not stay at rounding forever: Adam divides each gradient by its running RMS,
so a weight whose gradient is near zero moves by up to the learning rate whichever way the
rounding tips it. At HalfCheetah's sizes (17 observations, 6 actions, 400-300 networks,
batch 256) the two stay within 1e-6 for about 30 steps, then one such weight parts them by
1e-5 to 1e-3 in a step. At these sizes no such step came within 60; the test takes 40.

This is what makes the side-by-side benchmark (benchmarks/sb3_offpolicy.py) a comparison of
implementations of one algorithm: any difference in the losses, the targets, the delays, the
temperature or the optimizer shows here, without the seeds' noise of a learning curve.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from rlbench_mlp import MLPConfig, build_mlp
from rlbench_offpolicy import common
from rlbench_offpolicy.sac import SAC, SACConfig
from rlbench_offpolicy.td3 import TD3, TD3Config

from rlbench import AgentContext, Transition

sb3 = pytest.importorskip(
    "stable_baselines3", reason="stable-baselines3 (in the test extra) is not installed"
)
from stable_baselines3.common.logger import configure  # noqa: E402
from stable_baselines3.common.type_aliases import ReplayBufferSamples  # noqa: E402

OBS = gym.spaces.Box(-np.inf, np.inf, shape=(5,), dtype=np.float32)
ACTIONS = gym.spaces.Box(
    np.array([-2.0, 0.0], dtype=np.float32), np.array([2.0, 0.5], dtype=np.float32)
)
HIDDEN = [64, 64]
BATCH = 64
FILL = 500  # transitions in the replay before the first gradient step
STEPS = 40  # gradient steps compared


class Blank(gym.Env):
    """An environment with the spaces only: SB3 builds its model from one, never steps it."""

    observation_space = OBS
    action_space = ACTIONS

    def reset(self, *, seed=None, options=None):
        return np.zeros(5, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(5, dtype=np.float32), 0.0, False, False, {}


def rlbench_agent(name: str, config: dict[str, Any]):
    """A one-lane agent, and the networks it was built from (in the order it asked for them:
    the actor, then the critics), which still hold the initial weights."""
    built: list[torch.nn.Module] = []
    torch.manual_seed(0)

    def make_lane_networks(n_in: int, n_out: int, role: str | None = None) -> list:
        network = build_mlp(n_in, n_out, MLPConfig(hidden_sizes=HIDDEN))
        built.append(network)
        return [network]

    rng = np.random.default_rng(0)
    context = AgentContext(
        observation_space=OBS,
        action_space=ACTIONS,
        num_envs=1,
        device=torch.device("cpu"),
        seed=0,
        rng=rng,
        total_steps=FILL + STEPS,
        make_network=lambda n_in, n_out: make_lane_networks(n_in, n_out)[0],
        lanes=1,
        lane_seeds=(0,),
        lane_rngs=(rng,),
        make_lane_networks=make_lane_networks,
    )
    agent_cls, config_cls = {"sac": (SAC, SACConfig), "td3": (TD3, TD3Config)}[name]
    agent = agent_cls(config_cls(**config, batch_size=BATCH, learning_starts=10**9), context)
    # Fill the replay with made-up transitions (random actions: learning_starts not reached).
    gen = torch.Generator().manual_seed(1)
    obs = torch.randn(1, 1, 5, generator=gen)
    for i in range(FILL):
        action = agent.act(obs)
        next_obs = torch.randn(1, 1, 5, generator=gen)
        reward = torch.randn(1, 1, generator=gen) - action.square().sum(-1)
        agent.observe(
            Transition(
                obs=obs,
                action=action,
                reward=reward,
                next_obs=next_obs,
                terminated=torch.full((1, 1), i % 23 == 22),
                truncated=torch.full((1, 1), i % 17 == 16),
            )
        )
        obs = next_obs
    return agent, built


def copy_mlp(source: torch.nn.Module, target: torch.nn.Sequential) -> None:
    """Copy an rlbench MLP's linear layers into SB3's ``nn.Sequential`` of the same shape."""
    linears = [m for m in target if isinstance(m, torch.nn.Linear)]
    sources = [m for m in source.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == len(sources)
    for s, t in zip(sources, linears, strict=True):
        t.load_state_dict(s.state_dict())


def sb3_model(name: str, built: list[torch.nn.Module], **kwargs: Any):
    """SB3's model with rlbench's initial weights (its targets copies of them)."""
    algorithm = {"sac": sb3.SAC, "td3": sb3.TD3}[name]
    model = algorithm(
        "MlpPolicy",
        Blank(),
        batch_size=BATCH,
        learning_starts=0,
        policy_kwargs={"net_arch": HIDDEN},
        device="cpu",
        **kwargs,
    )
    model.set_logger(configure(None, []))
    actor, qf1, qf2 = built
    if name == "sac":
        # rlbench's actor outputs [mean, log_std]: SB3 splits that last layer into two heads.
        first = torch.nn.Sequential(*list(actor)[:-1])
        copy_mlp(first, model.actor.latent_pi)
        last = list(actor)[-1]
        half = last.out_features // 2
        for head, rows in (
            (model.actor.mu, slice(0, half)),
            (model.actor.log_std, slice(half, None)),
        ):
            head.weight.data.copy_(last.weight.data[rows])
            head.bias.data.copy_(last.bias.data[rows])
    else:
        copy_mlp(actor, model.actor.mu)
        model.actor_target.load_state_dict(model.actor.state_dict())
    copy_mlp(qf1, model.critic.q_networks[0])
    copy_mlp(qf2, model.critic.q_networks[1])
    model.critic_target.load_state_dict(model.critic.state_dict())
    return model


def outputs(name: str, agent, model, probe: torch.Tensor, probe_action: torch.Tensor):
    """Every network's outputs on held-out inputs, rlbench's and SB3's, by role."""
    x = torch.cat([probe, probe_action], dim=-1)
    with torch.no_grad():
        ours = {
            "qf1": agent.qf1(x[None])[0],
            "qf2": agent.qf2(x[None])[0],
            "qf1_target": agent.qf1_target(x[None])[0],
            "qf2_target": agent.qf2_target(x[None])[0],
            "actor": agent.actor(probe[None])[0],
        }
        theirs = {
            "qf1": model.critic.q_networks[0](x),
            "qf2": model.critic.q_networks[1](x),
            "qf1_target": model.critic_target.q_networks[0](x),
            "qf2_target": model.critic_target.q_networks[1](x),
        }
        if name == "sac":
            latent = model.actor.latent_pi(probe)
            theirs["actor"] = torch.cat([model.actor.mu(latent), model.actor.log_std(latent)], -1)
            if agent.log_alpha is not None:  # a learned temperature
                ours["log_alpha"] = agent.log_alpha.detach()[0].clone()
                theirs["log_alpha"] = model.log_ent_coef.detach().clone()
        else:
            ours["actor"] = torch.tanh(ours["actor"])  # SB3's actor ends in its tanh
            theirs["actor"] = model.actor.mu(probe)
            ours["actor_target"] = torch.tanh(agent.actor_target(probe[None])[0])
            theirs["actor_target"] = model.actor_target.mu(probe)
    return ours, theirs


#: Settings given to both, by their shared names (rlbench's are SB3's).
CASES = [
    ("sac", {"learning_rate": 1e-3}),
    ("sac", {"ent_coef": 0.05, "gamma": 0.98, "tau": 0.02}),
    ("td3", {"learning_rate": 1e-3}),
    ("td3", {"policy_delay": 3, "target_policy_noise": 0.3, "target_noise_clip": 0.4}),
]


@pytest.mark.parametrize(("name", "config"), CASES)
def test_each_gradient_step_is_sb3s_on_the_same_minibatch_and_noise(monkeypatch, name, config):
    agent, built = rlbench_agent(name, config)
    model = sb3_model(name, built, **config)
    gen = torch.Generator().manual_seed(2)
    probe = torch.randn(256, 5, generator=gen)
    probe_action = torch.rand(256, 2, generator=gen) * 2 - 1
    start, _ = outputs(name, agent, model, probe, probe_action)

    # What rlbench's step draws, recorded for SB3's step.
    batches: list[Any] = []
    noises: list[torch.Tensor] = []
    sample = agent.buffer.sample
    monkeypatch.setattr(agent.buffer, "sample", lambda n: batches.append(sample(n)) or batches[-1])
    lane_normal = common.lane_normal
    monkeypatch.setattr(
        common, "lane_normal", lambda *a, **k: noises.append(lane_normal(*a, **k)) or noises[-1]
    )

    def replay_sample(batch_size, env=None):
        b = batches.pop(0)
        return ReplayBufferSamples(
            observations=b.obs[0],
            actions=b.action[0],
            next_observations=b.next_obs[0],
            dones=b.terminated[0].float()[:, None],
            rewards=b.reward[0][:, None],
        )

    def rsample(dist, sample_shape=()):  # SAC's reparameterised Normal draw
        return dist.loc + dist.scale * noises.pop(0)[0]

    def normal_(tensor, mean=0.0, std=1.0, *, generator=None):  # TD3's target smoothing
        return tensor.copy_(noises.pop(0)[0] * std + mean)

    model.replay_buffer.sample = replay_sample
    for _ in range(STEPS):
        agent.gradient_step()
        with monkeypatch.context() as m:
            m.setattr(torch.distributions.Normal, "rsample", rsample)
            m.setattr(torch.Tensor, "normal_", normal_)
            model.train(gradient_steps=1, batch_size=BATCH)
        assert not batches and not noises  # SB3's step used exactly what rlbench's drew

    ours_out, theirs_out = outputs(name, agent, model, probe, probe_action)
    for role, value in ours_out.items():
        moved = (value - start[role]).abs().max().item()
        diff = (value - theirs_out[role]).abs().max().item()
        # Trained far from the start, and SB3's to 1/10,000 of that distance or closer (here
        # 1e-7 to 5e-7 apart after moving 0.06 to 2.6: float32 rounding).
        assert moved > 1e-2, (role, moved)
        assert diff < 1e-4 * moved, (role, diff, moved)
