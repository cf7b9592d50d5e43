"""The sections of ``report.md`` about what was run: the suites and their runs, the summary
of what the statistics support, and the runs that did not complete."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pandas as pd

from rlbench import bundle, records, stats
from rlbench.report import formatting as fmt
from rlbench.report.collection import ReportData
from rlbench.report.files import FIGURES_DIRNAME, TABLES_DIRNAME
from rlbench.results import NOT_STARTED


def _folder_info(folder: Path, runs: pd.DataFrame) -> list[tuple[str, str]]:
    manifest = records.SuiteManifest.read(folder)
    try:
        suite_file = tomllib.loads((folder / records.SUITE_SOURCE).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, not UTF-8 or not TOML: no description then
        suite_file = {}
    configs = [records.read_json(Path(p) / records.CONFIG) for p in runs["path"]]
    configs = [c for c in configs if isinstance(c, dict)]
    provs = [records.read_json(Path(p) / records.PROVENANCE) for p in runs["path"]]
    statuses = [records.read_json(Path(p) / records.STATUS) for p in runs["path"]]
    span = bundle.span(
        [
            {"provenance": _dict(prov), "status": _dict(status)}
            for prov, status in zip(provs, statuses, strict=True)
        ]
    )
    provs = [p for p in provs if isinstance(p, dict)]
    source = bundle.origin(folder)
    rows: list[tuple[str, str]] = (
        [("results folder", f"`{folder}`")]
        if source is None
        else [("results bundle", f"`{source}` (no weights: `rlbench evaluate` cannot replay it)")]
    )
    if manifest is not None and manifest.source_path:
        rows.append(("suite file", f"`{manifest.source_path}` (copy in `suite.toml`)"))
    if suite_file.get("description"):
        rows.append(("description", fmt.escape(suite_file["description"])))
    agents = []
    for entry in suite_file.get("agents", []):
        if not isinstance(entry, dict):
            continue
        label = entry.get("label") or entry.get("name")
        extra = []
        if entry.get("label"):
            extra.append(f"agent {entry.get('name')}")
        if entry.get("config"):
            extra.append("config " + ", ".join(f"{k}={v}" for k, v in entry["config"].items()))
        if entry.get("network"):
            extra.append("network " + ", ".join(f"{k}={v}" for k, v in entry["network"].items()))
        agents.append(fmt.escape(label) + (f" ({fmt.escape('; '.join(extra))})" if extra else ""))
    if not agents:
        agents = [fmt.escape(a) for a in dict.fromkeys(runs["label"])]
    rows.append(
        (
            "agents",
            ", ".join(agents) + " (other hyperparameters: each agent's "
            "defaults, recorded in every run's config.json)",
        )
    )
    rows.append(("environments", fmt.escape(fmt.distinct(runs["env"]))))
    rows.append(("seeds", fmt.distinct(sorted(int(s) for s in runs["seed"] if pd.notna(s)))))
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
                    fmt.distinct(c.get("steps") for c in configs),
                    fmt.distinct(c.get("eval_interval") for c in configs),
                    fmt.distinct(c.get("eval_episodes") for c in configs),
                ),
            )
        )
    counts = runs["status"].value_counts()
    rows.append(("runs", f"{len(runs)}: " + ", ".join(f"{n} {s}" for s, n in counts.items())))
    if manifest is not None and manifest.skipped:  # the suite's skip_incompatible
        rows.append(("skipped pairs", fmt.escape("; ".join(manifest.skipped))))
    if provs:
        versions = ", ".join(
            f"{key} {fmt.distinct(p.get(key) for p in provs)}"
            for key in ("rlbench", "python", "torch", "gymnasium", "numpy")
            if any(p.get(key) for p in provs)
        )
        rows.append(("versions", versions))
        plugins = {f"{k} {v}" for p in provs for k, v in (p.get("plugins") or {}).items()}
        if plugins:
            rows.append(("plugins", fmt.escape(", ".join(sorted(plugins)))))
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
                fmt.escape(
                    fmt.distinct(
                        f"{p.get('hostname', '?')}: {p.get('platform', '?')}, "
                        f"{p.get('cpu_count', '?')} CPUs, {p.get('torch_threads', '?')} torch "
                        "threads"
                        for p in provs
                    )
                ),
            )
        )
    if span:
        rows.append(
            (
                "ran",
                f"{span['started_at']} to {span['ended_at']}: "
                f"{_duration(span['wall_time_s'])} from the first run's start to the last "
                "run's end",
            )
        )
    return rows


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _duration(seconds: float) -> str:
    """``seconds`` as ``H:MM:SS``."""
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def section_what_was_run(data: ReportData, out_dir: Path) -> list[str]:
    lines = ["## What was run", ""]
    if len(data.folders) > 1:
        lines += [
            f"This report compares {len(data.folders)} results folders. An agent label "
            "that appears in more than one of them is suffixed with ` @ <folder>`.",
            "",
        ]
    for folder in data.folders:
        mine = data.runs[data.runs["results_dir"] == str(folder)]
        suite = fmt.distinct(mine["suite"]) or folder.name
        lines += [f"### Suite {fmt.escape(suite)}", ""]
        lines += [fmt.md_table(["", ""], _folder_info(folder, mine)), ""]
    lines += [
        f"Tables (CSV) are in `{TABLES_DIRNAME}/`, figures (PNG and SVG) in "
        f"`{FIGURES_DIRNAME}/`, beside this file.",
        "",
    ]
    return lines


def section_summary(data: ReportData) -> list[str]:
    runs, scores, poi = data.runs, data.scores, data.poi
    lines = ["## Summary", ""]
    complete = int((runs["status"] == records.COMPLETE).sum())
    envs = list(dict.fromkeys(runs["env"]))
    bullets = [
        f"{fmt.plural(len(data.agents), 'agent')} on {fmt.plural(len(envs), 'environment')}: "
        f"{fmt.plural(len(runs), 'run')}, {complete} complete."
    ]
    not_complete = runs[runs["status"] != records.COMPLETE]
    if not not_complete.empty:
        counts = ", ".join(f"{n} {s}" for s, n in not_complete["status"].value_counts().items())
        bullets.append(
            f"**{fmt.plural(len(not_complete), 'run')} did not complete** ({counts}): "
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
                f"{fmt.escape(env)} declares no reference scores: its scores are not "
                "normalized, it has no success rate and it is left out of the "
                "aggregate."
            )
            continue
        rows = scores[(scores["env"] == env) & (scores["n"] > 0)]
        solved = [
            f"{fmt.escape(r.agent_key)} in {round(r.success_rate * r.n)}/{r.n} runs"
            for r in rows.itertuples(index=False)
            if r.success_rate > 0
        ]
        never = [
            fmt.escape(r.agent_key) for r in rows.itertuples(index=False) if r.success_rate == 0
        ]
        if solved:
            bullets.append(
                f"{fmt.escape(env)} solved (final return ≥ {fmt.exact(ref.solved)}) by "
                + ", ".join(solved)
                + "."
            )
        if never:
            bullets.append(
                f"No run of {', '.join(never)} ended at or above {fmt.escape(env)}'s "
                f"solved threshold ({fmt.exact(ref.solved)})."
            )
    for name, why in data.aggregate.left_out_agents.items():
        bullets.append(f"{fmt.escape(name)} is left out of the aggregate: {fmt.escape(why)}.")
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
        if env == stats.ALL_ENVS:
            return f"over all {n_envs} environments"
        return f"on {fmt.escape(env)}"

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
                f"P({fmt.escape(winner)} > {fmt.escape(loser)}) = {p:.2f}, 95% CI {interval}"
                if not scopes
                else f"{p:.2f} {interval}"
            )  # in full the first time
            scopes.append(f"{where(r.env, r.n_envs)} ({value})")
        parts.append(f"**{fmt.escape(winner)} beats {fmt.escape(loser)}** " + ", ".join(scopes))
    undecided = rows[rows["verdict"] == "no conclusion"]
    if not undecided.empty:
        parts.append(
            f"no difference between {fmt.escape(a)} and {fmt.escape(b)} is claimed "
            + ", ".join(
                f"{where(r.env, r.n_envs)} (95% CI of P({fmt.escape(a)} > {fmt.escape(b)}) "
                f"[{r.ci_low:.2f}, {r.ci_high:.2f}] includes 0.5)"
                for r in undecided.itertuples(index=False)
            )
        )
    few = rows[rows["verdict"] == "too few runs"]
    if not few.empty:
        parts.append(
            f"nothing is claimed about {fmt.escape(a)} vs {fmt.escape(b)} "
            + ", ".join(f"{where(r.env, r.n_envs)}" for r in few.itertuples(index=False))
            + f": fewer than {stats.MIN_RUNS_FOR_CLAIM} complete runs of one of them"
        )
    first = rows.iloc[0]
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + f" ({first.n_a} and {first.n_b} runs)."


def section_not_complete(data: ReportData) -> list[str]:
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
        records.DAMAGED: "has a file that is missing or does not parse (the reason names it)",
    }
    lines += [
        fmt.md_table(
            ["run", "agent", "environment", "seed", "device", "status", "reason"],
            [
                [
                    f"`{r.run_id}`",
                    fmt.escape(r.agent_key),
                    fmt.escape(r.env),
                    fmt.num(r.seed, 0),
                    fmt.escape(r.device),
                    f"**{fmt.escape(r.status)}**",
                    fmt.escape(str(r.error)[:300]),
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
