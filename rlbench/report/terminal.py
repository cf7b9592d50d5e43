"""The report's main table for the terminal (``rlbench report`` prints it), at any width:
the whole table where it fits, else without its two widest columns (saying so), else one
block per agent and environment; a number is never cut."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from rlbench.report import formatting as fmt
from rlbench.report.files import TABLE_FILES, TABLES_DIRNAME

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table

TITLE = "Final evaluation return (IQM over runs, 95% bootstrap CI)"
#: The columns a compact table leaves out.
LEFT_OUT = ("mean ± std", "steps to solve")


def terminal_scores(report_dir: Path, console: Console) -> RenderableType:
    """The report's main table as wide as ``console`` allows: whole where it fits without
    cutting a word, else compact with a line naming the columns left out (they are in
    report.md), else one block per agent and environment (:func:`rlbench.fitting.fitted`).
    Returns a renderable."""
    from rlbench.fitting import fitted

    note = f"({' and '.join(LEFT_OUT)}: in report.md, or here on a wider terminal)"
    return fitted(
        console,
        rich_score_table(report_dir),
        rich_score_table(report_dir, compact=True),
        note,
    )


def rich_score_table(report_dir: Path, *, compact: bool = False) -> Table:
    """The report's main table (``tables/scores.csv`` of ``report_dir``) as a rich Table
    for the terminal; ``compact`` leaves out the mean ± std and steps-to-solve columns (for
    narrow terminals).
    Returns the table."""
    from rich import box
    from rich.table import Table

    scores = pd.read_csv(report_dir / TABLES_DIRNAME / TABLE_FILES["scores"])
    speed_cols = [c for c in scores.columns if c.startswith("steps_per_s[")]
    table = Table(
        title=TITLE,
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        pad_edge=False,
    )
    table.add_column("agent", no_wrap=True)
    table.add_column("environment", no_wrap=True)
    table.add_column("n", justify="right")
    table.add_column("IQM [95% CI]", justify="right", no_wrap=True)
    if not compact:
        table.add_column("mean ± std", justify="right", no_wrap=True)
    table.add_column("solved", justify="right")
    if not compact:
        table.add_column("steps to solve", justify="right")
    for name in [*[f"steps/s {c[12:-1]}" for c in speed_cols], "not complete"]:
        table.add_column(
            name, justify="right", overflow="fold", min_width=max(len(w) for w in name.split())
        )
    decimals = fmt.decimals_by_env(scores, _references(report_dir))
    for r in scores.to_dict("records"):
        n = int(r["n"])
        d = decimals.get(r["env"], fmt.MIN_DECIMALS)
        mean = (
            []
            if compact
            else ["—" if n == 0 else f"{fmt.num(r['mean'], d)} ± {fmt.num(r['std'], d)}"]
        )
        table.add_row(
            str(r["agent_key"]),
            str(r["env"]),
            str(n),
            fmt.ci(r["iqm"], r["ci_low"], r["ci_high"], d),
            *mean,
            fmt.fraction(r["success_rate"], n),
            *([] if compact else [fmt.steps(r["steps_to_solved"])]),
            *[fmt.num(r[c], 0) for c in speed_cols],
            str(int(r["not_complete"])) if r.get("not_complete") else "",
        )
    return table


@dataclass(frozen=True)
class _Reference:
    random: float
    solved: float


def _references(report_dir: Path) -> dict[str, _Reference | None]:
    """The reference scores the report used (``tables/references.csv``), which set each
    environment's precision; none for a report without that table (an older one)."""
    path = report_dir / TABLES_DIRNAME / TABLE_FILES["references"]
    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.EmptyDataError):  # absent, or written for no environment
        return {}
    if not {"env", "random", "solved"} <= set(table.columns):
        return {}
    return {
        str(r["env"]): None
        if pd.isna(r["random"]) or pd.isna(r["solved"])
        else _Reference(float(r["random"]), float(r["solved"]))
        for r in table.to_dict("records")
    }
