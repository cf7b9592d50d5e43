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

    def identity(self) -> dict[str, Any]:
        """Everything that determines the run's results (not the suite's name or labels)."""
        data = asdict(self)
        for key in ("suite", "label", "unavailable"):
            data.pop(key)
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
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSpec:
        return cls(**data)


def expand(suite: Suite) -> list[RunSpec]:
    """Every run of a suite, in a deterministic order (agent, environment, seed, device)."""
    f = suite.file
    devices = list(dict.fromkeys(resolve_device(d) for d in f.devices))
    runs = []
    for agent in suite.agents:
        for env in f.environments:
            reason = suite.unavailable.get(agent.label) or suite.unavailable.get(env.id, "")
            for seed in f.seed_list:
                for device in devices:
                    runs.append(
                        RunSpec(
                            suite=f.name,
                            agent=agent.name,
                            label=agent.label,
                            agent_config=agent.config,
                            network=agent.network,
                            env=env.id,
                            env_kwargs=dict(env.kwargs),
                            seed=seed,
                            device=device,
                            steps=f.budget.steps,
                            eval_interval=f.budget.eval_interval,
                            eval_episodes=f.budget.eval_episodes,
                            eval_max_episode_steps=f.budget.eval_max_episode_steps,
                            unavailable=reason,
                        )
                    )
    return runs
