"""Expanding a suite into runs: agents × environments × seeds × devices.

A :class:`RunSpec` is plain data (JSON-serialisable, picklable to worker processes) and its
``run_id`` is derived from its full configuration, so the same configuration always maps to
the same results directory and a rerun can recognise what is already done.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from rlbench.devices import resolve_device
from rlbench.suite import Suite, slug


@dataclass(frozen=True)
class RunSpec:
    suite: str
    agent: str
    label: str
    agent_config: dict[str, Any]
    network: dict[str, Any]
    env: str
    env_kwargs: dict[str, Any]
    seed: int
    device: str
    steps: int
    eval_interval: int
    eval_episodes: int
    eval_max_episode_steps: int | None = None
    unavailable: str = field(default="", compare=False)
    """Why this run cannot start (a plugin it needs failed to load); empty when it can."""
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The network of each role the suite shapes apart from ``network`` (the agent's
    ``network_roles``); every other network the agent builds is ``network``."""

    def identity(self) -> dict[str, Any]:
        """Everything that determines the run's results (not the suite's name or labels)."""
        data = asdict(self)
        for key in ("suite", "label", "unavailable"):
            data.pop(key)
        if not self.networks:  # runs that shape no role keep the ids they always had
            data.pop("networks")
        return data

    @property
    def config_hash(self) -> str:
        canonical = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:10]

    @property
    def run_id(self) -> str:
        """The run's directory name: slugs of its label, environment and device, its seed and
        the hash of its identity. Labels and names come from suite files and plugins, so
        only their slugs become part of a path (records.RunDir checks the result)."""
        device = slug(self.device.replace(":", ""))
        return (
            f"{slug(self.label)}__{slug(self.env)}__seed{self.seed}__{device}__{self.config_hash}"
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.networks:  # config.json as it always was for runs that shape no role
            data.pop("networks")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSpec:
        return cls(**data)


def expand(suite: Suite) -> list[RunSpec]:
    """Every run of a suite, in a deterministic order (agent, environment, seed, device),
    each with its environment's budget and its agent's config for that environment; the
    pairs ``skip_incompatible`` leaves out have none."""
    f = suite.file
    devices = list(dict.fromkeys(resolve_device(d) for d in f.devices))
    runs = []
    for agent in suite.agents:
        for j, env in enumerate(f.environments):
            if suite.skips(agent.label, j):
                continue
            reason = suite.unavailable.get(agent.label) or suite.unavailable.get(env.id, "")
            budget = suite.budget_for(j)
            config = agent.config_for(env.id)
            for seed in f.seed_list:
                for device in devices:
                    runs.append(
                        RunSpec(
                            suite=f.name,
                            agent=agent.name,
                            label=agent.label,
                            agent_config=config,
                            network=agent.network,
                            env=env.id,
                            env_kwargs=dict(env.kwargs),
                            seed=seed,
                            device=device,
                            steps=budget.steps,
                            eval_interval=budget.eval_interval,
                            eval_episodes=budget.eval_episodes,
                            eval_max_episode_steps=budget.eval_max_episode_steps,
                            unavailable=reason,
                            networks=agent.networks,
                        )
                    )
    return runs
