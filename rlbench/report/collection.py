"""Reading results folders and computing every table of the report: :func:`collect` returns
a :class:`ReportData` that the writers (Markdown, tables, figures) only format."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from rlbench import bundle, records, stats
from rlbench.errors import RlbenchError
from rlbench.results import load_run_table, load_tidy, open_suite_results, reference_table

if TYPE_CHECKING:
    from rlbench.results import CatalogueSource


@dataclass
class ReportData:
    """Everything a report shows, as frames (see :mod:`rlbench.stats` for each)."""

    folders: list[Path]
    runs: pd.DataFrame
    tidy: pd.DataFrame
    references: dict[str, records.Reference | None]
    reference_sources: dict[str, str]
    finals: pd.DataFrame
    scores: pd.DataFrame
    aggregate: stats.Aggregate
    poi: pd.DataFrame
    profile: pd.DataFrame
    curves: pd.DataFrame
    speed: pd.DataFrame
    agents: list[str]
    seed: int
    n_resamples: int


def collect(
    results_dirs: Sequence[Path | str],
    *,
    catalogue: CatalogueSource = None,
    seed: int = stats.DEFAULT_SEED,
    n_resamples: int = stats.DEFAULT_RESAMPLES,
    warn: Callable[[str], None] | None = None,
) -> ReportData:
    """Load one or more results folders (or results bundles, :mod:`rlbench.bundle`) and
    compute every table of the report. Reference scores are those recorded in each
    folder's ``suite.json``; ``catalogue`` (see :data:`rlbench.results.CatalogueSource`)
    is asked only for folders that recorded none.
    ``warn`` gets one line per damaged run (left out of every statistic; the runs table
    lists it). Raises :class:`~rlbench.errors.RlbenchError` for a folder that is not a
    suite's results folder, holds no run or has a damaged ``suite.json``. Returns a
    :class:`ReportData`."""
    if not results_dirs:
        raise RlbenchError("no results folder given")
    folders = list(dict.fromkeys(open_suite_results(p) for p in results_dirs))
    runs = load_run_table(folders)
    if runs.empty:
        shown = (str(bundle.display_path(f)) for f in folders)
        raise RlbenchError(f"no runs found in {', '.join(shown)}")
    for run in runs[runs["status"] == records.DAMAGED].itertuples(index=False):
        if warn is not None:
            warn(
                f"{run.path}: damaged, left out of the report: {run.error} "
                "(`rlbench run` of the suite redoes it)"
            )
    references = reference_table(runs["env"], catalogue, folders=folders)
    sources = {env: _reference_source(ref) for env, ref in references.items()}
    tidy = load_tidy(folders, references=references, runs=runs)
    finals = stats.final_scores(tidy)
    kw = {"seed": seed, "n_resamples": n_resamples}
    return ReportData(
        folders=folders,
        runs=runs,
        tidy=tidy,
        references=references,
        reference_sources=sources,
        finals=finals,
        scores=stats.score_table(tidy, runs, **kw),
        aggregate=stats.aggregate_metrics(tidy, **kw),
        poi=stats.probability_of_improvement(tidy, **kw),
        profile=stats.performance_profile(tidy, **kw),
        curves=stats.learning_curves(tidy, seed=seed),
        speed=stats.throughput(tidy),
        agents=list(dict.fromkeys(runs["agent_key"])),
        seed=seed,
        n_resamples=n_resamples,
    )


def _reference_source(ref: records.Reference | None) -> str:
    if ref is None:
        return "none declared"
    plugin = getattr(ref, "plugin", "")
    return f"declared by plugin {plugin}" if plugin else "declared"


def no_aggregate_reason(data: ReportData) -> str:
    if data.finals.empty:
        return "no run completed"
    if not data.aggregate.envs:
        return "no environment with complete runs declares reference scores"
    if data.aggregate.table.empty:
        return "no agent has complete runs on every environment with reference scores"
    return ""


def report_title(data: ReportData) -> str:
    suites = list(dict.fromkeys(data.runs["suite"]))
    return "rlbench report: " + " + ".join(map(str, suites))
