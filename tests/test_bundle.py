"""Results bundles (rlbench.bundle): a suite's results in one file, read back by every
reader of results folders with the same numbers; other files and versions are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import rlbench_cmd

from rlbench import bundle
from rlbench.errors import RlbenchError
from rlbench.results import load_run_table, load_tidy

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "results" / "reference"


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bundle")
    proc = rlbench_cmd(
        "--no-plugin-autoload", "run", str(REPO / "suites" / "tiny.toml"),
        "--results", str(root), "--no-report",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return root / "tiny"


def test_export_writes_a_bundle_that_reads_back_as_the_folder(suite_dir, tmp_path):
    out = tmp_path / "tiny.rlbench.json"
    proc = rlbench_cmd("export", str(suite_dir), "--format", "rlbench", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["format"] == "rlbench-results" and data["version"] == 1
    assert len(data["runs"]) == 4 and data["span"]["wall_time_s"] > 0
    run = data["runs"][0]
    assert set(run) == {"run_id", "config", "status", "provenance", "evaluations"}
    assert "weights" not in out.read_text()  # nothing heavy travels
    columns = ["run_id", "agent_key", "env", "seed", "step", "return_mean", "normalized"]
    folder, packed = load_tidy(suite_dir), load_tidy(out)
    assert folder[columns].equals(packed[columns])  # the same digits, every evaluation
    runs = load_run_table([suite_dir, out])
    assert set(runs["status"]) == {"complete"} and len(set(runs["source"])) == 2


def test_report_of_a_bundle_goes_beside_it_and_says_it_is_one(suite_dir, tmp_path):
    out = bundle.write_bundle(suite_dir, tmp_path / "tiny.rlbench.json")
    proc = rlbench_cmd("report", str(out))
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "tiny-report" / "report.md").read_text()
    assert f"| results bundle | `{out}` (no weights" in report
    assert "naive_dqn" in report


def test_other_files_and_versions_are_refused_with_one_line(tmp_path):
    other = tmp_path / "other.json"
    other.write_text('{"format": "something-else"}')
    future = tmp_path / "future.rlbench.json"
    future.write_text('{"format": "rlbench-results", "version": 2, "suite": {}, "runs": []}')
    broken = tmp_path / "broken.rlbench.json"
    broken.write_text('{"format": "rlbench-res')
    for path, says in (
        (other, 'not a results bundle (no "format": "rlbench-results")'),
        (future, "a results bundle of version 2; this rlbench reads version 1"),
        (broken, "not a results bundle (JSONDecodeError"),
    ):
        with pytest.raises(RlbenchError, match=None) as caught:
            bundle.open_results(path)
        assert str(caught.value).startswith(f"{path}: ") and says in str(caught.value)
        proc = rlbench_cmd("report", str(path))
        assert proc.returncode == 2 and says in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("name", ["cartpole", "cartpole_pg", "pendulum"])
def test_the_shipped_reference_results_load_complete(name):
    path = REFERENCE / f"{name}.rlbench.json"
    data = bundle.read_bundle(path)
    runs = load_run_table(path)
    assert len(runs) == len(data["suite"]["runs"]) and set(runs["status"]) == {"complete"}
    assert runs.groupby(["label", "env"]).size().min() >= 10  # ten seeds per pair
    assert all(run["provenance"]["git"]["commit"] for run in data["runs"])
