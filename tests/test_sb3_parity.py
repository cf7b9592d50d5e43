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
from rlbench_offpolicy import common
from test_offpolicy import ACTIONS, OBS, make_agent

from rlbench import Transition

sb3 = pytest.importorskip(
    "stable_baselines3", reason="stable-baselines3 (in the test extra) is not installed"
)
from stable_baselines3.common.logger import configure  # noqa: E402
from stable_baselines3.common.type_aliases import ReplayBufferSamples  # noqa: E402

HIDDEN = [64, 64]
BATCH = 64
FILL = 500  # transitions in the replay before the first gradient step
STEPS = 40  # gradient steps compared


class Blank(gym.Env):
    """An environment with the spaces only: SB3 builds its model from one, never steps it."""

    observation_space = OBS
    action_space = ACTIONS

    def reset(self, *, seed=None, options=None):
        return np.zeros(OBS.shape, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(OBS.shape, dtype=np.float32), 0.0, False, False, {}


def rlbench_agent(name: str, config: dict[str, Any]):
    """A one-lane agent (seed 0, ``HIDDEN`` networks) whose replay holds ``FILL`` made-up
    transitions of random observations, before its first gradient step."""
    agent = make_agent(
        name, hidden=tuple(HIDDEN), batch_size=BATCH, learning_starts=10**9, **config
    )
    # Fill the replay with made-up transitions (random actions: learning_starts not reached).
    gen = torch.Generator().manual_seed(1)
    obs = torch.randn(1, 1, *OBS.shape, generator=gen)
    for i in range(FILL):
        action = agent.act(obs)
        next_obs = torch.randn(1, 1, *OBS.shape, generator=gen)
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
    return agent


def sb3_model(name: str, agent, **kwargs: Any):
    """SB3's model with ``agent``'s current weights (its targets copies of them). rlbench's
    networks and SB3's are ``nn.Sequential`` MLPs with the same keys (``lane_state_dict``
    gives a lane's weights under them), but for SAC's actor: SB3 splits its last layer, the
    mean and log-std outputs, into two heads."""
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
    actor = agent.actor.lane_state_dict(0)
    if name == "sac":
        last = f"{len(HIDDEN) * 2}."  # the output layer's key in the Sequential
        model.actor.latent_pi.load_state_dict(
            {k: v for k, v in actor.items() if not k.startswith(last)}
        )
        half = agent.actions.size
        for head, rows in (
            (model.actor.mu, slice(0, half)),
            (model.actor.log_std, slice(half, None)),
        ):
            head.load_state_dict(
                {"weight": actor[last + "weight"][rows], "bias": actor[last + "bias"][rows]}
            )
    else:
        model.actor.mu.load_state_dict(actor)
        model.actor_target.load_state_dict(model.actor.state_dict())
    model.critic.q_networks[0].load_state_dict(agent.qf1.lane_state_dict(0))
    model.critic.q_networks[1].load_state_dict(agent.qf2.lane_state_dict(0))
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
    agent = rlbench_agent(name, config)
    model = sb3_model(name, agent, **config)
    gen = torch.Generator().manual_seed(2)
    probe = torch.randn(256, *OBS.shape, generator=gen)
    probe_action = torch.rand(256, agent.actions.size, generator=gen) * 2 - 1
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
