"""What ``rlbench run`` shows while it trains, fed by the training's progress events
(:data:`rlbench.recording.ProgressCallback`).

On a terminal: a live display of the runs done out of those to run, and each active run's
steps, speed, latest evaluation, elapsed time and an estimate of the time left, laid out to
the terminal's width (a run's line splits in two rather than cutting a number). Elsewhere (CI
logs, pipes): one line per evaluation of each run (unless ``quiet``) and one when it ends.
Either way, each run's end is one line, never wrapped by rlbench.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.padding import Padding
from rich.text import Text

#: Width of the overall bar, and of a run's bar where its line has room.
BAR_WIDTH = 20
RUN_BAR_WIDTH = 12


@dataclass
class RunState:
    """One run as the events told it: budget, progress, speed, latest evaluation."""

    steps: int
    started: float
    step: int = 0
    first_step: int = 0
    sps: float | None = None
    return_mean: float | None = None
    wall_time_s: float | None = None
    node: str | None = None
    ended: bool = False

    def rate(self, now: float) -> float | None:
        """Steps per wall-clock second since this process first saw the run (evaluations and
        checkpoints included), or ``None`` before it has stepped."""
        seconds = now - self.started
        done = self.step - self.first_step
        return done / seconds if done > 0 and seconds > 0 else None

    def left_s(self, now: float) -> float | None:
        """Seconds until the run's budget is done at its rate so far, or ``None``."""
        rate = self.rate(now)
        return max(self.steps - self.step, 0) / rate if rate else None


def clock(seconds: float) -> str:
    """``H:MM:SS`` of ``seconds``."""
    whole = max(int(seconds), 0)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def short_count(n: int) -> str:
    """``n`` in at most four characters and a unit: ``950``, ``12.3k``, ``383k``, ``1M``."""
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size:
            text = f"{n / size:.3g}"
            return (text if "e" not in text else f"{n / size:.0f}") + unit
    return str(n)


class SuiteProgress:
    """The display of the ``total`` runs a ``rlbench run`` runs; :meth:`handle` takes the
    training's progress events. ``quiet``: off a terminal, print only each run's end."""

    def __init__(
        self,
        console: Console,
        total: int,
        *,
        quiet: bool = False,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.total = total
        self.quiet = quiet
        self.now = now
        self.done = 0
        self.started = now()
        self.runs: dict[str, RunState] = {}
        self.lock = threading.Lock()
        self.live = (
            Live(console=console, get_renderable=self.view, transient=False)
            if console.is_terminal and total
            else None
        )

    def __enter__(self) -> SuiteProgress:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def handle(self, event: str, run_id: str, payload: Mapping[str, Any]) -> None:
        # The live display draws from another thread: it reads the runs under the lock, and
        # lines are printed outside it (printing waits for the display's own lock).
        with self.lock:
            line = self._update(event, run_id, payload, self.now())
        if line is not None:
            # soft_wrap: one event, one line, whatever the width (a log viewer wraps it).
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def _update(
        self, event: str, run_id: str, payload: Mapping[str, Any], now: float
    ) -> str | None:
        """Take the event into the runs' state; the line to print for it, if any."""
        if event == "start":
            self.runs[run_id] = RunState(steps=int(payload["steps"]), started=now)
            return None
        run = self.runs.get(run_id)
        if event == "resume":
            if run is not None:
                run.step = run.first_step = int(payload["step"])
                run.started = now
            how = "exactly" if payload.get("exact") else "with fresh episodes"
            return f"resumed {run_id} from its checkpoint at step {payload['step']:,} ({how})"
        if event == "retry":
            return (
                f"{run_id}: its Ray task was lost ({payload.get('reason', '?')}); "
                "submitted again, to resume from its last checkpoint"
            )
        if event == "end":
            self.done += 1
            if run is not None:
                run.ended = True
                if payload.get("status") == "complete":
                    run.step = run.steps
            return self.final_line(run_id, payload, run)
        if run is None:  # an event of a run whose start this display did not see
            return None
        if event == "node":
            run.node = str(payload.get("node"))
        elif event == "step":
            run.step, run.sps = int(payload["step"]), float(payload["sps"])
        elif event == "eval":
            run.step = int(payload["step"])
            run.return_mean = float(payload["return_mean"])
            run.wall_time_s = payload.get("wall_time_s")
            if payload.get("sps") is not None:
                run.sps = float(payload["sps"])
            if self.live is None and not self.quiet:
                return self.eval_line(run_id, run, now)
        return None

    def eval_line(self, run_id: str, run: RunState, now: float) -> str:
        """``eval RUN_ID  step S/N: return R, V steps/s, T elapsed, ~T left``."""
        parts = [f"return {run.return_mean:.1f}"]
        if run.sps is not None:
            parts.append(f"{run.sps:,.0f} steps/s")
        elapsed = run.wall_time_s if run.wall_time_s is not None else now - run.started
        parts.append(f"{clock(elapsed)} elapsed")
        left = run.left_s(now)
        if left is not None and run.step < run.steps:
            parts.append(f"~{clock(left)} left")
        return f"eval {run_id}  step {run.step:,}/{run.steps:,}: " + ", ".join(parts)

    def final_line(self, run_id: str, payload: Mapping[str, Any], run: RunState | None) -> str:
        """``[k/n] complete RUN_ID  final return R, V steps/s`` (or the error)."""
        status = payload.get("status", "?")
        head = f"[{self.done}/{self.total}] {status:8s} {run_id}"
        if status == "complete":
            speed = f", {run.sps:,.0f} steps/s" if run is not None and run.sps else ""
            return f"{head}  final return {payload.get('final_return', float('nan')):.1f}{speed}"
        return f"{head}  {payload.get('error', '')}"

    def view(self) -> _View:
        """The live display as it stands: a renderable laid out for the width it is drawn
        at."""
        return _View(self)

    def left_s(self) -> float | None:
        """Seconds until every run is done, at the steps per second the suite has made so
        far (runs not started yet counted at the mean budget of those seen), or ``None``
        before anything has stepped."""
        now = self.now()
        done_here = sum(r.step - r.first_step for r in self.runs.values())
        seconds = now - self.started
        if done_here <= 0 or seconds <= 0 or not self.runs:
            return None
        unseen = max(self.total - len(self.runs), 0)
        mean_budget = sum(r.steps for r in self.runs.values()) / len(self.runs)
        work = sum(max(r.steps - r.step, 0) for r in self.runs.values() if not r.ended)
        return (work + unseen * mean_budget) * seconds / done_here


class _View:
    """The live display, laid out for the width it is drawn at."""

    def __init__(self, progress: SuiteProgress) -> None:
        self.progress = progress

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        with self.progress.lock:
            head = self._head(width)
            runs = [(i, dataclasses.replace(r)) for i, r in self.progress.runs.items()]
        yield head
        rows = [self._row(i, r) for i, r in runs if not r.ended]
        if not rows:
            return
        name_width = max(len(name) for name, _, _ in rows)
        # One line per run where every run's fits (with its bar if there is room), else two:
        # the name, then the numbers; never a number cut.
        tails = next(
            (k for k in (1, 2) if name_width + 2 + max(row[k].cell_len for row in rows) <= width),
            None,
        )
        room = max((options.height or console.height) - 1, 1)
        for n, (name, barred, stats) in enumerate(rows):
            lines = 1 if tails else 2
            if room < lines + (n < len(rows) - 1):
                yield Text(f"  and {len(rows) - n} more running")
                return
            room -= lines
            if tails:
                yield _folding(
                    Text.assemble(name.ljust(name_width), "  ", (barred, stats)[tails - 1])
                )
            else:
                yield _folding(Text(name))
                tail = barred if barred.cell_len + 4 <= width else stats
                yield Padding(_folding(tail), (0, 0, 0, 4))

    def _head(self, width: int) -> Text:
        p = self.progress
        parts = [f"{p.done}/{p.total} runs", f"{clock(p.now() - p.started)} elapsed"]
        left = p.left_s()
        if left is not None:
            parts.append(f"~{clock(left)} left")
        text = Text(" · ".join(parts))
        if text.cell_len + BAR_WIDTH + 1 <= width:
            text = Text.assemble(_bar(p.done, p.total, BAR_WIDTH), " ", text)
        return _folding(text)

    def _row(self, run_id: str, run: RunState) -> tuple[str, Text, Text]:
        """A run's name (its id without the hash), and its numbers with and without a bar."""
        now = self.progress.now()
        parts = [f"{short_count(run.step)}/{short_count(run.steps)}"]
        if run.sps is not None:
            parts.append(f"{run.sps:,.0f} steps/s")
        if run.return_mean is not None:
            parts.append(f"eval {run.return_mean:.1f}")
        parts.append(clock(now - run.started))
        left = run.left_s(now)
        if left is not None:
            parts.append(f"~{clock(left)} left")
        if run.node:
            parts.append(f"on {run.node}")
        stats = Text(" · ".join(parts))
        barred = Text.assemble(_bar(run.step, run.steps, RUN_BAR_WIDTH), " ", stats)
        return "  " + run_id.rsplit("__", 1)[0], barred, stats


def _bar(done: float, total: float, width: int) -> Text:
    filled = round(width * min(done / total, 1.0)) if total > 0 else 0
    return Text.assemble(("━" * filled, "bar.complete"), ("━" * (width - filled), "bar.back"))


def _folding(text: Text) -> Text:
    """``text`` wrapped, never cut, where it is wider than the screen."""
    text.overflow = "fold"
    return text
