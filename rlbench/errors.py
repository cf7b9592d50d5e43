"""User-facing errors. The CLI prints each as one line (or one line per problem) and exits 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RlbenchError(Exception):
    """An error caused by the user's input or environment, with a message that says the fix."""


class SuiteError(RlbenchError):
    """A suite file has one or more problems; ``problems`` holds one line each."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {p}" for p in problems))


class PluginError(RlbenchError):
    """The installed plugins conflict or cannot be registered."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate names, or an empty string."""
    pool = list(dict.fromkeys(candidates))  # a name two sources offer is suggested once
    close = difflib.get_close_matches(name, pool, n=3, cutoff=0.5)
    if not close:
        lowered = {c.lower(): c for c in pool}
        close = [lowered[m] for m in difflib.get_close_matches(name.lower(), lowered, n=3)]
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"
