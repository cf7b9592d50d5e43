"""What rlbench writes, and the one place that says what each file holds.

Every file is written atomically (:mod:`~rlbench.records.atomic`): a reader sees the old
file or the new one, never half of one. ``status.json`` is written first as ``running`` and
last as ``complete``: a run is trusted (skipped on rerun, loaded by reports) only when its
status says ``complete`` and every file it needs is present and parses
(:meth:`RunDir.complete_problem`, in :mod:`~rlbench.records.rundir`).

The formats (:mod:`~rlbench.records.formats`): a suite's results folder holds
``suite.toml`` (the suite file as run) and ``suite.json`` (:class:`SuiteManifest`: its run
ids and environments' reference scores); each run's folder holds ``config.json``,
``provenance.json``, ``status.json`` (:class:`RunStatus`), ``evaluations.csv``
(:data:`EVALUATION_COLUMNS`), ``episodes.csv`` (:data:`EPISODE_COLUMNS`), ``metrics.csv``
and ``weights.pt``.

Nothing here imports torch or gymnasium: ``rlbench report`` reads results without them.
"""

from __future__ import annotations

from rlbench.records.atomic import (
    FILE_MODE,
    atomic_savefig,
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
    csv_bytes,
    inside,
    json_bytes,
    read_json,
)
from rlbench.records.formats import (
    BUNDLE_MARKER,
    CHECKPOINT,
    CHECKPOINT_INFO,
    COMPLETE,
    CONFIG,
    CONFIG_FIELDS,
    DAMAGED,
    EPISODE_COLUMNS,
    EPISODES,
    ERROR,
    EVALUATION_COLUMNS,
    EVALUATIONS,
    FAILED,
    MANIFEST,
    METRICS,
    PROVENANCE,
    RUNNING,
    RUNS_DIRNAME,
    SKIPPED,
    STATUS,
    STATUSES,
    SUITE_SOURCE,
    WEIGHTS,
    EnvReference,
    RecordError,
    Reference,
    RunStatus,
    SuiteManifest,
)
from rlbench.records.rundir import FileSink, RunDir, damaged_runs

__all__ = [
    "BUNDLE_MARKER",
    "CHECKPOINT",
    "CHECKPOINT_INFO",
    "COMPLETE",
    "CONFIG",
    "CONFIG_FIELDS",
    "DAMAGED",
    "EPISODES",
    "EPISODE_COLUMNS",
    "ERROR",
    "EVALUATIONS",
    "EVALUATION_COLUMNS",
    "FAILED",
    "FILE_MODE",
    "MANIFEST",
    "METRICS",
    "PROVENANCE",
    "RUNNING",
    "RUNS_DIRNAME",
    "SKIPPED",
    "STATUS",
    "STATUSES",
    "SUITE_SOURCE",
    "WEIGHTS",
    "EnvReference",
    "FileSink",
    "RecordError",
    "Reference",
    "RunDir",
    "RunStatus",
    "SuiteManifest",
    "atomic_savefig",
    "atomic_write_bytes",
    "atomic_write_csv",
    "atomic_write_json",
    "atomic_write_text",
    "csv_bytes",
    "damaged_runs",
    "inside",
    "json_bytes",
    "read_json",
]
