"""Search-space dimensions: how a hyperparameter is tuned (docs/tuning.md).

A dimension is written in TOML (a suite's ``[tune.space.<label>]``) or returned as the same
plain data by a plugin's ``rlbench_search_space`` hook:

- ``{ low = 1e-4, high = 1e-2, log = true }``: a float range (log-uniform with ``log``);
  an integer range when both bounds are integers; optional ``step``;
- ``{ choices = [0.9, 0.99] }``: one of the listed values;
- any other value (``batch_size = 64``): fixed, not tuned.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rlbench.errors import did_you_mean

_RANGE_KEYS = ("low", "high", "log", "step")
_DIMENSION_KEYS = (*_RANGE_KEYS, "choices")
Scalar = str | int | float | bool


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False
    step: float | None = None

    def to_raw(self) -> dict[str, Any]:
        raw: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            raw["log"] = True
        if self.step is not None:
            raw["step"] = self.step
        return raw


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    log: bool = False
    step: int = 1

    def to_raw(self) -> dict[str, Any]:
        raw: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            raw["log"] = True
        if self.step != 1:
            raw["step"] = self.step
        return raw


@dataclass(frozen=True)
class Choices:
    values: tuple[Scalar, ...]

    def to_raw(self) -> dict[str, Any]:
        return {"choices": list(self.values)}


@dataclass(frozen=True)
class Fixed:
    value: Any

    def to_raw(self) -> Any:
        return self.value


Dimension = FloatRange | IntRange | Choices | Fixed


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_dimension(raw: Any, where: str) -> tuple[Dimension | None, list[str]]:
    """One dimension from its TOML (or hook) form. Returns the dimension, or ``None`` and
    one problem line per mistake, each starting with ``where`` (the key)."""
    if isinstance(raw, list):
        return None, [
            f"{where}: a list is ambiguous; write {{ choices = [...] }} to tune over its "
            "values, or set a fixed list in the agent's config"
        ]
    if not isinstance(raw, dict):
        return Fixed(raw), []
    problems = [
        f"{where}.{key}: unknown key{did_you_mean(key, _DIMENSION_KEYS)}; expected low, high, "
        "log, step, or choices"
        for key in raw
        if key not in _DIMENSION_KEYS
    ]
    if "choices" in raw:
        if set(raw) & set(_RANGE_KEYS):
            problems.append(f"{where}: give either choices or low/high, not both")
        dim = _parse_choices(raw["choices"], where, problems)
    else:
        dim = _parse_range(raw, where, problems)
    return (None if problems else dim), problems


def _parse_choices(values: Any, where: str, problems: list[str]) -> Choices | None:
    if not isinstance(values, list) or not values:
        problems.append(f"{where}.choices: expected a non-empty list, got {values!r}")
        return None
    bad = [v for v in values if not isinstance(v, Scalar)]
    if bad:
        problems.append(f"{where}.choices: expected strings, numbers or booleans, got {bad!r}")
        return None
    if len({json.dumps(v) for v in values}) != len(values):
        problems.append(f"{where}.choices: values must be distinct, got {values!r}")
        return None
    return Choices(tuple(values))


def _parse_range(raw: dict[str, Any], where: str, problems: list[str]) -> Dimension | None:
    before = len(problems)
    for key in ("low", "high"):
        if key not in raw:
            problems.append(f"{where}.{key}: required key is missing (or give choices)")
        elif not _is_number(raw[key]):
            problems.append(f"{where}.{key}: expected a number, got {raw[key]!r}")
    log, step = raw.get("log", False), raw.get("step")
    if not isinstance(log, bool):
        problems.append(f"{where}.log: expected true or false, got {log!r}")
    if step is not None and (not _is_number(step) or step <= 0):
        problems.append(f"{where}.step: expected a number > 0, got {step!r}")
    if len(problems) > before:
        return None
    low, high = raw["low"], raw["high"]
    if not low < high:
        problems.append(f"{where}: low must be less than high, got low={low!r}, high={high!r}")
    if log and low <= 0:
        problems.append(f"{where}.low: a log scale needs low > 0, got {low!r}")
    if log and step is not None:
        problems.append(f"{where}: log and step cannot be combined")
    if len(problems) > before:
        return None
    if isinstance(low, int) and isinstance(high, int):
        if step is not None and not isinstance(step, int):
            problems.append(f"{where}.step: an integer range needs an integer step, got {step!r}")
            return None
        return IntRange(low, high, log, step or 1)
    return FloatRange(float(low), float(high), log, None if step is None else float(step))


def grid_size(dims: Mapping[str, Dimension]) -> int:
    """Number of points of the grid over the tuned dimensions (all must be Choices)."""
    return math.prod(len(d.values) for d in dims.values() if isinstance(d, Choices))
