"""Feeding the chosen loggers (:mod:`rlbench.loggers`) from the runs' progress events.

:class:`Tracking` is an event handler (:data:`rlbench.recording.ProgressCallback`) of the
driver process: the events of every run reach it on every executor (in this process,
through the workers' queue, or through Ray's mailbox), and they carry what the runs' files
gain (``config.json``, ``provenance.json``, the new rows of ``evaluations.csv``,
``metrics.csv`` and ``episodes.csv``, ``status.json``). :meth:`Tracking.handle` only puts
each event on a queue; one thread of its own creates the loggers and calls them, so a
tracker that is slow or hangs (its server gone) never slows training, even when the runs
train in this very process. A logger that raises is reported once (``warning: NAME logger
failed: ...; logging to it stops, the runs go on``) and dropped; one that stops answering is
given up at the end of the command after :data:`STALL_S` seconds without progress.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rlbench.loggers import LogContext, Logger, LoggerSpec, RunStart

#: Seconds the end of a command waits for loggers that make no progress (a tracker whose
#: server stopped answering) before it gives up on them.
STALL_S = 10.0

_STOP = object()


class Tracking:
    """The loggers of one command, fed from the runs' events in a thread of their own.

    Use it as a context manager around the runs (or call :meth:`close` at the end): ``with
    Tracking(specs, context, warn) as tracking: run_suite(..., on_event=tracking.handle)``.
    ``warn`` receives each problem as one line (without ``warning:``)."""

    def __init__(
        self,
        specs: Sequence[LoggerSpec],
        context: LogContext,
        warn: Callable[[str], None],
        *,
        stall_s: float = STALL_S,
    ) -> None:
        self.specs = list(specs)
        self.context = context
        self.warn = warn
        self.stall_s = stall_s
        self.loggers: dict[str, Logger] = {}
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._busy = ""  # the logger being called now
        self._progress = time.monotonic()
        # Per run, what its "start" and "resume" said, until "provenance" starts it.
        self._config: dict[str, Mapping[str, Any]] = {}
        self._resumed: dict[str, int] = {}
        self._started: set[str] = set()
        self._gave_up = False  # close() stopped waiting: the thread says nothing more

    def __enter__(self) -> Tracking:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the thread (it creates the loggers first)."""
        if self._thread is None and self.specs:
            self._thread = threading.Thread(target=self._work, name="rlbench-loggers", daemon=True)
            self._thread.start()

    def handle(self, event: str, run_id: str, payload: Mapping[str, Any]) -> None:
        """Take one progress event (returns at once: the loggers are called elsewhere)."""
        if self._thread is not None:
            self._queue.put((event, run_id, payload))

    def close(self) -> None:
        """Let the loggers take every event sent so far, then close them; give up on those
        that make no progress for ``stall_s`` seconds."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(_STOP)
        self._progress = time.monotonic()
        while thread.is_alive():
            thread.join(timeout=0.1)
            if thread.is_alive() and time.monotonic() - self._progress > self.stall_s:
                stuck = self._busy or "a"
                self.warn(
                    f"{stuck} logger did not answer for {self.stall_s:g} s; logging to it "
                    "stops, the runs go on"
                )
                self._gave_up = True
                return  # the thread is a daemon: it ends with the process

    # ------------------------------------------------------------------ the thread

    def _work(self) -> None:
        for spec in self.specs:
            logger = self._call(spec.name, spec.create, self.context)
            if logger is not None:
                self.loggers[spec.name] = logger
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            self._dispatch(*item)
            self._progress = time.monotonic()
        for name in list(self.loggers):
            self._call(name, self.loggers[name].close)
        self.loggers.clear()

    def _dispatch(self, event: str, run_id: str, payload: Mapping[str, Any]) -> None:
        if not self.loggers:
            return
        if event == "start":
            self._config[run_id] = payload.get("config") or {}
            self._resumed.pop(run_id, None)
        elif event == "resume":
            self._resumed[run_id] = int(payload["step"])
        elif event == "provenance":
            self._start(run_id, payload.get("provenance") or {})
        elif event == "eval" and run_id in self._started:
            episodes = payload.get("episodes") or []
            metrics = payload.get("metrics")
            evaluation = payload.get("evaluation")
            if episodes:
                self._each("log_episodes", run_id, episodes)
            if metrics:
                step = int(metrics["step"])
                values = {k: v for k, v in metrics.items() if k != "step"}
                self._each("log_metrics", run_id, step, values)
            if evaluation:
                self._each("log_evaluation", run_id, evaluation)
        elif event == "end":
            if run_id not in self._started and run_id in self._config:
                self._start(run_id, {})  # it ended before training: skipped, or unavailable
            if run_id in self._started:
                status = payload.get("record") or {
                    k: payload[k] for k in ("status", "error") if k in payload
                }
                self._each("end_run", run_id, status)
                self._started.discard(run_id)
                self._config.pop(run_id, None)
                self._resumed.pop(run_id, None)

    def _start(self, run_id: str, provenance: Mapping[str, Any]) -> None:
        config = self._config.get(run_id)
        if config is None:
            return  # a run whose start this command did not see
        run = RunStart(run_id, config, provenance, self._resumed.get(run_id))
        self._started.add(run_id)
        self._each("start_run", run)

    def _each(self, method: str, *args: Any) -> None:
        for name in list(self.loggers):
            self._call(name, getattr(self.loggers[name], method), *args)

    def _call(self, name: str, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)`` of logger ``name``; a logger that raises is reported once and
        dropped."""
        self._busy = name
        try:
            return function(*args)
        except Exception as exc:
            self.loggers.pop(name, None)
            if not self._gave_up:
                self.warn(
                    f"{name} logger failed: {_one_line(exc)}; logging to it stops, the runs go on"
                )
            return None
        finally:
            self._busy = ""
            self._progress = time.monotonic()


def _one_line(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= 300 else text[:297] + "..."


def fan_out(*handlers: Callable[[str, str, Mapping[str, Any]], None]) -> Callable[..., None]:
    """One event handler that calls each of ``handlers`` in turn."""

    def handle(event: str, run_id: str, payload: Mapping[str, Any]) -> None:
        for handler in handlers:
            handler(event, run_id, payload)

    return handle
