"""A recorded run's agent, rebuilt from its ``config.json`` and ``weights.pt`` and evaluated
as the run evaluated it (``rlbench evaluate RUN_DIR``).

The agent is built as a one-lane agent of the run's seed, whatever group the run trained in
(its ``weights.pt`` holds what a one-lane agent of that seed saves), and restored with
:meth:`~rlbench.agent.Agent.load_state_dict`. The evaluation follows the run's protocol
(:mod:`rlbench.evaluation`): the same environment and kwargs, the same episode seeds, the
same step limit; with the run's ``eval_episodes`` it faces the start states of the run's
final evaluation, so a run trained alone gets the return of the last row of its
``evaluations.csv`` again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rlbench import records
from rlbench.agent import Agent, LaneAgent, OneLane
from rlbench.building import build_agent
from rlbench.devices import unavailable_reason
from rlbench.errors import RlbenchError
from rlbench.evaluation import evaluate_lanes
from rlbench.plugins import Catalogue
from rlbench.runspec import RunSpec
from rlbench.seeding import seed_everything, seed_streams


def load_agent(run_dir: Path, catalogue: Catalogue) -> tuple[RunSpec, Agent]:
    """The run in ``run_dir`` (a ``runs/<run_id>`` folder) and its agent with the saved
    weights loaded. Raises :class:`RlbenchError` saying what is missing or wrong."""
    config = records.read_json(run_dir / records.CONFIG)
    if not isinstance(config, dict):
        raise RlbenchError(
            f"{run_dir}: not a run folder (no readable {records.CONFIG}); "
            "give a folder under <results>/<suite>/runs/"
        )
    try:
        spec = RunSpec.from_json(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise RlbenchError(f"{run_dir / records.CONFIG}: not a run's config ({exc})") from None
    weights = run_dir / records.WEIGHTS
    if not weights.is_file():
        raise RlbenchError(f"{run_dir}: no {records.WEIGHTS} (the run has not completed)")
    unavailable = unavailable_reason(spec.device)
    if unavailable is not None:
        raise RlbenchError(f"{run_dir}: {unavailable}")
    try:  # the plugins that trained it may be missing: say which run needs what
        agent_config = catalogue.agent(spec.agent).config_model.model_validate(spec.agent_config)
        env = catalogue.environment(spec.env).create(**spec.env_kwargs)
        seed_everything(spec.seed)
        rng = seed_streams(spec.seed, agent_config.num_envs)[0]
        try:
            agent = build_agent([spec], catalogue, agent_config, env, [rng])
        finally:
            env.close()
    except (RlbenchError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise RlbenchError(f"{run_dir}: {' '.join(str(exc).split())}") from None
    device = torch.device(spec.device)
    try:
        state = torch.load(weights, map_location=device, weights_only=True)
        agent.load_state_dict(state)
    except Exception as exc:
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise RlbenchError(f"{weights}: cannot be loaded into {spec.agent} ({message})") from None
    return spec, agent


def evaluate_saved(
    run_dir: Path, catalogue: Catalogue, *, episodes: int | None = None
) -> dict[str, Any]:
    """The greedy return of the agent saved in ``run_dir`` under the run's evaluation
    protocol, over ``episodes`` episodes (default: the run's ``eval_episodes``): the same
    fields as a row of ``evaluations.csv`` without its step and wall time."""
    spec, agent = load_agent(run_dir, catalogue)
    _, _, eval_seed = seed_streams(spec.seed, agent.config.num_envs)
    env = catalogue.environment(spec.env).create(**spec.env_kwargs)
    try:
        return evaluate_lanes(
            agent if isinstance(agent, LaneAgent) else OneLane(agent),
            [env],
            episodes=spec.eval_episodes if episodes is None else episodes,
            base_seeds=[eval_seed],
            device=torch.device(spec.device),
            max_episode_steps=spec.eval_max_episode_steps,
        )[0]
    finally:
        env.close()
