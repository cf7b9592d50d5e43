"""Running a suite's runs: in this process, or in N worker processes.

Runs of an agent that trains in lanes (:class:`rlbench.LaneAgent`, e.g. the built-in DQNs)
that differ only in their seed are grouped, up to ``lanes`` per group, and each group trains as one
batched computation (:func:`rlbench.training.execute_lanes`); every run is still recorded on
its own, with the results it would have alone. Other runs are groups of one.

Workers are plain ``multiprocessing`` processes (spawned, so each imports torch and the
plugins fresh) that pull groups from a queue and report progress events back. A run
that fails is recorded as failed and the others go on; a worker that dies (killed, out of
memory) has its runs recorded as failed and is replaced. Ctrl-C stops every worker; runs that
completed stay complete, the rest are redone by the next ``rlbench run``.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import queue
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import torch

from rlbench import checkpoint, records
from rlbench.building import lane_key, supports_lanes
from rlbench.checkpoint import CheckpointPolicy
from rlbench.defaults import DEFAULT_LANES
from rlbench.plugins import Catalogue, load_catalogue
from rlbench.recording import ProgressCallback, RunOutcome
from rlbench.runspec import RunSpec
from rlbench.suite import Suite
from rlbench.training import execute_lanes

#: ``on_event(event, run_id, payload)``: the training's progress events of every run.
EventHandler = ProgressCallback
#: A group of runs for a worker (each run's :meth:`RunSpec.to_json`); ``None`` stops it.
Task = list[dict[str, Any]] | None
#: ``(event, run_id, payload)`` from a worker: the training's events, plus ``claim`` (the
#: worker's pid and the run ids it starts) and ``done`` (a run's :class:`RunOutcome`).
WorkerEvent = tuple[str, str, dict[str, Any]]


@dataclass
class SuiteRunResult:
    """What :func:`run_suite` did: each run it ran and how that ended, the runs it left
    alone because they were complete, and whether Ctrl-C cut it short."""

    suite_dir: Path
    runs: list[RunSpec]
    outcomes: dict[str, RunOutcome] = field(default_factory=dict)
    already_complete: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes.values() if o.status == records.FAILED]


def lane_groups(
    runs: Sequence[RunSpec], catalogue: Catalogue, max_lanes: int = DEFAULT_LANES
) -> list[list[RunSpec]]:
    """``runs`` in the groups that train together: the runs of a lane agent that differ only
    in their seed, in groups of at most ``max_lanes`` (seed order kept), and every other run
    alone. Larger groups come first, so that the longest work starts first."""
    groups: dict[str, list[list[RunSpec]]] = {}
    order: list[list[RunSpec]] = []
    for spec in runs:
        if max_lanes > 1 and supports_lanes(spec, catalogue):
            chunks = groups.setdefault(lane_key(spec), [])
            if chunks and len(chunks[-1]) < max_lanes:
                chunks[-1].append(spec)
                continue
            chunk = [spec]
            chunks.append(chunk)
            order.append(chunk)
        else:
            order.append([spec])
    return sorted(order, key=len, reverse=True)


def checkpointed_groups(
    runs: Sequence[RunSpec], suite_dir: Path
) -> tuple[list[list[RunSpec]], list[RunSpec]]:
    """The groups that left a mid-run checkpoint (:mod:`rlbench.checkpoint`) and whose runs
    are all among ``runs``, formed again as they were so that each resumes from it; and the
    runs of ``runs`` in none of them."""
    by_id = {spec.run_id: spec for spec in runs}
    groups: list[list[RunSpec]] = []
    taken: set[str] = set()
    for spec in runs:
        found = checkpoint.info(records.RunDir(suite_dir, spec.run_id))
        ids = found["run_ids"] if found else []
        if ids and ids[0] == spec.run_id and all(i in by_id and i not in taken for i in ids):
            groups.append([by_id[i] for i in ids])
            taken.update(ids)
    return groups, [spec for spec in runs if spec.run_id not in taken]


def spread_groups(groups: list[list[RunSpec]], workers: int) -> list[list[RunSpec]]:
    """``groups`` with the largest split in halves until there are ``workers`` of them (or
    none has two runs left): cores that would otherwise idle train lanes of their own. At one
    torch thread per group a lane computes the same in any group (``rlbench.lanes``), so a
    split changes nothing but speed."""
    groups = [list(g) for g in groups]
    while len(groups) < workers:
        largest = max(groups, key=len, default=[])
        if len(largest) < 2:
            break
        groups.remove(largest)
        half = (len(largest) + 1) // 2
        groups += [largest[:half], largest[half:]]
    return sorted(groups, key=len, reverse=True)


def default_jobs(pending: int) -> int:
    return max(1, min(os.cpu_count() or 1, pending))


#: Torch intra-op threads per worker unless ``--threads`` says otherwise: one, for every agent.
DEFAULT_THREADS = 1


def default_threads() -> int:
    """Torch intra-op threads per worker when none are asked for: :data:`DEFAULT_THREADS`,
    for every agent and any number of workers.

    The networks of RL agents are small: a 64x64 MLP's products are too small to share out
    among threads, so more threads only add per-op overhead, and oversubscribe the cores as
    soon as several workers (or anything else) run. On 2 cores a plain agent on such an MLP
    trained at 1,600 steps/s on one thread and 1,000 on two; a user's SAC plugin ran at 72
    on one and 7 on the cores shared out. Parallelism comes from workers (``--jobs``) and
    lanes instead. One thread also keeps lanes exact: on several, MKL splits a lone matrix
    product across threads but not a batch of them, so a lane could round differently in a
    group of another size. Large networks on the CPU (convolutions, wide layers) with fewer
    runs than cores may gain from ``--threads N``."""
    return DEFAULT_THREADS


def write_manifest(
    suite: Suite, runs: Sequence[RunSpec], suite_dir: Path, catalogue: Catalogue | None = None
) -> None:
    """The suite as run (:class:`records.SuiteManifest`): its source and its run ids, so
    reports know what belongs to it, and (given the catalogue) each environment's reference
    scores, so reports need no plugin to normalize."""
    references: dict[str, records.EnvReference | None] | None = None
    if catalogue is not None:
        # The scores for each run's kwargs (LunarLander-v3 with continuous=True has its own);
        # an environment in the suite twice keeps its first entry's, as reports key by name.
        references = {}
        for spec in runs:
            if spec.env not in references:
                references[spec.env] = records.EnvReference.declared(
                    catalogue, spec.env, spec.env_kwargs
                )
    manifest = records.SuiteManifest(
        suite.name,
        str(suite.path),
        tuple(r.run_id for r in runs),
        references,
        tuple(pair.describe() for pair in suite.skipped),
    )
    manifest.write(suite_dir, suite.source)


def run_suite(
    suite: Suite,
    runs: Sequence[RunSpec],
    results_root: Path,
    *,
    catalogue: Catalogue,
    jobs: int = 1,
    threads: int | None = None,
    force: bool = False,
    lanes: int = DEFAULT_LANES,
    autoload: bool | None = None,
    extra_plugins: Sequence[str] = (),
    on_event: EventHandler | None = None,
    checkpoints: CheckpointPolicy = checkpoint.DEFAULT,
    executor: str = "local",
    address: str | None = None,
) -> SuiteRunResult:
    """Run ``runs`` (of ``suite``) that are not complete yet (all of them with ``force``),
    in lane groups, in this process (``jobs=1``) or in ``jobs`` worker processes, and record
    each under ``results_root/<suite name>``; with ``executor="ray"``, as tasks on the Ray
    cluster at ``address`` (:mod:`rlbench.ray_executor`), ``jobs`` then being the cluster's
    CPUs. A group that left a checkpoint resumes from it (unless ``force``)."""
    if executor == "ray":
        from rlbench import ray_executor

        ray = ray_executor.connect(address)  # before anything is written: one clear line
        jobs = max(ray_executor.cluster_cpus(ray), 1)
    suite_dir = results_root / suite.name
    suite_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(suite, runs, suite_dir, catalogue)
    result = SuiteRunResult(suite_dir=suite_dir, runs=list(runs))
    pending = []
    for spec in runs:
        run_dir = records.RunDir(suite_dir, spec.run_id)
        if not force and run_dir.is_complete():
            result.already_complete.append(spec.run_id)
            if not checkpoints.keep:
                # A kill between recording the group complete and removing its checkpoint
                # left one that no resume can use (its group is not all pending).
                checkpoint.remove(run_dir)
        else:
            pending.append(spec)
    notify = on_event or (lambda *_: None)
    if force:
        checkpoints = dataclasses.replace(checkpoints, resume=False)
    resumed, fresh = ([], pending)
    if checkpoints.resume:
        resumed, fresh = checkpointed_groups(pending, suite_dir)
    groups = lane_groups(fresh, catalogue, lanes)
    lanes_here = any(supports_lanes(g[0], catalogue) for g in resumed + groups)
    if threads is None and lanes_here:
        # Groups train on one thread each (default_threads), so idle cores get groups of
        # their own (a group resuming from its checkpoint stays whole).
        groups = spread_groups(groups, max(jobs - len(resumed), 1))
    groups = sorted(resumed + groups, key=len, reverse=True)
    jobs = min(jobs, len(groups)) if groups else 1
    threads = threads or default_threads()

    try:
        if executor == "ray":
            result.outcomes.update(
                ray_executor.run_groups(
                    groups,
                    suite_dir,
                    address=address,
                    threads=threads,
                    autoload=autoload,
                    extra_plugins=extra_plugins,
                    checkpoints=checkpoints,
                    notify=notify,
                )
            )
        elif jobs <= 1:
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                for group in groups:
                    ran = execute_lanes(group, suite_dir, catalogue, notify, checkpoints)
                    for outcome in ran:
                        result.outcomes[outcome.run_id] = outcome
            finally:
                torch.set_num_threads(previous)
        else:
            _run_in_workers(
                groups,
                suite_dir,
                result,
                jobs=jobs,
                threads=threads,
                autoload=autoload,
                extra_plugins=extra_plugins,
                notify=notify,
                checkpoints=checkpoints,
            )
    except KeyboardInterrupt:
        result.interrupted = True
    return result


def _worker_main(
    tasks: Queue[Task],
    events: Queue[WorkerEvent],
    suite_dir: str,
    threads: int,
    autoload: bool | None,
    extra_plugins: Sequence[str],
    checkpoints: CheckpointPolicy,
) -> None:
    # The parent decides what Ctrl-C means; a worker only stops when told or terminated.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    catalogue = load_catalogue(autoload=autoload, extra_plugins=extra_plugins)

    def forward(event: str, run_id: str, payload: Mapping[str, Any]) -> None:
        events.put((event, run_id, dict(payload)))

    while True:
        item = tasks.get()
        if item is None:
            return
        group = [RunSpec.from_json(data) for data in item]
        ids = [spec.run_id for spec in group]
        events.put(("claim", ids[0], {"pid": os.getpid(), "runs": ids}))
        for outcome in execute_lanes(group, Path(suite_dir), catalogue, forward, checkpoints):
            events.put(("done", outcome.run_id, asdict(outcome)))


def _run_in_workers(
    groups: Sequence[Sequence[RunSpec]],
    suite_dir: Path,
    result: SuiteRunResult,
    *,
    jobs: int,
    threads: int,
    autoload: bool | None,
    extra_plugins: Sequence[str],
    notify: EventHandler,
    checkpoints: CheckpointPolicy,
) -> None:
    ctx = mp.get_context("spawn")
    tasks: Queue[Task] = ctx.Queue()
    events: Queue[WorkerEvent] = ctx.Queue()
    for group in groups:
        tasks.put([spec.to_json() for spec in group])
    args = (tasks, events, str(suite_dir), threads, autoload, tuple(extra_plugins), checkpoints)

    def start_worker() -> BaseProcess:
        tasks.put(None)  # one stop sentinel per worker, behind every task
        process = ctx.Process(target=_worker_main, args=args, daemon=True)
        process.start()
        return process

    workers = [start_worker() for _ in range(min(jobs, len(groups)))]
    claims: dict[int, list[str]] = {}  # worker pid -> the run ids it is running
    by_id = {spec.run_id: spec for group in groups for spec in group}
    pending = list(by_id.values())
    try:
        while len(result.outcomes) < len(pending):
            try:
                event, run_id, payload = events.get(timeout=0.2)
            except queue.Empty:
                workers = _replace_dead_workers(
                    workers, claims, by_id, suite_dir, result, notify, start_worker
                )
                continue
            if event == "claim":
                claims[payload["pid"]] = list(payload["runs"])
            elif event == "done":
                result.outcomes[run_id] = RunOutcome(**payload)
            else:
                notify(event, run_id, payload)
    finally:
        for process in workers:
            if process.is_alive():
                process.terminate()
        for process in workers:
            process.join(timeout=5)
        tasks.cancel_join_thread()
        events.cancel_join_thread()


def _replace_dead_workers(
    workers: list[BaseProcess],
    claims: dict[int, list[str]],
    by_id: dict[str, RunSpec],
    suite_dir: Path,
    result: SuiteRunResult,
    notify: EventHandler,
    start_worker: Callable[[], BaseProcess],
) -> list[BaseProcess]:
    """The workers still alive, with a new one for each that died while runs remain; the
    runs a dead worker had claimed are recorded as failed."""
    alive = []
    for process in workers:
        if process.is_alive() or process.exitcode == 0:
            alive.append(process)
            continue
        for run_id in claims.pop(process.pid, []):
            if run_id in result.outcomes:
                continue
            error = f"worker process died (exit code {process.exitcode}) during the run"
            record = records.RunDir(suite_dir, run_id).write_status(records.FAILED, error=error)
            result.outcomes[run_id] = RunOutcome(run_id, records.FAILED, error=error)
            notify("end", run_id, {"status": records.FAILED, "error": error, "record": record})
        if len(result.outcomes) < len(by_id):
            alive.append(start_worker())
    return alive
