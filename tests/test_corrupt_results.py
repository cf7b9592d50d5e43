"""Corrupted results folders: `rlbench report` names each damaged run and leaves it out (or
refuses a damaged suite.json in one line), `rlbench run` redoes exactly the damaged run, and
no other file changes. One table, one row per corruption; records' formats beside it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import REPO

from rlbench import records
from rlbench.cli import cli

DOCS = REPO / "docs" / "reports.md"
#: The run each corruption damages: a dqn lane (fast to redo), listed in suite.json.
VICTIM = "dqn__CartPole-v1__seed0__"


def _garbage_bytes(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 8)


def _edit_json(name: str, edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def corrupt(run: Path) -> None:
        data = json.loads((run / name).read_text())
        (run / name).write_text(json.dumps(edit(data)))

    return corrupt


def _wrong_types(status: dict) -> dict:
    return {**status, "final_return_mean": "high", "steps_per_second": [1, 2]}


def _replace_by_file(run: Path) -> None:
    shutil.rmtree(run)
    run.write_text("not a folder\n")


@dataclass
class Corruption:
    name: str
    corrupt: Callable[[Path], None]  # given the victim's run folder
    reason: str  # what the report says about the victim (a fragment of the line)


CORRUPTIONS = [
    Corruption(
        "binary evaluations.csv",
        lambda run: _garbage_bytes(run / records.EVALUATIONS),
        "evaluations.csv is not UTF-8 text",
    ),
    Corruption(
        "text garbage in evaluations.csv",
        lambda run: (run / records.EVALUATIONS).write_text("so long,\nand thanks,for,all\n"),
        "evaluations.csv lacks the columns step, return_mean",
    ),
    Corruption(
        "ragged rows in evaluations.csv",
        lambda run: (run / records.EVALUATIONS).write_text(
            (run / records.EVALUATIONS).read_text() + "1,2,3,4,5,6,7,8,9\n"
        ),
        "has 9 fields, the header 8",
    ),
    Corruption(
        "status.json is a JSON list",
        lambda run: (run / records.STATUS).write_text('["complete"]'),
        "status.json: it holds a list, not a JSON object",
    ),
    Corruption(
        "status.json with wrong-typed fields",
        _edit_json(records.STATUS, _wrong_types),
        "status.json: 'steps_per_second' should be a number, got [1, 2]",
    ),
    Corruption(
        "config.json is {}",
        lambda run: (run / records.CONFIG).write_text("{}"),
        "config.json: 'suite' is None",
    ),
    Corruption(
        "evaluations.csv deleted",
        lambda run: (run / records.EVALUATIONS).unlink(),
        "evaluations.csv is missing",
    ),
    Corruption(
        "weights.pt deleted",
        lambda run: (run / records.WEIGHTS).unlink(),
        "weights.pt is missing",
    ),
    Corruption(
        "weights.pt truncated",
        lambda run: (run / records.WEIGHTS).write_bytes(b"PK\x03\x04"),
        "weights.pt is not a saved state",
    ),
    Corruption(
        "run folder replaced by a file",
        _replace_by_file,
        "is a file, not a run folder",
    ),
]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """suites/tiny.toml run once (4 runs); each test corrupts a copy."""
    root = tmp_path_factory.mktemp("pristine")
    result = _rlbench(
        "run",
        str(REPO / "suites" / "tiny.toml"),
        "--results",
        str(root),
        "-j",
        "1",
        "--threads",
        "1",
        "--no-report",
    )
    assert result.exit_code == 0, result.output
    return root / "tiny"


def _rlbench(*args: str) -> Result:
    env = {"RLBENCH_DISABLE_PLUGIN_AUTOLOAD": "1", "COLUMNS": "200"}
    return CliRunner().invoke(cli, list(args), env=env)


def _rerun_tiny(results: Path) -> Result:
    """``rlbench run suites/tiny.toml`` into ``results`` again, one worker, one thread."""
    return _rlbench(
        "run", str(REPO / "suites" / "tiny.toml"), "--results", str(results),
        "-j", "1", "--threads", "1", "--no-report",
    )  # fmt: skip


def _copy(pristine: Path, tmp_path: Path) -> tuple[Path, Path]:
    suite_dir = tmp_path / "tiny"
    shutil.copytree(pristine, suite_dir)
    (victim,) = [p for p in (suite_dir / "runs").iterdir() if p.name.startswith(VICTIM)]
    return suite_dir, victim


def _snapshot(folder: Path, *, leave_out: Path | None = None) -> dict[str, bytes]:
    """Every file under ``folder`` (but ``leave_out``'s) with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and (leave_out is None or leave_out not in (p, *p.parents))
    }


@pytest.mark.parametrize("case", CORRUPTIONS, ids=[c.name for c in CORRUPTIONS])
def test_report_leaves_a_damaged_run_out_and_names_it(
    case: Corruption, pristine: Path, tmp_path: Path
) -> None:
    suite_dir, victim = _copy(pristine, tmp_path)
    case.corrupt(victim)
    before = _snapshot(suite_dir / "runs")
    result = _rlbench("report", str(suite_dir))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if victim.name in line]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith(f"warning: {victim}: damaged, left out of the report: ")
    assert case.reason in warnings[0]
    if case is CORRUPTIONS[0]:  # docs/reports.md shows this line: it must be what is printed
        (shown,) = [line for line in DOCS.read_text().splitlines() if line.startswith("warning:")]
        assert shown.split(": ", 2)[2] == warnings[0].split(": ", 2)[2]
    report = (suite_dir / "report" / "report.md").read_text(encoding="utf-8")
    not_complete = report.split("## Runs that did not complete")[1].split("\n## ")[0]
    assert f"`{victim.name}`" in not_complete and "**damaged**" in not_complete
    assert "1 run did not complete" in report
    assert _snapshot(suite_dir / "runs") == before  # the report writes only under report/


@pytest.mark.parametrize("case", CORRUPTIONS, ids=[c.name for c in CORRUPTIONS])
def test_run_redoes_exactly_the_damaged_run(
    case: Corruption, pristine: Path, tmp_path: Path
) -> None:
    suite_dir, victim = _copy(pristine, tmp_path)
    case.corrupt(victim)
    others = _snapshot(suite_dir / "runs", leave_out=victim)
    result = _rerun_tiny(tmp_path)
    if victim.is_file():
        # A file where a run's folder goes is the user's, not rlbench's: it is not deleted.
        # The run is refused in one line naming it, and nothing changes.
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(f"error: {victim} is a file, where a run's folder goes")
        assert victim.read_text() == "not a folder\n"
    else:
        assert result.exit_code == 0, result.output
        assert f"warning: {victim.name}: damaged (" in result.stderr
        assert case.reason in result.stderr
        assert "3 run(s) were already complete" in result.stdout
        done = [line.split()[2] for line in result.stdout.splitlines() if "] complete " in line]
        assert done == [victim.name]
        assert records.RunDir(suite_dir, victim.name).complete_problem() is None
    assert _snapshot(suite_dir / "runs", leave_out=victim) == others


def test_a_damaged_suite_json_is_refused_in_one_line_and_rewritten_by_run(
    pristine: Path, tmp_path: Path
) -> None:
    suite_dir, _ = _copy(pristine, tmp_path)
    manifest = suite_dir / records.MANIFEST
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "runs": 5}))
    runs = _snapshot(suite_dir / "runs")
    result = _rlbench("report", str(suite_dir))
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[0] == (
        f"error: {manifest}: 'runs' should be a list of run folder names, got 5; rerun the "
        "suite with `rlbench run` to rewrite it"
    )
    assert not (suite_dir / "report").exists()
    result = _rerun_tiny(tmp_path)
    assert result.exit_code == 0, result.output
    assert "4 run(s) were already complete" in result.stdout
    assert len(records.SuiteManifest.read(suite_dir).runs) == 4
    assert _snapshot(suite_dir / "runs") == runs


# ---------------------------------------------------------------- the formats themselves


def test_status_json_has_one_definition(tmp_path: Path) -> None:
    run = records.RunDir(tmp_path, "r")
    fields = {
        "env_steps": 1000,
        "wall_time_s": 2.5,
        "train_time_s": 2.0,
        "eval_time_s": 0.5,
        "steps_per_second": 500.0,
        "lanes": 2,
        "final_return_mean": 9.5,
        "final_return_std": 0.5,
        "episodes": 40,
    }
    run.write_status(records.COMPLETE, **fields)
    assert json.loads(run.file(records.STATUS).read_text()) == {"status": "complete", **fields}
    assert run.read_status() == records.RunStatus(records.COMPLETE, **fields)
    run.write_status(records.FAILED, error="RuntimeError: x")  # only what is given is written
    assert json.loads(run.file(records.STATUS).read_text()) == {
        "status": "failed",
        "error": "RuntimeError: x",
    }
    with pytest.raises(TypeError, match="final_return"):
        run.write_status(records.COMPLETE, **fields, final_return=1.0)  # misspelt: refused
    with pytest.raises(records.RecordError, match="'episodes' should be an integer"):
        run.write_status(records.COMPLETE, **{**fields, "episodes": 4.5})
    with pytest.raises(records.RecordError, match="a complete run needs 'env_steps'"):
        run.write_status(records.COMPLETE)
    assert run.read_status() == records.RunStatus(records.FAILED, error="RuntimeError: x")


def test_atomic_savefig_writes_whole_images_only(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    records.atomic_savefig(fig, tmp_path / "a.png", dpi=50)
    assert (tmp_path / "a.png").read_bytes().startswith(b"\x89PNG")

    class Broken(Figure):
        def savefig(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("drawing failed")

    with pytest.raises(RuntimeError):
        records.atomic_savefig(Broken(), tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes().startswith(b"\x89PNG")  # the old one, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # no temporary left
