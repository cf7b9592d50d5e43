"""``rlbench tune`` as a function: run the study to its total, then write its outputs."""

from __future__ import annotations

from collections.abc import Callable

from rlbench.plugins import Catalogue
from rlbench.tune.job import TuneJob
from rlbench.tune.outputs import TrialPrinter, TuneOutcome, finish
from rlbench.tune.storage import ClaimLock, open_storage
from rlbench.tune.study import open_study
from rlbench.tune.trackers import prepare_trackers
from rlbench.tune.workers import run_ray_workers, run_workers, worker_loop


def tune(
    job: TuneJob,
    catalogue: Catalogue,
    *,
    jobs: int = 1,
    write: Callable[[str], None] = print,
    executor: str = "local",
    address: str | None = None,
) -> TuneOutcome:
    """Run the study until it has ``job.target`` finished trials (continuing what earlier
    commands left), then write best.toml, trials.csv and the figures. ``KeyboardInterrupt``
    propagates after the running trials are failed and queued for retry. With
    ``executor="ray"`` the workers are tasks on the Ray cluster at ``address`` (``jobs``
    of them; 0: one per CPU of the cluster)."""
    storage = open_storage(job.location)
    lock = ClaimLock(job.location, storage)
    study = open_study(job, storage, lock, job.plan.seed)
    printer = TrialPrinter(write, job.target)
    before = printer.start(study)
    if before.finished:
        write(
            f"Resuming: {before.finished} finished trial(s) ({before.complete} complete, "
            f"{before.pruned} pruned, {before.failed} failed), {before.running} running."
        )
    prepare_trackers(job, catalogue)
    if executor == "ray":
        run_ray_workers(job, jobs or None, lambda: printer.update(study), address)
    elif jobs <= 1:
        worker_loop(job, catalogue, 0, after_trial=printer.update)
    else:
        run_workers(job, jobs, poll=lambda: printer.update(study))
    printer.update(study)
    return finish(study, job)
