"""The live display of ``rlbench run``: runs done / total, and each active run's step,
speed and latest evaluation. On a non-terminal (CI logs) it prints one line per run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class SuiteProgress:
    """The display of the ``total`` runs a ``rlbench run`` starts; :meth:`handle` takes the
    training's progress events (:data:`rlbench.recording.ProgressCallback`)."""

    def __init__(self, console: Console, total: int) -> None:
        self.console = console
        self.total = total
        self.done = 0
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not console.is_terminal,
            transient=False,
        )
        self.overall = self.progress.add_task("runs", total=total, info="")
        self.tasks: dict[str, TaskID] = {}
        self.info: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> SuiteProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def handle(self, event: str, run_id: str, payload: Mapping[str, Any]) -> None:
        info = self.info.setdefault(run_id, {})
        if event == "start":
            self.tasks[run_id] = self.progress.add_task(
                f"  {run_id.rsplit('__', 1)[0]}", total=payload["steps"], info=""
            )
        elif event == "resume":
            task = self.tasks.get(run_id)
            if task is not None:
                self.progress.update(task, completed=payload["step"])
            how = "exactly" if payload.get("exact") else "with fresh episodes"
            self.console.print(
                f"resumed {run_id} from its checkpoint at step {payload['step']:,} ({how})",
                markup=False,
                highlight=False,
            )
        elif event == "retry":
            self.console.print(
                f"{run_id}: its Ray task was lost ({payload.get('reason', '?')}); "
                "submitted again, to resume from its last checkpoint",
                markup=False,
                highlight=False,
            )
        elif event == "node":
            info.update(payload)
            task = self.tasks.get(run_id)
            if task is not None:
                self.progress.update(task, info=self._describe(info))
        elif event in ("step", "eval"):
            info.update(payload)
            task = self.tasks.get(run_id)
            if task is not None:
                self.progress.update(task, completed=payload["step"], info=self._describe(info))
        elif event == "end":
            self.done += 1
            task = self.tasks.pop(run_id, None)
            if task is not None:
                self.progress.remove_task(task)
            self.progress.update(self.overall, completed=self.done)
            self.console.print(
                self._final_line(run_id, payload, info), markup=False, highlight=False
            )

    @staticmethod
    def _describe(info: Mapping[str, Any]) -> str:
        parts = []
        if "sps" in info:
            parts.append(f"{info['sps']:,.0f} steps/s")
        if "return_mean" in info:
            parts.append(f"eval {info['return_mean']:.1f}")
        if "node" in info:
            parts.append(f"on {info['node']}")
        return " · ".join(parts)

    def _final_line(self, run_id: str, payload: Mapping[str, Any], info: Mapping[str, Any]) -> str:
        status = payload.get("status", "?")
        head = f"[{self.done}/{self.total}] {status:8s} {run_id}"
        if status == "complete":
            speed = f", {info['sps']:,.0f} steps/s" if "sps" in info else ""
            return f"{head}  final return {payload.get('final_return', float('nan')):.1f}{speed}"
        return f"{head}  {payload.get('error', '')}"
