"""The report folder's layout: where each file goes, and the sections of ``report.md``."""

from __future__ import annotations

REPORT_DIRNAME = "report"
TABLES_DIRNAME = "tables"
FIGURES_DIRNAME = "figures"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"

#: The sections of report.md, in order (each a ``## `` heading).
SECTIONS = (
    "What was run",
    "Summary",
    "Runs that did not complete",
    "Final scores",
    "Learning curves",
    "Aggregate over environments",
    "Performance profile",
    "Probability of improvement",
    "Training speed",
    "How the numbers are computed",
)
#: ``tables/`` files: key -> file name.
TABLE_FILES = {
    "scores": "scores.csv",
    "aggregate": "aggregate.csv",
    "probability_of_improvement": "probability_of_improvement.csv",
    "throughput": "throughput.csv",
    "runs": "runs.csv",
    "references": "references.csv",
    "learning_curves": "learning_curves.csv",
    "performance_profile": "performance_profile.csv",
}
#: ``figures/`` files (each as .png and .svg).
FIGURE_NAMES = ("learning_curves", "final_scores", "aggregate", "performance_profile", "throughput")
