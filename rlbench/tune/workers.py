"""Workers: claim trials under the lock and run them until the study has its total.

The study is done when ``trials`` trials are *finished*: complete, pruned (diverged runs
included) or failed. A trial whose worker died is marked failed and retried once (as a new
trial with the same parameters); a retried trial does not count, its retry does. Workers
claim trials under a lock (a file lock for the journal file and SQLite, an advisory lock
for PostgreSQL and MySQL) after counting finished + running + waiting trials, so the study
never ends with more finished trials than asked for, however many workers run, and a
rerun of the same command continues where the last one stopped.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Literal

import optuna
import torch

from rlbench import ray_executor
from rlbench.errors import RlbenchError
from rlbench.plugins import Catalogue, load_catalogue
from rlbench.tune.job import TuneJob
from rlbench.tune.liveness import WORKER_ATTR, reap_dead_trials, worker_identity
from rlbench.tune.storage import ClaimLock, open_storage
from rlbench.tune.study import count_trials, make_sampler, open_study
from rlbench.tune.trial import run_trial

#: Seconds between looks at the study (a worker waiting for others, the progress display).
_POLL_S = 1.0

_Wait = Literal["done", "wait"]


def claim_trial(study: optuna.Study, job: TuneJob, lock: ClaimLock) -> optuna.Trial | _Wait:
    """Under the claim lock: fail dead workers' trials, count, and start a trial (a queued
    retry first) if the study needs one. Returns the trial, ``"done"`` when the study has
    its finished trials, or ``"wait"`` when the running trials of other workers may finish
    it."""
    with lock:
        reap_dead_trials(study)
        # Fresh copies: the cached trials (deepcopy=False) are shared with whatever this
        # process handed them to, and must not decide how many trials the study runs.
        counts = count_trials(study.get_trials(deepcopy=True))
        if counts.finished >= job.target:
            return "done"
        if counts.waiting == 0 and counts.finished + counts.running >= job.target:
            return "wait"
        trial = study.ask()
        trial.set_user_attr(WORKER_ATTR, worker_identity())
        return trial


def worker_loop(
    job: TuneJob,
    catalogue: Catalogue,
    worker_index: int = 0,
    after_trial: Callable[[optuna.Study], None] | None = None,
) -> None:
    """Claim and run trials until the study has ``job.target`` finished trials."""
    storage = open_storage(job.location)
    lock = ClaimLock(job.location, storage)
    study = open_study(job, storage, lock, 0)
    study.sampler = make_sampler(job.plan, _sampler_seed(job, len(study.trials), worker_index))
    while True:
        claimed = claim_trial(study, job, lock)
        if claimed == "done":
            return
        if claimed == "wait":
            time.sleep(_POLL_S)
            continue
        assert isinstance(claimed, optuna.Trial)
        run_trial(study, claimed, job, storage, catalogue)
        if after_trial is not None:
            after_trial(study)


def _sampler_seed(job: TuneJob, trials_so_far: int, worker_index: int) -> int:
    """The sampler's seed: ``[tune] seed`` offset by the trials already in the study and
    the worker's index, so that resumed studies and ``--jobs`` workers do not replay the
    same random start-up configurations. With a database storage, where independent
    commands (on several machines) start at once, the process id is mixed in too."""
    seed = job.plan.seed + 7919 * trials_so_far + 104_729 * worker_index
    if job.location.storage_url is not None:
        seed += 15_485_863 * (os.getpid() % 10_007)
    return seed % 2**31


def _worker_process(job: TuneJob, worker_index: int) -> None:
    # The parent decides what Ctrl-C means; a worker only stops when told or terminated.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(job.threads)
    catalogue = load_catalogue(autoload=job.autoload, extra_plugins=job.extra_plugins)
    worker_loop(job, catalogue, worker_index)


def run_workers(job: TuneJob, jobs: int, poll: Callable[[], None]) -> None:
    """Run ``jobs`` worker processes on the study until it is done; ``poll`` is called
    every :data:`_POLL_S` seconds (the progress display). A worker that crashes is replaced;
    on Ctrl-C every worker is stopped and their trials failed and queued for retry."""
    ctx = mp.get_context("spawn")

    def start(index: int) -> BaseProcess:
        process = ctx.Process(target=_worker_process, args=(job, index), daemon=True)
        process.start()
        return process

    workers = {i: start(i) for i in range(jobs)}
    restarts = 0
    try:
        while workers:
            time.sleep(_POLL_S)
            poll()
            for index, process in list(workers.items()):
                if process.is_alive():
                    continue
                del workers[index]
                if process.exitcode != 0 and restarts < 2 * jobs:
                    restarts += 1
                    workers[index] = start(index)
    finally:
        for process in workers.values():
            process.terminate()
        for process in workers.values():
            process.join(timeout=10)
        if workers:
            # Their trials are left running by dead processes: fail and retry them now.
            storage = open_storage(job.location)
            with ClaimLock(job.location, storage):
                study = optuna.load_study(study_name=job.location.study_name, storage=storage)
                reap_dead_trials(study)


def _ray_worker(job: TuneJob, worker_index: int) -> None:
    """The body of one Ray task of ``rlbench tune --executor ray``: a worker on the study."""
    torch.set_num_threads(job.threads)
    catalogue = load_catalogue(autoload=job.autoload, extra_plugins=job.extra_plugins)
    worker_loop(job, catalogue, worker_index)


def run_ray_workers(
    job: TuneJob, jobs: int | None, poll: Callable[[], None], address: str | None
) -> None:
    """Run ``jobs`` workers (default: one per CPU of the cluster, ``job.threads`` CPUs each)
    as Ray tasks on the study until it is done. Every node must reach the study's storage:
    a journal file or SQLite database on this machine serves only nodes on this machine, a
    database URL (PostgreSQL) serves them all. A task whose node or process dies is
    submitted again (its trial is failed and retried as with local workers: by process id on
    this machine, by heartbeat elsewhere); Ctrl-C cancels the tasks."""
    ray = ray_executor.connect(address)
    if job.location.storage_url is None:
        here = socket.gethostname()
        elsewhere = sorted(
            {n["NodeManagerHostname"] for n in ray.nodes() if n.get("Alive")} - {here}
        )
        if elsewhere:
            raise RlbenchError(
                f"--executor ray: the cluster has nodes on other machines ({', '.join(elsewhere)}) "
                f"that cannot open the study's {job.location.storage_label} on this one; give "
                "--storage postgresql://... (a database every node reaches; docs/tuning.md)"
            )
    need = {"CPU": float(job.threads)}
    ray_executor.check_resources(ray, [need])
    count = jobs or max(1, ray_executor.cluster_cpus(ray) // job.threads)
    remote = ray.remote(_ray_worker).options(num_cpus=job.threads, max_retries=0)
    running = {remote.remote(job, i): i for i in range(count)}
    restarts = 0
    try:
        while running:
            done, _ = ray.wait(list(running), num_returns=len(running), timeout=_POLL_S)
            poll()
            for ref in done:
                index = running.pop(ref)
                try:
                    ray.get(ref)
                except ray.exceptions.RayError:
                    if restarts < 2 * count:
                        restarts += 1
                        running[remote.remote(job, index)] = index
    except KeyboardInterrupt:
        for ref in running:
            ray.cancel(ref, force=True)
        storage = open_storage(job.location)
        with ClaimLock(job.location, storage):
            study = optuna.load_study(study_name=job.location.study_name, storage=storage)
            reap_dead_trials(study)
        raise
