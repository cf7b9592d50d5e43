"""Which running trials have lost their worker, and failing them so that they are retried.

Every trial records its worker's host, process id and process start time; before claiming
a trial a worker fails (and retries) the running trials of dead processes on its own host.
With a database URL the trials also send Optuna heartbeats, so a trial of a machine that
died is failed and retried by any other worker after the grace period.
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from rlbench.tune.storage import GRACE_PERIOD_S, queue_retry

#: The trial user attribute that holds its worker's identity (see :func:`worker_identity`).
WORKER_ATTR = "worker"
#: A worker records itself on a trial right after creating it, under the claim lock. A
#: running trial without a worker this long after it started lost its worker in between.
OWNERLESS_GRACE_S = GRACE_PERIOD_S


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a process from /proc, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], fields[19]


def worker_identity() -> dict[str, Any]:
    """This process as recorded on the trials it runs; inside a Ray task (``rlbench tune
    --executor ray``) also the id of the Ray node that ran it."""
    stat = _proc_stat(os.getpid())
    identity: dict[str, Any] = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "start": stat[1] if stat else None,
    }
    ray = sys.modules.get("ray")  # only a Ray task has it imported and initialised
    if ray is not None and ray.is_initialized():
        context = ray.get_runtime_context()
        if context.get_task_id() is not None:
            identity["ray_node"] = context.get_node_id()
    return identity


def _worker_is_dead(identity: Mapping[str, Any]) -> bool:
    """Whether the process that recorded ``identity`` is certainly gone: it ran on this
    host and its pid is free, a zombie, or now another process (a different start time)."""
    if identity.get("host") != socket.gethostname() or "pid" not in identity:
        return False  # another machine: only heartbeats can tell
    pid = int(identity["pid"])
    if not Path("/proc").is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return True
    return identity.get("start") not in (None, stat[1])


def fail_and_retry(study: optuna.Study, number: int, reason: str) -> None:
    """Mark running trial ``number`` failed with ``reason`` and queue a retry with the same
    parameters (up to :data:`~rlbench.tune.storage.MAX_RETRIES` times). Another worker may
    have got there first: then nothing happens."""
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    try:
        optuna.trial.Trial(study, trial._trial_id).set_user_attr("error", reason)
        study.tell(number, state=TrialState.FAIL)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError):
        return
    queue_retry(study, next(t for t in study.get_trials(deepcopy=False) if t.number == number))


def _lost_worker(trial: FrozenTrial) -> str | None:
    """Why ``trial`` (running) has lost its worker, or ``None`` if it may still have one."""
    identity = trial.user_attrs.get(WORKER_ATTR)
    if isinstance(identity, dict):
        if not _worker_is_dead(identity):
            return None
        return (
            f"worker process {identity.get('pid')} on {identity.get('host')} died during the trial"
        )
    # Killed between creating the trial and recording itself on it: nobody else will ever
    # finish or fail it (it has no heartbeat either), and the study would wait for it.
    started = trial.datetime_start
    if started is None:
        return None
    # Optuna's storages give naive local times; now() in the trial's own zone fits either.
    age = datetime.datetime.now(started.tzinfo) - started
    if age.total_seconds() < OWNERLESS_GRACE_S:
        return None
    return (
        f"no worker recorded itself on the trial in the {OWNERLESS_GRACE_S} s after it "
        "started (its worker died before it could)"
    )


def reap_dead_trials(study: optuna.Study) -> list[int]:
    """Fail and retry the running trials whose worker is dead (see :func:`_lost_worker`;
    for database storages also those whose heartbeat stopped). Call under the claim lock.
    Returns the numbers of the trials failed here."""
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = _lost_worker(trial)
        if reason is not None:
            fail_and_retry(study, trial.number, reason)
            reaped.append(trial.number)
    with warnings.catch_warnings():  # experimental since optuna 2.9, stable in practice
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # heartbeats: database storages only
    return reaped
