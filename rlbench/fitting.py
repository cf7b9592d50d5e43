"""Tables for the terminal at any width: a table where it fits, else a narrower one that
says what it leaves out, else one block per row; a name or a number is never cut."""

from __future__ import annotations

from rich.console import Console, Group, RenderableType
from rich.segment import Segment
from rich.table import Table
from rich.text import Text


def fitted(
    console: Console, table: Table, narrower: Table | None = None, note: str = ""
) -> RenderableType:
    """``table`` where it draws whole at ``console``'s width; else ``narrower`` followed by
    ``note`` (what it leaves out) where that does; else :func:`as_blocks` of ``table``.
    Returns a renderable."""
    if draws_whole(console, table, console.width):
        return table
    if narrower is not None and draws_whole(console, narrower, console.width):
        return Group(narrower, Text(note)) if note else narrower
    return as_blocks(table, console.width)


def draws_whole(console: Console, table: Table, width: int) -> bool:
    """Whether ``table`` drawn ``width`` wide keeps every column and cuts nothing: rich
    marks a cut with …, squeezes a column to nothing, or draws wider than asked, where a
    table cannot fit."""
    lines = console.render_lines(table, console.options.update_width(width), pad=False)
    if any(Segment.get_line_length(line) > width for line in lines):
        return False
    text = "\n".join("".join(segment.text for segment in line) for line in lines)
    words = [w for column in table.columns for w in str(column.header).split()]
    return "…" not in text and all(w in text for w in words)


def as_blocks(table: Table, width: int) -> Group:
    """``table`` as its title, then per row a heading of its first two cells (``agent on
    environment``) and the others as ``header value`` pairs (empty ones left out), wrapped
    between pairs to ``width``. Returns the group."""
    headers = [" ".join(str(c.header).split()) for c in table.columns]
    blocks: list[RenderableType] = [Text(str(table.title or ""))] if table.title else []
    for row in zip(*(c.cells for c in table.columns), strict=True):
        cells = [str(cell) for cell in row]
        pairs = [f"{h} {v}" for h, v in zip(headers[2:], cells[2:], strict=True) if v]
        blocks.append(Text(f"{cells[0]} on {cells[1]}", overflow="fold"))
        blocks += [Text(f"    {line}", overflow="fold") for line in _pack(pairs, width - 4)]
    return Group(*blocks)


def _pack(items: list[str], width: int) -> list[str]:
    """``items`` joined with `` · `` into lines of at most ``width`` characters, none
    split (an item wider than that has a line of its own)."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 3 + len(item) <= width:
            lines[-1] += " · " + item
        else:
            lines.append(item)
    return lines
