"""The regression gate, ``rlbench compare``, on real runs: an identical rerun passes, a
planted defect fails it, a protocol difference is refused by name; results bundles stand in
for folders on either side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import rlbench_cmd

from rlbench import bundle, compare
from rlbench.executor import run_suite
from rlbench.records import EnvReference
from rlbench.runspec import expand
from rlbench.suite import load_suite

REPO = Path(__file__).resolve().parents[1]

#: dqn learns CartPole somewhat in 4,000 steps (final IQM ~190 over 5 seeds); with a
#: learning rate of 1e-9 (the planted defect) it stays where it started (~11).
GATE_SUITE = """
name = "gate"
seeds = 5
environments = ["CartPole-v1"]
[budget]
steps = {steps}
eval_interval = 2000
eval_episodes = 5
[[agents]]
name = "dqn"
[agents.config]
learning_starts = 500
train_frequency = 1
gradient_steps = 1
target_update_interval = 100
exploration_fraction = 0.3
{extra}
"""


def _run(folder: Path, catalogue, steps: int = 4000, extra: str = "") -> Path:
    suite_file = folder / "suite.toml"
    folder.mkdir(parents=True)
    suite_file.write_text(GATE_SUITE.format(steps=steps, extra=extra))
    suite = load_suite(suite_file, catalogue)
    run_suite(suite, expand(suite), folder / "results", catalogue=catalogue)
    return folder / "results" / "gate"


@pytest.fixture(scope="module")
def gate_runs(tmp_path_factory, catalogue) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gate")
    return {
        "baseline": _run(root / "baseline", catalogue),
        "rerun": _run(root / "rerun", catalogue),
        "defect": _run(root / "defect", catalogue, extra="learning_rate = 1e-9"),
        "shorter": _run(root / "shorter", catalogue, steps=3000),
    }


def test_an_identical_rerun_is_no_regression(gate_runs):
    proc = rlbench_cmd("compare", str(gate_runs["baseline"]), str(gate_runs["rerun"]))
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| dqn |"))
    assert "+0.0 (+0.0%)" in row and "0.50 [" in row and "no conclusion" in row
    assert "**Result: no regression.**" in proc.stdout


def test_a_planted_defect_is_named_as_worse_and_fails_the_gate(gate_runs, tmp_path):
    out = tmp_path / "comment.md"
    proc = rlbench_cmd(
        "compare", str(gate_runs["baseline"]), str(gate_runs["defect"]), "--out", str(out)
    )
    assert proc.returncode == 1, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| dqn |"))
    assert "0.00 [0.00, 0.00]" in row and "**worse** (regression)" in row
    assert "**Result: 1 regression(s): dqn on CartPole-v1.**" in proc.stdout
    assert out.read_text() == proc.stdout  # the same Markdown, for a CI comment
    # Its IQM dropped by ~40% of CartPole's score range: a tolerance above that passes it.
    lenient = rlbench_cmd(
        "compare", str(gate_runs["baseline"]), str(gate_runs["defect"]), "--tolerance", "0.9"
    )
    assert lenient.returncode == 0, lenient.stderr
    assert "**worse**" in lenient.stdout and "(regression)" not in lenient.stdout


def test_a_protocol_difference_is_refused_by_name_unless_allowed(gate_runs):
    proc = rlbench_cmd("compare", str(gate_runs["baseline"]), str(gate_runs["shorter"]))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stdout == ""
    assert "dqn on CartPole-v1: steps is 4000 in the baseline, 3000 in the candidate" in (
        proc.stderr
    )
    assert "--allow-protocol-mismatch" in proc.stderr
    allowed = rlbench_cmd(
        "compare",
        str(gate_runs["baseline"]),
        str(gate_runs["shorter"]),
        "--allow-protocol-mismatch",
    )
    assert allowed.returncode in (0, 1), allowed.stderr
    assert "Note: protocol differs (allowed): dqn on CartPole-v1: steps is 4000" in (allowed.stdout)


def test_a_results_bundle_compares_as_its_folder(gate_runs, tmp_path):
    packed = bundle.write_bundle(gate_runs["baseline"], tmp_path / "gate.rlbench.json")
    from_folder = compare.compare(gate_runs["baseline"], gate_runs["defect"], n_resamples=500)
    from_bundle = compare.compare(packed, gate_runs["defect"], n_resamples=500)
    assert from_bundle.table.equals(from_folder.table) and from_bundle.failed
    assert not compare.compare(packed, gate_runs["rerun"], n_resamples=500).failed


def test_bad_input_exits_2_with_one_line(gate_runs, tmp_path):
    cases = {
        (str(REPO / "results" / "reference" / "cartpole_pg.rlbench.json"),): "no agent × "
        "environment in common",
        (str(REPO / "suites" / "tiny.toml"),): "not a results bundle",
        (str(tmp_path),): "not a suite's results folder",
    }
    for (baseline,), message in cases.items():
        proc = rlbench_cmd("compare", baseline, str(gate_runs["rerun"]))
        assert proc.returncode == 2, (baseline, proc.stdout)
        assert message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def _pair(base, cand, *, tolerance=0.05):
    return compare._compare_pair(
        "a", "E", np.asarray(base, float), np.asarray(cand, float),
        EnvReference(random=0.0, solved=100.0), 0.95, tolerance, 500, 0,
    )  # fmt: skip


def test_a_clear_but_small_loss_is_worse_without_failing_the_gate():
    # Every candidate run below every baseline run: worse beyond doubt, but by 1% of the
    # score range, under the 5% tolerance.
    small = _pair([50, 51, 52, 53, 54], [49, 50, 51, 52, 53.5])
    assert small["verdict"] == "no conclusion"
    clear = _pair([50, 50.5, 51, 51.5, 52], [49, 49.2, 49.4, 49.6, 49.8])
    assert clear["verdict"] == "worse" and not clear["regression"]
    assert clear["relative_difference"] == pytest.approx(-0.016)
    large = _pair([50, 50.5, 51, 51.5, 52], [40, 40.2, 40.4, 40.6, 40.8])
    assert large["verdict"] == "worse" and large["regression"]
    few = _pair([50, 51], [10, 11])
    assert few["verdict"] == "too few runs" and not few["regression"]


def test_the_ci_is_bonferroni_corrected_for_the_pairs_compared(gate_runs):
    found = compare.compare(gate_runs["baseline"], gate_runs["rerun"], n_resamples=500)
    assert found.pair_confidence == pytest.approx(0.95) and len(found.table) == 1
    reference = REPO / "results" / "reference" / "cartpole.rlbench.json"
    four = compare.compare(reference, reference, n_resamples=500)
    assert len(four.table) == 4 and four.pair_confidence == pytest.approx(1 - 0.05 / 4)
    assert "at 98.75% per pair: 95% Bonferroni-corrected for 4 comparisons" in four.markdown()
    assert not four.failed and set(four.table["verdict"]) <= {"no conclusion"}
