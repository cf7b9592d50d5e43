"""Report figures: seaborn on matplotlib's Agg canvas, one colour per agent everywhere.

Figures are built as ``matplotlib.figure.Figure`` objects on an Agg canvas, never through
``pyplot``: nothing here changes the backend or global state of a notebook that imports it.
Each function takes the frames of :mod:`rlbench.stats` and a palette from
:func:`agent_palette`, and returns the figure; :func:`save_figure` writes PNG and SVG.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import MatplotlibDeprecationWarning, rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import EngFormatter

from rlbench import records
from rlbench.stats import METRIC_TITLES

Color = tuple[float, float, float]

PANEL_WIDTH = 4.6
PANEL_HEIGHT = 3.4
MAX_COLUMNS = 3
MIN_WIDTH = 7.0  # inches: room for the legend below a single panel
DPI = 150
RANDOM_STYLE = {"color": "0.45", "linestyle": ":", "linewidth": 1.3}
SOLVED_STYLE = {"color": "0.2", "linestyle": "--", "linewidth": 1.3}
_RC = {
    "svg.fonttype": "none",  # keep text as text in SVGs (smaller, searchable)
    "savefig.dpi": DPI,
    "axes.titleweight": "bold",
    "legend.frameon": False,
}


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """The look of every report figure (seaborn "whitegrid", "notebook" font sizes), applied
    only inside the ``with`` block. Yields nothing."""
    with (
        sns.axes_style("whitegrid"),
        sns.plotting_context("notebook", font_scale=0.95),
        rc_context(_RC),
    ):
        yield


def agent_palette(agents: Sequence[str]) -> dict[str, Color]:
    """One colour per agent, in the given order: seaborn's colour-blind-safe palette for up
    to 10 agents, evenly spaced hues beyond. Returns ``{agent: rgb}``."""
    names = list(dict.fromkeys(agents))
    colours = sns.color_palette("colorblind" if len(names) <= 10 else "husl", len(names))
    return {name: tuple(c) for name, c in zip(names, colours, strict=True)}


def _figure(
    panels: int,
    *,
    width: float = PANEL_WIDTH,
    height: float = PANEL_HEIGHT,
    columns: int | None = None,
    sharey: bool = False,
) -> tuple[Figure, list[Any]]:
    cols = columns or min(panels, MAX_COLUMNS)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(max(width * cols, MIN_WIDTH), height * rows + 0.7), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=sharey).ravel().tolist()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes[:panels]


def _agent_legend(
    fig: Figure,
    palette: Mapping[str, Color],
    agents: Sequence[str],
    extra: Sequence[Any] = (),
    *,
    patches: bool = False,
) -> None:
    handles = [
        Patch(color=palette[a], label=a)
        if patches
        else Line2D([], [], color=palette[a], linewidth=2.5, label=a)
        for a in agents
    ]
    handles += list(extra)
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5))


def _reference_lines(ax: Any, random: float, solved: float, *, horizontal: bool = True) -> None:
    line = ax.axhline if horizontal else ax.axvline
    if pd.notna(random):
        line(random, **RANDOM_STYLE, zorder=1)
    if pd.notna(solved):
        line(solved, **SOLVED_STYLE, zorder=1)


def _pad_to_include(ax: Any, values: Sequence[float], margin: float = 0.1) -> None:
    """Set the y limits to hold every finite value of ``values`` (scores and reference
    lines) with ``margin`` of the span on each side, so that no line sits on the frame."""
    finite = [float(v) for v in values if pd.notna(v) and np.isfinite(v)]
    if not finite:
        return
    low, high = min(finite), max(finite)
    pad = margin * (high - low) if high > low else max(abs(high) * margin, 1.0)
    ax.set_ylim(low - pad, high + pad)


def _reference_handles(has_random: bool, has_solved: bool) -> list[Line2D]:
    handles = []
    if has_random:
        handles.append(Line2D([], [], **RANDOM_STYLE, label="random policy"))
    if has_solved:
        handles.append(Line2D([], [], **SOLVED_STYLE, label="solved threshold"))
    return handles


def _references(frame: pd.DataFrame, env: str) -> tuple[float, float]:
    rows = frame[frame["env"] == env]
    if rows.empty or "ref_random" not in rows:
        return np.nan, np.nan
    return float(rows["ref_random"].iloc[0]), float(rows["ref_solved"].iloc[0])


def learning_curves_figure(
    curves: pd.DataFrame,
    palette: Mapping[str, Color],
    *,
    agent: str = "agent_key",
    references: pd.DataFrame | None = None,
    eval_episodes: str = "",
) -> Figure:
    """One panel per environment: each agent's IQM evaluation return across runs against
    environment steps, with its 95% bootstrap CI as a band, and the environment's random and
    solved scores as horizontal lines. ``curves`` is :func:`rlbench.stats.learning_curves`'s
    frame, ``references`` any frame with ``env``, ``ref_random``, ``ref_solved``. Returns
    the figure."""
    envs = list(dict.fromkeys(curves["env"]))
    agents = [a for a in palette if a in set(curves[agent])]
    refs = references if references is not None else pd.DataFrame()
    with figure_style():
        fig, axes = _figure(len(envs))
        any_random = any_solved = False
        for ax, env in zip(axes, envs, strict=True):
            for name in agents:
                c = curves[(curves["env"] == env) & (curves[agent] == name)]
                if c.empty:
                    continue
                ax.plot(
                    c["step"], c["iqm"], color=palette[name], linewidth=2, marker="o", markersize=3
                )
                ax.fill_between(
                    c["step"],
                    c["ci_low"],
                    c["ci_high"],
                    color=palette[name],
                    alpha=0.2,
                    linewidth=0,
                )
            random, solved = _references(refs, env) if not refs.empty else (np.nan, np.nan)
            _reference_lines(ax, random, solved)
            any_random |= pd.notna(random)
            any_solved |= pd.notna(solved)
            ax.set_title(env)
            ax.set_xlabel("environment steps")
            ax.set_ylabel("evaluation return (IQM over runs)")
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
            ax.margins(x=0.02)
        _agent_legend(fig, palette, agents, _reference_handles(any_random, any_solved))
        if eval_episodes:
            fig.suptitle(
                f"IQM over runs of the mean return of {eval_episodes} greedy "
                "episodes; band: 95% CI",
                fontsize="medium",
            )
    return fig


def final_scores_figure(
    finals: pd.DataFrame,
    palette: Mapping[str, Color],
    *,
    agent: str = "agent_key",
    notes: Mapping[tuple[str, str], str] | None = None,
) -> Figure:
    """One panel per environment: the distribution of final evaluation returns per agent,
    a box (quartiles, whiskers to 1.5 IQR) with every run as a dot, and the random and solved
    scores as horizontal lines. ``finals`` is :func:`rlbench.stats.final_scores`'s frame;
    ``notes`` adds text under an agent's name per (agent, env), e.g. "2 failed". Returns the
    figure."""
    envs = list(dict.fromkeys(finals["env"]))
    agents = [a for a in palette if a in set(finals[agent])]
    notes = notes or {}
    with figure_style():
        fig, axes = _figure(len(envs), width=max(PANEL_WIDTH, 1.1 * len(agents) + 1.5))
        any_random = any_solved = False
        for ax, env in zip(axes, envs, strict=True):
            data = finals[finals["env"] == env]
            order = [a for a in agents if a in set(data[agent])]
            with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib 3.11 `vert`
                warnings.simplefilter("ignore", MatplotlibDeprecationWarning)
                sns.boxplot(
                    data=data,
                    x=agent,
                    y="return_mean",
                    hue=agent,
                    order=order,
                    hue_order=order,
                    palette=palette,
                    showfliers=False,
                    width=0.55,
                    boxprops={"alpha": 0.45},
                    legend=False,
                    ax=ax,
                )
            sns.stripplot(
                data=data,
                x=agent,
                y="return_mean",
                hue=agent,
                order=order,
                hue_order=order,
                palette=palette,
                size=6,
                jitter=0.15,
                edgecolor="0.15",
                linewidth=0.6,
                legend=False,
                ax=ax,
            )
            random, solved = _references(data, env)
            _reference_lines(ax, random, solved)
            _pad_to_include(ax, [*data["return_mean"], random, solved])
            any_random |= pd.notna(random)
            any_solved |= pd.notna(solved)
            labels = []
            for name in order:
                n = int((data[agent] == name).sum())
                note = notes.get((name, env), "")
                labels.append(f"{name}\nn={n}" + (f", {note}" if note else ""))
            ax.set_xticks(
                range(len(order)),
                labels,
                rotation=20 if len(order) > 3 else 0,
                ha="right" if len(order) > 3 else "center",
            )
            ax.set_title(env)
            ax.set_xlabel("")
            ax.set_ylabel("final evaluation return")
        _agent_legend(
            fig, palette, agents, _reference_handles(any_random, any_solved), patches=True
        )
    return fig


def aggregate_figure(
    aggregate: pd.DataFrame,
    palette: Mapping[str, Color],
    *,
    agent: str = "agent_key",
) -> Figure:
    """One panel per aggregate metric (median, IQM, mean, optimality gap) of normalized
    scores: each agent's point estimate as a tick and its 95% CI as a bar. Higher is better
    except for the optimality gap. ``aggregate`` is :class:`rlbench.stats.Aggregate`'s
    ``table``. Returns the figure."""
    metrics = list(dict.fromkeys(aggregate["metric"]))
    agents = [a for a in palette if a in set(aggregate[agent])]
    with figure_style():
        fig, axes = _figure(
            len(metrics),
            width=3.4,
            height=0.45 * len(agents) + 1.3,
            columns=len(metrics),
            sharey=True,
        )
        for ax, metric in zip(axes, metrics, strict=True):
            rows = aggregate[aggregate["metric"] == metric].set_index(agent)
            values = rows[["value", "ci_low", "ci_high"]].to_numpy(float)
            span = np.nanmax(values) - np.nanmin(values) if np.isfinite(values).any() else 0.0
            for i, name in enumerate(agents):
                r = rows.loc[name]
                low, high = r["ci_low"], r["ci_high"]
                if pd.notna(low):  # a zero-width CI is still drawn, as a sliver
                    width = max(high - low, 0.006 * span if span > 0 else 0.004)
                    ax.barh(
                        i,
                        width,
                        left=(low + high - width) / 2,
                        height=0.6,
                        color=palette[name],
                        alpha=0.75,
                    )
                ax.vlines(r["value"], i - 0.35, i + 0.35, color="black", linewidth=2)
            ax.use_sticky_edges = False  # bars must not pin the x limits to the data
            ax.set_yticks(range(len(agents)), agents)
            ax.set_title(
                METRIC_TITLES.get(metric, metric)
                + (" (lower is better)" if metric == "optimality_gap" else ""),
                fontsize="medium",
            )
            ax.set_xlabel("normalized score")
            ax.grid(axis="y", visible=False)
            ax.margins(x=0.08)
        axes[0].invert_yaxis()  # shared: first agent on top in every panel
        fig.suptitle(
            "Aggregate normalized score (0 = random policy, 1 = solved); "
            "bar: 95% stratified-bootstrap CI",
            fontsize="medium",
        )
    return fig


#: Agents whose performance-profile CIs are filled bands; with more, their bounds are lines.
MAX_FILLED_BANDS = 2


def performance_profile_figure(
    profile: pd.DataFrame,
    palette: Mapping[str, Color],
    *,
    agent: str = "agent_key",
) -> Figure:
    """The fraction of runs whose normalized final score exceeds τ, as τ grows, per agent,
    with its 95% CI (a band for up to two agents, dotted bounds beyond); vertical lines mark
    τ = 0 (random) and τ = 1 (solved). A curve
    that lies above another is better at every threshold. ``profile`` is
    :func:`rlbench.stats.performance_profile`'s frame. Returns the figure."""
    agents = [a for a in palette if a in set(profile[agent])]
    # Filled bands of more than two agents overlap into a blur: beyond two, each CI is drawn
    # as its two bounds, thin dotted lines in the agent's colour.
    filled = len(agents) <= MAX_FILLED_BANDS
    with figure_style():
        fig, (ax,) = _figure(1, width=6.4, height=4.2)
        for name in agents:
            p = profile[profile[agent] == name]
            ax.plot(
                p["tau"], p["fraction"], color=palette[name], linewidth=2, drawstyle="steps-post"
            )
            if filled:
                ax.fill_between(
                    p["tau"],
                    p["ci_low"],
                    p["ci_high"],
                    color=palette[name],
                    alpha=0.2,
                    linewidth=0,
                    step="post",
                )
                continue
            for bound in ("ci_low", "ci_high"):
                ax.plot(
                    p["tau"],
                    p[bound],
                    color=palette[name],
                    linewidth=0.8,
                    linestyle=":",
                    drawstyle="steps-post",
                )
        _reference_lines(ax, 0.0, 1.0, horizontal=False)
        ax.set_xlabel("normalized score τ (0 = random policy, 1 = solved)")
        ax.set_ylabel("fraction of runs with score > τ")
        ax.set_ylim(-0.02, 1.02)
        _agent_legend(fig, palette, agents, _reference_handles(True, True))
    return fig


def throughput_figure(
    finals: pd.DataFrame,
    palette: Mapping[str, Color],
    *,
    agent: str = "agent_key",
) -> Figure:
    """One panel per environment: training speed (environment steps per second, evaluation
    excluded) per device, one bar per agent (mean over runs, with the standard deviation as
    an error bar) and every run as a dot. ``finals`` is :func:`rlbench.stats.final_scores`'s
    frame. Returns the figure."""
    envs = list(dict.fromkeys(finals["env"]))
    agents = [a for a in palette if a in set(finals[agent])]
    data = finals.copy()
    names = data.get("device_name", pd.Series("", index=data.index)).fillna("")
    data["device_label"] = [
        f"{d}\n({n})" if n else str(d) for d, n in zip(data["device"], names, strict=True)
    ]
    devices = list(dict.fromkeys(data["device_label"]))
    with figure_style():
        fig, axes = _figure(
            len(envs), width=max(PANEL_WIDTH, 0.8 * len(agents) * len(devices) + 1.5)
        )
        for ax, env in zip(axes, envs, strict=True):
            d = data[data["env"] == env]
            order = [a for a in agents if a in set(d[agent])]
            sns.barplot(
                data=d,
                x="device_label",
                y="steps_per_second",
                hue=agent,
                order=devices,
                hue_order=order,
                palette=palette,
                errorbar="sd",
                alpha=0.8,
                capsize=0.1,
                err_kws={"linewidth": 1.2},
                legend=False,
                ax=ax,
            )
            sns.stripplot(
                data=d,
                x="device_label",
                y="steps_per_second",
                hue=agent,
                order=devices,
                hue_order=order,
                palette=palette,
                dodge=True,
                size=5,
                edgecolor="0.15",
                linewidth=0.6,
                legend=False,
                ax=ax,
            )
            ax.set_title(env)
            ax.set_xlabel("device")
            ax.set_ylabel("environment steps per second")
            ax.set_ylim(bottom=0)
        _agent_legend(fig, palette, agents, patches=True)
    return fig


def save_figure(fig: Figure, directory: Path, name: str) -> list[Path]:
    """Write ``fig`` as ``<directory>/<name>.png`` and ``.svg`` (each atomically). Returns
    the two paths."""
    paths = []
    with figure_style():
        for ext in ("png", "svg"):
            path = directory / f"{name}.{ext}"
            records.atomic_savefig(fig, path, dpi=DPI, bbox_inches="tight", pad_inches=0.1)
            paths.append(path)
    return paths
