"""The regression gate: ``rlbench compare BASELINE CANDIDATE``.

Each agent × environment that both sides ran is compared on its final evaluation returns
(one per run, as the report's score table):

- ``P(candidate > baseline)``: the probability of improvement (a random candidate run
  scores above a random baseline run, ties counting one half; Agarwal et al., 2021) with
  its percentile stratified-bootstrap CI, at a confidence Bonferroni-corrected for the
  number of pairs compared (``1 - (1 - confidence) / pairs``), so that the chance of any
  false verdict over the whole table stays at most ``1 - confidence``;
- the IQM difference (candidate minus baseline), and that difference as a fraction of the
  environment's score range (solved minus random, its reference scores), or of the
  baseline's |IQM| where the environment declares none;
- a verdict: ``worse`` when the CI lies below 0.5, ``better`` above it, ``no conclusion``
  when it straddles 0.5, ``too few runs`` under :data:`~rlbench.stats.MIN_RUNS_FOR_CLAIM`
  runs on a side.

The gate fails (``rlbench compare`` exits 1) when a pair is ``worse`` *and* its IQM dropped
by more than ``tolerance`` (default 5%) of that scale: a statistically clear loss that is
also large enough to matter. Runs are compared only under the same protocol (budget,
evaluation interval, episodes and step limit, environment kwargs); a difference is refused
with its values named unless ``allow_protocol_mismatch``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rlbench import records, stats
from rlbench.errors import RlbenchError
from rlbench.report import formatting as fmt
from rlbench.results import load_run_table, load_tidy, open_suite_results, reference_table

if TYPE_CHECKING:
    from rlbench.results import CatalogueSource

#: Default --tolerance: the IQM drop (fraction of the score range) a worse pair must exceed.
DEFAULT_TOLERANCE = 0.05

#: What must be equal for two runs' final scores to be compared (config.json keys).
PROTOCOL_KEYS = ("steps", "eval_interval", "eval_episodes", "eval_max_episode_steps", "env_kwargs")
#: Versions worth a note when they differ (provenance.json keys).
VERSION_KEYS = ("rlbench", "torch", "gymnasium", "numpy")

COLUMNS = [
    "agent",
    "env",
    "n_baseline",
    "n_candidate",
    "iqm_baseline",
    "iqm_candidate",
    "iqm_difference",
    "relative_difference",
    "scale",
    "poi",
    "ci_low",
    "ci_high",
    "verdict",
    "regression",
]


@dataclass
class Comparison:
    """What :func:`compare` found: ``table`` (one row per pair, :data:`COLUMNS`) and what
    it did not compare."""

    baseline: str
    candidate: str
    table: pd.DataFrame
    confidence: float
    pair_confidence: float
    tolerance: float
    n_resamples: int
    seed: int
    only_baseline: list[tuple[str, str]] = field(default_factory=list)
    only_candidate: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> pd.DataFrame:
        """The pairs that fail the gate."""
        return self.table[self.table["regression"]]

    @property
    def failed(self) -> bool:
        return bool(self.table["regression"].any())

    def markdown(self) -> str:
        """The comparison as Markdown, fit for a CI comment: the table, then how it was
        computed and the gate's result."""
        digits = {
            env: fmt.return_decimals(None, group[["iqm_baseline", "iqm_candidate"]].to_numpy())
            for env, group in self.table.groupby("env")
        }
        rows = []
        for row in self.table.itertuples(index=False):
            d = digits[row.env]
            verdict = f"**{row.verdict}**" if row.verdict in ("worse", "better") else row.verdict
            if row.regression:
                verdict += " (regression)"
            rows.append(
                [
                    fmt.escape(row.agent),
                    fmt.escape(row.env),
                    f"{fmt.num(row.iqm_baseline, d)} ({row.n_baseline})",
                    f"{fmt.num(row.iqm_candidate, d)} ({row.n_candidate})",
                    f"{row.iqm_difference:+.{d}f} ({row.relative_difference:+.1%})",
                    fmt.ci(row.poi, row.ci_low, row.ci_high, 2),
                    verdict,
                ]
            )
        header = [
            "agent",
            "environment",
            "baseline IQM (runs)",
            "candidate IQM (runs)",
            "IQM difference (of scale)",
            "P(candidate > baseline) [CI]",
            "verdict",
        ]
        lines = [
            f"## rlbench compare: `{self.candidate}` against `{self.baseline}`",
            "",
            fmt.md_table(header, rows),
            "",
            "Scores are final evaluation returns, one per run (each the mean return of the "
            "run's last greedy evaluation). "
            f"CIs: percentile stratified bootstrap ({self.n_resamples:,} resamples, seed "
            f"{self.seed}) at {self.pair_confidence:.2%} per pair: {self.confidence:.0%} "
            f"Bonferroni-corrected for {len(self.table)} "
            f"{'comparison' if len(self.table) == 1 else 'comparisons'}. "
            "A pair is worse (better) when its CI of P(candidate > baseline) lies below "
            "(above) 0.5; it fails the gate when it is worse and its IQM dropped by more "
            f"than {self.tolerance:.0%} of the scale (the environment's solved minus random "
            "score; the baseline's |IQM| where it declares none).",
        ]
        for side, pairs in (("baseline", self.only_baseline), ("candidate", self.only_candidate)):
            if pairs:
                shown = ", ".join(f"{a} on {e}" for a, e in pairs)
                lines += ["", f"Only in the {side} (not compared): {fmt.escape(shown)}."]
        lines += ["", *[f"Note: {note}" for note in self.notes]] if self.notes else []
        failing = [f"{r.agent} on {r.env}" for r in self.regressions.itertuples(index=False)]
        lines += [
            "",
            f"**Result: {len(failing)} regression(s): {', '.join(failing)}.**"
            if failing
            else "**Result: no regression.**",
        ]
        return "\n".join(lines) + "\n"


def compare(
    baseline: Path | str,
    candidate: Path | str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    confidence: float = stats.CONFIDENCE,
    allow_protocol_mismatch: bool = False,
    n_resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = stats.DEFAULT_SEED,
    catalogue: CatalogueSource = None,
) -> Comparison:
    """Compare ``candidate``'s results with ``baseline``'s (each a suite's results folder
    or a results bundle), agent by agent and environment by environment (see the module's
    docstring). Raises :class:`~rlbench.errors.RlbenchError` when a side has no complete
    run, no pair is on both sides, or (unless ``allow_protocol_mismatch``) a pair's
    protocols differ. Returns a :class:`Comparison`."""
    if not 0 < confidence < 1 or tolerance < 0:
        raise RlbenchError("--confidence must be in (0, 1) and --tolerance at least 0")
    sides = {}
    for name, path in (("baseline", baseline), ("candidate", candidate)):
        folder = open_suite_results(path, role=name)
        tidy = load_tidy(folder, runs=load_run_table(folder), catalogue=catalogue)
        if tidy.empty:
            raise RlbenchError(f"{path}: no complete run to compare ({name})")
        sides[name] = stats.final_scores(tidy)
    base, cand = sides["baseline"], sides["candidate"]
    base_pairs = list(dict.fromkeys(zip(base["label"], base["env"], strict=True)))
    cand_pairs = list(dict.fromkeys(zip(cand["label"], cand["env"], strict=True)))
    pairs = [p for p in base_pairs if p in cand_pairs]
    if not pairs:
        raise RlbenchError(
            f"{candidate} and {baseline} have no agent × environment in common (baseline: "
            f"{_pairs_text(base_pairs)}; candidate: {_pairs_text(cand_pairs)})"
        )
    problems = [
        line
        for agent, env in pairs
        for line in _protocol_differences(
            _configs(base, agent, env), _configs(cand, agent, env), agent, env
        )
    ]
    if problems and not allow_protocol_mismatch:
        raise RlbenchError(
            f"the runs were not measured the same way: {'; '.join(problems)} "
            "(rerun one side under the other's protocol, or pass --allow-protocol-mismatch)"
        )
    references = reference_table([e for _, e in pairs], catalogue, folders=[baseline, candidate])
    pair_confidence = 1 - (1 - confidence) / len(pairs)
    rows = [
        _compare_pair(
            agent,
            env,
            _scores(base, agent, env),
            _scores(cand, agent, env),
            references.get(env),
            pair_confidence,
            tolerance,
            n_resamples,
            seed,
        )
        for agent, env in pairs
    ]
    notes = [f"protocol differs (allowed): {line}" for line in problems]
    notes += _version_notes(base, cand)
    return Comparison(
        baseline=str(baseline),
        candidate=str(candidate),
        table=pd.DataFrame(rows, columns=COLUMNS),
        confidence=confidence,
        pair_confidence=pair_confidence,
        tolerance=tolerance,
        n_resamples=n_resamples,
        seed=seed,
        only_baseline=[p for p in base_pairs if p not in cand_pairs],
        only_candidate=[p for p in cand_pairs if p not in base_pairs],
        notes=notes,
    )


def _pair(finals: pd.DataFrame, agent: str, env: str) -> pd.DataFrame:
    """The final scores of ``agent``'s runs on ``env``."""
    return finals[(finals["label"] == agent) & (finals["env"] == env)]


def _scores(finals: pd.DataFrame, agent: str, env: str) -> np.ndarray:
    return _pair(finals, agent, env)["return_mean"].to_numpy(float)


def _configs(finals: pd.DataFrame, agent: str, env: str) -> list[dict[str, Any]]:
    found = [records.read_json(Path(p) / records.CONFIG) for p in _pair(finals, agent, env)["path"]]
    return [c for c in found if isinstance(c, dict)]


def _protocol_differences(
    base: list[dict[str, Any]], cand: list[dict[str, Any]], agent: str, env: str
) -> list[str]:
    """One phrase per protocol key whose values differ between the two sides' runs."""
    out = []
    for key in PROTOCOL_KEYS:
        a = _distinct(c.get(key) for c in base)
        b = _distinct(c.get(key) for c in cand)
        if a != b:
            out.append(f"{agent} on {env}: {key} is {a} in the baseline, {b} in the candidate")
    return out


def _distinct(values: Any) -> str:
    seen = list(dict.fromkeys(repr(v) for v in values))
    return seen[0] if len(seen) == 1 else "{" + ", ".join(seen) + "}"


def _compare_pair(
    agent: str,
    env: str,
    base: np.ndarray,
    cand: np.ndarray,
    reference: records.Reference | None,
    confidence: float,
    tolerance: float,
    n_resamples: int,
    seed: int,
) -> dict[str, Any]:
    iqm_base, iqm_cand = float(stats.iqm(base)), float(stats.iqm(cand))
    if reference is not None:
        scale = float(reference.solved - reference.random)
    else:
        scale = abs(iqm_base) or 1.0
    poi = float(stats.probability_of_improvement_point(cand, base))
    low, high = stats.bootstrap_ci(
        [cand, base],
        stats.probability_of_improvement_point,
        confidence=confidence,
        n_resamples=n_resamples,
        seed=seed,
    )
    low, high = float(low), float(high)
    if min(len(base), len(cand)) < stats.MIN_RUNS_FOR_CLAIM or np.isnan(low):
        verdict = "too few runs"
    elif high < 0.5:
        verdict = "worse"
    elif low > 0.5:
        verdict = "better"
    else:
        verdict = "no conclusion"
    relative = (iqm_cand - iqm_base) / scale
    return {
        "agent": agent,
        "env": env,
        "n_baseline": len(base),
        "n_candidate": len(cand),
        "iqm_baseline": iqm_base,
        "iqm_candidate": iqm_cand,
        "iqm_difference": iqm_cand - iqm_base,
        "relative_difference": relative,
        "scale": scale,
        "poi": poi,
        "ci_low": low,
        "ci_high": high,
        "verdict": verdict,
        "regression": verdict == "worse" and -relative > tolerance,
    }


def _version_notes(base: pd.DataFrame, cand: pd.DataFrame) -> list[str]:
    """A line per library whose version differs between the sides (from provenance)."""

    def versions(finals: pd.DataFrame) -> dict[str, str]:
        found: dict[str, set[str]] = {}
        for p in finals["path"].unique():
            prov = records.read_json(Path(p) / records.PROVENANCE)
            for key in VERSION_KEYS:
                if isinstance(prov, dict) and prov.get(key):
                    found.setdefault(key, set()).add(str(prov[key]))
        return {k: ", ".join(sorted(v)) for k, v in found.items()}

    a, b = versions(base), versions(cand)
    return [
        f"{key} {a[key]} in the baseline, {b[key]} in the candidate"
        for key in VERSION_KEYS
        if key in a and key in b and a[key] != b[key]
    ]


def _pairs_text(pairs: list[tuple[str, str]]) -> str:
    return ", ".join(f"{a} on {e}" for a, e in pairs) or "none"
