"""Mid-run checkpoints: a run killed at any moment resumes from its last checkpoint and ends
with the files an uninterrupted run writes; what cannot be restored is said in status.json."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TWO_GROUPS_SUITE, rlbench_cmd
from run_files import differences, statuses, without_resume_fields

from rlbench import checkpoint, records, snapshot
from rlbench.executor import run_suite
from rlbench.runspec import expand
from rlbench.stepping import LaneEnvs
from rlbench.suite import load_suite

#: Six evaluations: a checkpoint after each but the last.
SUITE = TWO_GROUPS_SUITE.format(name="ck", steps=3000)

_real_save = checkpoint.save

#: The runs in a fresh process load the plugins the in-process ones do (the ``catalogue``
#: fixture: rlbench's own), whatever else is installed: provenance.json records them.
OWN_PLUGINS = "--no-plugin-autoload"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, catalogue) -> Path:
    folder = tmp_path_factory.mktemp("uninterrupted")
    suite_file = folder / "suite.toml"
    suite_file.write_text(SUITE)
    suite = load_suite(suite_file, catalogue)
    run_suite(suite, expand(suite), folder / "results", catalogue=catalogue)
    return folder / "results" / "ck" / "runs"


def test_snapshot_restores_in_place_and_keeps_aliases():
    class Holder:
        def __init__(self) -> None:
            self.rng = np.random.default_rng(0)
            self.rngs = (self.rng,)
            self.buffer = torch.zeros(4)
            self.view = self.buffer.numpy()  # shares the tensor's memory
            self.net = torch.nn.Linear(2, 1)
            self.optimizer = torch.optim.Adam(self.net.parameters())
            self.steps = 0
            self.history: list[float] = []

    a = Holder()
    a.buffer += 3
    a.rng.random(5)
    a.steps, a.history = 7, [1.0, 2.0]
    a.net(torch.ones(1, 2)).sum().backward()
    a.optimizer.step()
    saved = snapshot.capture(a)

    b = Holder()
    snapshot.restore(b, saved)
    assert torch.equal(b.buffer, a.buffer) and b.steps == 7 and b.history == [1.0, 2.0]
    assert torch.equal(b.net.weight, a.net.weight)
    assert b.optimizer.state_dict()["state"][0]["exp_avg"].equal(
        a.optimizer.state_dict()["state"][0]["exp_avg"]
    )
    assert b.rng.random() == a.rng.random()
    b.view[0] = 42.0  # the numpy view still aliases the restored tensor
    assert b.buffer[0] == 42.0
    assert b.rngs[0] is b.rng


def test_an_object_it_cannot_copy_is_named():
    class Opaque:
        __slots__ = ("x",)

    class Holder:
        def __init__(self) -> None:
            self.thing = Opaque()

    with pytest.raises(snapshot.SnapshotError, match=r"thing is a Opaque.*checkpoint_state"):
        snapshot.capture(Holder())


def _start(suite_file: Path, results: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rlbench",
            OWN_PLUGINS,
            "run",
            str(suite_file),
            "--results",
            str(results),
            "-j",
            "1",
            "--no-report",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_runs_killed_at_random_moments_resume_to_the_files_of_an_uninterrupted_run(
    tmp_path, uninterrupted
):
    suite_file = tmp_path / "suite.toml"
    suite_file.write_text(SUITE)
    results = tmp_path / "results"
    runs_dir = results / "ck" / "runs"
    rng = random.Random(12)
    kills = 0
    for _ in range(3):
        proc = _start(suite_file, results)
        # Wait for a checkpoint newer than the last kill's, then kill -9 a random moment later.
        before = {p: p.stat().st_mtime for p in runs_dir.glob("*/checkpoint.json")}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            now = {p: p.stat().st_mtime for p in runs_dir.glob("*/checkpoint.json")}
            if any(before.get(p) != t for p, t in now.items()):
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.6))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
    assert kills >= 2, "the runs ended before they could be killed: lengthen the suite"
    finished = rlbench_cmd(
        OWN_PLUGINS, "run", str(suite_file), "--results", str(results), "-j", "1"
    )
    assert finished.returncode == 0, finished.stderr

    found = statuses(runs_dir)
    assert all(s["status"] == "complete" for s in found.values())
    assert any(s.get("resumes", 0) >= 1 for s in found.values())
    assert all(s.get("resume_exact", True) for s in found.values())
    assert not list(runs_dir.glob("*/checkpoint.*")), "complete runs keep no checkpoint"
    without_resume_fields(runs_dir)
    assert differences(uninterrupted, runs_dir) == []


def _interrupt_after_checkpoints(monkeypatch, count: int) -> None:
    """Make the ``count``-th checkpoint of this process raise KeyboardInterrupt once written."""
    written = {"n": 0}
    save = checkpoint.save

    def save_then_stop(*args, **kwargs):
        save(*args, **kwargs)
        written["n"] += 1
        if written["n"] == count:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_stop)


def test_a_resume_regroups_the_checkpointed_runs_whatever_lanes_says(
    tmp_path, catalogue, monkeypatch, uninterrupted
):
    suite_file = tmp_path / "suite.toml"
    suite_file.write_text(SUITE)
    suite = load_suite(suite_file, catalogue)
    runs = expand(suite)
    _interrupt_after_checkpoints(monkeypatch, 3)
    first = run_suite(suite, runs, tmp_path, catalogue=catalogue)
    assert first.interrupted
    monkeypatch.undo()
    # --lanes 1 would train every seed alone: the checkpointed pair resumes as one group.
    run_suite(suite, runs, tmp_path, catalogue=catalogue, lanes=1)
    runs_dir = tmp_path / "ck" / "runs"
    resumed = [s for s in statuses(runs_dir).values() if s.get("resumes")]
    assert len(resumed) == 2 and {s["lanes"] for s in resumed} == {2}
    assert {s["resumed_from_step"] for s in resumed} == {1500}
    without_resume_fields(runs_dir)
    # ppo's seeds trained alone this time: the same results, recorded as groups of one.
    assert [
        d
        for d in differences(uninterrupted, runs_dir)
        if not (
            d.startswith("ppo") and d.endswith(("provenance.json differs", "status.json differs"))
        )
    ] == []


def test_environments_that_cannot_be_copied_restart_their_episodes_and_status_says_so(
    tmp_path, catalogue, monkeypatch
):
    suite_file = tmp_path / "suite.toml"
    suite_file.write_text(
        SUITE.replace('name = "ppo"', 'name = "naive_dqn"').replace(
            "config = { num_envs = 2, n_steps = 64, batch_size = 32, n_epochs = 2, "
            "normalize_obs = true }\n",
            "",
        )
    )
    suite = load_suite(suite_file, catalogue)
    runs = [r for r in expand(suite) if r.agent == "naive_dqn"]
    monkeypatch.setattr(LaneEnvs, "copy_problem", lambda self: "TestEnv cannot be copied")
    _interrupt_after_checkpoints(monkeypatch, 2)
    assert run_suite(suite, runs, tmp_path, catalogue=catalogue).interrupted
    monkeypatch.setattr(checkpoint, "save", _real_save)
    run_suite(suite, runs, tmp_path, catalogue=catalogue)
    found = statuses(tmp_path / "ck" / "runs")
    assert {s["status"] for s in found.values()} == {"complete"}
    for status in found.values():
        assert status["resume_exact"] is False and status["resumed_from_step"] == 1000
        assert (
            "started new episodes from seeded resets: TestEnv cannot be copied"
            in (status["resume_note"])
        )


def test_keep_checkpoints_keeps_the_last_one_and_checkpoint_every_0_writes_none(
    tmp_path, write_suite
):
    suite = write_suite(steps=600, eval_interval=150)
    kept = rlbench_cmd(
        "run", str(suite), "--results", str(tmp_path / "kept"), "--keep-checkpoints", "--no-report"
    )
    assert kept.returncode == 0, kept.stderr
    infos = list((tmp_path / "kept" / "t" / "runs").glob("*/checkpoint.json"))
    assert len(infos) == 2  # one per lane group (naive_dqn's seeds, dqn's seeds)
    info = json.loads(infos[0].read_text())
    assert info["step"] == 450 and len(info["run_ids"]) == 2 and info["envs_restorable"]
    none = rlbench_cmd(
        "run",
        str(suite),
        "--results",
        str(tmp_path / "none"),
        "--checkpoint-every",
        "0",
        "--no-report",
    )
    assert none.returncode == 0, none.stderr
    assert not list((tmp_path / "none").rglob("checkpoint.*"))


def _interrupted_dqn_group(tmp_path, catalogue, monkeypatch):
    """dqn's two seeds interrupted after their second checkpoint: the suite and its runs."""
    suite_file = tmp_path / "suite.toml"
    suite_file.write_text(SUITE)
    suite = load_suite(suite_file, catalogue)
    runs = [r for r in expand(suite) if r.agent == "dqn"]
    _interrupt_after_checkpoints(monkeypatch, 2)
    assert run_suite(suite, runs, tmp_path, catalogue=catalogue).interrupted
    monkeypatch.undo()
    return suite, runs


def test_force_starts_over_instead_of_resuming(tmp_path, catalogue, monkeypatch):
    suite, runs = _interrupted_dqn_group(tmp_path, catalogue, monkeypatch)
    run_suite(suite, runs, tmp_path, catalogue=catalogue, force=True)
    found = statuses(tmp_path / "ck" / "runs")
    assert all(s["status"] == "complete" and "resumes" not in s for s in found.values())


def test_a_checkpoint_of_another_version_is_not_resumed(tmp_path, catalogue, monkeypatch):
    suite, runs = _interrupted_dqn_group(tmp_path, catalogue, monkeypatch)
    monkeypatch.setattr(checkpoint, "versions", lambda: {"rlbench": "9.9", "torch": "x"})
    first = records.RunDir(tmp_path / "ck", runs[0].run_id)
    state, why = checkpoint.load(first, [r.run_id for r in runs])
    assert state is None and "other versions" in why
    run_suite(suite, runs, tmp_path, catalogue=catalogue)
    found = statuses(tmp_path / "ck" / "runs")
    assert all(s["status"] == "complete" and "resumes" not in s for s in found.values())


def test_an_agent_whose_state_cannot_be_saved_trains_on_and_status_says_why(
    tmp_path, inline_plugin
):
    catalogue = inline_plugin(
        "opaque_agent",
        """
        from rlbench import AgentSpec, hookimpl
        from rlbench_dqn.naive_dqn import NaiveDQN

        class Handle:  # stands for a C extension's object: no __dict__ to copy
            __slots__ = ("fd",)

        class OpaqueDQN(NaiveDQN):
            def __init__(self, config, context):
                super().__init__(config, context)
                self.handle = Handle()

        @hookimpl
        def rlbench_register_agents():
            return [AgentSpec(name="opaque_dqn", agent=OpaqueDQN)]
        """,
    )
    suite_file = tmp_path / "suite.toml"
    suite_file.write_text(SUITE.split("[[agents]]")[0] + '[[agents]]\nname = "opaque_dqn"\n')
    suite = load_suite(suite_file, catalogue)
    run_suite(suite, expand(suite), tmp_path, catalogue=catalogue)
    found = statuses(tmp_path / "ck" / "runs")
    assert {s["status"] for s in found.values()} == {"complete"}
    for status in found.values():
        assert status["checkpoint_note"] == (
            "no mid-run checkpoints: the agent's state cannot be saved (SnapshotError: "
            "handle is a Handle, which a checkpoint cannot copy; override "
            "checkpoint_state()/load_checkpoint_state() to save it)"
        )
    assert not list((tmp_path / "ck").rglob("checkpoint.*"))


def test_a_checkpoint_left_by_a_kill_after_completion_is_removed_by_the_next_run(
    tmp_path, catalogue, monkeypatch
):
    # The window kill -9 can hit: the group recorded complete, its checkpoint not yet removed.
    monkeypatch.setattr(checkpoint, "remove", lambda run_dir: None)
    suite_file = tmp_path / "suite.toml"
    suite_file.write_text(SUITE)
    suite = load_suite(suite_file, catalogue)
    runs = [r for r in expand(suite) if r.agent == "dqn"]
    run_suite(suite, runs, tmp_path, catalogue=catalogue)
    runs_dir = tmp_path / "ck" / "runs"
    assert list(runs_dir.glob("*/checkpoint.pt"))
    monkeypatch.undo()
    again = run_suite(suite, runs, tmp_path, catalogue=catalogue)
    assert sorted(again.already_complete) == sorted(r.run_id for r in runs)
    assert not list(runs_dir.glob("*/checkpoint.*")), "complete runs keep no checkpoint"
