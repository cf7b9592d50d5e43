"""docs/benchmarks.md and the reference results it publishes: the page's tables are the
shipped bundles' (regenerated here), and a fresh run reproduces a bundle to the digit."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import REPO, rlbench_cmd

PAGE = REPO / "docs" / "benchmarks.md"


def _page_module():
    spec = importlib.util.spec_from_file_location(
        "reference_page", REPO / "benchmarks" / "reference_page.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference_page = _page_module()


@pytest.mark.parametrize("name", reference_page.BUNDLES)
def test_the_page_prints_the_numbers_of_the_shipped_bundle(name):
    path = reference_page.REFERENCE / f"{name}.rlbench.json"
    blocks = reference_page.generated_blocks(PAGE.read_text(encoding="utf-8"))
    assert name in blocks, f"docs/benchmarks.md has no generated section for {name}"
    assert blocks[name] == reference_page.section(path), (
        "docs/benchmarks.md is out of date: python benchmarks/reference_page.py "
        "--write docs/benchmarks.md"
    )
    assert (PAGE.parent / "benchmarks" / f"{name}-learning_curves.svg").is_file()


def test_the_readme_links_the_page():
    assert "docs/benchmarks.md" in (REPO / "README.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_fresh_run_reproduces_a_reference_bundle_to_the_digit(tmp_path):
    # What docs/benchmarks.md promises: the stated command gives the published numbers.
    reference = reference_page.REFERENCE / "cartpole_pg.rlbench.json"
    proc = rlbench_cmd(
        "--no-plugin-autoload", "run", str(REPO / "suites" / "cartpole_pg.toml"),
        "--seeds", "10", "--results", str(tmp_path), "--no-report", timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    fresh = tmp_path / "cartpole_pg" / "runs"
    for run in json.loads(reference.read_text())["runs"]:
        curve = (fresh / run["run_id"] / "evaluations.csv").read_text().splitlines()
        rows = [line.split(",")[:7] for line in curve[1:]]  # less wall_time_s
        shipped = [[str(v) for v in row[:7]] for row in run["evaluations"]["rows"]]
        assert rows == shipped, run["run_id"]
    gate = rlbench_cmd("compare", str(reference), str(tmp_path / "cartpole_pg"))
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert "**Result: no regression.**" in gate.stdout
