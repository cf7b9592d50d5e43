"""The text of ``report.md``: :func:`render_markdown` puts the sections in order; the
overview sections are in :mod:`rlbench.report.overview`, the statistics' sections here."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from rlbench import stats
from rlbench.report import formatting as fmt
from rlbench.report import overview
from rlbench.report.collection import ReportData, no_aggregate_reason, report_title
from rlbench.report.files import FIGURES_DIRNAME, TABLE_FILES, TABLES_DIRNAME


def render_markdown(data: ReportData, figures: Mapping[str, str], out_dir: Path) -> str:
    """The text of report.md: every section of :data:`SECTIONS` in order. ``figures`` maps
    each figure name to why it was not made ("" when it was). Returns Markdown."""
    parts = [f"# {fmt.escape(report_title(data))}", ""]
    parts += overview.section_what_was_run(data, out_dir)
    parts += overview.section_summary(data)
    parts += overview.section_not_complete(data)
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
    decimals = fmt.decimals_by_env(data.scores, data.references)
    for r in data.scores.to_dict("records"):
        n = int(r["n"])
        d = decimals.get(r["env"], fmt.MIN_DECIMALS)
        rows.append(
            [
                fmt.escape(r["agent_key"]),
                fmt.escape(r["env"]),
                str(n),
                "—" if n == 0 else f"{fmt.num(r['mean'], d)} ± {fmt.num(r['std'], d)}",
                fmt.num(r["median"], d),
                fmt.ci(r["iqm"], r["ci_low"], r["ci_high"], d),
                fmt.fraction(r["success_rate"], n),
                fmt.fraction(r["reached_solved"], n),
                fmt.steps(r["steps_to_solved"]),
                *[fmt.num(r[c], 0) for c in speed_cols],
                str(int(r.get("not_complete") or 0)),
            ]
        )
    return header, rows, "llr" + "r" * (len(header) - 3)


def _section_final_scores(data: ReportData, figures: Mapping[str, str]) -> list[str]:
    lines = ["## Final scores", ""]
    header, rows, align = _score_rows(data)
    lines += [fmt.md_table(header, rows, align), ""]
    lines += [
        "Per agent and environment, over the complete runs: the final score is the mean "
        "return of the last evaluation's greedy episodes. *n*: complete runs; *IQM*: "
        "interquartile mean with its 95% bootstrap CI; *success*: runs whose final score is "
        "at or above the solved threshold; *reached solved*: runs that reached it at any "
        "evaluation; *steps to solved*: median environment steps to the first evaluation "
        "at or above it, runs that never got there counting as never (— unless more than "
        "half the runs got there: with 1 of 2, the median is never); *steps/s*: training "
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
        fmt.md_table(
            ["environment", "random", "solved", "source"],
            [
                [
                    fmt.escape(env),
                    fmt.exact(ref.random) if ref else "—",
                    fmt.exact(ref.solved) if ref else "—",
                    fmt.escape(data.reference_sources[env]),
                ]
                for env, ref in data.references.items()
            ],
            "lrrl",
        ),
        "",
    ]
    for env, why in agg.left_out_envs.items():
        lines += [f"{fmt.escape(env)} is left out of the aggregate: {fmt.escape(why)}.", ""]
    for name, why in agg.left_out_agents.items():
        lines += [f"{fmt.escape(name)} is left out of the aggregate: {fmt.escape(why)}.", ""]
    why_not = no_aggregate_reason(data)
    if why_not:
        return [*lines, f"*No aggregate: {why_not}.*", ""]
    table = agg.table
    header = ["agent", *[stats.METRIC_TITLES[m] for m in stats.AGGREGATE_METRICS], "runs"]
    rows = []
    for name in dict.fromkeys(table["agent_key"]):
        mine = table[table["agent_key"] == name].set_index("metric")
        rows.append(
            [
                fmt.escape(name),
                *[
                    fmt.ci(mine.loc[m, "value"], mine.loc[m, "ci_low"], mine.loc[m, "ci_high"], 3)
                    for m in stats.AGGREGATE_METRICS
                ],
                str(int(mine["n_runs"].iloc[0])),
            ]
        )
    lines += [
        f"Over {fmt.plural(len(agg.envs), 'environment')} ({fmt.escape(', '.join(agg.envs))}),"
        " normalized final scores, point estimate and [95% stratified-bootstrap CI]. "
        "Higher is better, except the optimality gap (how far below 1, on average, "
        "runs fall; scores above 1 count as 1).",
        "",
        fmt.md_table(header, rows, "l" + "r" * (len(header) - 1)),
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
    if not no_aggregate_reason(data):
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
        fmt.md_table(
            ["A", "B", "environment", "P(A > B) [95% CI]", "runs A / B", "verdict"],
            [
                [
                    fmt.escape(r.agent_a),
                    fmt.escape(r.agent_b),
                    fmt.escape(r.env if r.env != stats.ALL_ENVS else f"all ({r.n_envs})"),
                    fmt.ci(r.poi, r.ci_low, r.ci_high, 2),
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
        fmt.md_table(
            ["agent", "environment", "device", "device name", "env steps/s (mean ± std)", "n"],
            [
                [
                    fmt.escape(r.agent_key),
                    fmt.escape(r.env),
                    fmt.escape(r.device),
                    fmt.escape(r.device_name),
                    f"{fmt.num(r.steps_per_s_mean, 0)} ± {fmt.num(r.steps_per_s_std, 0)}",
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
