"""Numbers and text as the report prints them: Markdown-safe text, "—" for a missing value,
confidence intervals, Markdown tables."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

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


def md_table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None
) -> str:
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
