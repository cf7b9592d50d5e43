"""What every built-in logger writes, under the same names."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

EVAL, TRAIN, EPISODE = "eval/", "train/", "episode/"


def evaluation_scalars(evaluation: Mapping[str, Any]) -> dict[str, float]:
    """``{"eval/return_mean": ..., ...}``: every column of an ``evaluations.csv`` row but
    ``step``."""
    return {EVAL + key: float(value) for key, value in evaluation.items() if key != "step"}


def metric_scalars(metrics: Mapping[str, float]) -> dict[str, float]:
    """``{"train/loss": ...}``: a ``metrics.csv`` row's metrics."""
    return {TRAIN + key: float(value) for key, value in metrics.items()}


def episode_scalars(
    episodes: Sequence[Mapping[str, Any]],
) -> Iterator[tuple[int, dict[str, float]]]:
    """``(step, {"episode/return": ..., "episode/length": ...})`` per ``episodes.csv`` row."""
    for episode in episodes:
        yield (
            int(episode["step"]),
            {
                EPISODE + "return": float(episode["return"]),
                EPISODE + "length": float(episode["length"]),
            },
        )


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"agent_config": {"lr": 1e-3}}`` -> ``{"agent_config.lr": 1e-3}`` (lists stay whole)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def as_text(value: Any) -> str:
    """A value as one short string (JSON for lists, dicts and None)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


_NOT_IN_NAMES = re.compile(r"[^\w./ -]+")


def safe_key(key: str) -> str:
    """``key`` with what trackers refuse in a name (MLflow: other than letters, digits, ``_``,
    ``-``, ``.``, space and ``/``) replaced by ``_``."""
    return _NOT_IN_NAMES.sub("_", key)
