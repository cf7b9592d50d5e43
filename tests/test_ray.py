"""Suites on a real Ray cluster: a head node and a worker node on loopback, started by the
project's own script (scripts/ray_cluster.sh; .ci/run starts it and exports RAY_ADDRESS).
The driver's results folder is the one source of truth: a suite run on Ray writes the files a
local run writes, and a node lost mid-run costs its runs nothing but time."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import HAVE_RAY, RAY_ENV, REPO, TWO_GROUPS_SUITE, rlbench_cmd
from run_files import differences, statuses, without_resume_fields

from rlbench import ray_executor
from rlbench.errors import RlbenchError

needs_ray = pytest.mark.skipif(
    not HAVE_RAY, reason="Ray is not installed (pip install -c constraints.txt -e '.[ray]')"
)

SUITE = TWO_GROUPS_SUITE.format(name="onray", steps=2000)

#: Three seeds of one agent trained alone (--lanes 1): three tasks, one per node of a
#: three-node cluster, each checkpointing after each of its 20 evaluations (long enough for
#: the test to kill a node mid-run).
LONG_SUITE = """
name = "lost"
seeds = 3
environments = ["CartPole-v1"]

[budget]
steps = 20000
eval_interval = 1000
eval_episodes = 2

[[agents]]
name = "dqn"
config = { learning_starts = 200 }
"""


@needs_ray
def test_a_suite_on_ray_writes_the_files_of_a_local_run(tmp_path, ray_cluster):
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE)
    on_ray = rlbench_cmd(
        "run",
        str(suite),
        "--results",
        str(tmp_path / "ray"),
        "--executor",
        "ray",
        "--address",
        ray_cluster,
        env=RAY_ENV,
    )
    assert on_ray.returncode == 0, on_ray.stdout + on_ray.stderr
    local = rlbench_cmd(
        "run", str(suite), "--results", str(tmp_path / "local"), "-j", "2", "--no-report"
    )
    assert local.returncode == 0, local.stderr
    runs_ray, runs_local = tmp_path / "ray/onray/runs", tmp_path / "local/onray/runs"
    assert len(statuses(runs_ray)) == 4
    # Each run records the Ray node it trained on; the local runs record none.
    for provenance in runs_ray.glob("*/provenance.json"):
        assert json.loads(provenance.read_text())["ray_node"]["ip"]
    assert not any("ray_node" in p.read_text() for p in runs_local.glob("*/provenance.json"))
    # The cluster's CPUs decide how lane groups are split (as --jobs does locally); what each
    # run computes does not depend on its group.
    assert differences(runs_local, runs_ray, grouping=False) == []
    assert (tmp_path / "ray" / "onray" / "report" / "report.md").is_file()


def _raylet_of(pid: int) -> int:
    """The raylet process that ``ray start --block`` (``pid``) runs."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"raylet/raylet" in cmdline:
            return int(stat.parent.name)
    raise AssertionError(f"no raylet under ray start (pid {pid})")


@needs_ray
@pytest.mark.slow  # about two minutes: CI runs it with the learning checks
def test_runs_of_a_node_lost_mid_run_resume_elsewhere_from_their_checkpoints(tmp_path, ray_cluster):
    suite = tmp_path / "suite.toml"
    suite.write_text(LONG_SUITE)
    log = (tmp_path / "victim.log").open("w")
    # A third node, on its own loopback address, that the test kills.
    victim = subprocess.Popen(
        [
            "ray",
            "start",
            "--address",
            ray_cluster,
            "--node-ip-address",
            "127.0.0.3",
            "--num-cpus",
            "1",
            "--num-gpus",
            "0",
            "--block",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **RAY_ENV},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300  # seconds on a quiet machine; a busy CPU slows it
        while "Ray runtime started" not in (tmp_path / "victim.log").read_text():
            assert time.monotonic() < deadline and victim.poll() is None, "the node did not start"
            time.sleep(0.5)
        time.sleep(2)  # registered with the head
        results = tmp_path / "ray"
        run = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rlbench",
                "run",
                str(suite),
                "--results",
                str(results),
                "--executor",
                "ray",
                "--address",
                ray_cluster,
                "--lanes",
                "1",
                "--no-report",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **RAY_ENV, "COLUMNS": "200"},
        )
        runs_dir = results / "lost" / "runs"
        # The run the third node trains (its provenance.json says where), once it has a
        # checkpoint.
        deadline = time.monotonic() + 240
        while not any(
            (p.parent / "checkpoint.json").is_file()
            and json.loads(p.read_text()).get("ray_node", {}).get("ip") == "127.0.0.3"
            for p in runs_dir.glob("*/provenance.json")
        ):
            assert time.monotonic() < deadline and run.poll() is None, "no checkpoint came"
            time.sleep(0.2)
        os.kill(_raylet_of(victim.pid), signal.SIGKILL)
        output, _ = run.communicate(timeout=400)
    finally:
        os.killpg(victim.pid, signal.SIGKILL) if victim.poll() is None else None
        log.close()
    assert run.returncode == 0, output
    found = statuses(runs_dir)
    assert {s["status"] for s in found.values()} == {"complete"}
    resumed = [s for s in found.values() if s.get("resumes")]
    assert len(resumed) == 1 and resumed[0]["resume_exact"] is True
    assert "its Ray task was lost (NodeDiedError" in " ".join(output.split())

    local = rlbench_cmd(
        "run",
        str(suite),
        "--results",
        str(tmp_path / "local"),
        "--lanes",
        "1",
        "-j",
        "2",
        "--no-report",
    )
    assert local.returncode == 0, local.stderr
    without_resume_fields(runs_dir)
    assert differences(tmp_path / "local" / "lost" / "runs", runs_dir, grouping=False) == []


def test_without_ray_the_executor_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(
        RlbenchError,
        match=r"needs Ray, which is not installed; install it "
        r"with pip install 'rlbench\[ray\]'",
    ):
        ray_executor.import_ray()


TUNE_SUITE = """
name = "tt"
seeds = 2
environments = ["CartPole-v1"]

[budget]
steps = 300
eval_interval = 100
eval_episodes = 2

[[agents]]
name = "dqn"
config = { learning_starts = 50, train_frequency = 50, gradient_steps = 2, buffer_size = 1000 }
network = { name = "mlp", hidden_sizes = [16] }

[tune]
trials = 5
seeds_per_trial = 2
warmup_steps = 0
use_default_space = false

[tune.space.dqn]
learning_rate = { low = 1e-4, high = 1e-2, log = true }
batch_size = { choices = [16, 32] }
"""


@needs_ray
def test_tune_on_ray_finishes_exactly_the_trials_asked_for(tmp_path, ray_cluster):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    suite = tmp_path / "tune.toml"
    suite.write_text(TUNE_SUITE)
    results = tmp_path / "results"
    tuned = rlbench_cmd(
        "tune",
        "--suite",
        str(suite),
        "--results",
        str(results),
        "--executor",
        "ray",
        "--address",
        ray_cluster,
        env=RAY_ENV,
    )
    assert tuned.returncode == 0, tuned.stdout + tuned.stderr
    assert "5 finished trials (5 complete" in tuned.stdout
    journal = JournalFileBackend(str(results / "tt" / "tune" / "journal.log"))
    study = optuna.load_study(study_name="dqn-CartPole-v1", storage=JournalStorage(journal))
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 5 and all(t.state.name == "COMPLETE" for t in trials)
    # Every trial ran in a Ray task on the cluster's node (how many tasks got a trial
    # depends on how fast each started on a busy CPU, so that is not asserted).
    workers = [t.user_attrs["worker"] for t in trials]
    assert all(re.fullmatch(r"[0-9a-f]{56}", w.get("ray_node") or "") for w in workers), workers


def _console_examples(document: Path) -> list[tuple[str, list[str]]]:
    """``(command, lines it prints)`` of every console block of ``document``."""
    text = document.read_text()
    found = []
    for block in re.findall(r"^```console\n(.*?)^```", text, re.M | re.S):
        command, *printed = block.strip().splitlines()
        found.append((command.removeprefix("$ "), printed))
    return found


@needs_ray
@pytest.mark.parametrize(
    "command, printed",
    _console_examples(REPO / "docs" / "cluster.md"),
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_the_cluster_page_shows_what_rlbench_prints(command, printed, ray_cluster, tmp_path):
    """An unreachable cluster, a task no node can hold: one line, before any run starts."""
    args = shlex.split(command)[1:]
    result = rlbench_cmd(
        *args, "--results", str(tmp_path), env={**RAY_ENV, "RAY_ADDRESS": ray_cluster}, cwd=REPO
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == printed
    assert not list(tmp_path.rglob("status.json")), "refused before any run started"


@needs_ray
def test_the_cluster_script_joins_its_nodes_and_stops_every_process_it_started(tmp_path):
    """scripts/ray_cluster.sh on a machine where an earlier ``ray.init()`` left a token in
    ~/.ray/auth_token (which turns Ray's token authentication on): both nodes still form
    one cluster, and ``stop`` leaves none of its processes behind (Ray's agents and client
    server, which name no session folder, included)."""
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("f" * 64)
    # Ray's socket paths must stay under 108 bytes: a short folder, not pytest's.
    folder = Path(tempfile.mkdtemp(prefix="rlb-ray-"))
    env = {
        **os.environ,
        **RAY_ENV,
        "HOME": str(home),
        "RLBENCH_RAY_PORT": "6421",
        "RLBENCH_RAY_DIR": str(folder),
    }
    env.pop("RAY_AUTH_MODE", None)
    script = ["bash", str(REPO / "scripts" / "ray_cluster.sh")]
    sessions: list[str] = []
    started = subprocess.run(
        [*script, "start"], capture_output=True, text=True, env=env, timeout=180
    )
    try:
        assert started.returncode == 0, started.stderr
        sessions = (folder / "sessions").read_text().split()
        assert len(sessions) == 2  # the head and the worker node
        members = subprocess.run(
            ["pgrep", "-s", ",".join(sessions)], capture_output=True, text=True
        ).stdout.split()
        assert members  # the nodes' daemons run in the sessions the script recorded
    finally:
        subprocess.run([*script, "stop"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)
    left = subprocess.run(
        ["ps", "-o", "pid=,stat=,cmd=", "-s", ",".join(sessions)], capture_output=True, text=True
    ).stdout.splitlines()
    # Zombies are dead already (whoever adopted them has not reaped them yet).
    assert [line for line in left if line.split()[1][0] != "Z"] == []
