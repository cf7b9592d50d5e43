"""A results folder's report: CSV tables, figures, ``report.md`` and ``report.html``.

Everything goes to ``<results folder>/report/`` (the first folder's, when several are
compared): ``report.md`` and ``report.html`` (the same text, images embedded), ``tables/*.csv``
and ``figures/*.png`` + ``*.svg``. :func:`write_report` is the entry point; ``rlbench report``
calls it.
"""

from __future__ import annotations

import base64
import html
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rlbench import records, stats
from rlbench.errors import RlbenchError
from rlbench.executor import MANIFEST
from rlbench.results import NOT_STARTED, load_run_table, load_tidy, reference_table

if TYPE_CHECKING:
    from rich.table import Table

    from rlbench.plugins import Catalogue
    from rlbench.specs import ReferenceScores

REPORT_DIRNAME = "report"
TABLES_DIRNAME = "tables"
FIGURES_DIRNAME = "figures"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"

#: The sections of report.md, in order (each a ``## `` heading).
SECTIONS = (
    "What was run",
    "Summary",
    "Runs that did not complete",
    "Final scores",
    "Learning curves",
    "Aggregate over environments",
    "Performance profile",
    "Probability of improvement",
    "Training speed",
    "How the numbers are computed",
)
#: ``tables/`` files: key -> file name.
TABLE_FILES = {
    "scores": "scores.csv",
    "aggregate": "aggregate.csv",
    "probability_of_improvement": "probability_of_improvement.csv",
    "throughput": "throughput.csv",
    "runs": "runs.csv",
    "references": "references.csv",
    "learning_curves": "learning_curves.csv",
    "performance_profile": "performance_profile.csv",
}
#: ``figures/`` files (each as .png and .svg).
FIGURE_NAMES = ("learning_curves", "final_scores", "aggregate", "performance_profile", "throughput")
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


@dataclass
class ReportData:
    """Everything a report shows, as frames (see :mod:`rlbench.stats` for each)."""

    folders: list[Path]
    runs: pd.DataFrame
    tidy: pd.DataFrame
    references: dict[str, ReferenceScores | None]
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


def _check_folder(path: Path) -> None:
    if not path.is_dir():
        raise RlbenchError(f"{path}: no such results folder")
    if (path / MANIFEST).is_file() or (path / records.RUNS_DIRNAME).is_dir():
        return
    inner = sorted(p.name for p in path.iterdir() if (p / MANIFEST).is_file())
    hint = (
        f"; it holds the suite folders {', '.join(inner)}: pass e.g. {path / inner[0]}"
        if inner
        else ""
    )
    raise RlbenchError(
        f"{path} is not a suite's results folder (it has no {MANIFEST} and no "
        f"{records.RUNS_DIRNAME}/ folder){hint}"
    )


def collect(
    results_dirs: Sequence[Path | str],
    *,
    catalogue: Catalogue | None = None,
    seed: int = stats.DEFAULT_SEED,
    n_resamples: int = stats.DEFAULT_RESAMPLES,
) -> ReportData:
    """Load one or more results folders and compute every table of the report. Raises
    :class:`~rlbench.errors.RlbenchError` for a folder that is not a suite's results folder
    or holds no run. Returns a :class:`ReportData`."""
    folders = list(dict.fromkeys(Path(p) for p in results_dirs))
    if not folders:
        raise RlbenchError("no results folder given")
    for folder in folders:
        _check_folder(folder)
    runs = load_run_table(folders)
    if runs.empty:
        raise RlbenchError(f"no runs found in {', '.join(map(str, folders))}")
    if catalogue is None:
        from rlbench.plugins import load_catalogue

        catalogue = load_catalogue()
    references = reference_table(runs["env"], catalogue)
    sources = {
        env: (
            f"declared by plugin {catalogue.environments[env].plugin.name}"
            if ref is not None and env in catalogue.environments
            else "declared"
            if ref is not None
            else "none declared"
        )
        for env, ref in references.items()
    }
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


def write_report(
    results_dirs: Sequence[Path | str],
    out_dir: Path | None = None,
    *,
    catalogue: Catalogue | None = None,
    seed: int = stats.DEFAULT_SEED,
    n_resamples: int = stats.DEFAULT_RESAMPLES,
) -> Path:
    """Write the report of one or more suite results folders: tables (CSV), figures (PNG and
    SVG), ``report.md`` and ``report.html``, into ``out_dir`` (default: the first folder's
    ``report/``). Reference scores come from ``catalogue`` (default: the installed
    plugins). Raises :class:`~rlbench.errors.RlbenchError` for a folder without runs.
    Returns the path of ``report.md``."""
    data = collect(results_dirs, catalogue=catalogue, seed=seed, n_resamples=n_resamples)
    out = Path(out_dir) if out_dir is not None else data.folders[0] / REPORT_DIRNAME
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
    records.atomic_write_text(out / REPORT_HTML, markdown_to_html(markdown, out, _title(data)))
    return out / REPORT_MD


# ---------------------------------------------------------------- tables and figures


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
    episodes = _distinct(data.tidy["episodes"]) if "episodes" in data.tidy else ""
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
            _no_aggregate_reason(data),
            lambda: fg.aggregate_figure(data.aggregate.table, palette, agent=agent),
        ),
        "performance_profile": (
            _no_aggregate_reason(data),
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


def _no_aggregate_reason(data: ReportData) -> str:
    if data.finals.empty:
        return "no run completed"
    if not data.aggregate.envs:
        return "no environment with complete runs declares reference scores"
    if data.aggregate.table.empty:
        return "no agent has complete runs on every environment with reference scores"
    return ""


# ---------------------------------------------------------------- formatting


def _escape(text: Any) -> str:
    """Text safe inside a Markdown table cell or paragraph."""
    value = " ".join(str(text).split())
    return re.sub(r"([\\`*\[\]<>|])", r"\\\1", value)


def _num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or pd.isna(value):
        return "—"
    return f"{value:,.{digits}f}"


def _ci(value: Any, low: Any, high: Any, digits: int = 1) -> str:
    if pd.isna(value):
        return "—"
    if pd.isna(low):
        return f"{_num(value, digits)} (no CI: 1 run)"
    return f"{_num(value, digits)} [{_num(low, digits)}, {_num(high, digits)}]"


def _fraction(share: Any, n: int) -> str:
    """A share of ``n`` runs as "k/n"."""
    return "—" if pd.isna(share) else f"{round(share * n)}/{n}"


def _steps(value: Any) -> str:
    return "—" if pd.isna(value) else f"{int(value):,}"


def _md_table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None
) -> str:
    """A Markdown table; ``align`` has one character per column: l or r."""
    align = align or "l" * len(header)
    lines = [
        "| " + " | ".join(_escape(h) for h in header) + " |",
        "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _distinct(values: Iterable[Any]) -> str:
    seen = [v for v in dict.fromkeys(values) if v is not None and not pd.isna(v) and v != ""]
    return ", ".join(f"{v:,}" if isinstance(v, (int, np.integer)) else str(v) for v in seen)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _title(data: ReportData) -> str:
    suites = list(dict.fromkeys(data.runs["suite"]))
    return "rlbench report: " + " + ".join(map(str, suites))


# ---------------------------------------------------------------- report.md


def render_markdown(data: ReportData, figures: Mapping[str, str], out_dir: Path) -> str:
    """The text of report.md: every section of :data:`SECTIONS` in order. ``figures`` maps
    each figure name to why it was not made ("" when it was). Returns Markdown."""
    parts = [f"# {_escape(_title(data))}", ""]
    parts += _section_what_was_run(data, out_dir)
    parts += _section_summary(data)
    parts += _section_not_complete(data)
    parts += _section_final_scores(data, figures)
    parts += _section_learning_curves(data, figures)
    parts += _section_aggregate(data, figures)
    parts += _section_profile(data, figures)
    parts += _section_poi(data)
    parts += _section_speed(data, figures)
    parts += _section_method(data)
    return "\n".join(parts).rstrip() + "\n"


def _figure_md(name: str, title: str, caption: str, figures: Mapping[str, str]) -> list[str]:
    why_not = figures.get(name, "not made")
    if why_not:
        return [f"*No {title.lower()} figure: {why_not}.*", ""]
    path = f"{FIGURES_DIRNAME}/{name}"
    return [f"![{title}]({path}.png)", "", f"*{caption}* ([SVG]({path}.svg))", ""]


def _folder_info(folder: Path, runs: pd.DataFrame) -> list[tuple[str, str]]:
    manifest = records.read_json(folder / MANIFEST) or {}
    try:
        suite_file = tomllib.loads((folder / "suite.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        suite_file = {}
    configs = [records.read_json(Path(p) / records.CONFIG) for p in runs["path"]]
    configs = [c for c in configs if isinstance(c, dict)]
    provs = [records.read_json(Path(p) / records.PROVENANCE) for p in runs["path"]]
    provs = [p for p in provs if isinstance(p, dict)]
    rows: list[tuple[str, str]] = [("results folder", f"`{folder}`")]
    if manifest.get("source_path"):
        rows.append(("suite file", f"`{manifest['source_path']}` (copy in `suite.toml`)"))
    if suite_file.get("description"):
        rows.append(("description", _escape(suite_file["description"])))
    agents = []
    for entry in suite_file.get("agents", []):
        label = entry.get("label") or entry.get("name")
        extra = []
        if entry.get("label"):
            extra.append(f"agent {entry['name']}")
        if entry.get("config"):
            extra.append("config " + ", ".join(f"{k}={v}" for k, v in entry["config"].items()))
        if entry.get("network"):
            extra.append("network " + ", ".join(f"{k}={v}" for k, v in entry["network"].items()))
        agents.append(_escape(label) + (f" ({_escape('; '.join(extra))})" if extra else ""))
    if not agents:
        agents = [_escape(a) for a in dict.fromkeys(runs["label"])]
    rows.append(
        (
            "agents",
            ", ".join(agents) + " (other hyperparameters: each agent's "
            "defaults, recorded in every run's config.json)",
        )
    )
    rows.append(("environments", _escape(_distinct(runs["env"]))))
    rows.append(("seeds", _distinct(sorted(int(s) for s in runs["seed"] if pd.notna(s)))))
    names = {}
    for p in provs:
        names.setdefault(p.get("device"), p.get("device_name"))
    rows.append(
        (
            "devices",
            ", ".join(
                f"{d} ({names[d]})" if names.get(d) else str(d)
                for d in dict.fromkeys(runs["device"])
            ),
        )
    )
    if configs:
        rows.append(
            (
                "budget",
                "{} environment steps per run; evaluation every {} steps "
                "(and at the start and end), {} greedy episodes each".format(
                    _distinct(c.get("steps") for c in configs),
                    _distinct(c.get("eval_interval") for c in configs),
                    _distinct(c.get("eval_episodes") for c in configs),
                ),
            )
        )
    counts = runs["status"].value_counts()
    rows.append(("runs", f"{len(runs)}: " + ", ".join(f"{n} {s}" for s, n in counts.items())))
    if provs:
        versions = ", ".join(
            f"{key} {_distinct(p.get(key) for p in provs)}"
            for key in ("rlbench", "python", "torch", "gymnasium", "numpy")
            if any(p.get(key) for p in provs)
        )
        rows.append(("versions", versions))
        plugins = {f"{k} {v}" for p in provs for k, v in (p.get("plugins") or {}).items()}
        if plugins:
            rows.append(("plugins", _escape(", ".join(sorted(plugins)))))
        gits = {
            (g.get("commit", "")[:10], bool(g.get("dirty")))
            for p in provs
            if isinstance(g := p.get("git"), dict)
        }
        if gits:
            rows.append(
                (
                    "code revision",
                    ", ".join(
                        f"git {c}" + (" with uncommitted changes" if d else "")
                        for c, d in sorted(gits)
                    ),
                )
            )
        rows.append(
            (
                "machine",
                _escape(
                    _distinct(
                        f"{p.get('hostname', '?')}: {p.get('platform', '?')}, "
                        f"{p.get('cpu_count', '?')} CPUs, {p.get('torch_threads', '?')} torch "
                        "threads"
                        for p in provs
                    )
                ),
            )
        )
        started = sorted(str(p["started_at"]) for p in provs if p.get("started_at"))
        if started:
            rows.append(
                (
                    "started",
                    started[0]
                    if len(started) == 1 or started[0] == started[-1]
                    else f"{started[0]} to {started[-1]}",
                )
            )
    return rows


def _section_what_was_run(data: ReportData, out_dir: Path) -> list[str]:
    lines = ["## What was run", ""]
    if len(data.folders) > 1:
        lines += [
            f"This report compares {len(data.folders)} results folders. An agent label "
            "that appears in more than one of them is suffixed with ` @ <folder>`.",
            "",
        ]
    for folder in data.folders:
        mine = data.runs[data.runs["results_dir"] == str(folder)]
        suite = _distinct(mine["suite"]) or folder.name
        lines += [f"### Suite {_escape(suite)}", ""]
        lines += [_md_table(["", ""], _folder_info(folder, mine)), ""]
    lines += [
        f"Tables (CSV) are in `{TABLES_DIRNAME}/`, figures (PNG and SVG) in "
        f"`{FIGURES_DIRNAME}/`, beside this file.",
        "",
    ]
    return lines


def _section_summary(data: ReportData) -> list[str]:
    runs, scores, poi = data.runs, data.scores, data.poi
    lines = ["## Summary", ""]
    complete = int((runs["status"] == records.COMPLETE).sum())
    envs = list(dict.fromkeys(runs["env"]))
    bullets = [
        f"{_plural(len(data.agents), 'agent')} on {_plural(len(envs), 'environment')}: "
        f"{_plural(len(runs), 'run')}, {complete} complete."
    ]
    not_complete = runs[runs["status"] != records.COMPLETE]
    if not not_complete.empty:
        counts = ", ".join(f"{n} {s}" for s, n in not_complete["status"].value_counts().items())
        bullets.append(
            f"**{_plural(len(not_complete), 'run')} did not complete** ({counts}): "
            "listed under *Runs that did not complete* and left out of every "
            "statistic below."
        )
    for (a, b), rows in poi.groupby(["agent_a", "agent_b"], sort=False):
        bullets.append(_pair_sentence(str(a), str(b), rows))
    if len(data.agents) < 2:
        bullets.append("Only one agent: nothing to compare.")
    for env in envs:
        ref = data.references.get(env)
        if ref is None:
            bullets.append(
                f"{_escape(env)} declares no reference scores: its scores are not "
                "normalized, it has no success rate and it is left out of the "
                "aggregate."
            )
            continue
        rows = scores[(scores["env"] == env) & (scores["n"] > 0)]
        solved = [
            f"{_escape(r.agent_key)} in {round(r.success_rate * r.n)}/{r.n} runs"
            for r in rows.itertuples(index=False)
            if r.success_rate > 0
        ]
        never = [_escape(r.agent_key) for r in rows.itertuples(index=False) if r.success_rate == 0]
        if solved:
            bullets.append(
                f"{_escape(env)} solved (final return ≥ {_num(ref.solved)}) by "
                + ", ".join(solved)
                + "."
            )
        if never:
            bullets.append(
                f"No run of {', '.join(never)} ended at or above {_escape(env)}'s "
                f"solved threshold ({_num(ref.solved)})."
            )
    for name, why in data.aggregate.left_out_agents.items():
        bullets.append(f"{_escape(name)} is left out of the aggregate: {_escape(why)}.")
    lines += [f"- {b}" for b in bullets]
    lines += [
        "",
        "Differences are claimed only where the 95% confidence interval of the "
        "probability of improvement excludes 0.5; a higher point estimate alone is "
        "not a result.",
        "",
    ]
    return lines


def _pair_sentence(a: str, b: str, rows: pd.DataFrame) -> str:
    """What the probability of improvement supports for one pair, over every scope (all
    environments, each environment): who beats whom where, where nothing is claimed."""

    def where(env: str, n_envs: int) -> str:
        return f"over all {n_envs} environments" if env == stats.ALL_ENVS else f"on {_escape(env)}"

    parts = []
    for winner, loser, verdict in ((a, b, "a better"), (b, a, "b better")):
        won = rows[rows["verdict"] == verdict]
        if won.empty:
            continue
        scopes = []
        for r in won.itertuples(index=False):
            p, low, high = (
                (r.poi, r.ci_low, r.ci_high)
                if winner == a
                else (1 - r.poi, 1 - r.ci_high, 1 - r.ci_low)
            )
            interval = f"[{low:.2f}, {high:.2f}]"
            value = (
                f"P({_escape(winner)} > {_escape(loser)}) = {p:.2f}, 95% CI {interval}"
                if not scopes
                else f"{p:.2f} {interval}"
            )  # in full the first time
            scopes.append(f"{where(r.env, r.n_envs)} ({value})")
        parts.append(f"**{_escape(winner)} beats {_escape(loser)}** " + ", ".join(scopes))
    undecided = rows[rows["verdict"] == "no conclusion"]
    if not undecided.empty:
        parts.append(
            f"no difference between {_escape(a)} and {_escape(b)} is claimed "
            + ", ".join(
                f"{where(r.env, r.n_envs)} (95% CI of P({_escape(a)} > {_escape(b)}) "
                f"[{r.ci_low:.2f}, {r.ci_high:.2f}] includes 0.5)"
                for r in undecided.itertuples(index=False)
            )
        )
    few = rows[rows["verdict"] == "too few runs"]
    if not few.empty:
        parts.append(
            f"nothing is claimed about {_escape(a)} vs {_escape(b)} "
            + ", ".join(f"{where(r.env, r.n_envs)}" for r in few.itertuples(index=False))
            + f": fewer than {stats.MIN_RUNS_FOR_CLAIM} complete runs of one of them"
        )
    first = rows.iloc[0]
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + f" ({first.n_a} and {first.n_b} runs)."


def _section_not_complete(data: ReportData) -> list[str]:
    lines = ["## Runs that did not complete", ""]
    bad = data.runs[data.runs["status"] != records.COMPLETE]
    if bad.empty:
        return [*lines, f"All {len(data.runs)} runs completed.", ""]
    meaning = {
        records.FAILED: "raised an error (or its worker died); `error.txt` in its folder has "
        "the traceback",
        records.SKIPPED: "could not start here (e.g. its device is missing)",
        records.RUNNING: "was interrupted (its status still says running)",
        NOT_STARTED: "is listed in suite.json but was never started",
    }
    lines += [
        _md_table(
            ["run", "agent", "environment", "seed", "device", "status", "reason"],
            [
                [
                    f"`{r.run_id}`",
                    _escape(r.agent_key),
                    _escape(r.env),
                    _num(r.seed, 0),
                    _escape(r.device),
                    f"**{_escape(r.status)}**",
                    _escape(str(r.error)[:300]),
                ]
                for r in bad.itertuples(index=False)
            ],
        ),
        "",
    ]
    lines += [
        "Status: "
        + "; ".join(
            f"*{s}*: {meaning.get(s, 'not complete')}" for s in dict.fromkeys(bad["status"])
        )
        + ". These runs are in no statistic or figure; rerunning the suite with "
        "`rlbench run` redoes them.",
        "",
    ]
    return lines


def _score_rows(data: ReportData) -> tuple[list[str], list[list[str]], str]:
    speed_cols = [c for c in data.scores.columns if c.startswith("steps_per_s[")]
    header = [
        "agent",
        "environment",
        "n",
        "mean ± std",
        "median",
        "IQM [95% CI]",
        "success",
        "reached solved",
        "steps to solved",
        *[f"steps/s ({c[12:-1]})" for c in speed_cols],
        "not complete",
    ]
    rows = []
    for r in data.scores.to_dict("records"):
        n = int(r["n"])
        rows.append(
            [
                _escape(r["agent_key"]),
                _escape(r["env"]),
                str(n),
                "—" if n == 0 else f"{_num(r['mean'])} ± {_num(r['std'])}",
                _num(r["median"]),
                _ci(r["iqm"], r["ci_low"], r["ci_high"]),
                _fraction(r["success_rate"], n),
                _fraction(r["reached_solved"], n),
                _steps(r["steps_to_solved"]),
                *[_num(r[c], 0) for c in speed_cols],
                str(int(r.get("not_complete") or 0)),
            ]
        )
    return header, rows, "llr" + "r" * (len(header) - 3)


def _section_final_scores(data: ReportData, figures: Mapping[str, str]) -> list[str]:
    lines = ["## Final scores", ""]
    header, rows, align = _score_rows(data)
    lines += [_md_table(header, rows, align), ""]
    lines += [
        "Per agent and environment, over the complete runs: the final score is the mean "
        "return of the last evaluation's greedy episodes. *n*: complete runs; *IQM*: "
        "interquartile mean with its 95% bootstrap CI; *success*: runs whose final score is "
        "at or above the solved threshold; *reached solved*: runs that reached it at any "
        "evaluation; *steps to solved*: median environment steps to the first evaluation "
        "at or above it (— when fewer than half the runs got there); *steps/s*: training "
        "environment steps per second on that device (evaluation time excluded). "
        f"Table: `{TABLES_DIRNAME}/{TABLE_FILES['scores']}`.",
        "",
    ]
    lines += _figure_md(
        "final_scores",
        "Final scores",
        "Final evaluation return of every complete run (dots) per agent and environment, "
        "with the quartiles as a box. Dotted line: random policy; dashed: solved threshold.",
        figures,
    )
    return lines


def _section_learning_curves(data: ReportData, figures: Mapping[str, str]) -> list[str]:
    return [
        "## Learning curves",
        "",
        *_figure_md(
            "learning_curves",
            "Learning curves",
            "Evaluation return against environment steps: the line is the IQM over runs of "
            "each evaluation's mean return, the band its 95% bootstrap CI. Dotted line: random "
            "policy; dashed: solved threshold.",
            figures,
        ),
        f"Values: `{TABLES_DIRNAME}/{TABLE_FILES['learning_curves']}`.",
        "",
    ]


def _section_aggregate(data: ReportData, figures: Mapping[str, str]) -> list[str]:
    agg = data.aggregate
    lines = ["## Aggregate over environments", ""]
    lines += [
        "Scores are normalized with the bounds each environment declares, never with "
        "the minimum and maximum of the data: normalized = (return − random) / "
        "(solved − random), so 0 is a uniformly random policy and 1 the solved "
        "threshold.",
        "",
    ]
    lines += [
        _md_table(
            ["environment", "random", "solved", "source"],
            [
                [
                    _escape(env),
                    _num(ref.random) if ref else "—",
                    _num(ref.solved) if ref else "—",
                    _escape(data.reference_sources[env]),
                ]
                for env, ref in data.references.items()
            ],
            "lrrl",
        ),
        "",
    ]
    for env, why in agg.left_out_envs.items():
        lines += [f"{_escape(env)} is left out of the aggregate: {_escape(why)}.", ""]
    for name, why in agg.left_out_agents.items():
        lines += [f"{_escape(name)} is left out of the aggregate: {_escape(why)}.", ""]
    why_not = _no_aggregate_reason(data)
    if why_not:
        return [*lines, f"*No aggregate: {why_not}.*", ""]
    table = agg.table
    header = ["agent", *[stats.METRIC_TITLES[m] for m in stats.AGGREGATE_METRICS], "runs"]
    rows = []
    for name in dict.fromkeys(table["agent_key"]):
        mine = table[table["agent_key"] == name].set_index("metric")
        rows.append(
            [
                _escape(name),
                *[
                    _ci(mine.loc[m, "value"], mine.loc[m, "ci_low"], mine.loc[m, "ci_high"], 3)
                    for m in stats.AGGREGATE_METRICS
                ],
                str(int(mine["n_runs"].iloc[0])),
            ]
        )
    lines += [
        f"Over {_plural(len(agg.envs), 'environment')} ({_escape(', '.join(agg.envs))}),"
        " normalized final scores, point estimate and [95% stratified-bootstrap CI]. "
        "Higher is better, except the optimality gap (how far below 1, on average, "
        "runs fall; scores above 1 count as 1).",
        "",
        _md_table(header, rows, "l" + "r" * (len(header) - 1)),
        "",
    ]
    lines += _figure_md(
        "aggregate",
        "Aggregate metrics",
        "Aggregate normalized scores per agent: tick, point estimate; bar, 95% "
        "stratified-bootstrap CI. Bars that do not overlap suggest a difference; the "
        "probability of improvement below tests it.",
        figures,
    )
    lines += [f"Table: `{TABLES_DIRNAME}/{TABLE_FILES['aggregate']}`.", ""]
    return lines


def _section_profile(data: ReportData, figures: Mapping[str, str]) -> list[str]:
    lines = ["## Performance profile", ""]
    lines += _figure_md(
        "performance_profile",
        "Performance profile",
        "For each normalized score τ, the fraction of runs (averaged over environments) "
        "that score above τ, with its 95% CI band. A curve above another at every τ "
        "dominates it; the area under a curve is the mean normalized score.",
        figures,
    )
    if not _no_aggregate_reason(data):
        lines += [f"Values: `{TABLES_DIRNAME}/{TABLE_FILES['performance_profile']}`.", ""]
    return lines


def _section_poi(data: ReportData) -> list[str]:
    lines = ["## Probability of improvement", ""]
    if data.poi.empty:
        return [*lines, "*No pair of agents with complete runs on a common environment.*", ""]
    verdicts = {
        "a better": "A better",
        "b better": "B better",
        "no conclusion": "no conclusion (CI includes 0.5)",
        "too few runs": f"too few runs (< {stats.MIN_RUNS_FOR_CLAIM})",
    }
    lines += [
        _md_table(
            ["A", "B", "environment", "P(A > B) [95% CI]", "runs A / B", "verdict"],
            [
                [
                    _escape(r.agent_a),
                    _escape(r.agent_b),
                    _escape(r.env if r.env != stats.ALL_ENVS else f"all ({r.n_envs})"),
                    _ci(r.poi, r.ci_low, r.ci_high, 2),
                    f"{r.n_a} / {r.n_b}",
                    verdicts.get(r.verdict, r.verdict),
                ]
                for r in data.poi.itertuples(index=False)
            ],
            "lllrrl",
        ),
        "",
    ]
    lines += [
        "P(A > B) is the probability that a run of A ends with a higher final return "
        "than a run of B on the same environment (ties count one half), averaged over "
        "environments; 0.5 means no difference, and P(B > A) = 1 − P(A > B). It needs "
        "no normalization. The verdict names a better agent only when the whole CI is "
        f"on one side of 0.5 and each agent has at least {stats.MIN_RUNS_FOR_CLAIM} "
        "runs on each environment involved. Table: "
        f"`{TABLES_DIRNAME}/{TABLE_FILES['probability_of_improvement']}`.",
        "",
    ]
    return lines


def _section_speed(data: ReportData, figures: Mapping[str, str]) -> list[str]:
    lines = ["## Training speed", ""]
    if data.speed.empty:
        return [*lines, "*No run completed.*", ""]
    lines += [
        _md_table(
            ["agent", "environment", "device", "device name", "env steps/s (mean ± std)", "n"],
            [
                [
                    _escape(r.agent_key),
                    _escape(r.env),
                    _escape(r.device),
                    _escape(r.device_name),
                    f"{_num(r.steps_per_s_mean, 0)} ± {_num(r.steps_per_s_std, 0)}",
                    str(r.n),
                ]
                for r in data.speed.itertuples(index=False)
            ],
            "llllrr",
        ),
        "",
    ]
    lines += _figure_md(
        "throughput",
        "Training speed",
        "Training speed per device: environment steps per second while training "
        "(evaluation excluded), bar = mean over runs, error bar = standard deviation, dots "
        "= runs. Runs executed in parallel share the machine, so compare speeds measured "
        "with the same number of jobs.",
        figures,
    )
    lines += [f"Table: `{TABLES_DIRNAME}/{TABLE_FILES['throughput']}`.", ""]
    return lines


def _section_method(data: ReportData) -> list[str]:
    items = [
        "Final score of a run: the mean return of the greedy evaluation episodes at its "
        "last evaluation (after the whole training budget). Only complete runs count.",
        "IQM (interquartile mean): the mean of the middle 50% of scores "
        "(scipy.stats.trim_mean, 25% cut at each end; with fewer than 4 runs nothing is "
        "cut, so it is the mean). Robust to an outlying run, more efficient than the median.",
        f"Confidence intervals: 95% percentile bootstrap with {data.n_resamples:,} resamples "
        f"(learning curves: {stats.CURVE_RESAMPLES:,}), random seed {data.seed}, so the same "
        "results give the same intervals. Stratified: each environment's runs (and each "
        "agent's) are resampled separately (scipy.stats.bootstrap with paired=False). With "
        "one run there is no interval; with few runs intervals are too narrow, which is why "
        f"no comparison is claimed below {stats.MIN_RUNS_FOR_CLAIM} runs.",
        "Normalized score: (return − random) / (solved − random) with the environment's "
        "declared ReferenceScores; environments without them are not aggregated.",
        "Aggregate metrics (after Agarwal et al., NeurIPS 2021, and rliable): median and "
        "mean of the per-environment mean normalized scores, IQM of all runs' normalized "
        "scores pooled, optimality gap = 1 − mean of min(score, 1).",
        "Probability of improvement: the Mann–Whitney U statistic divided by n_A·n_B per "
        "environment, averaged over environments.",
        "Performance profile: the fraction of runs with normalized score above τ "
        "(per environment, then averaged).",
        "Training speed: environment steps divided by training wall time, evaluation "
        "excluded (status.json's steps_per_second). Seeds trained together as lanes share "
        "their group's training time, so a run's speed is its share: the group's throughput "
        "is lanes × that (the runs table's lanes column).",
    ]
    return ["## How the numbers are computed", "", *[f"- {i}" for i in items], ""]


# ---------------------------------------------------------------- report.html

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; line-height: 1.5; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; vertical-align: top; }
th { background: #f3f3f3; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; height: auto; }
code { background: #f3f3f3; padding: 0 0.2em; border-radius: 3px; font-size: 0.9em; }
h1, h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
"""


def markdown_to_html(markdown: str, base_dir: Path, title: str) -> str:
    """report.md as a standalone HTML page: the same text, rendered with markdown-it-py
    (raw HTML disabled), with every image under ``base_dir`` embedded as a data URI.
    Returns the HTML."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)

    def embed(match: re.Match[str]) -> str:
        src = html.unescape(match.group(1))
        path = base_dir / src
        if src.endswith(".png") and path.is_file():
            encoded = base64.b64encode(path.read_bytes()).decode("ascii")
            return f'src="data:image/png;base64,{encoded}"'
        return match.group(0)

    body = re.sub(r'src="([^"]+)"', embed, body)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"{body}</body>\n</html>\n"
    )


# ---------------------------------------------------------------- terminal


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
        title="Final evaluation return (IQM over runs, 95% bootstrap CI)",
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
    for r in scores.to_dict("records"):
        n = int(r["n"])
        mean = [] if compact else ["—" if n == 0 else f"{_num(r['mean'])} ± {_num(r['std'])}"]
        table.add_row(
            str(r["agent_key"]),
            str(r["env"]),
            str(n),
            _ci(r["iqm"], r["ci_low"], r["ci_high"]),
            *mean,
            _fraction(r["success_rate"], n),
            *([] if compact else [_steps(r["steps_to_solved"])]),
            *[_num(r[c], 0) for c in speed_cols],
            str(int(r["not_complete"])) if r.get("not_complete") else "",
        )
    return table
