"""Writing a report: :func:`write_report` and the files beside ``report.md`` (CSV tables,
PNG and SVG figures)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rlbench import bundle, records, stats
from rlbench.report import formatting as fmt
from rlbench.report.collection import ReportData, collect, no_aggregate_reason, report_title
from rlbench.report.files import (
    FIGURE_NAMES,
    FIGURES_DIRNAME,
    REPORT_DIRNAME,
    REPORT_HTML,
    REPORT_MD,
    TABLE_FILES,
    TABLES_DIRNAME,
)
from rlbench.report.html_page import markdown_to_html
from rlbench.report.markdown import render_markdown

if TYPE_CHECKING:
    from rlbench.results import CatalogueSource

RUN_TABLE_COLUMNS = [
    "source",
    "run_id",
    "agent_key",
    "label",
    "agent",
    "env",
    "seed",
    "device",
    "device_name",
    "status",
    "final_return",
    "steps_per_second",
    "lanes",
    "wall_time_s",
    "error",
]


def write_report(
    results_dirs: Sequence[Path | str],
    out_dir: Path | None = None,
    *,
    catalogue: CatalogueSource = None,
    seed: int = stats.DEFAULT_SEED,
    n_resamples: int = stats.DEFAULT_RESAMPLES,
    warn: Callable[[str], None] | None = None,
) -> Path:
    """Write the report of one or more suite results folders: tables (CSV), figures (PNG and
    SVG), ``report.md`` and ``report.html``, into ``out_dir`` (default: the first folder's
    ``report/``, see :func:`default_report_dir`). Reference scores are those recorded at
    run time, else ``catalogue``'s (default: the installed plugins); ``warn`` gets a line
    per damaged run (see :func:`~rlbench.report.collection.collect`). Raises
    :class:`~rlbench.errors.RlbenchError` for a folder without runs. Returns the path of
    ``report.md``."""
    data = collect(results_dirs, catalogue=catalogue, seed=seed, n_resamples=n_resamples, warn=warn)
    out = Path(out_dir) if out_dir is not None else default_report_dir(data.folders[0])
    tables_dir, figures_dir = out / TABLES_DIRNAME, out / FIGURES_DIRNAME
    for directory, names in (
        (tables_dir, TABLE_FILES.values()),
        (figures_dir, [f"{n}.{e}" for n in FIGURE_NAMES for e in ("png", "svg")]),
    ):
        directory.mkdir(parents=True, exist_ok=True)
        for name in names:  # what an earlier report wrote and this one may not
            (directory / name).unlink(missing_ok=True)
    _write_tables(data, tables_dir)
    figures = _write_figures(data, figures_dir)
    markdown = render_markdown(data, figures, out)
    records.atomic_write_text(out / REPORT_MD, markdown)
    page = markdown_to_html(markdown, out, report_title(data))
    records.atomic_write_text(out / REPORT_HTML, page)
    return out / REPORT_MD


def default_report_dir(folder: Path) -> Path:
    """Where a folder's report goes by default: its ``report/``; for a results bundle's
    (which unpacks to a temporary folder), ``<bundle name>-report/`` beside the file."""
    source = bundle.origin(folder)
    return folder / REPORT_DIRNAME if source is None else bundle.beside(source, REPORT_DIRNAME)


def _write_tables(data: ReportData, directory: Path) -> None:
    runs = data.runs[[c for c in RUN_TABLE_COLUMNS if c in data.runs.columns]]
    references = pd.DataFrame(
        [
            {
                "env": env,
                "random": ref.random if ref else np.nan,
                "solved": ref.solved if ref else np.nan,
                "source": data.reference_sources[env],
            }
            for env, ref in data.references.items()
        ]
    )
    frames = {
        "scores": data.scores,
        "aggregate": data.aggregate.table,
        "probability_of_improvement": data.poi,
        "throughput": data.speed,
        "runs": runs,
        "references": references,
        "learning_curves": data.curves,
        "performance_profile": data.profile,
    }
    for key, frame in frames.items():
        records.atomic_write_text(directory / TABLE_FILES[key], frame.to_csv(index=False))


def _not_complete_notes(runs: pd.DataFrame) -> dict[tuple[str, str], str]:
    bad = runs[runs["status"] != records.COMPLETE]
    notes: dict[tuple[str, str], str] = {}
    for (name, env), group in bad.groupby(["agent_key", "env"], sort=False):
        counts = group["status"].value_counts()
        notes[(name, env)] = ", ".join(f"{n} {status}" for status, n in counts.items())
    return notes


def _write_figures(data: ReportData, directory: Path) -> dict[str, str]:
    """Make every figure there is data for; returns ``{name: why not}`` for those skipped
    (empty string for those written)."""
    from rlbench import figures as fg

    palette = fg.agent_palette(data.agents)
    agent = "agent_key"
    episodes = fmt.distinct(data.tidy["episodes"]) if "episodes" in data.tidy else ""
    refs = data.finals[["env", "ref_random", "ref_solved"]] if not data.finals.empty else None
    no_run = "no run completed"
    makers: dict[str, tuple[str, Callable[[], Any]]] = {
        "learning_curves": (
            no_run if data.curves.empty else "",
            lambda: fg.learning_curves_figure(
                data.curves, palette, agent=agent, references=refs, eval_episodes=episodes
            ),
        ),
        "final_scores": (
            no_run if data.finals.empty else "",
            lambda: fg.final_scores_figure(
                data.finals, palette, agent=agent, notes=_not_complete_notes(data.runs)
            ),
        ),
        "aggregate": (
            no_aggregate_reason(data),
            lambda: fg.aggregate_figure(data.aggregate.table, palette, agent=agent),
        ),
        "performance_profile": (
            no_aggregate_reason(data),
            lambda: fg.performance_profile_figure(data.profile, palette, agent=agent),
        ),
        "throughput": (
            no_run if data.finals.empty else "",
            lambda: fg.throughput_figure(data.finals, palette, agent=agent),
        ),
    }
    status: dict[str, str] = {}
    for name, (why_not, make) in makers.items():
        status[name] = why_not
        if not why_not:
            fg.save_figure(make(), directory, name)
    return status
