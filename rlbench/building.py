"""Building what a run trains: its environments, and its agent with the network factories
and context it receives; and which runs can share one agent as its lanes.

A group of runs that differ only in their seed (:func:`lane_key`) trains as the lanes of
one :class:`~rlbench.agent.LaneAgent` (:func:`supports_lanes`); any other run is a group of
one. Each lane's networks are initialised from its own seed's torch stream (see
:mod:`rlbench.seeding`), so a lane's weights are those of the run trained alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np
import torch

from rlbench.agent import Agent, AgentConfig, AgentContext, LaneAgent
from rlbench.plugins import Catalogue
from rlbench.runspec import RunSpec
from rlbench.stepping import LaneEnvs


def lane_key(spec: RunSpec) -> str:
    """What runs must share to be lanes of one agent: everything but the seed."""
    identity = spec.identity()
    identity.pop("seed")
    return json.dumps(identity, sort_keys=True)


def supports_lanes(spec: RunSpec, catalogue: Catalogue) -> bool:
    """Whether ``spec``'s agent trains several seeds at once (a :class:`LaneAgent`)."""
    if spec.unavailable or spec.agent not in catalogue.agents:
        return False
    return issubclass(catalogue.agent(spec.agent).agent, LaneAgent)


def build_envs(
    specs: Sequence[RunSpec], catalogue: Catalogue, num_envs: int
) -> tuple[LaneEnvs, list[gym.Env]]:
    """Each lane's ``num_envs`` training environments, and its evaluation environment."""
    spec = specs[0]
    env_spec = catalogue.environment(spec.env)
    envs = LaneEnvs([[env_spec.create(**spec.env_kwargs) for _ in range(num_envs)] for _ in specs])
    eval_envs = [env_spec.create(**spec.env_kwargs) for _ in specs]
    return envs, eval_envs


def build_agent(
    specs: Sequence[RunSpec],
    catalogue: Catalogue,
    config: AgentConfig,
    env: gym.Env,
    rngs: Sequence[np.random.Generator],
) -> Agent:
    """The agent of ``specs`` (one run, or the lanes of a :class:`LaneAgent`), with its
    network factories and context, ready to train."""
    spec = specs[0]
    agent_cls = catalogue.agent(spec.agent).agent
    roles: tuple[str, ...] = tuple(getattr(agent_cls, "network_roles", ()))
    device = torch.device(spec.device)
    # Each role's network plugin and options (the suite validated them), built on first use.
    builders: dict[str | None, Callable[[int, int], torch.nn.Module]] = {}

    def builder(role: str | None) -> Callable[[int, int], torch.nn.Module]:
        if role is not None and role not in roles:
            raise ValueError(
                f"{spec.agent} asked for a {role!r} network, but its network_roles are "
                f"{roles!r}; declare the role there (or ask with role=None)"
            )
        if role not in builders:
            net_options = dict(spec.networks.get(role, spec.network) if role else spec.network)
            net_spec = catalogue.network(net_options.pop("name"))
            net_config = net_spec.config_model.model_validate(net_options)
            builders[role] = lambda i, o: net_spec.build(i, o, net_config).to(device)
        return builders[role]

    def make_network(
        in_features: int, out_features: int, role: str | None = None
    ) -> torch.nn.Module:
        return builder(role)(in_features, out_features)

    # Each lane's torch random stream, as seed_everything(seed) leaves it for a run of that
    # seed, continued from one call of make_lane_networks to the next.
    lane_torch_states: list[torch.Tensor | None] = [None] * len(specs)

    def make_lane_networks(
        in_features: int, out_features: int, role: str | None = None
    ) -> list[torch.nn.Module]:
        build = builder(role)
        outside = torch.random.get_rng_state()
        networks = []
        try:
            for k, lane in enumerate(specs):
                state = lane_torch_states[k]
                if state is None:
                    torch.manual_seed(lane.seed)
                else:
                    torch.random.set_rng_state(state)
                networks.append(build(in_features, out_features))
                lane_torch_states[k] = torch.random.get_rng_state()
        finally:
            torch.random.set_rng_state(outside)
        return networks

    context = AgentContext(
        observation_space=env.observation_space,
        action_space=env.action_space,
        num_envs=config.num_envs,
        device=device,
        seed=spec.seed,
        rng=rngs[0],
        total_steps=spec.steps,
        make_network=make_network,
        lanes=len(specs),
        lane_seeds=tuple(s.seed for s in specs),
        lane_rngs=tuple(rngs),
        make_lane_networks=make_lane_networks,
    )
    return agent_cls(config, context)
