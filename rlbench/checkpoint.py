"""Mid-run checkpoints: a lane group's whole training state, saved so that a run killed at
any moment (kill -9, Ctrl-C, a lost node) goes on from its last checkpoint.

A checkpoint holds the agent (:meth:`~rlbench.agent.Agent.checkpoint_state`: weights,
optimizer, replay or rollout buffer, its generators), the training environments mid-episode
where they can be copied (:meth:`~rlbench.stepping.LaneEnvs.copy_problem`), Python's, numpy's
and torch's global random states, the training step, and every lane's records so far. It is
one file per lane group, ``checkpoint.pt`` in the folder of the group's first run, with
``checkpoint.json`` beside it saying which runs and which step it holds (the executor reads
that, without torch, to re-form the same group on resume). Both are written atomically, the
``.json`` last, after each evaluation by default; they are removed when the group completes.

Resuming builds the agent and environments afresh, exactly as a run starts, then restores
the checkpoint into them. Where every environment was restored, the run goes on bit for bit
as if it had never stopped. Where one could not be copied (Box2D and MuJoCo pickle only
their constructor arguments), each training environment starts a fresh episode from a reset
seeded by the run's seed and the step; the run's ``status.json`` says so
(``resume_exact: false`` and ``resume_note``).
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import rlbench
from rlbench import records

FORMAT = 1


@dataclass(frozen=True)
class CheckpointPolicy:
    """When runs checkpoint and what happens to the checkpoints."""

    every: int = 1
    """Evaluations between two checkpoints (1: after each); 0: never checkpoint."""
    keep: bool = False
    """Keep the last checkpoint of a run that completed (it is removed otherwise)."""
    resume: bool = True
    """Resume from a checkpoint where one fits (``--force`` redoes runs from the start)."""


#: What runs do unless told otherwise: checkpoint after each evaluation, resume, tidy up.
DEFAULT = CheckpointPolicy()


def versions() -> dict[str, str]:
    """What must match for a checkpoint to be resumed bit for bit."""
    return {"rlbench": rlbench.__version__, "torch": torch.__version__, "numpy": np.__version__}


def global_random_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_random_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def info(run_dir: records.RunDir) -> dict[str, Any] | None:
    """``checkpoint.json`` of ``run_dir`` (which runs, which step), or ``None`` when there
    is none or it is damaged."""
    data = records.read_json(run_dir.file(records.CHECKPOINT_INFO))
    if not isinstance(data, dict) or not isinstance(data.get("run_ids"), list):
        return None
    if not run_dir.file(records.CHECKPOINT).is_file():
        return None
    return data


def save(run_dir: records.RunDir, state: dict[str, Any]) -> None:
    """Write ``state`` (a group's, with its ``run_ids`` and ``step``) as the checkpoint in
    ``run_dir``: the state first, then ``checkpoint.json`` naming it."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "versions": versions(), **state}, buffer)
    run_dir.put_bytes(records.CHECKPOINT, buffer.getvalue())
    run_dir.write_json(
        records.CHECKPOINT_INFO,
        {
            "run_ids": list(state["run_ids"]),
            "step": state["step"],
            "envs_restorable": state["envs"] is not None,
            "bytes": buffer.tell(),
            **versions(),
        },
    )


def load(run_dir: records.RunDir, run_ids: list[str]) -> tuple[dict[str, Any] | None, str]:
    """The checkpoint in ``run_dir`` if it holds exactly ``run_ids`` and was written by these
    versions, else ``None``; with why not (empty when there is no checkpoint at all)."""
    found = info(run_dir)
    if found is None:
        return None, ""
    if found["run_ids"] != run_ids:
        return None, "its checkpoint is of another group of runs"
    try:
        state = torch.load(run_dir.file(records.CHECKPOINT), weights_only=False)
    except Exception as exc:  # a damaged checkpoint means "start over"
        return None, f"its checkpoint cannot be read ({type(exc).__name__})"
    if state.get("format") != FORMAT or state.get("versions") != versions():
        return None, f"its checkpoint was written by other versions ({state.get('versions')})"
    if state.get("run_ids") != run_ids:
        return None, "its checkpoint is of another group of runs"
    return state, ""


def remove(run_dir: records.RunDir) -> None:
    """Remove the checkpoint (``checkpoint.json`` first, so a half-removed one is ignored)."""
    run_dir.remove(records.CHECKPOINT_INFO)
    run_dir.remove(records.CHECKPOINT)


def fresh_reset_seeds(seed: int, step: int, num_envs: int) -> list[int]:
    """Reset seeds for the training environments of a run of ``seed`` resumed at ``step``
    whose environments could not be restored: new episodes, the same on every such resume."""
    return [int(s) for s in np.random.SeedSequence([seed, step]).generate_state(num_envs)]
