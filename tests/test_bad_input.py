"""Bad input gets one line, exit code 2, never a traceback, and changes nothing on disk.

Each case of the table is a bad suite, a misused flag or a results folder in the way; the
command runs in-process (as fast as validation) and the test reads what the user reads: the
exit code and the first line on stderr. The working folder is compared before and after.
Names that become paths, and two runs of one suite at once, are tested with real processes.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import rlbench_cmd

from rlbench import records
from rlbench.cli import cli
from rlbench.errors import RlbenchError
from rlbench.plugins import load_catalogue
from rlbench.runspec import expand
from rlbench.suite import load_suite
from rlbench.suite_lock import LOCK_FILE, SuiteLock

GOOD = """\
name = "t"
seeds = {seeds}
environments = [{environments}]
[budget]
steps = 200
eval_interval = {eval_interval}
eval_episodes = {eval_episodes}
[[agents]]
name = "{agent}"
{extra}
"""


def suite_text(**fields: object) -> str:
    values: dict[str, object] = {
        "seeds": 1,
        "environments": '"CartPole-v1"',
        "eval_interval": 100,
        "eval_episodes": 1,
        "agent": "naive_dqn",
        "extra": "",
    }
    values.update(fields)
    return GOOD.format(**values)


def write(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


def snapshot(root: Path) -> dict[str, tuple[bool, int, int]]:
    """Every path below ``root``: whether it is a folder, its size and its mtime."""
    out = {}
    for path in root.rglob("*"):
        info = path.lstat()
        out[str(path.relative_to(root))] = (path.is_dir(), info.st_size, info.st_mtime_ns)
    return out


def run_ids(suite: Path) -> list[str]:
    return [spec.run_id for spec in expand(load_suite(suite, load_catalogue(autoload=False)))]


# ----------------------------------------------------------------------------- the table


@dataclass
class Case:
    id: str
    args: list[str]
    first_line: str
    """The first line on stderr, exactly; a trailing "…" compares the start only."""
    setup: Callable[[Path], None] = lambda tmp: None
    code: int = 2
    read_only: bool = False
    """Make every write below ./res fail as on a read-only file system (tests run as root,
    where a chmod'd folder does not stop writes)."""
    marks: list[pytest.MarkDecorator] = field(default_factory=list)


def suite_file(content: str | bytes, name: str = "s.toml") -> Callable[[Path], None]:
    return lambda tmp: write(tmp / name, content)


def good_suite_and(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        write(tmp / "s.toml", suite_text())
        for step in steps:
            step(tmp)

    return setup


def run_dir_is_a_file(tmp: Path) -> None:
    [run_id] = run_ids(tmp / "s.toml")
    write(tmp / "res" / "t" / "runs" / run_id, "not a run")


SPACES_PLUGIN = """
    from rlbench import AgentSpec, hookimpl
    from rlbench_dqn.naive_dqn import NaiveDQN

    class BoxOnly(NaiveDQN):
        @classmethod
        def check_spaces(cls, observation_space, action_space):
            if type(action_space).__name__ != "Box":
                return f"it needs a Box action space, got {action_space}"
            return None

    @hookimpl
    def rlbench_register_agents():
        return [AgentSpec("box_only", BoxOnly)]
"""

CASES = [
    # The suite file itself.
    Case(
        "suite-latin-1",
        ["validate", "s.toml"],
        "error: s.toml: line 2: not UTF-8 text (byte 0xe9 at offset 15); a suite file is "
        "TOML, saved as UTF-8",
        suite_file('# r\nname = "caf\xe9"\n'.encode("latin-1")),
    ),
    Case(
        "suite-binary",
        ["run", "s.toml", "--results", "res"],
        "error: s.toml: line 2: not UTF-8 text (byte 0x80 at offset 128); …",
        suite_file(bytes(range(256))),
    ),
    Case(
        "suite-is-a-folder",
        ["run", "s.toml"],
        "error: invalid value for 'SUITE_FILE': File 's.toml' is a directory.",
        lambda tmp: (tmp / "s.toml").mkdir(),
    ),
    # Values that validate in type but cannot work.
    Case(
        "seed-beyond-64-bits",
        ["run", "s.toml", "--results", "res"],
        "error: s.toml: seeds: expected a count of seeds (integer from 1 to 10000) or a list "
        "of distinct integer seeds from 0 to 2**64 - 1; seeds[1] is 18446744073709551616",
        suite_file(suite_text(seeds=f"[0, {2**64}]")),
    ),
    Case(
        "seed-count-absurd",
        ["validate", "s.toml"],
        "error: s.toml: seeds: expected a count of seeds (integer from 1 to 10000) or a list "
        "of distinct integer seeds from 0 to 2**64 - 1, got 1000000000",
        suite_file(suite_text(seeds=10**9)),
    ),
    Case(
        "eval-episodes-absurd",
        ["run", "s.toml", "--results", "res"],
        "error: s.toml: budget.eval_episodes: input should be less than or equal to 10000, "
        "got 1000000000",
        suite_file(suite_text(eval_episodes=10**9)),
    ),
    # TOML's types are the contract: a number written as a string is refused, with the fix.
    Case(
        "budget-steps-as-a-string",
        ["validate", "s.toml"],
        "error: s.toml: budget.steps: write a number, not a string: steps = 1000",
        suite_file(suite_text().replace("steps = 200", 'steps = "1000"')),
    ),
    Case(
        "seeds-as-a-string",
        ["run", "s.toml", "--results", "res"],
        "error: s.toml: seeds: write a number, not a string: seeds = 3",
        suite_file(suite_text(seeds='"3"')),
    ),
    Case(
        "agent-config-number-as-a-string",
        ["validate", "s.toml"],
        "error: s.toml: agents[0].config.learning_rate: write a number, not a string: "
        "learning_rate = 1e-3",
        suite_file(suite_text(extra='config = { learning_rate = "1e-3" }')),
    ),
    Case(
        "config-word-for-a-number",
        ["validate", "s.toml"],
        "error: s.toml: agents[0].config.gamma: write a number, not a string, got 'high'",
        suite_file(suite_text(extra='config = { gamma = "high" }')),
    ),
    Case(
        "zoo-schedule-without-a-number",
        ["validate", "s.toml"],
        'error: s.toml: agents[0].config: learning_rate = "lin_fast": write lin_ and a number, '
        'e.g. "lin_1e-3"',
        suite_file(suite_text(agent="ppo", extra='config = { learning_rate = "lin_fast" }')),
    ),
    Case(
        "eval-interval-beyond-the-budget-warns",
        ["validate", "s.toml"],
        "warning: s.toml: budget.eval_interval: 500 is more than budget.steps (200), so only "
        "the final evaluation runs; lower it for a learning curve",
        suite_file(suite_text(eval_interval=500)),
        code=0,
    ),
    Case(
        "environment-rejects-its-kwargs",
        ["run", "s.toml", "--results", "res"],
        "error: s.toml: environments[0]: 'CartPole-v1' cannot be made with kwargs "
        "{'bogus': 1}: TypeError: CartPoleEnv.__init__() got an unexpected keyword argument "
        "'bogus'…",
        suite_file(suite_text(environments='{ id = "CartPole-v1", kwargs = { bogus = 1 } }')),
    ),
    Case(
        "agent-on-a-space-it-declares-unsupported",
        ["-p", "spaces_plugin", "validate", "s.toml"],
        "error: s.toml: agents[0] on environments[0]: box_only cannot train on "
        "'CartPole-v1': it needs a Box action space, got Discrete(2)",
        suite_file(suite_text(agent="box_only")),
    ),
    Case(
        "dqn-on-continuous-actions",
        ["validate", "s.toml"],
        "error: s.toml: agents[0] on environments[0]: dqn cannot train on 'Pendulum-v1': …",
        suite_file(suite_text(agent="dqn", environments='"Pendulum-v1"')),
    ),
    Case(
        "hidden-size-zero",
        ["validate", "s.toml"],
        "error: s.toml: agents[0].network.hidden_sizes[0]: input should be greater than or "
        "equal to 1, got 0",
        suite_file(suite_text(extra='network = { name = "mlp", hidden_sizes = [0] }')),
    ),
    Case(
        "hidden-size-negative",
        ["run", "s.toml", "--results", "res"],
        "error: s.toml: agents[0].network.hidden_sizes[0]: input should be greater than or "
        "equal to 1, got -4",
        suite_file(suite_text(extra='network = { name = "mlp", hidden_sizes = [-4] }')),
    ),
    Case(
        "unknown-agent-did-you-mean",
        ["run", "s.toml", "--results", "res"],
        "error: s.toml: agents[0].name: unknown agent 'dqm' (did you mean 'dqn'?); "
        "`rlbench list` shows the agents",
        suite_file(suite_text(agent="dqm")),
    ),
    Case(
        "agent-of-a-plugin-that-failed-to-load",
        ["-p", "broken_on_import", "validate", "s.toml"],
        "error: s.toml: agents[0].name: cannot run: unknown agent 'from_broken'; it may come "
        "from a plugin that failed to load: plugin 'broken_on_import' (RLBENCH_PLUGINS -) "
        "failed to load: ImportError: broken on purpose",
        lambda tmp: (
            write(tmp / "broken_on_import.py", 'raise ImportError("broken on purpose")\n'),
            write(tmp / "s.toml", suite_text(agent="from_broken")),
        ),
    ),
    Case(
        "mistyped-suite-path",
        ["run", "sutie.toml"],
        "error: sutie.toml: cannot read the file: No such file or directory (did you mean "
        "'suite.toml'?)",
        suite_file(suite_text(), name="suite.toml"),
    ),
    Case(
        "unknown-environment-suggested-once",
        ["validate", "s.toml"],
        "error: s.toml: environments[0]: unknown environment 'CartPole-v2' (did you mean "
        "'CartPole-v1' or 'CartPole-v0'…",
        suite_file(suite_text(environments='"CartPole-v2"')),
    ),
    # The results folder.
    Case(
        "results-below-a-file",
        ["run", "s.toml", "--results", "plain/res"],
        "error: --results plain/res: plain is a file, not a folder; choose another --results",
        good_suite_and(lambda tmp: write(tmp / "plain", "a file")),
    ),
    Case(
        "suite-folder-is-a-file",
        ["run", "s.toml", "--results", "res"],
        "error: res/t is a file, where the suite's results folder goes; move it away or "
        "choose another --results",
        good_suite_and(lambda tmp: write(tmp / "res" / "t", "a file")),
    ),
    Case(
        "runs-folder-is-a-file",
        ["run", "s.toml", "--results", "res"],
        "error: res/t/runs is a file, where the suite's runs folder goes; move it away",
        good_suite_and(lambda tmp: write(tmp / "res" / "t" / "runs", "a file")),
    ),
    Case(
        "run-folder-is-a-file",
        ["run", "s.toml", "--results", "res"],
        "error: res/t/runs/naive_dqn__CartPole-v1__seed0__cpu__…",
        good_suite_and(run_dir_is_a_file),
    ),
    Case(
        "results-read-only",
        ["run", "s.toml", "--results", "res"],
        "error: --results res: res: Read-only file system",
        good_suite_and(),
        read_only=True,
    ),
    Case(
        "suite-folder-read-only",
        ["run", "s.toml", "--results", "res"],
        f"error: --results res: res/t/{LOCK_FILE}: Read-only file system",
        good_suite_and(lambda tmp: (tmp / "res" / "t").mkdir(parents=True)),
        read_only=True,
    ),
    # Click's own usage errors, in rlbench's form.
    Case("unknown-option", ["run", "--frob", "s.toml"], "error: no such option '--frob'…"),
    Case("missing-argument", ["run"], "error: missing argument 'SUITE_FILE'."),
    Case("unknown-command", ["rnu"], "error: no such command 'rnu'…"),
    Case(
        "option-out-of-range",
        ["run", "s.toml", "--lanes", "0"],
        "error: invalid value for '--lanes': 0 is not in the range x>=1.",
        good_suite_and(),
    ),
    Case(
        "report-of-a-missing-folder",
        ["report", "nowhere"],
        "error: invalid value for 'RESULTS_DIRS...': Path 'nowhere' does not exist.",
    ),
    Case(
        "bad-jobs",
        ["run", "s.toml", "--jobs", "many", "--results", "res"],
        "error: --jobs: expected a positive integer or 'auto', got 'many'",
        good_suite_and(),
    ),
]


def _read_only_below(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes below ``root`` fail with EROFS, as on a file system mounted read-only."""
    real_open, real_mkdir = os.open, os.mkdir
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def refused(path: Any) -> OSError | None:
        if Path(os.fspath(path)).resolve().is_relative_to(root.resolve()):
            return OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return None

    def fake_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & writing and (error := refused(path)):
            raise error
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        # As the kernel does: a missing parent is ENOENT, an existing folder EEXIST.
        parent_exists = os.path.isdir(os.path.dirname(os.path.abspath(path)))
        if parent_exists and not os.path.exists(path) and (error := refused(path)):
            raise error
        real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # importing the plugin writes nothing
    write(tmp_path / "spaces_plugin.py", textwrap.dedent(SPACES_PLUGIN))
    case.setup(tmp_path)
    before = snapshot(tmp_path)
    if case.read_only:
        _read_only_below(tmp_path / "res", monkeypatch)
    try:
        result = CliRunner().invoke(cli, case.args)
    finally:
        sys.modules.pop("spaces_plugin", None)
    # Anything but a clean exit is a traceback the user would see.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == case.code, result.output
    first = (result.stderr.splitlines() or [""])[0]
    if case.first_line.endswith("…"):
        assert first.startswith(case.first_line[:-1]), first
    else:
        assert first == case.first_line
    monkeypatch.undo()  # the snapshot reads the disk as it is
    assert snapshot(tmp_path) == before, "the command changed files on disk"


def test_every_error_is_one_line_in_a_real_process(tmp_path: Path) -> None:
    """What the table checks in-process, once as a user runs it: no traceback, the error
    on one line even on a narrow terminal."""
    write(tmp_path / "s.toml", suite_text(eval_episodes=10**9))
    proc = rlbench_cmd("run", "s.toml", cwd=tmp_path, env={"COLUMNS": "40"})
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: s.toml: budget.eval_episodes: input should be less than or equal to 10000, "
        "got 1000000000"
    ]
    usage = rlbench_cmd("run", "--frob", cwd=tmp_path)
    assert usage.returncode == 2
    assert usage.stderr.splitlines()[0].startswith("error: no such option '--frob'")
    assert "Traceback" not in proc.stderr + usage.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


# ------------------------------------------------------------- names that become paths

HOSTILE = ["../../../x", "a/../../b", "/{tmp}/outside/x", "."]

BROKEN_PLUGIN = """
    raise ImportError("this plugin is broken, so no name can be checked")
"""

NAMESPACED_ENV_PLUGIN = """
    import gymnasium as gym
    from rlbench import EnvironmentSpec, hookimpl

    @hookimpl
    def rlbench_register_environments():
        return [EnvironmentSpec("ALE/Pong-v5", make=lambda **kw: gym.make("CartPole-v1", **kw))]
"""

HOSTILE_AGENT_PLUGIN = """
    from rlbench import AgentSpec, hookimpl
    from rlbench_dqn.naive_dqn import NaiveDQN

    @hookimpl
    def rlbench_register_agents():
        return [AgentSpec(name, NaiveDQN) for name in {names!r}]
"""


def test_hostile_names_write_nothing_outside_the_results_folder(tmp_path: Path) -> None:
    """Agent and environment names that are paths ('../x', '/tmp/x', 'a/../../b'), from a
    plugin or from a suite while a broken plugin makes them unverifiable, and a namespaced
    environment id: every run folder is a slug inside the results folder."""
    hostile = [n.replace("/{tmp}", str(tmp_path)) for n in HOSTILE]
    plugins = {
        "broken_plugin": BROKEN_PLUGIN,
        "ale_plugin": NAMESPACED_ENV_PLUGIN,
        "hostile_plugin": HOSTILE_AGENT_PLUGIN.format(names=hostile),
    }
    for name, source in plugins.items():
        write(tmp_path / "plugins" / f"{name}.py", textwrap.dedent(source))
    agents = "".join(f"[[agents]]\nname = {name!r}\n" for name in [*hostile, "naive_dqn"])
    environments = ", ".join(repr(n) for n in ["ALE/Pong-v5", *hostile])
    suite = tmp_path / "work" / "deep" / "s.toml"
    write(
        suite,
        suite_text(environments=environments, agent="naive_dqn").replace(
            '[[agents]]\nname = "naive_dqn"\n', agents
        ),
    )
    results = tmp_path / "work" / "deep" / "res"
    before = snapshot(tmp_path)
    args = [f"-p{p}" for p in plugins]
    proc = rlbench_cmd(
        *args,
        "run",
        str(suite),
        "--results",
        str(results),
        "-j",
        "1",
        "--no-report",
        env={"PYTHONPATH": str(tmp_path / "plugins"), "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, proc.stderr  # the runs of unknown names fail, nothing else
    new = set(snapshot(tmp_path)) - set(before)
    outside = [p for p in new if not (tmp_path / p).is_relative_to(results)]
    assert outside == []
    runs = sorted(p.name for p in (results / "t" / "runs").iterdir())
    assert len(runs) == (len(hostile) + 1) * (len(hostile) + 1)
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", run) for run in runs), runs
    [pong] = [r for r in runs if r.startswith("naive_dqn__ALE-Pong-v5__seed0__cpu__")]
    assert records.RunDir(results / "t", pong).is_complete()


@pytest.mark.parametrize("run_id", ["../x", "/tmp/x", "a/../../b", ".."])
def test_a_run_folder_outside_its_suite_is_refused(tmp_path: Path, run_id: str) -> None:
    with pytest.raises(RlbenchError, match="is not inside"):
        records.RunDir(tmp_path / "suite", run_id)
    assert not (tmp_path / "suite").exists()


# ------------------------------------------------------------------ one run per suite


def test_a_second_run_of_a_suite_says_who_holds_it(tmp_path: Path) -> None:
    write(tmp_path / "s.toml", suite_text().replace("steps = 200", "steps = 1_000_000"))
    holder = subprocess.Popen(
        [sys.executable, "-m", "rlbench", "run", "s.toml", "--results", "res", "-j", "1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = tmp_path / "res" / "t" / LOCK_FILE
    try:
        deadline = time.monotonic() + 120
        while f'"pid": {holder.pid}' not in (lock.read_text() if lock.exists() else ""):
            assert holder.poll() is None, holder.stderr.read() if holder.stderr else ""
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.05)
        held = lock.read_bytes(), lock.stat().st_mtime_ns
        second = rlbench_cmd("run", "s.toml", "--results", "res", "-j", "1", cwd=tmp_path)
        assert second.returncode == 2
        [line] = second.stderr.splitlines()
        assert line.startswith(
            f"error: res/t is in use by another `rlbench run` (pid {holder.pid} on "
        )
        assert line.endswith("; wait for it to finish, or give this one another --results")
        assert (lock.read_bytes(), lock.stat().st_mtime_ns) == held  # the second wrote nothing
        assert holder.poll() is None  # and the first one goes on
    finally:
        holder.send_signal(signal.SIGINT)
        holder.communicate(timeout=60)
    with SuiteLock(tmp_path / "res" / "t"):  # once the first has ended, the folder is free
        pass
