"""Statistics over the tidy results frame (:func:`rlbench.results.load_tidy`).

The methods are those of Agarwal et al., "Deep RL at the Edge of the Statistical Precipice"
(NeurIPS 2021): interquartile means (IQM), percentile stratified-bootstrap confidence
intervals, performance profiles and probability of improvement. The bootstrap is
``scipy.stats.bootstrap`` (``paired=False`` resamples each environment's runs on their own:
the stratified bootstrap), not rliable's: rliable 1.2.0's ``library`` module does not import
with arch 7.2 on pandas 3, fails with arch 8 (its ``random_state`` argument was removed), and
draws from numpy's global random state. With equal runs per environment the point estimates
equal ``rliable.metrics``' (the tests check this).

Every function takes a fixed ``seed``: the same frame gives the same intervals. A CI needs at
least two runs per environment; with fewer it is NaN.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats

from rlbench import records

CONFIDENCE = 0.95
DEFAULT_SEED = 0
DEFAULT_RESAMPLES = 10_000
CURVE_RESAMPLES = 2_000
#: Fewer complete runs than this per agent and environment and no comparison is claimed:
#: a percentile bootstrap over two runs is not a trustworthy interval.
MIN_RUNS_FOR_CLAIM = 3
AGGREGATE_METRICS = ("median", "iqm", "mean", "optimality_gap")
METRIC_TITLES = {
    "median": "Median",
    "iqm": "IQM",
    "mean": "Mean",
    "optimality_gap": "Optimality gap",
}
ALL_ENVS = "all environments"


# ---------------------------------------------------------------- basic estimators


def iqm(values: Any, axis: int | None = None) -> Any:
    """Interquartile mean: the mean of the middle 50% (``scipy.stats.trim_mean`` cutting
    25% at each end; with fewer than 4 values nothing is cut, so it is the mean). Returns a
    float, or an array along ``axis``."""
    return scipy.stats.trim_mean(np.asarray(values, dtype=float), 0.25, axis=axis)


def bootstrap_ci(
    samples: Sequence[Any],
    statistic: Callable[..., Any],
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile stratified-bootstrap interval of ``statistic(*samples, axis=-1)``: each
    sample (one environment's runs, one agent's runs) is resampled with replacement on its
    own. ``statistic`` must be vectorized (accept batches along leading axes) and may return
    several values. Returns ``(low, high)`` arrays (0-d for a scalar statistic), NaN when a
    sample has fewer than two values."""
    arrays = [np.asarray(s, dtype=float).ravel() for s in samples]
    if not arrays or any(len(a) < 2 for a in arrays):
        shape = (
            np.shape(statistic(*arrays, axis=-1)) if arrays and all(len(a) for a in arrays) else ()
        )
        nan = np.full(shape, np.nan)
        return nan, nan.copy()
    result = scipy.stats.bootstrap(
        arrays,
        statistic,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        paired=False,
        vectorized=True,
        axis=-1,
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return np.asarray(low, dtype=float), np.asarray(high, dtype=float)


def _iqm_stat(x: np.ndarray, axis: int = -1) -> Any:
    return iqm(x, axis=axis)


def aggregate_point(*tasks: Any, axis: int = -1) -> np.ndarray:
    """Median, IQM, mean and optimality gap (γ = 1) of normalized scores, one array of runs
    per environment. Median and mean are taken over the per-environment mean scores, IQM over
    all runs pooled, the optimality gap is ``1 - mean over environments of mean(min(s, 1))``
    (as ``rliable.metrics`` defines them). Returns the four values stacked on axis 0."""
    means = np.stack([np.mean(t, axis=axis) for t in tasks])
    pooled = np.concatenate(tasks, axis=axis)
    capped = np.stack([np.mean(np.minimum(t, 1.0), axis=axis) for t in tasks])
    return np.stack(
        [
            np.median(means, axis=0),
            iqm(pooled, axis=axis),
            np.mean(means, axis=0),
            1.0 - np.mean(capped, axis=0),
        ]
    )


def probability_of_improvement_point(x: Any, y: Any, axis: int = -1) -> Any:
    """P(X > Y) for one task: the chance that a random run of X scores above a random run
    of Y, ties counting one half (the Mann-Whitney U statistic over ``n_x * n_y``). Returns
    a float (an array for batched input)."""
    x = np.moveaxis(np.asarray(x, dtype=float), axis, -1)
    y = np.moveaxis(np.asarray(y, dtype=float), axis, -1)
    greater = x[..., :, None] > y[..., None, :]
    equal = x[..., :, None] == y[..., None, :]
    return np.mean(greater + 0.5 * equal, axis=(-2, -1))


def _poi_over_tasks(*pairs: np.ndarray, axis: int = -1) -> Any:
    values = [
        probability_of_improvement_point(pairs[i], pairs[i + 1], axis=axis)
        for i in range(0, len(pairs), 2)
    ]
    return np.mean(np.stack(values), axis=0)


# ---------------------------------------------------------------- per-run views


def agent_column(df: pd.DataFrame) -> str:
    """The column that names what is compared: ``agent_key`` (from :func:`load_tidy`), else
    ``label``. Returns the column name."""
    return "agent_key" if "agent_key" in df.columns else "label"


def agent_order(df: pd.DataFrame) -> list[str]:
    """The agents of ``df`` in order of first appearance (suite order). Returns a list."""
    if df.empty:
        return []
    return list(dict.fromkeys(df[agent_column(df)]))


def env_order(df: pd.DataFrame) -> list[str]:
    """The environments of ``df`` in order of first appearance. Returns a list."""
    return list(dict.fromkeys(df["env"])) if not df.empty else []


def _run_keys(df: pd.DataFrame) -> list[str]:
    return ["results_dir", "run_id"] if "results_dir" in df.columns else ["run_id"]


def final_scores(df: pd.DataFrame) -> pd.DataFrame:
    """One row per complete run: its last evaluation (``return_mean`` is the final score,
    ``normalized`` its normalized value) with the run's columns. Returns a DataFrame."""
    if df.empty:
        return df.copy()
    if "final" in df.columns:
        return df[df["final"]].reset_index(drop=True)
    last = df.groupby(_run_keys(df))["step"].transform("max")
    return df[df["step"] == last].reset_index(drop=True)


def steps_to_threshold(df: pd.DataFrame) -> pd.DataFrame:
    """Per complete run, the environment steps of the first evaluation whose mean return
    reached the environment's solved threshold (``ref_solved``); NaN when it never did or the
    environment has no threshold. Returns columns: agent, env, run keys, ``steps_to_solved``,
    ``reached``."""
    agent = agent_column(df)
    keys = _run_keys(df)
    rows = []
    for key, run in df.groupby(keys, sort=False):
        solved = run["ref_solved"].iloc[0] if "ref_solved" in run else np.nan
        hit = run[run["return_mean"] >= solved].sort_values("step") if pd.notna(solved) else []
        reached = len(hit) > 0
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        row.update(
            {
                agent: run[agent].iloc[0],
                "env": run["env"].iloc[0],
                "steps_to_solved": float(hit["step"].iloc[0]) if reached else np.nan,
                "reached": reached if pd.notna(solved) else np.nan,
            }
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, agent, "env", "steps_to_solved", "reached"])


# ---------------------------------------------------------------- tables


def score_table(
    df: pd.DataFrame,
    runs: pd.DataFrame | None = None,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """Per agent × environment, over the complete runs' final scores: ``n``, ``mean``,
    ``std`` (ddof 1), ``median``, ``iqm`` and its bootstrap CI (``ci_low``, ``ci_high``),
    ``success_rate`` (share of runs whose final score ≥ the solved threshold),
    ``reached_solved`` (share that reached it at any evaluation), ``steps_to_solved``
    (median steps to first reach it, runs that never did counting as never: NaN unless more
    than half did, as the median of 1 of 2 is never), the reference scores, and
    ``steps_per_s[<device>]`` (mean training env steps per second). With ``runs``
    (:func:`load_run_table`) groups whose runs all failed are kept and ``not_complete``
    counts the runs that did not complete. Returns a DataFrame."""
    agent = agent_column(df if not df.empty or runs is None else runs)
    finals = final_scores(df)
    reach = steps_to_threshold(df) if not df.empty else pd.DataFrame()
    pairs: list[tuple[str, str]] = []
    if runs is not None and not runs.empty:
        pairs = list(dict.fromkeys(zip(runs[agent], runs["env"], strict=True)))
    if not finals.empty:
        pairs += [
            p
            for p in dict.fromkeys(zip(finals[agent], finals["env"], strict=True))
            if p not in pairs
        ]
    devices = list(dict.fromkeys(finals["device"])) if not finals.empty else []
    rows = []
    for name, env in pairs:
        group = (
            finals[(finals[agent] == name) & (finals["env"] == env)] if not finals.empty else finals
        )
        scores = group["return_mean"].to_numpy(float) if not group.empty else np.array([])
        row: dict[str, Any] = {agent: name, "env": env, "n": len(scores)}
        low, high = (
            bootstrap_ci(
                [scores], _iqm_stat, confidence=confidence, n_resamples=n_resamples, seed=seed
            )
            if len(scores)
            else (np.nan, np.nan)
        )
        solved = group["ref_solved"].iloc[0] if len(scores) else np.nan
        row.update(
            {
                "mean": scores.mean() if len(scores) else np.nan,
                "std": scores.std(ddof=1) if len(scores) > 1 else (0.0 if len(scores) else np.nan),
                "median": np.median(scores) if len(scores) else np.nan,
                "iqm": iqm(scores) if len(scores) else np.nan,
                "ci_low": float(low),
                "ci_high": float(high),
                "success_rate": np.mean(scores >= solved)
                if len(scores) and pd.notna(solved)
                else np.nan,
            }
        )
        sub = reach[(reach[agent] == name) & (reach["env"] == env)] if len(scores) else reach
        if len(scores) and pd.notna(solved):
            steps = sub["steps_to_solved"].fillna(np.inf).to_numpy(float)
            median_steps = np.median(steps)
            row["reached_solved"] = float(np.mean(np.isfinite(steps)))
            row["steps_to_solved"] = median_steps if np.isfinite(median_steps) else np.nan
        else:
            row["reached_solved"] = row["steps_to_solved"] = np.nan
        row["ref_random"] = group["ref_random"].iloc[0] if len(scores) else np.nan
        row["ref_solved"] = solved
        if runs is not None and not runs.empty:
            mine = runs[(runs[agent] == name) & (runs["env"] == env)]
            row["not_complete"] = int((mine["status"] != records.COMPLETE).sum())
        for device in devices:
            speeds = group.loc[group["device"] == device, "steps_per_second"]
            row[f"steps_per_s[{device}]"] = speeds.mean() if len(speeds) else np.nan
        rows.append(row)
    columns = [
        agent,
        "env",
        "n",
        "mean",
        "std",
        "median",
        "iqm",
        "ci_low",
        "ci_high",
        "success_rate",
        "reached_solved",
        "steps_to_solved",
        "ref_random",
        "ref_solved",
    ]
    if runs is not None:
        columns.append("not_complete")
    columns += [f"steps_per_s[{d}]" for d in devices]
    return pd.DataFrame(rows, columns=columns)


def throughput(df: pd.DataFrame) -> pd.DataFrame:
    """Training speed per agent × environment × device over the complete runs: mean, std
    and n of ``steps_per_second`` (environment steps per second of training, evaluation time
    excluded) and the device's name. Returns a DataFrame."""
    agent = agent_column(df)
    columns = [agent, "env", "device", "device_name", "steps_per_s_mean", "steps_per_s_std", "n"]
    finals = final_scores(df)
    if finals.empty:
        return pd.DataFrame(columns=columns)
    if "device_name" not in finals.columns:
        finals = finals.assign(device_name="")
    grouped = finals.groupby([agent, "env", "device"], sort=False)
    table = grouped.agg(
        device_name=("device_name", lambda s: ", ".join(sorted({str(v) for v in s if v}))),
        steps_per_s_mean=("steps_per_second", "mean"),
        steps_per_s_std=("steps_per_second", lambda s: s.std(ddof=1) if len(s) > 1 else 0.0),
        n=("steps_per_second", "count"),
    ).reset_index()
    return table[columns]


@dataclass
class Aggregate:
    """Aggregate metrics over environments, on normalized scores.

    ``table``: one row per agent × metric (``median``, ``iqm``, ``mean``, ``optimality_gap``)
    with ``value``, ``ci_low``, ``ci_high``, ``n_envs`` and ``n_runs``. ``envs``: the
    environments aggregated over. ``left_out_envs`` / ``left_out_agents``: what was left out,
    with the reason."""

    table: pd.DataFrame
    envs: list[str]
    left_out_envs: dict[str, str] = field(default_factory=dict)
    left_out_agents: dict[str, str] = field(default_factory=dict)
    scores: dict[str, list[np.ndarray]] = field(default_factory=dict)


def _aggregate_inputs(df: pd.DataFrame) -> Aggregate:
    agent = agent_column(df)
    finals = final_scores(df)
    empty = pd.DataFrame(
        columns=[agent, "metric", "value", "ci_low", "ci_high", "n_envs", "n_runs"]
    )
    if finals.empty:
        return Aggregate(empty, [])
    left_envs = {
        env: "no reference scores declared (ReferenceScores)"
        for env in env_order(finals)
        if finals.loc[finals["env"] == env, "normalized"].isna().all()
    }
    envs = [e for e in env_order(finals) if e not in left_envs]
    scores: dict[str, list[np.ndarray]] = {}
    left_agents: dict[str, str] = {}
    for name in agent_order(finals):
        mine = finals[finals[agent] == name]
        missing = [e for e in envs if not (mine["env"] == e).any()]
        if missing:
            left_agents[name] = "no complete run on " + ", ".join(missing)
            continue
        scores[name] = [mine.loc[mine["env"] == e, "normalized"].to_numpy(float) for e in envs]
    return Aggregate(empty, envs, left_envs, left_agents, scores)


def aggregate_metrics(
    df: pd.DataFrame,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Aggregate:
    """Median, IQM, mean and optimality gap of the normalized final scores, over the
    environments that declare reference scores, each with a stratified-bootstrap CI.
    An agent enters only if it has complete runs on every such environment. Returns an
    :class:`Aggregate`."""
    result = _aggregate_inputs(df)
    if not result.envs or not result.scores:
        return result
    agent = agent_column(df)
    rows = []
    for name, tasks in result.scores.items():
        point = aggregate_point(*tasks)
        low, high = bootstrap_ci(
            tasks, aggregate_point, confidence=confidence, n_resamples=n_resamples, seed=seed
        )
        for i, metric in enumerate(AGGREGATE_METRICS):
            rows.append(
                {
                    agent: name,
                    "metric": metric,
                    "value": float(point[i]),
                    "ci_low": float(low[i]),
                    "ci_high": float(high[i]),
                    "n_envs": len(tasks),
                    "n_runs": int(sum(len(t) for t in tasks)),
                }
            )
    result.table = pd.DataFrame(rows, columns=result.table.columns)
    return result


def probability_of_improvement(
    df: pd.DataFrame,
    *,
    per_env: bool = True,
    confidence: float = CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    min_runs: int = MIN_RUNS_FOR_CLAIM,
) -> pd.DataFrame:
    """For each pair of agents (``agent_a``, ``agent_b``, in suite order): P(a > b), the
    probability that a run of a scores above a run of b on the same environment (averaged
    over environments), with its stratified-bootstrap CI. It uses raw final returns (it is
    scale-free, so no normalization is needed). One row per pair over all environments both
    have complete runs on (``env`` = "all environments"), and with ``per_env`` one row per
    pair × environment. ``verdict`` is "a better" / "b better" only when the CI excludes 0.5
    and every environment involved has at least ``min_runs`` runs of each agent; otherwise
    "no conclusion" or "too few runs". Returns a DataFrame."""
    agent = agent_column(df)
    columns = [
        "agent_a",
        "agent_b",
        "env",
        "n_envs",
        "poi",
        "ci_low",
        "ci_high",
        "n_a",
        "n_b",
        "verdict",
    ]
    finals = final_scores(df)
    if finals.empty:
        return pd.DataFrame(columns=columns)
    by = {
        (name, env): g["return_mean"].to_numpy(float)
        for (name, env), g in finals.groupby([agent, "env"], sort=False)
    }
    rows = []
    for a, b in itertools.combinations(agent_order(finals), 2):
        envs = [e for e in env_order(finals) if (a, e) in by and (b, e) in by]
        if not envs:
            continue
        scopes = [(ALL_ENVS, envs)]
        if per_env and len(envs) > 1:
            scopes += [(e, [e]) for e in envs]
        elif per_env:
            scopes = [(envs[0], envs)]
        for scope, scope_envs in scopes:
            samples = [arr for e in scope_envs for arr in (by[(a, e)], by[(b, e)])]
            point = float(_poi_over_tasks(*samples))
            low, high = bootstrap_ci(
                samples, _poi_over_tasks, confidence=confidence, n_resamples=n_resamples, seed=seed
            )
            n_a = min(len(by[(a, e)]) for e in scope_envs)
            n_b = min(len(by[(b, e)]) for e in scope_envs)
            rows.append(
                {
                    "agent_a": a,
                    "agent_b": b,
                    "env": scope,
                    "n_envs": len(scope_envs),
                    "poi": point,
                    "ci_low": float(low),
                    "ci_high": float(high),
                    "n_a": n_a,
                    "n_b": n_b,
                    "verdict": _verdict(float(low), float(high), min(n_a, n_b), min_runs),
                }
            )
    return pd.DataFrame(rows, columns=columns)


def _verdict(low: float, high: float, n: int, min_runs: int) -> str:
    if n < min_runs or np.isnan(low):
        return "too few runs"
    if low > 0.5:
        return "a better"
    if high < 0.5:
        return "b better"
    return "no conclusion"


def performance_profile(
    df: pd.DataFrame,
    taus: Sequence[float] | np.ndarray | None = None,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """Score distribution of normalized final scores: for each threshold τ, the fraction of
    runs scoring above τ (averaged over the environments of :func:`aggregate_metrics`), with
    a stratified-bootstrap CI band. ``taus`` defaults to 101 points from just below
    min(0, lowest score) to max(1.25, highest score). Returns columns: agent, ``tau``, ``fraction``,
    ``ci_low``, ``ci_high``."""
    inputs = _aggregate_inputs(df)
    agent = agent_column(df)
    columns = [agent, "tau", "fraction", "ci_low", "ci_high"]
    if not inputs.scores:
        return pd.DataFrame(columns=columns)
    if taus is None:
        every = np.concatenate([np.concatenate(t) for t in inputs.scores.values()])
        low, high = min(0.0, float(every.min())), max(1.25, float(every.max()))
        low -= 0.02 * (high - low)  # start below every score, where the profile is 1
        taus = np.linspace(low, high, 101)
    taus = np.asarray(taus, dtype=float)

    def profile(*tasks: np.ndarray, axis: int = -1) -> Any:
        fractions = [
            np.mean(np.expand_dims(t, -1) > taus, axis=axis - 1 if axis < 0 else axis)
            for t in tasks
        ]
        return np.moveaxis(np.mean(np.stack(fractions), axis=0), -1, 0)

    frames = []
    for name, tasks in inputs.scores.items():
        low, high = bootstrap_ci(
            tasks, profile, confidence=confidence, n_resamples=n_resamples, seed=seed
        )
        frames.append(
            pd.DataFrame(
                {
                    agent: name,
                    "tau": taus,
                    "fraction": profile(*tasks),
                    "ci_low": low,
                    "ci_high": high,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)[columns]


def learning_curves(
    df: pd.DataFrame,
    *,
    value: str = "return_mean",
    confidence: float = CONFIDENCE,
    n_resamples: int = CURVE_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """Per agent × environment × evaluation step, across runs: IQM and mean of ``value``
    (the evaluation's mean return by default; ``"normalized"`` works too) with a bootstrap
    CI of the IQM, and ``n`` runs. Returns a DataFrame sorted by step."""
    agent = agent_column(df)
    columns = [agent, "env", "step", "iqm", "mean", "ci_low", "ci_high", "n"]
    if df.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for (name, env, step), group in df.groupby([agent, "env", "step"], sort=False):
        values = group[value].to_numpy(float)
        low, high = bootstrap_ci(
            [values], _iqm_stat, confidence=confidence, n_resamples=n_resamples, seed=seed
        )
        rows.append(
            {
                agent: name,
                "env": env,
                "step": step,
                "iqm": iqm(values),
                "mean": values.mean(),
                "ci_low": float(low),
                "ci_high": float(high),
                "n": len(values),
            }
        )
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values([agent, "env", "step"], kind="stable", key=_suite_order(df))


def _suite_order(df: pd.DataFrame) -> Callable[[pd.Series], pd.Series]:
    agents = {name: i for i, name in enumerate(agent_order(df))}
    envs = {name: i for i, name in enumerate(env_order(df))}

    def key(column: pd.Series) -> pd.Series:
        if column.name == "env":
            return column.map(envs)
        if column.name == agent_column(df):
            return column.map(agents)
        return column

    return key
