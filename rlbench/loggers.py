"""Experiment trackers ("loggers"): what a logger plugin registers and implements.

A plugin registers a :class:`LoggerSpec` with the ``rlbench_register_loggers`` hook; a suite's
``log = [...]`` or ``rlbench run --log NAME,...`` chooses the loggers of a command. Each chosen
logger is created once, in the process that runs the command (the driver), and is fed every
run's records as the runs make them: its start (``config.json`` and ``provenance.json``), the
training episodes and metrics and the evaluation of each evaluation interval (the rows that
``episodes.csv``, ``metrics.csv`` and ``evaluations.csv`` gain), and its end (``status.json``),
whatever the executor (worker processes and Ray tasks send them to the driver with their
progress events). A logger never runs in a training process, so it cannot slow or crash one:
it is called from a thread of its own, and one that raises is reported once and dropped
(:mod:`rlbench.tracking`).

This module imports nothing of the harness: plugins import :class:`Logger` and
:class:`LoggerSpec` from :mod:`rlbench`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: ``logs/`` in a suite's results folder: where file-based trackers write unless ``--log-dir``.
LOGS_DIRNAME = "logs"


@dataclass(frozen=True)
class LogContext:
    """What a logger is created with: the command's suite and where it may write."""

    suite: str
    """The suite's name (a tracker's project or experiment)."""
    suite_dir: Path
    """The suite's results folder (``<results>/<suite name>``)."""
    log_dir: Path
    """Where file-based trackers write (event files, a local store, offline runs):
    ``--log-dir``, else ``<suite_dir>/logs``. Created by the logger when it writes there."""
    runs: tuple[str, ...] = ()
    """The ids of the runs this command runs (those already complete are not run again)."""


@dataclass(frozen=True)
class RunStart:
    """A run starting: what :meth:`Logger.start_run` receives."""

    run_id: str
    config: Mapping[str, Any]
    """The run's ``config.json`` (suite, agent, label, env, seed, device, budget, the resolved
    ``agent_config`` and ``network``, ...)."""
    provenance: Mapping[str, Any] = field(default_factory=dict)
    """The run's ``provenance.json`` (versions, git revision, host, threads, ...); empty for a
    run that ends without training (skipped, or its plugin failed to load)."""
    resumed_from: int | None = None
    """The step of the checkpoint the run resumes from; ``None``: it starts from step 0 (an
    earlier attempt's records are gone, as they are from the run's folder)."""


class Logger:
    """Base class of a logger (an experiment tracker). Override what the tracker needs:
    every method does nothing by default.

    The methods are called from one thread of the driver process, one call at a time, in the
    order each run's records are made: :meth:`start_run`, then per evaluation the interval's
    :meth:`log_episodes` (when episodes ended), :meth:`log_metrics` (when the agent reported
    any) and :meth:`log_evaluation`, and :meth:`end_run`; the calls of runs that train at
    the same time interleave. :meth:`start_run` may come again for a run that has not ended
    (its Ray task was lost, and it resumes from its checkpoint elsewhere). :meth:`close` is
    called once, at the end of the command (also after Ctrl-C).

    The values are those the run's files hold (the same floats as the CSV files). A method
    that raises stops this logger for the rest of the command (reported once on stderr);
    the runs and their files are never affected.
    """

    def start_run(self, run: RunStart) -> None:
        """A run starts (or resumes from a checkpoint)."""

    def log_episodes(self, run_id: str, episodes: Sequence[Mapping[str, Any]]) -> None:
        """Training episodes that ended since the last evaluation: the new rows of
        ``episodes.csv`` (``step``, at which the episode ended, ``return``, ``length``,
        ``terminated``)."""

    def log_metrics(self, run_id: str, step: int, metrics: Mapping[str, float]) -> None:
        """The agent's training metrics at ``step`` (each one's mean since the last
        evaluation): the new row of ``metrics.csv``."""

    def log_evaluation(self, run_id: str, evaluation: Mapping[str, Any]) -> None:
        """An evaluation: the new row of ``evaluations.csv`` (``step``, ``return_mean``,
        ``return_std``, ``return_min``, ``return_max``, ``length_mean``, ``episodes``,
        ``wall_time_s``)."""

    def end_run(self, run_id: str, status: Mapping[str, Any]) -> None:
        """The run ended: its ``status.json`` (``status`` is ``complete``, ``failed`` or
        ``skipped``; ``error`` says why a run failed)."""

    def close(self) -> None:
        """The command is done: flush and release what the tracker holds."""


@dataclass(frozen=True)
class LoggerSpec:
    """A logger a plugin provides.

    ``name`` is what ``--log`` and a suite's ``log`` use; ``create(context)`` returns a fresh
    :class:`Logger` (called once per command, in the driver; import the tracker's package
    there, not at the plugin's import, which every worker process does). ``requires`` names
    the modules the tracker needs and ``install`` the command that installs them: a command
    that chooses the logger without them is refused with that command, before anything runs.
    """

    name: str
    create: Callable[[LogContext], Logger]
    requires: tuple[str, ...] = ()
    install: str = ""
    description: str = ""

    def missing(self) -> str | None:
        """Why the logger cannot be created here (a module of :attr:`requires` is not
        installed), with the command that installs it, in one line; ``None`` when nothing is
        missing."""
        absent = [module for module in self.requires if not _importable(module)]
        if not absent:
            return None
        names = ", ".join(repr(module) for module in absent)
        what, verb = ("the module", "is") if len(absent) == 1 else ("the modules", "are")
        return f"the {self.name} logger needs {what} {names}, which {verb} not installed" + (
            f"; install it with: {self.install}" if self.install else ""
        )

    @property
    def summary(self) -> str:
        doc = self.description or (getattr(self.create, "__doc__", None) or "")
        paragraph = " ".join(doc.strip().split("\n\n")[0].split())
        return paragraph.split(". ")[0].rstrip(".") + "." if paragraph else ""


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def parse_names(text: str) -> list[str]:
    """``"tensorboard, mlflow"`` -> ``["tensorboard", "mlflow"]`` (``--log``'s value); ``"none"``
    or ``""`` -> ``[]``. A name given twice counts once."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if names == ["none"]:
        return []
    return list(dict.fromkeys(names))
