"""``report.html``: ``report.md`` rendered as one standalone page, its images embedded."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; line-height: 1.5; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; vertical-align: top; }
th { background: #f3f3f3; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; height: auto; }
code { background: #f3f3f3; padding: 0 0.2em; border-radius: 3px; font-size: 0.9em; }
h1, h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
"""


def markdown_to_html(markdown: str, base_dir: Path, title: str) -> str:
    """report.md as a standalone HTML page: the same text, rendered with markdown-it-py
    (raw HTML disabled), with every image under ``base_dir`` embedded as a data URI.
    Returns the HTML."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)

    def embed(match: re.Match[str]) -> str:
        src = html.unescape(match.group(1))
        path = base_dir / src
        if src.endswith(".png") and path.is_file():
            encoded = base64.b64encode(path.read_bytes()).decode("ascii")
            return f'src="data:image/png;base64,{encoded}"'
        return match.group(0)

    body = re.sub(r'src="([^"]+)"', embed, body)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"{body}</body>\n</html>\n"
    )
