"""Experiment trackers through the logger hook (``rlbench run --log NAME,...``).

Every tracker is read back with its own reader (TensorBoard's event accumulator, MLflow's
client, the W&B offline run file) and compared with what the runs recorded; a plugin logger
records every call it receives, which must be the runs' files row for row, on each executor;
logging changes no result file; a tracker that fails or dies mid-run is reported once and
costs the runs nothing."""

from __future__ import annotations

import csv
import importlib.util
import json
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import RAY_ENV, REPO, TINY_SUITE, rlbench_cmd
from run_files import differences
from test_tune import tiny_tune

from rlbench.loggers import LogContext, Logger, LoggerSpec, RunStart, parse_names
from rlbench.tracking import Tracking

SUITE = TINY_SUITE.format(name="t", seeds=2, devices='["cpu"]', steps=300, eval_interval=150)

#: A plugin with loggers for the tests: ``recorder`` writes every call it receives to
#: $RECORDER_OUT, ``flaky`` raises from its third evaluation on (its server gone),
#: ``needs_missing`` needs a module that is not installed.
RECORDER = '''
import json
import os
from pathlib import Path

from rlbench import Logger, LoggerSpec, hookimpl


class Recorder(Logger):
    """Every call, to $RECORDER_OUT at the end."""

    def __init__(self, context):
        self.out = Path(os.environ["RECORDER_OUT"])
        self.context = [context.suite, str(context.suite_dir), str(context.log_dir)]
        self.calls = []

    def start_run(self, run):
        self.calls.append(["start_run", run.run_id, run.config, run.provenance, run.resumed_from])

    def log_episodes(self, run_id, episodes):
        self.calls.append(["log_episodes", run_id, list(episodes)])

    def log_metrics(self, run_id, step, metrics):
        self.calls.append(["log_metrics", run_id, step, dict(metrics)])

    def log_evaluation(self, run_id, evaluation):
        self.calls.append(["log_evaluation", run_id, dict(evaluation)])

    def end_run(self, run_id, status):
        self.calls.append(["end_run", run_id, dict(status)])

    def close(self):
        self.out.write_text(json.dumps({"context": self.context, "calls": self.calls}))


class Flaky(Logger):
    """Its tracking server goes away at the third evaluation."""

    def __init__(self, context):
        self.evaluations = 0

    def log_evaluation(self, run_id, evaluation):
        self.evaluations += 1
        if self.evaluations >= 3:
            raise ConnectionError("the tracking server at 127.0.0.1:9 is gone")


@hookimpl
def rlbench_register_loggers():
    return [
        LoggerSpec("recorder", Recorder),
        LoggerSpec("flaky", Flaky),
        LoggerSpec(
            "needs_missing",
            Recorder,
            requires=("rlbench_no_such_tracker",),
            install="pip install rlbench-no-such-tracker",
        ),
    ]
'''


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# ------------------------------------------------------------------ the run's own files


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def as_csv(row: dict) -> dict[str, str]:
    """A logged row as the CSV writer writes it (``str`` of each value)."""
    return {key: str(value) for key, value in row.items()}


def run_dirs(results: Path) -> list[Path]:
    return sorted(p for p in (results / "t" / "runs").iterdir() if p.is_dir())


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("plugin")
    (folder / "recorder_plugin.py").write_text(RECORDER)
    return folder


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("suite") / "t.toml"
    path.write_text(SUITE)
    return path


def run_logged(
    suite: Path, results: Path, plugin_dir: Path, *args: str, env: dict | None = None
) -> subprocess.CompletedProcess[str]:
    """``rlbench -p recorder_plugin run SUITE --results RESULTS ARGS``, the plugin importable
    (worker processes import it too)."""
    env = {
        "PYTHONPATH": str(plugin_dir),
        "RECORDER_OUT": str(results / "calls.json"),
        **(env or {}),
    }
    return rlbench_cmd(
        "-p",
        "recorder_plugin",
        "run",
        str(suite),
        "--results",
        str(results),
        "--no-report",
        *args,
        env=env,
    )


@pytest.fixture(scope="module")
def plain(tmp_path_factory, suite_file) -> Path:
    """The suite run without any logger."""
    results = tmp_path_factory.mktemp("plain")
    proc = rlbench_cmd("run", str(suite_file), "--results", str(results), "--no-report", "-j", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return results


#: The built-in trackers whose package is installed here (the test extra installs them all).
REAL = [name for name in ("tensorboard", "mlflow", "wandb") if _installed(name)]


@pytest.fixture(scope="module")
def logged(tmp_path_factory, suite_file) -> Path:
    """The same suite run with every installed built-in tracker, into RESULTS/t/logs."""
    if not REAL:
        pytest.skip("no tracker is installed (pip install -c constraints.txt -e '.[test]')")
    results = tmp_path_factory.mktemp("logged")
    proc = rlbench_cmd(
        "run",
        str(suite_file),
        "--results",
        str(results),
        "--no-report",
        "-j",
        "1",
        "--log",
        ",".join(REAL),
        env={"WANDB_MODE": "offline"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning" not in proc.stderr, proc.stderr
    return results


# ------------------------------------------------------------------ names and validation


def test_the_built_in_trackers_are_loggers_of_the_hook(catalogue):
    for name, extra in (("tensorboard", "tensorboard"), ("mlflow", "mlflow"), ("wandb", "wandb")):
        provided = catalogue.loggers[name]
        assert provided.plugin.name == "trackers"
        assert provided.spec.install == f'pip install -c constraints.txt -e ".[{extra}]"'
        assert provided.spec.summary


def test_log_names_are_a_comma_separated_list():
    assert parse_names("tensorboard, mlflow,tensorboard") == ["tensorboard", "mlflow"]
    assert parse_names("none") == parse_names("") == []


def test_an_unknown_logger_is_one_line_with_did_you_mean(suite_file, tmp_path):
    proc = rlbench_cmd("run", str(suite_file), "--results", str(tmp_path), "--log", "tensorbord")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: --log tensorbord: unknown logger 'tensorbord' (did you mean 'tensorboard'?); "
        "the loggers installed: mlflow, tensorboard, wandb"
    )
    assert not (tmp_path / "t").exists()  # refused before anything ran


def test_a_suite_chooses_its_loggers_and_they_are_validated(tmp_path, suite_file):
    suite = tmp_path / "s.toml"
    suite.write_text('log = ["tensorboard", "wandbb"]\n' + SUITE)
    proc = rlbench_cmd("validate", str(suite))
    assert proc.returncode == 2
    assert f"{suite}: log[1]: unknown logger 'wandbb' (did you mean 'wandb'?)" in proc.stderr
    suite.write_text('log = "tensorboard"\n' + SUITE)
    proc = rlbench_cmd("validate", str(suite))
    assert proc.returncode == 2 and "log: input should be a valid list" in proc.stderr


def test_a_logger_without_its_package_gives_the_install_command(suite_file, plugin_dir, tmp_path):
    proc = run_logged(suite_file, tmp_path, plugin_dir, "--log", "recorder,needs_missing")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: --log recorder,needs_missing: the needs_missing logger needs the module "
        "'rlbench_no_such_tracker', which is not installed; install it with: pip install "
        "rlbench-no-such-tracker"
    )
    assert not (tmp_path / "t").exists()
    # The same from the suite's `log`, as `rlbench validate` and `rlbench run` say it.
    suite = tmp_path / "s.toml"
    suite.write_text('log = ["needs_missing"]\n' + SUITE)
    proc = run_logged(suite, tmp_path, plugin_dir)
    assert proc.returncode == 2
    assert "log[0]: the needs_missing logger needs the module" in proc.stderr
    # --log overrides the suite's choice (here: logs nowhere).
    proc = run_logged(suite, tmp_path, plugin_dir, "--log", "none", "-j", "1")
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------ what a logger receives


def assert_calls_are_the_files(results: Path, log_dir: Path | None = None) -> None:
    """The recorder's calls hold every run's files, row for row, in the order made."""
    recorded = json.loads((results / "calls.json").read_text())
    suite_dir = results / "t"
    assert recorded["context"] == ["t", str(suite_dir), str(log_dir or suite_dir / "logs")]
    calls = recorded["calls"]
    runs = run_dirs(results)
    assert {c[1] for c in calls} == {run.name for run in runs}
    for run in runs:
        mine = [c for c in calls if c[1] == run.name]
        assert mine[0][0] == "start_run" and mine[-1][0] == "end_run"
        _, _, config, provenance, resumed = mine[0]
        assert config == json.loads((run / "config.json").read_text())
        assert provenance == json.loads((run / "provenance.json").read_text())
        assert resumed is None
        assert mine[-1][2] == json.loads((run / "status.json").read_text())
        evaluations = [as_csv(c[2]) for c in mine if c[0] == "log_evaluation"]
        assert evaluations == csv_rows(run / "evaluations.csv")
        episodes = [as_csv(e) for c in mine if c[0] == "log_episodes" for e in c[2]]
        assert episodes == csv_rows(run / "episodes.csv") and episodes
        metrics = [as_csv({"step": c[2], **c[3]}) for c in mine if c[0] == "log_metrics"]
        expected = [
            {k: v for k, v in row.items() if v != ""} for row in csv_rows(run / "metrics.csv")
        ]
        assert metrics == expected and metrics
        # Per evaluation: its interval's episodes, then metrics, then the evaluation.
        kinds = [c[0] for c in mine[1:-1]]
        assert kinds[0] == "log_evaluation"  # step 0: nothing before it
        assert all(
            kinds[i + 1] in ("log_metrics", "log_evaluation")
            for i, kind in enumerate(kinds[:-1])
            if kind == "log_episodes"
        )


@pytest.mark.parametrize("jobs", ["1", "2"], ids=["in-process", "workers"])
def test_a_logger_receives_every_run_as_its_files_hold_it(
    jobs, suite_file, plugin_dir, tmp_path, plain
):
    proc = run_logged(suite_file, tmp_path, plugin_dir, "--log", "recorder", "-j", jobs)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_calls_are_the_files(tmp_path)
    # A plugin given with -p is recorded in provenance.json: compare the rest.
    assert _without_plugins(differences(plain / "t" / "runs", tmp_path / "t" / "runs")) == []


def _without_plugins(problems: list[str]) -> list[str]:
    return [p for p in problems if not p.endswith("provenance.json differs")]


def test_a_logger_that_fails_mid_run_is_reported_once_and_the_runs_go_on(
    suite_file, plugin_dir, tmp_path, plain
):
    log_dir = tmp_path / "elsewhere"
    proc = run_logged(
        suite_file,
        tmp_path,
        plugin_dir,
        "--log",
        "flaky,recorder",
        "-j",
        "1",
        "--log-dir",
        str(log_dir),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: flaky logger failed: ConnectionError: the tracking server at 127.0.0.1:9 is "
        "gone; logging to it stops, the runs go on"
    ]
    assert_calls_are_the_files(tmp_path, log_dir)  # the other logger got everything
    assert _without_plugins(differences(plain / "t" / "runs", tmp_path / "t" / "runs")) == []


# ------------------------------------------------------------------ the real trackers


def test_logging_changes_no_result_file(plain, logged):
    assert differences(plain / "t" / "runs", logged / "t" / "runs") == []
    for name in ("suite.json", "suite.toml", "summary.csv"):
        assert (plain / "t" / name).read_bytes() == (logged / "t" / name).read_bytes(), name
    assert not (plain / "t" / "logs").exists()


@pytest.mark.skipif(not _installed("tensorboard"), reason="pip install -e '.[tensorboard]'")
def test_tensorboard_event_files_hold_the_recorded_values(logged):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for run in run_dirs(logged):
        events = EventAccumulator(
            str(logged / "t" / "logs" / "tensorboard" / run.name),
            size_guidance={"scalars": 0, "tensors": 0},
        )
        events.Reload()

        def scalars(tag: str) -> list[tuple[int, float]]:
            return [(e.step, e.value) for e in events.Scalars(tag)]  # noqa: B023

        evaluations = csv_rows(run / "evaluations.csv")
        for column in ("return_mean", "return_std", "return_min", "return_max", "length_mean"):
            # TensorBoard keeps scalars as float32.
            expected = [(int(r["step"]), np.float32(float(r[column]))) for r in evaluations]
            assert scalars(f"eval/{column}") == expected, column
        episodes = csv_rows(run / "episodes.csv")
        assert scalars("episode/return") == [
            (int(e["step"]), np.float32(float(e["return"]))) for e in episodes
        ]
        metrics = csv_rows(run / "metrics.csv")
        assert scalars("train/loss") == [
            (int(m["step"]), np.float32(float(m["loss"]))) for m in metrics
        ]
        assert {"config/text_summary", "status/text_summary"} <= set(events.Tags()["tensors"])


@pytest.mark.skipif(not _installed("tensorboard"), reason="pip install -e '.[tensorboard]'")
def test_tensorboard_drops_what_a_resumed_run_logged_after_its_checkpoint(tmp_path):
    from rlbench_trackers.tensorboard_logger import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def evaluate(logger: TensorBoardLogger, steps: range, value: float) -> None:
        for step in steps:
            logger.log_evaluation("r", {"step": step, "return_mean": value + step})

    logger = TensorBoardLogger(_context(tmp_path))
    logger.start_run(RunStart("r", {"seed": 0}, {}))
    evaluate(logger, range(0, 400, 100), 0.0)  # killed after its checkpoint at step 100
    logger.close()
    logger = TensorBoardLogger(_context(tmp_path))
    logger.start_run(RunStart("r", {"seed": 0}, {}, resumed_from=100))
    evaluate(logger, range(200, 500, 100), 0.5)
    logger.end_run("r", {"status": "complete", "env_steps": 400})
    events = EventAccumulator(str(tmp_path / "logs" / "tensorboard" / "r"))
    events.Reload()
    shown = [(e.step, e.value) for e in events.Scalars("eval/return_mean")]
    assert shown == [(0, 0.0), (100, 100.0), (200, 200.5), (300, 300.5), (400, 400.5)]
    # Started over: the earlier attempt's events go, as its files do.
    logger = TensorBoardLogger(_context(tmp_path))
    logger.start_run(RunStart("r", {"seed": 0}, {}))
    evaluate(logger, range(0, 100, 100), 7.0)
    logger.close()
    events = EventAccumulator(str(tmp_path / "logs" / "tensorboard" / "r"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("eval/return_mean")] == [(0, 7.0)]


@pytest.mark.skipif(not _installed("mlflow"), reason="pip install -e '.[mlflow]'")
def test_mlflow_logs_each_step_once_when_a_killed_run_resumes(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from rlbench_trackers.mlflow_logger import MlflowLogger

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")

    def train(logger: MlflowLogger, steps: range) -> None:
        # An exact resume logs the same values at the same steps as the killed attempt.
        for step in steps:
            logger.log_episodes("r", [{"step": step - 50, "return": -step, "length": 50}])
            logger.log_evaluation("r", {"step": step, "return_mean": float(step)})

    logger = MlflowLogger(_context(tmp_path))
    logger.start_run(RunStart("r", {"seed": 0}, {}))
    train(logger, range(100, 400, 100))  # checkpoint at 100, killed after logging 300
    logger.close()
    logger = MlflowLogger(_context(tmp_path))
    logger.start_run(RunStart("r", {"seed": 0}, {}, resumed_from=100))
    train(logger, range(200, 600, 100))
    logger.end_run("r", {"status": "complete", "env_steps": 500})
    logger.close()
    client = MlflowClient(tracking_uri=(tmp_path / "logs" / "mlruns").resolve().as_uri())
    [run] = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert run.info.status == "FINISHED"
    evaluations = client.get_metric_history(run.info.run_id, "eval/return_mean")
    assert sorted((m.step, m.value) for m in evaluations) == [
        (s, float(s)) for s in range(100, 600, 100)
    ]
    episodes = client.get_metric_history(run.info.run_id, "episode/return")
    assert sorted(m.step for m in episodes) == list(range(50, 550, 100))


@pytest.mark.skipif(not _installed("mlflow"), reason="pip install -e '.[mlflow]'")
def test_mlflow_runs_hold_the_recorded_values(logged, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(logged / "t" / "logs" / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("t")
    for run in run_dirs(logged):
        [found] = client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.`rlbench.run_id` = '{run.name}'"
        )
        mlflow_id = found.info.run_id
        assert found.info.status == "FINISHED"
        config = json.loads((run / "config.json").read_text())
        assert found.data.params["seed"] == str(config["seed"])
        assert found.data.params["agent_config.learning_rate"] == str(
            config["agent_config"]["learning_rate"]
        )
        provenance = json.loads((run / "provenance.json").read_text())
        assert found.data.tags["provenance.torch"] == provenance["torch"]
        assert found.data.tags["status.status"] == "complete"

        def history(key: str) -> list[tuple[int, float]]:
            return sorted((m.step, m.value) for m in client.get_metric_history(mlflow_id, key))  # noqa: B023

        evaluations = csv_rows(run / "evaluations.csv")
        for column in ("return_mean", "return_std", "length_mean", "wall_time_s"):
            expected = [(int(r["step"]), float(r[column])) for r in evaluations]
            assert history(f"eval/{column}") == expected, column
        episodes = csv_rows(run / "episodes.csv")
        assert history("episode/length") == sorted(
            (int(e["step"]), float(e["length"])) for e in episodes
        )
        metrics = csv_rows(run / "metrics.csv")
        assert history("train/loss") == [(int(m["step"]), float(m["loss"])) for m in metrics]


@pytest.mark.skipif(
    not (_installed("tensorboard") and _installed("mlflow")),
    reason="pip install -c constraints.txt -e '.[tensorboard,mlflow]'",
)
def test_tune_logs_every_trials_runs_to_the_trackers(tmp_path, monkeypatch):
    """Two worker processes: each trial's runs reach TensorBoard and MLflow as the trial's
    files hold them, named trial-<number>/<run id> in the study's one experiment."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    suite = tiny_tune(tmp_path)
    proc = rlbench_cmd(
        "tune",
        "--suite",
        str(suite),
        "--results",
        str(tmp_path / "results"),
        "--trials",
        "2",
        "--jobs",
        "2",
        "--log",
        "tensorboard,mlflow",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning" not in proc.stderr, proc.stderr
    study_dir = tmp_path / "results" / "tt" / "tune" / "dqn-CartPole-v1"
    assert "Logging each trial's runs to tensorboard, mlflow" in proc.stdout
    assert str(study_dir / "logs") in proc.stdout
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(study_dir / "logs" / "mlruns").resolve().as_uri())
    # One experiment, named after the study, though two workers started logging at once.
    experiments = [e.name for e in client.search_experiments() if e.name != "Default"]
    assert experiments == ["dqn-CartPole-v1"]
    experiment_id = client.get_experiment_by_name("dqn-CartPole-v1").experiment_id
    trial_runs = sorted((study_dir / "trials").glob("*/runs/*"))
    assert len(trial_runs) == 4  # 2 trials x 2 seeds
    assert len(client.search_runs([experiment_id])) == 4
    for run in trial_runs:
        number = run.parent.parent.name
        name = f"trial-{number}/{run.name}"
        evaluations = csv_rows(run / "evaluations.csv")
        events = EventAccumulator(str(study_dir / "logs" / "tensorboard" / name))
        events.Reload()
        assert [(e.step, e.value) for e in events.Scalars("eval/return_mean")] == [
            (int(r["step"]), np.float32(float(r["return_mean"]))) for r in evaluations
        ]
        [found] = client.search_runs(
            [experiment_id], filter_string=f"tags.`rlbench.run_id` = '{name}'"
        )
        assert found.info.run_name == name and found.info.status == "FINISHED"
        config = json.loads((run / "config.json").read_text())
        params = found.data.params
        # The trial's sampled value, and which trial of which study it is.
        assert params["agent_config.learning_rate"] == str(config["agent_config"]["learning_rate"])
        assert (params["tune.study"], params["tune.trial"]) == ("dqn-CartPole-v1", number)
        history = client.get_metric_history(found.info.run_id, "eval/return_mean")
        assert sorted((m.step, m.value) for m in history) == [
            (int(r["step"]), float(r["return_mean"])) for r in evaluations
        ]


def test_tune_refuses_an_unknown_tracker_before_any_trial(tmp_path):
    suite = tiny_tune(tmp_path)
    proc = rlbench_cmd(
        "tune", "--suite", str(suite), "--results", str(tmp_path / "r"), "--log", "tensorbord"
    )
    assert proc.returncode == 2
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert "--log tensorbord" in line and "tensorboard" in line, proc.stderr
    assert not (tmp_path / "r").exists()


def wandb_records(path: Path):
    """The protobuf records of a W&B run file (``run-ID.wandb``, LevelDB's log format: 32 KiB
    blocks of chunks, each ``crc32, length, type`` then the data), as W&B writes them."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, block, pending = 7, 32768, b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # the rest of a block too short for a header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 0:  # padding
            position += block - position % block if position % block else 0
            continue
        pending = chunk if kind in (1, 2) else pending + chunk  # full/first, middle/last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


@pytest.mark.skipif(not _installed("wandb"), reason="pip install -e '.[wandb]'")
def test_wandb_offline_runs_hold_the_recorded_values(logged):
    found = {}
    for path in (logged / "t" / "logs" / "wandb").glob("offline-run-*/run-*.wandb"):
        records = list(wandb_records(path))
        [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        history = [
            {
                item.key or "/".join(item.nested_key): json.loads(item.value_json)
                for item in r.history.item
            }
            for r in records
            if r.WhichOneof("record_type") == "history"
        ]
        exits = [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"]
        found[run.display_name] = (run, history, exits)
    runs = run_dirs(logged)
    assert sorted(found) == [run.name for run in runs]
    for run_dir in runs:
        run, history, exits = found[run_dir.name]
        assert exits == [0]
        assert run.project == "t"
        config = {item.key: json.loads(item.value_json) for item in run.config.update}
        assert config["seed"] == json.loads((run_dir / "config.json").read_text())["seed"]
        evaluations = [row for row in history if "eval/return_mean" in row]
        assert [
            {"step": str(row["env_step"]), "return_mean": str(float(row["eval/return_mean"]))}
            for row in evaluations
        ] == [
            {"step": r["step"], "return_mean": r["return_mean"]}
            for r in csv_rows(run_dir / "evaluations.csv")
        ]
        episodes = [row for row in history if "episode/return" in row]
        assert [(row["env_step"], float(row["episode/return"])) for row in episodes] == [
            (int(e["step"]), float(e["return"])) for e in csv_rows(run_dir / "episodes.csv")
        ]


# ------------------------------------------------------------------ a tracker killed mid-run

#: A stand-in MLflow tracking server on loopback (the REST calls MlflowClient makes) that
#: dies mid-request at its DIE_AT-th log-batch call, as a killed server would.
FAKE_MLFLOW = r"""
import json, os, sys, time, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

DIE_AT = int(sys.argv[1])
batches = 0


def run_info(run_id, name="", status="RUNNING"):
    return {"run_id": run_id, "run_uuid": run_id, "experiment_id": "1", "run_name": name,
            "status": status, "start_time": int(time.time() * 1000), "artifact_uri": "",
            "lifecycle_stage": "active", "user_id": "rlbench"}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.reply(404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no experiment"})

    def do_POST(self):
        global batches
        path = urlparse(self.path).path
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if path.endswith("/experiments/create"):
            return self.reply(200, {"experiment_id": "1"})
        if path.endswith("/runs/create"):
            info = run_info(uuid.uuid4().hex, body.get("run_name", ""))
            return self.reply(200, {"run": {"info": info, "data": {}}})
        if path.endswith("/runs/log-batch"):
            batches += 1
            if batches >= DIE_AT:
                os._exit(1)  # killed mid-request: no answer, and nothing listens any more
            return self.reply(200, {})
        if path.endswith("/runs/update"):
            info = run_info(body.get("run_id", ""), status=body.get("status", ""))
            return self.reply(200, {"run_info": info})
        self.reply(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": path})


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@pytest.mark.skipif(not _installed("mlflow"), reason="pip install -e '.[mlflow]'")
def test_a_tracking_server_killed_mid_run_costs_the_runs_nothing(suite_file, tmp_path, plain):
    script = tmp_path / "fake_mlflow.py"
    script.write_text(FAKE_MLFLOW)
    server = subprocess.Popen([sys.executable, str(script), "6"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        proc = rlbench_cmd(
            "run",
            str(suite_file),
            "--results",
            str(tmp_path),
            "--no-report",
            "-j",
            "1",
            "--log",
            "mlflow",
            env={
                "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            },
        )
        assert server.wait(timeout=60) == 1  # it died, mid-run
    finally:
        server.kill()
        server.wait()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, proc.stderr
    assert warnings[0].startswith(
        f"warning: mlflow logger failed: MlflowException: API request to http://127.0.0.1:{port}/"
    )
    assert warnings[0].endswith("; logging to it stops, the runs go on")
    assert differences(plain / "t" / "runs", tmp_path / "t" / "runs") == []


# ------------------------------------------------------------------ the dispatcher


class Calls(Logger):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def start_run(self, run: RunStart) -> None:
        self.calls.append(("start_run", run))

    def log_evaluation(self, run_id: str, evaluation) -> None:
        self.calls.append(("log_evaluation", run_id, evaluation["step"]))

    def end_run(self, run_id: str, status) -> None:
        self.calls.append(("end_run", run_id, status["status"]))


def _context(tmp_path: Path) -> LogContext:
    return LogContext("t", tmp_path, tmp_path / "logs", ("a", "b"))


def test_events_become_logger_calls(tmp_path):
    logger = Calls()
    warned: list[str] = []
    with Tracking([LoggerSpec("calls", lambda _: logger)], _context(tmp_path), warned.append) as t:
        t.handle("start", "a", {"steps": 10, "config": {"seed": 0}})
        t.handle("resume", "a", {"step": 4, "exact": True})
        t.handle("provenance", "a", {"provenance": {"torch": "x"}})
        t.handle("step", "a", {"step": 6, "sps": 1.0})
        t.handle("eval", "a", {"step": 8, "evaluation": {"step": 8}, "metrics": None})
        t.handle("start", "b", {"steps": 10, "config": {"seed": 1}})
        t.handle("end", "b", {"status": "skipped", "record": {"status": "skipped"}})
        t.handle("end", "a", {"status": "complete", "record": {"status": "complete"}})
        t.handle("end", "c", {"status": "failed", "error": "its worker died"})  # never started
    assert warned == []
    assert logger.calls == [
        ("start_run", RunStart("a", {"seed": 0}, {"torch": "x"}, 4)),
        ("log_evaluation", "a", 8),
        ("start_run", RunStart("b", {"seed": 1}, {}, None)),  # skipped before training
        ("end_run", "b", "skipped"),
        ("end_run", "a", "complete"),
    ]


def test_a_logger_that_hangs_never_holds_up_the_runs(tmp_path):
    release = threading.Event()

    class Hangs(Logger):
        def log_evaluation(self, run_id, evaluation):
            release.wait(30)  # a server that stopped answering

    warned: list[str] = []
    other = Calls()
    tracking = Tracking(
        [LoggerSpec("hangs", lambda _: Hangs()), LoggerSpec("calls", lambda _: other)],
        _context(tmp_path),
        warned.append,
        stall_s=0.5,
    )
    tracking.start()
    started = time.perf_counter()
    tracking.handle("start", "a", {"steps": 10, "config": {}})
    tracking.handle("provenance", "a", {"provenance": {}})
    for step in range(1000):
        tracking.handle("eval", "a", {"step": step, "evaluation": {"step": step}})
    assert time.perf_counter() - started < 0.5  # handing events over never waits for them
    tracking.close()
    release.set()
    assert warned == ["hangs logger did not answer for 0.5 s; logging to it stops, the runs go on"]


def test_a_logger_that_cannot_be_created_is_reported_and_dropped(tmp_path):
    def refuse(context: LogContext) -> Logger:
        raise PermissionError(f"{context.log_dir} is read-only")

    warned: list[str] = []
    other = Calls()
    specs = [LoggerSpec("refuses", refuse), LoggerSpec("calls", lambda _: other)]
    with Tracking(specs, _context(tmp_path), warned.append) as tracking:
        tracking.handle("start", "a", {"steps": 1, "config": {}})
        tracking.handle("provenance", "a", {"provenance": {}})
    assert warned == [
        f"refuses logger failed: PermissionError: {tmp_path / 'logs'} is read-only; logging "
        "to it stops, the runs go on"
    ]
    assert [c[0] for c in other.calls] == ["start_run"]


# ------------------------------------------------------------------ Ray


@pytest.mark.skipif(
    not (_installed("ray") and _installed("tensorboard")), reason="needs Ray and tensorboard"
)
def test_on_ray_the_driver_logs_what_the_tasks_record(tmp_path, ray_cluster):
    """Ray tasks send their events to the driver, where the loggers are."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    suite = tmp_path / "t.toml"
    suite.write_text(SUITE)
    proc = rlbench_cmd(
        "run",
        str(suite),
        "--results",
        str(tmp_path),
        "--no-report",
        "--executor",
        "ray",
        "--address",
        ray_cluster,
        "--log",
        "tensorboard",
        env=RAY_ENV,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for run in run_dirs(tmp_path):
        events = EventAccumulator(str(tmp_path / "t" / "logs" / "tensorboard" / run.name))
        events.Reload()
        expected = [
            (int(r["step"]), np.float32(float(r["return_mean"])))
            for r in csv_rows(run / "evaluations.csv")
        ]
        assert [(e.step, e.value) for e in events.Scalars("eval/return_mean")] == expected


def test_the_trackers_plugin_imports_no_tracker():
    """Every worker process loads the plugins: registering the loggers imports none of the
    trackers' packages (nor torch's TensorBoard writer)."""
    code = (
        "import sys\n"
        "from rlbench.plugins import load_catalogue\n"
        "loggers = load_catalogue(autoload=False).loggers\n"
        "assert set(loggers) == {'tensorboard', 'mlflow', 'wandb'}\n"
        "trackers = ('tensorboard', 'mlflow', 'wandb', 'torch.utils.tensorboard')\n"
        "print([m for m in trackers if m in sys.modules])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
