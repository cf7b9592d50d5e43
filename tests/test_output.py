"""What a user sees, at 80 columns and in a pipe: a line per evaluation in a log, a live
display that cuts no number, tables whose names and values are whole, and no line that
rlbench wraps itself."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from rich.console import Console
from synthetic_results import FakeRun, write_results

from rlbench.progress import SuiteProgress

#: A run id longer than 80 columns with its line's numbers, on an environment whose name is
#: long too: what the narrow layouts are for.
LONG_SUITE = """
name = "long"
seeds = 1
environments = ["MountainCarContinuous-v0"]
[budget]
steps = {steps}
eval_interval = {eval_interval}
eval_episodes = 1
[[agents]]
name = "ppo"
label = "ppo-with-a-rather-long-label"
config = {{ num_envs = 2, n_steps = 64, batch_size = 32, n_epochs = 1 }}
network = {{ name = "mlp", hidden_sizes = [16] }}
"""

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def piped(*args: str, columns: int | None = None) -> subprocess.CompletedProcess[str]:
    """``rlbench ARGS`` with its output in a pipe, where rich's width is $COLUMNS, else
    80."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run(
        [sys.executable, "-m", "rlbench", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def in_terminal(*args: str, columns: int = 80, rows: int = 40) -> str:
    """What ``rlbench ARGS`` writes to a pseudo-terminal ``columns`` wide, escape
    sequences taken out, one screen line per line."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {**os.environ, "COLUMNS": str(columns), "LINES": str(rows), "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlbench", *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        close_fds=True,
    )
    os.close(follower)
    out, deadline = bytearray(), time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        try:
            chunk = os.read(leader, 65536) if ready else b""
        except OSError:  # the terminal closed: the command has exited
            break
        if ready and not chunk:
            break
        out += chunk
        if not ready and proc.poll() is not None:
            break
    proc.wait(timeout=60)
    os.close(leader)
    assert proc.returncode == 0, out.decode(errors="replace")
    text = ANSI.sub("\n", out.decode(errors="replace"))
    return "\n".join(line.rstrip() for line in text.replace("\r", "\n").splitlines())


# ----------------------------------------------------------------- rlbench run


def test_a_log_gets_a_line_per_evaluation_and_quiet_only_the_ends(tmp_path, write_suite):
    suite = write_suite(steps=300, eval_interval=150)
    results = str(tmp_path / "res")
    proc = piped("run", str(suite), "--results", results, "-j", "1", "--no-report")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    ends = [line for line in lines if re.match(r"\[\d/4\] complete ", line)]
    run_ids = [line.split()[2] for line in ends]
    assert len(set(run_ids)) == 4
    for run_id in run_ids:
        evals = [line for line in lines if line.startswith(f"eval {run_id}  step ")]
        # Evaluations at steps 0, 150 and 300, each with the run's return and elapsed time;
        # speed and time left once the run has stepped.
        assert [line.split()[3].rstrip(":") for line in evals] == ["0/300", "150/300", "300/300"]
        assert all("return " in line and " elapsed" in line for line in evals)
        assert re.search(
            r"step 150/300: return -?\d+\.\d, [\d,]+ steps/s, \d:\d\d:\d\d "
            r"elapsed, ~\d:\d\d:\d\d left$",
            evals[1],
        ), evals[1]
        # A run's evaluations come before its end.
        assert lines.index(evals[-1]) < next(
            i for i, x in enumerate(lines) if run_id in x and x.startswith("[")
        )
    # Longer than 80 columns, and still one line each (a pipe is not wrapped by rlbench).
    assert all(len(line) > 80 and "final return" in line and "steps/s" in line for line in ends)

    quiet = piped("run", str(suite), "--results", results, "--force", "-q", "--no-report")
    assert quiet.returncode == 0, quiet.stderr
    assert not [line for line in quiet.stdout.splitlines() if line.startswith("eval ")]
    assert len(re.findall(r"^\[\d/4\] complete .* final return ", quiet.stdout, re.M)) == 4


def test_the_count_is_of_the_runs_to_run(tmp_path, write_suite):
    suite = write_suite(steps=150, eval_interval=150, seeds=1)
    results = str(tmp_path / "res")
    assert piped("run", str(suite), "--results", results, "-q", "--no-report").returncode == 0
    more = piped("run", str(suite), "--results", results, "--seeds", "2", "-q", "--no-report")
    assert more.returncode == 0, more.stderr
    # Two of the four runs were done: the two new ones are 1 and 2 of 2.
    assert re.findall(r"^\[(\d/\d)\] complete", more.stdout, re.M) == ["1/2", "2/2"]


def test_the_live_display_at_80_columns_cuts_nothing(tmp_path):
    suite = tmp_path / "long.toml"
    suite.write_text(LONG_SUITE.format(steps=6000, eval_interval=2000))
    screen = in_terminal(
        "run", str(suite), "--results", str(tmp_path / "res"), "-j", "1", "--no-report"
    )
    assert "…" not in screen, screen
    lines = screen.splitlines()
    assert max(len(line) for line in lines if "complete" not in line) <= 80, screen
    # The run's name on a line of its own, its numbers (none cut) on the next.
    assert "  ppo-with-a-rather-long-label__MountainCarContinuous-v0__seed0__cpu" in lines
    assert any(re.search(r"/6k · [\d,]+ steps/s · .* · \d:\d\d:\d\d", line) for line in lines)
    assert any(re.search(r"\d/1 runs · \d:\d\d:\d\d elapsed", line) for line in lines)
    assert any(line.startswith("[1/1] complete ppo-with-a-rather-long-label__") for line in lines)


def _screen(progress: SuiteProgress, width: int, height: int = 40) -> list[str]:
    console = Console(width=width, height=height, record=True, file=io.StringIO())
    console.print(progress.view())
    return [line.rstrip() for line in console.export_text().splitlines()]


def test_the_live_display_keeps_every_number_whole_and_estimates_the_time_left():
    clock = [0.0]
    console = Console(width=80, force_terminal=True, file=io.StringIO())
    progress = SuiteProgress(console, total=12, now=lambda: clock[0])
    short = "dqn__CartPole-v1__seed0__cpu__0123456789"
    long = "td3-long-label__MountainCarContinuous-v0__seed12__cpu__abcdef0123"
    for run_id in (short, long):
        progress.handle("start", run_id, {"steps": 1_000_000})
    clock[0] = 552.0
    for run_id in (short, long):
        progress.handle("step", run_id, {"step": 383_000, "sps": 1234.5})
        progress.handle("eval", run_id, {"step": 383_000, "return_mean": -12.34})
    at_80 = _screen(progress, 80)
    # 766k steps in 552 s; 2 × 617k steps left and 10 runs of 1M not started: 8,096 s.
    assert at_80[0].endswith("0/12 runs · 0:09:12 elapsed · ~2:14:55 left"), at_80
    assert at_80[1:] == [
        "  dqn__CartPole-v1__seed0__cpu",
        "    ━━━━━━━━━━━━ 383k/1M · 1,234 steps/s · eval -12.3 · 0:09:12 · ~0:14:49 left",
        "  td3-long-label__MountainCarContinuous-v0__seed12__cpu",
        "    ━━━━━━━━━━━━ 383k/1M · 1,234 steps/s · eval -12.3 · 0:09:12 · ~0:14:49 left",
    ]
    wide = _screen(progress, 160)
    assert len(wide) == 3 and all("383k/1M" in line for line in wide[1:])
    # More runs than the screen has lines for: the rest are counted, not cut.
    assert _screen(progress, 80, height=4)[-1] == "  and 1 more running"
    progress.handle("end", short, {"status": "complete", "final_return": 1.0})
    assert not any("dqn__CartPole" in line for line in _screen(progress, 80))


# ----------------------------------------------------------------- rlbench list


def test_list_keeps_names_whole_at_80_columns():
    proc = piped("--no-plugin-autoload", "list")
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout
    assert "│ MountainCarContinuous-v0 │" in proc.stdout
    assert "target_update_interval" in proc.stdout and "``" not in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80


def test_list_verbose_wraps_to_the_width_and_shows_network_roles():
    proc = piped("--no-plugin-autoload", "list", "-v")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "``" not in out and "…" not in out
    assert max(len(line) for line in out.splitlines()) <= 80
    ppo = out[out.index("\nppo  [pg (rlbench") : out.index("\nreplay_dqn  [")]
    assert "  network roles: actor, critic ([agents.networks.ROLE] shapes one apart)" in ppo
    assert "    gamma = 0.98: Discount factor (RL Zoo CartPole-v1: 0.98)." in ppo
    dqn = out[out.index("\ndqn  [dqn (rlbench") : out.index("\nnaive_dqn  [")]
    assert "  network roles: none" in dqn
    assert "  default network: mlp, hidden_sizes=[256, 256]" in dqn
    # A docstring's line breaks are gone: a description runs on, wrapped to the width.
    assert "    learning_rate = 0.0023: Adam learning rate." in dqn
    assert "  reference scores: random 22.2, solved 475" in out
    wide = piped("--no-plugin-autoload", "list", "-v", columns=200).stdout
    assert max(len(line) for line in wide.splitlines()) > 80


# ----------------------------------------------------------------- rlbench report


@pytest.fixture(scope="module")
def long_results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("long")
    runs = [
        FakeRun("a-rather-long-agent-label", "MountainCarContinuous-v0", s, final=50 + s)
        for s in range(3)
    ]
    runs += [FakeRun("dqn", "CartPole-v1", s, final=400 + s) for s in range(3)]
    return write_results(root, "long", runs)


@pytest.mark.parametrize("columns", [80, 100, 200])
def test_the_report_table_shows_every_column_or_says_which_it_leaves_out(
    long_results, columns, tmp_path
):
    proc = piped("report", str(long_results), "--out", str(tmp_path / "r"), columns=columns)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "…" not in out
    # All but the path written, which is one line to copy, however long.
    assert max(len(line) for line in out.splitlines() if "Report: " not in line) <= columns
    assert "a-rather-long-agent-label" in out and "MountainCarContinuous-v0" in out
    for value in ("51.0 ± 1.0", "steps/s", "solved"):  # mean ± std of 50, 51, 52
        assert value in out or "(mean ± std and steps to solve: in report.md" in out
    if columns == 80:  # too narrow for a table: a block per agent and environment
        assert "a-rather-long-agent-label on MountainCarContinuous-v0" in out
        assert "mean ± std 51.0 ± 1.0" in out and "steps to solve —" in out
    if columns == 200:
        assert re.search(r"mean ± std +solved +steps to solve", out)


def test_the_suite_span_is_first_start_to_last_end(tmp_path, catalogue):
    from rlbench import report

    runs = [FakeRun("dqn", "CartPole-v1", 0), FakeRun("dqn", "CartPole-v1", 1)]
    runs[1].steps_per_second = 100.0  # 1,000 steps: 10 s, and 0.1 s of evaluation
    path = report.write_report([write_results(tmp_path, "s", runs)], catalogue=catalogue)
    text = path.read_text(encoding="utf-8")
    # Both started at 00:00:00 (synthetic_results); the second ended 10.1 s later.
    assert (
        "| ran | 2026-01-01T00:00:00+00:00 to 2026-01-01T00:00:10+00:00: 0:00:10 from the "
        "first run's start to the last run's end |"
    ) in text


def test_steps_to_solved_says_what_it_computes(tmp_path, catalogue):
    from rlbench import report

    runs = [
        FakeRun("a", "CartPole-v1", 0, curve=[10, 480, 480, 480, 480]),
        FakeRun("a", "CartPole-v1", 1, curve=[10, 100, 200, 300, 400]),
    ]
    path = report.write_report([write_results(tmp_path, "s", runs)], catalogue=catalogue)
    text = path.read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| a | CartPole-v1 | 2 "))
    cells = [c.strip() for c in row.split("|")]
    # Reached solved by 1 of 2 runs: the median of (250, never) is never.
    assert cells[8:10] == ["1/2", "—"], row
    assert "(— unless more than half the runs got there: with 1 of 2, the median is never)" in (
        " ".join(text.split())
    )


def test_validate_in_a_pipe_keeps_each_line_whole(write_suite):
    suite = write_suite(seeds=1)
    proc = piped("--no-plugin-autoload", "validate", str(suite))
    assert proc.returncode == 0, proc.stderr
    first, *runs = proc.stdout.splitlines()
    assert len(first) > 80 and first.endswith(
        "(an agent's seeds train together as lanes: rlbench run --lanes)"
    )
    assert [r.split("__")[0] for r in runs] == ["  naive_dqn", "  dqn"]
