"""A results folder's report: CSV tables, figures, ``report.md`` and ``report.html``.

Everything goes to ``<results folder>/report/`` (the first folder's, when several are
compared): ``report.md`` and ``report.html`` (the same text, images embedded), ``tables/*.csv``
and ``figures/*.png`` + ``*.svg``. :func:`write_report` is the entry point; ``rlbench report``
calls it.

The package, in the order data flows through it: :mod:`~rlbench.report.collection` reads the
folders and computes every table (:class:`ReportData`); :mod:`~rlbench.report.outputs`
writes the tables, figures and pages; :mod:`~rlbench.report.overview` and
:mod:`~rlbench.report.markdown` write the text of ``report.md`` (with
:mod:`~rlbench.report.formatting`), :mod:`~rlbench.report.html_page` turns it into
``report.html``, and :mod:`~rlbench.report.terminal` prints the main table.
"""

from __future__ import annotations

from rlbench.report.collection import ReportData, collect, no_aggregate_reason, report_title
from rlbench.report.files import (
    FIGURE_NAMES,
    FIGURES_DIRNAME,
    REPORT_DIRNAME,
    REPORT_HTML,
    REPORT_MD,
    SECTIONS,
    TABLE_FILES,
    TABLES_DIRNAME,
)
from rlbench.report.html_page import markdown_to_html
from rlbench.report.markdown import render_markdown
from rlbench.report.outputs import RUN_TABLE_COLUMNS, write_report
from rlbench.report.terminal import rich_score_table, terminal_scores

__all__ = [
    "FIGURES_DIRNAME",
    "FIGURE_NAMES",
    "REPORT_DIRNAME",
    "REPORT_HTML",
    "REPORT_MD",
    "RUN_TABLE_COLUMNS",
    "SECTIONS",
    "TABLES_DIRNAME",
    "TABLE_FILES",
    "ReportData",
    "collect",
    "markdown_to_html",
    "no_aggregate_reason",
    "render_markdown",
    "report_title",
    "rich_score_table",
    "terminal_scores",
    "write_report",
]
