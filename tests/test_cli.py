"""The ``rlbench`` command as a user runs it: in a fresh process, reading what it prints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import rlbench_cmd

from rlbench import records


def statuses(suite_dir: Path) -> dict[str, str]:
    out = {}
    for run in sorted((suite_dir / "runs").iterdir()):
        status = records.read_json(run / "status.json") or {}
        out[run.name] = status.get("status", "missing")
    return out


def test_run_prints_progress_and_the_summary_table(tmp_path, write_suite):
    suite = write_suite()
    proc = rlbench_cmd("run", str(suite), "--results", str(tmp_path / "res"), "-j", "1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "[4/4] complete" in out
    assert "Final evaluation return" in out and "mean ± std over seeds" in out
    assert "naive_dqn" in out and "dqn" in out and "CartPole-v1" in out
    suite_dir = tmp_path / "res" / "t"
    assert set(statuses(suite_dir).values()) == {"complete"}
    assert (suite_dir / "summary.csv").read_text().startswith("label,env,mean,std,n")
    assert json.loads((suite_dir / "suite.json").read_text())["name"] == "t"
    assert f"Report: {suite_dir / 'report' / 'report.md'}" in out
    assert (suite_dir / "report" / "report.html").stat().st_size > 0

    again = rlbench_cmd("run", str(suite), "--results", str(tmp_path / "res"), "--no-report")
    assert again.returncode == 0
    assert "4 run(s) were already complete and were not rerun" in again.stdout

    forced = rlbench_cmd(
        "run", str(suite), "--results", str(tmp_path / "res"), "--force", "--no-report"
    )
    assert forced.returncode == 0 and "[4/4] complete" in forced.stdout


def test_parallel_jobs_give_the_same_results_as_serial(tmp_path, write_suite):
    suite = write_suite()
    for jobs in ("1", "2"):
        proc = rlbench_cmd(
            "run",
            str(suite),
            "--results",
            str(tmp_path / jobs),
            "-j",
            jobs,
            "--threads",
            "1",
            "--no-report",
        )
        assert proc.returncode == 0, proc.stderr
    serial = (tmp_path / "1" / "t" / "summary.csv").read_text()
    parallel = (tmp_path / "2" / "t" / "summary.csv").read_text()
    assert serial == parallel


def test_bad_suite_exits_2_with_one_line_per_problem(write_suite):
    path = write_suite("""
        name = "x"
        seeds = 2
        environments = ["CartPole-v1"]
        [budget]
        steps = 100
        eval_interval = 50
        [[agents]]
        name = "replay_dq"
        [[agents]]
        name = "dqn"
        config = { learning_rate = "fast" }
    """)
    proc = rlbench_cmd("run", str(path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, proc.stderr
    assert lines[0] == (
        f"error: {path}: agents[0].name: unknown agent 'replay_dq' (did you mean "
        "'replay_dqn'?); `rlbench list` shows the agents"
    )
    assert lines[1] == (
        f"{path}: agents[1].config.learning_rate: write a number, not a string, got 'fast'"
    )
    assert "Traceback" not in proc.stderr


def test_bad_jobs_value(write_suite):
    proc = rlbench_cmd("run", str(write_suite()), "--jobs", "many")
    assert proc.returncode == 2
    assert "error: --jobs: expected a positive integer or 'auto', got 'many'" in proc.stderr


def test_validate_lists_the_runs_without_running(tmp_path, write_suite):
    proc = rlbench_cmd("validate", str(write_suite()), cwd=tmp_path)
    assert proc.returncode == 0
    assert "ok, 4 runs, trained as 2 groups" in proc.stdout
    assert "naive_dqn__CartPole-v1__seed1__cpu__" in proc.stdout
    assert not (tmp_path / "results").exists()


def test_list_shows_every_component_and_its_plugin():
    proc = rlbench_cmd("list")
    assert proc.returncode == 0
    for name in ("naive_dqn", "target_dqn", "replay_dqn", "dqn", "mlp", "CartPole-v1"):
        assert name in proc.stdout
    assert "dqn (rlbench " in proc.stdout and "mlp (rlbench " in proc.stdout
    verbose = rlbench_cmd("list", "--verbose")
    assert "learning_rate = 0.0023: Adam learning rate." in verbose.stdout


FAILING_PLUGIN = """
    from rlbench import AgentSpec, hookimpl
    from rlbench_dqn.naive_dqn import NaiveDQN

    class Failing(NaiveDQN):
        def observe(self, t):
            raise ValueError("this agent always fails")

    @hookimpl
    def rlbench_register_agents():
        return [AgentSpec("failing", Failing)]
"""


def test_a_failed_run_does_not_stop_the_others(tmp_path, write_suite):
    (tmp_path / "failing_plugin.py").write_text(textwrap.dedent(FAILING_PLUGIN))
    path = write_suite(TWO_AGENTS.format(first="failing"))
    proc = rlbench_cmd(
        "-p",
        "failing_plugin",
        "run",
        str(path),
        "--results",
        str(tmp_path / "res"),
        "-j",
        "2",
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert proc.returncode == 1
    assert "failed: failing__CartPole-v1__seed0" in proc.stdout
    assert "ValueError: this agent always fails" in proc.stdout
    found = statuses(tmp_path / "res" / "x")
    assert sorted(found.values()) == ["complete", "complete", "failed", "failed"]


TWO_AGENTS = """
    name = "x"
    seeds = 2
    environments = ["CartPole-v1"]
    [budget]
    steps = 200
    eval_interval = 100
    eval_episodes = 2
    [[agents]]
    name = "{first}"
    [[agents]]
    name = "naive_dqn"
"""

SLOW_SUITE = """
    name = "slow"
    seeds = 4
    environments = ["CartPole-v1"]
    [budget]
    steps = 1000
    eval_interval = 500
    eval_episodes = 2
    [[agents]]
    name = "naive_dqn"
"""


def _wait_for_complete(suite_dir: Path, count: int, proc: subprocess.Popen, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        runs = suite_dir / "runs"
        if runs.is_dir() and list(statuses(suite_dir).values()).count("complete") >= count:
            return
        assert proc.poll() is None, "rlbench ended before it could be interrupted"
        time.sleep(0.05)
    raise AssertionError("no run completed in time")


def _start(path: Path, results: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rlbench",
            "run",
            str(path),
            "--results",
            str(results),
            "-j",
            "1",
            # Two lane groups of two seeds, one after the other: the first completes while
            # the second is still training, whatever the machine's speed.
            "--lanes",
            "2",
            "--no-report",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_killed_suite_resumes_where_it_stopped(tmp_path, write_suite):
    path = write_suite(SLOW_SUITE)
    suite_dir = tmp_path / "res" / "slow"
    proc = _start(path, tmp_path / "res")
    _wait_for_complete(suite_dir, 1, proc, limit=120)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait()
    before = statuses(suite_dir)
    done = [run for run, status in before.items() if status == "complete"]
    assert 1 <= len(done) < 4
    kept = {run: (suite_dir / "runs" / run / "evaluations.csv").read_bytes() for run in done}
    # Whatever the kill interrupted is not trusted: it is not marked complete.
    assert all(status in ("complete", "running", "missing") for status in before.values())

    resumed = rlbench_cmd(
        "run", str(path), "--results", str(tmp_path / "res"), "-j", "1", "--no-report"
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(done)} run(s) were already complete and were not rerun" in resumed.stdout
    assert set(statuses(suite_dir).values()) == {"complete"} and len(statuses(suite_dir)) == 4
    for run, content in kept.items():
        assert (suite_dir / "runs" / run / "evaluations.csv").read_bytes() == content


def test_ctrl_c_stops_cleanly_and_keeps_completed_runs(tmp_path, write_suite):
    path = write_suite(SLOW_SUITE)
    suite_dir = tmp_path / "res" / "slow"
    proc = _start(path, tmp_path / "res")
    _wait_for_complete(suite_dir, 1, proc, limit=120)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Interrupted: completed runs are kept" in out
    assert "Traceback" not in err
    assert "complete" in statuses(suite_dir).values()


@pytest.mark.parametrize("where", ["_print_summary", "_write_report"])
def test_ctrl_c_while_the_summary_or_report_is_written_exits_130(
    tmp_path, write_suite, monkeypatch, where
):
    """Not click's "Aborted!" and exit 1: one line, and the documented 130."""
    from click.testing import CliRunner

    from rlbench import cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, where, interrupted)
    suite = write_suite(seeds=1, steps=100, eval_interval=100)
    result = CliRunner().invoke(
        cli.cli, ["--no-plugin-autoload", "run", str(suite), "--results", str(tmp_path / "r")]
    )
    assert result.exit_code == 130, result.output
    assert "Aborted!" not in result.output
    assert result.stderr.splitlines() == [
        "interrupted: what was written is kept; run the same command again to finish"
    ]


def test_seeds_option_adds_seeds_and_keeps_the_runs_already_done(tmp_path, write_suite):
    path = write_suite(seeds=1, steps=200, eval_interval=100)
    results = tmp_path / "res"
    first = rlbench_cmd("run", str(path), "--results", str(results), "--no-report")
    assert first.returncode == 0, first.stderr
    kept = {p: p.read_bytes() for p in (results / "t" / "runs").glob("*/evaluations.csv")}
    more = rlbench_cmd("run", str(path), "--results", str(results), "--seeds", "3", "--no-report")
    assert more.returncode == 0, more.stderr
    assert f"{len(kept)} run(s) were already complete" in more.stdout
    found = statuses(results / "t")
    assert len(found) == 3 * len(kept) and set(found.values()) == {"complete"}
    assert sorted({run.split("__")[2] for run in found}) == ["seed0", "seed1", "seed2"]
    assert all(p.read_bytes() == content for p, content in kept.items())


def test_an_interrupted_force_rerun_shows_only_what_it_redid(tmp_path, write_suite, monkeypatch):
    from click.testing import CliRunner

    from rlbench import executor
    from rlbench.cli import cli

    path = write_suite(seeds=2, steps=200, eval_interval=100)
    results = tmp_path / "res"
    first = rlbench_cmd("run", str(path), "--results", str(results), "--no-report")
    assert first.returncode == 0, first.stderr
    real = executor.run_suite

    def redo_one_then_ctrl_c(suite, runs, *args, **kwargs):
        # As if Ctrl-C came after --force redid the first run: the others' results on disk
        # are not this command's.
        done = real(suite, runs, *args, **kwargs)
        done.outcomes = dict(list(done.outcomes.items())[:1])
        done.interrupted = True
        return done

    monkeypatch.setattr(executor, "run_suite", redo_one_then_ctrl_c)
    result = CliRunner().invoke(
        cli, ["run", str(path), "--results", str(results), "--force", "-j", "1"]
    )
    assert result.exit_code == 130, result.output
    text = " ".join(result.output.split())
    assert "--force was interrupted before it redid 3 run(s)" in text, result.output
    assert "their earlier results are left out of this table" in text
    rows = [line for line in result.output.splitlines() if line.startswith("│")]
    assert len(rows) == 1 and rows[0].split("│")[4].strip() == "1", rows  # n = 1, not 2
