"""Numbers and text as the report prints them: Markdown-safe text, "—" for a missing value,
returns at their environment's precision, confidence intervals, Markdown tables."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd


def escape(text: Any) -> str:
    """Text safe inside a Markdown table cell or paragraph."""
    value = " ".join(str(text).split())
    return re.sub(r"([\\`*\[\]<>|])", r"\\\1", value)


def num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or pd.isna(value):
        return "—"
    return f"{value:,.{digits}f}"


# ------------------------------------------------------------- returns' precision

#: Significant digits a return keeps at its environment's scale, and the fewest decimals
#: (every table printed one before; rewards of order 100 print as they did).
SIGNIFICANT_DIGITS = 3
MIN_DECIMALS = 1
MAX_DECIMALS = 6


class _Bounds(Protocol):
    @property
    def random(self) -> float: ...

    @property
    def solved(self) -> float: ...


def return_decimals(reference: _Bounds | None = None, values: Iterable[Any] = ()) -> int:
    """Decimals for an environment's returns in every score table (terminal, report.md,
    ``rlbench run``'s summary); the one rule. The scale is the span of the reference
    scores (``solved - random``: the distances that normalized scores measure), else the
    largest finite magnitude among ``values``; returns keep :data:`SIGNIFICANT_DIGITS` of
    it, and never fewer than :data:`MIN_DECIMALS`: CartPole's ``409.6 ± 179.5`` stays as it
    was, a task whose threshold is 0.85 prints ``0.612``."""
    scale = abs(reference.solved - reference.random) if reference is not None else 0.0
    if not (math.isfinite(scale) and scale > 0):
        finite = [abs(float(v)) for v in values if _is_number(v) and math.isfinite(float(v))]
        scale = max((v for v in finite if v > 0), default=0.0)
    if scale == 0:
        return MIN_DECIMALS
    leading = math.floor(math.log10(scale))  # 2 for 452.8, -1 for 0.85
    return min(max(SIGNIFICANT_DIGITS - 1 - leading, MIN_DECIMALS), MAX_DECIMALS)


#: Columns of a score table that hold returns (the fallback scale when no reference is known).
RETURN_COLUMNS = ("mean", "median", "iqm", "ci_low", "ci_high")


def decimals_by_env(
    scores: pd.DataFrame, references: Mapping[str, _Bounds | None] | None = None
) -> dict[str, int]:
    """:func:`return_decimals` for each environment (column ``env``) of a score table."""
    references = references or {}
    columns = [c for c in RETURN_COLUMNS if c in scores.columns]
    return {
        env: return_decimals(references.get(env), rows[columns].to_numpy().ravel().tolist())
        for env, rows in scores.groupby("env", sort=False)
    }


def exact(value: Any, digits: int = MIN_DECIMALS) -> str:
    """A threshold or reference score: at least ``digits`` decimals and as many more as it
    has, never rounded (a solved threshold of 0.85 printed as 0.8 would change meaning)."""
    if not _is_number(value) or not math.isfinite(float(value)):
        return num(value, digits)
    # 12 significant digits: every digit a threshold is written with, not 0.1 + 0.2's tail.
    text = f"{float(value):.12g}"
    if "e" in text:  # 1e-07 or 1e+22: as written, no thousands to separate
        return text
    decimals = len(text.split(".")[1].rstrip("0")) if "." in text else 0
    return num(float(value), max(digits, decimals))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def ci(value: Any, low: Any, high: Any, digits: int = 1) -> str:
    if pd.isna(value):
        return "—"
    if pd.isna(low):
        return f"{num(value, digits)} (no CI: 1 run)"
    return f"{num(value, digits)} [{num(low, digits)}, {num(high, digits)}]"


def fraction(share: Any, n: int) -> str:
    """A share of ``n`` runs as "k/n"."""
    return "—" if pd.isna(share) else f"{round(share * n)}/{n}"


def steps(value: Any) -> str:
    return "—" if pd.isna(value) else f"{int(value):,}"


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A Markdown table; ``align`` has one character per column: l or r."""
    align = align or "l" * len(header)
    lines = [
        "| " + " | ".join(escape(h) for h in header) + " |",
        "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def distinct(values: Iterable[Any]) -> str:
    seen = [v for v in dict.fromkeys(values) if v is not None and not pd.isna(v) and v != ""]
    return ", ".join(f"{v:,}" if isinstance(v, (int, np.integer)) else str(v) for v in seen)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")
