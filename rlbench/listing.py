"""What ``rlbench list`` prints: every agent, network, environment and logger the plugins
provide, readable at 80 columns and in a pipe.

The plain listing is one table per kind, whose names are never cut (they are what a suite
file names). The verbose one is a block per component, wrapped to the width: its summary,
an agent's network roles and default network, and every option with its default and
description, docstring markup (line breaks, ````code````) taken out.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:
    from rlbench.plugins import Catalogue, Provided

GYMNASIUM_NOTE = "Any other Gymnasium id works as an environment too (e.g. BipedalWalker-v3)."


def plain_text(text: str) -> str:
    """``text`` (a docstring) on one line, without reST markup: ````x```` and
    ``:class:`x``` become ``x``. Returns the text."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text)
    return " ".join(text.replace("``", "").split())


def sections(catalogue: Catalogue) -> list[tuple[str, Mapping[str, Provided[Any]]]]:
    """``(title, {name: provided})`` of each kind the catalogue holds, loggers only where
    some are installed."""
    found: list[tuple[str, Mapping[str, Provided[Any]]]] = [
        ("Agents", catalogue.agents),
        ("Networks", catalogue.networks),
        ("Environments", catalogue.environments),
    ]
    loggers = getattr(catalogue, "loggers", None)
    if loggers:
        found.append(("Loggers", loggers))
    return found


def table(title: str, provided: Mapping[str, Provided[Any]]) -> Table:
    """One kind's table: name (never cut), plugin, summary. Returns the table."""
    names = sorted(provided)
    result = Table(title=title, title_justify="left")
    # Whole, on one line, to be copied into a suite file: the other columns wrap instead.
    result.add_column("name", no_wrap=True)
    result.add_column("plugin")
    result.add_column("description")
    for name in names:
        item = provided[name]
        result.add_row(
            name, f"{item.plugin.name} ({item.plugin.label})", plain_text(item.spec.summary)
        )
    return result


def details(title: str, provided: Mapping[str, Provided[Any]], width: int) -> Iterator[str]:
    """One kind's verbose listing, as lines of at most ``width`` characters (a word longer
    than that, such as a long default value, is kept whole on its own line)."""
    yield title
    for name in sorted(provided):
        item = provided[name]
        yield ""
        yield f"{name}  [{item.plugin.name} ({item.plugin.label})]"
        for text, indent in _facts(item.spec):
            yield from textwrap.wrap(
                text,
                width=max(width, 40),
                initial_indent=" " * indent,
                subsequent_indent=" " * (indent + 4),
                break_long_words=False,
                break_on_hyphens=False,
            )


def _facts(spec: Any) -> Iterator[tuple[str, int]]:
    """``(text, indent)`` of what the verbose listing says about ``spec``."""
    yield plain_text(spec.summary), 2
    agent = getattr(spec, "agent", None)
    if agent is not None:
        roles = tuple(getattr(agent, "network_roles", ()))
        if roles:
            about = f"{', '.join(roles)} ([agents.networks.ROLE] shapes one apart)"
        else:
            about = "none (one kind of network: the suite's `network`)"
        yield f"network roles: {about}", 2
        yield f"default network: {_options(dict(agent.default_network))}", 2
    reference = getattr(spec, "reference", None)
    if reference is not None:
        yield f"reference scores: random {reference.random:g}, solved {reference.solved:g}", 2
    for variant in getattr(spec, "variants", ()):
        yield (
            (
                f"with {_options(dict(variant.kwargs))}: random {variant.random:g}, solved "
                f"{variant.solved:g}"
            ),
            2,
        )
    model = getattr(spec, "config_model", None)
    if model is not None and model.model_fields:
        yield "options (name = default: what it is):", 2
        for field, info in model.model_fields.items():
            default = info.get_default(call_default_factory=True)
            about = plain_text(info.description or "")
            yield f"{field} = {default!r}" + (f": {about}" if about else ""), 4


def _options(options: Mapping[str, Any]) -> str:
    return ", ".join(
        str(value) if key == "name" else f"{key}={value!r}" for key, value in options.items()
    )
