"""`rlbench export`: each export loaded by its consumer where it installs (rliable.metrics on
the score arrays, huggingface_hub on the model card; marl-eval pins pandas 1.4, so its
documented raw-data structure is checked here) and its numbers checked against rlbench's."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY_SUITE, rlbench_cmd
from synthetic_results import FakeRun, write_results

from rlbench import records, stats
from rlbench.cli import cli
from rlbench.errors import RlbenchError
from rlbench.export import FORMATS, load_rliable, marl_eval_data
from rlbench.results import load_tidy

SEEDS = range(5)
ENVS = ["CartPole-v1", "Acrobot-v1"]
REFERENCES = {
    "CartPole-v1": records.EnvReference(22.2, 475.0, "classic_control"),
    "Acrobot-v1": records.EnvReference(-499.1, -100.0, "classic_control"),
}
#: Evaluations of a synthetic run: steps 1000, every 250 (write_results' defaults).
STEPS = [0, 250, 500, 750, 1000]


def final_score(label: str, env: str, seed: int) -> float:
    """Spread out, with an outlier (seed 4) that the IQM trims away."""
    base = {"CartPole-v1": 300.0, "Acrobot-v1": -300.0}[env] + (50.0 if label == "good" else 0.0)
    return base + 7.0 * seed + (150.0 if seed == 4 else 0.0)


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two agents × two environments × five seeds, plus a failed run and one never
    started: what is exported is the 5 × 2 complete runs of each agent."""
    runs = [
        FakeRun(label, env, seed, final=final_score(label, env, seed), start=-400.0 + seed)
        for label in ("good", "bad")
        for env in ENVS
        for seed in SEEDS
    ]
    runs.append(FakeRun("bad", "CartPole-v1", 5, status=records.FAILED, error="boom"))
    return write_results(
        tmp_path_factory.mktemp("export"),
        "synth",
        runs,
        not_started=["good__Acrobot-v1__seed9__cpu__0000000000"],
        references=REFERENCES,
    )


@pytest.fixture(scope="module")
def tidy(suite_dir: Path):
    return load_tidy(suite_dir)


def invoke(*args: str):
    return CliRunner().invoke(cli, ["--no-plugin-autoload", "export", *args])


@pytest.fixture(scope="module")
def rliable_file(suite_dir: Path) -> tuple[Path, str]:
    result = invoke(str(suite_dir), "--format", "rliable")
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip()), result.stderr


# ------------------------------------------------------------------------- rliable


def test_rliable_export_is_written_where_the_cli_says(
    rliable_file: tuple[Path, str], suite_dir: Path
) -> None:
    path, stderr = rliable_file
    assert path == suite_dir / "export" / FORMATS["rliable"].default_name
    assert path.is_file()
    # The failed and the never-started run are left out, and the user is told.
    assert "2 of 22 runs did not complete" in stderr
    assert "1 failed" in stderr and "1 not started" in stderr


def test_rliable_arrays_hold_each_run_by_seed(rliable_file: tuple[Path, str]) -> None:
    scores = load_rliable(rliable_file[0])
    assert scores["agents"] == ["good", "bad"]
    assert scores["tasks"] == ENVS
    for label in ("good", "bad"):
        final = scores["final"][label]
        assert final.shape == (len(SEEDS), len(ENVS))  # runs × tasks
        expected = [[final_score(label, env, seed) for env in ENVS] for seed in SEEDS]
        np.testing.assert_allclose(final, expected)
        assert scores["seeds"][label].tolist() == [[s, s] for s in SEEDS]
        curves = scores["curves"][label]
        assert curves.shape == (len(SEEDS), len(ENVS), len(STEPS))  # runs × tasks × evals
        np.testing.assert_array_equal(curves[:, :, -1], final)
        assert scores["steps"][label].tolist() == [STEPS, STEPS]
        refs = np.array([[REFERENCES[e].random, REFERENCES[e].solved] for e in ENVS])
        np.testing.assert_allclose(
            scores["final_normalized"][label], (final - refs[:, 0]) / (refs[:, 1] - refs[:, 0])
        )


def test_rliable_metrics_on_the_arrays_equal_rlbench_stats(
    rliable_file: tuple[Path, str], tidy
) -> None:
    metrics = pytest.importorskip("rliable.metrics")
    scores = load_rliable(rliable_file[0])
    aggregate = stats.aggregate_metrics(tidy, n_resamples=100).table
    table = stats.score_table(tidy, n_resamples=100)
    curves = stats.learning_curves(tidy, n_resamples=100)
    for label in ("good", "bad"):
        ours = aggregate[(aggregate["agent_key"] == label) & (aggregate["metric"] == "iqm")]
        assert metrics.aggregate_iqm(scores["final_normalized"][label]) == pytest.approx(
            ours["value"].item()
        )
        for j, env in enumerate(ENVS):
            row = table[(table["agent_key"] == label) & (table["env"] == env)]
            assert metrics.aggregate_iqm(scores["final"][label][:, [j]]) == pytest.approx(
                row["iqm"].item()
            )
            curve = curves[(curves["agent_key"] == label) & (curves["env"] == env)]
            theirs = [
                metrics.aggregate_iqm(scores["curves"][label][:, [j], k]) for k in range(len(STEPS))
            ]
            np.testing.assert_allclose(theirs, curve["iqm"].to_numpy(float))


def test_rliable_needs_as_many_runs_on_every_task(tmp_path: Path) -> None:
    runs = [FakeRun("dqn", "CartPole-v1", seed, final=100.0 + seed) for seed in range(3)]
    runs += [FakeRun("dqn", "Acrobot-v1", seed, final=-100.0) for seed in range(2)]
    folder = write_results(tmp_path, "ragged", runs, references=REFERENCES)
    result = invoke(str(folder), "--format", "rliable")
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {folder}: agent 'dqn' has 3 complete runs on CartPole-v1")
    assert "2 on Acrobot-v1" in line
    assert not (folder / "export").exists()


def test_rliable_without_reference_scores_has_no_normalized_arrays(tmp_path: Path) -> None:
    runs = [FakeRun("dqn", "Unscored-v0", seed, final=float(seed)) for seed in range(2)]
    folder = write_results(tmp_path, "unscored", runs, references={"Unscored-v0": None})
    result = invoke(str(folder), "--format", "rliable", "--out", str(tmp_path / "a.npz"))
    assert result.exit_code == 0, result.output
    scores = load_rliable(tmp_path / "a.npz")
    assert "final_normalized" not in scores and "curves_normalized" not in scores
    np.testing.assert_array_equal(scores["final"]["dqn"], [[0.0], [1.0]])


def test_load_rliable_refuses_other_files(tmp_path: Path) -> None:
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(2))
    with pytest.raises(RlbenchError, match="not an rliable export"):
        load_rliable(other)
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(RlbenchError, match="not an rliable export"):
        load_rliable(tmp_path / "text.npz")


# ------------------------------------------------------------------------- marl-eval


def test_marl_eval_json_has_the_documented_structure_and_rlbench_numbers(
    suite_dir: Path, tidy, tmp_path: Path
) -> None:
    out = tmp_path / "raw.json"
    result = invoke(str(suite_dir), "--format", "marl-eval", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    data = json.loads(out.read_text())
    assert list(data) == ["gymnasium"]
    assert list(data["gymnasium"]) == ENVS
    for env in ENVS:
        assert list(data["gymnasium"][env]) == ["good", "bad"]
        for label in ("good", "bad"):
            runs = data["gymnasium"][env][label]
            assert list(runs) == [f"seed_{s}" for s in SEEDS]
            for seed in SEEDS:
                run = runs[f"seed_{seed}"]
                # step_0 ... step_k in order, absolute_metrics last (marl-eval reads it so).
                assert list(run) == [f"step_{i}" for i in range(len(STEPS))] + ["absolute_metrics"]
                curve = tidy[(tidy["label"] == label) & (tidy["env"] == env)]
                curve = curve[curve["seed"] == seed].sort_values("step")
                for i, (step, value) in enumerate(
                    zip(curve["step"], curve["return_mean"], strict=True)
                ):
                    assert run[f"step_{i}"] == {"step_count": step, "return": [value]}
                    assert type(run[f"step_{i}"]["step_count"]) is int
                assert run["absolute_metrics"] == {"return": [final_score(label, env, seed)]}


def test_marl_eval_matrices_equal_the_rliable_arrays(rliable_file: tuple[Path, str], tidy) -> None:
    """What marl-eval's create_matrices_for_rliable builds from the JSON (runs and steps
    named as in the first task's first algorithm, the last key's metric) is the rliable
    export's arrays."""
    scores = load_rliable(rliable_file[0])
    data = marl_eval_data(tidy)["gymnasium"]
    tasks = list(data)
    algorithms = list(data[tasks[0]])
    runs = list(data[tasks[0]][algorithms[0]])
    steps = list(data[tasks[0]][algorithms[0]][runs[0]])
    for algorithm in algorithms:
        final = [[data[t][algorithm][r][steps[-1]]["return"][0] for t in tasks] for r in runs]
        np.testing.assert_array_equal(final, scores["final"][algorithm])
        curves = [
            [[data[t][algorithm][r][s]["return"][0] for s in steps[:-1]] for t in tasks]
            for r in runs
        ]
        np.testing.assert_array_equal(curves, scores["curves"][algorithm])


# ------------------------------------------------------------------------- model card


def test_model_card_is_what_the_hub_reads(suite_dir: Path) -> None:
    hub = pytest.importorskip("huggingface_hub")
    from huggingface_hub.repocard_data import model_index_to_eval_results

    run_dir = next((suite_dir / "runs").glob("good__Acrobot-v1__seed3__*"))
    result = invoke(str(run_dir), "--format", "model-card")
    assert result.exit_code == 0, result.output
    card_path = Path(result.stdout.strip())
    assert card_path == run_dir / "README.md"
    status = json.loads((run_dir / records.STATUS).read_text())
    value = f"{status['final_return_mean']:.2f} +/- {status['final_return_std']:.2f}"

    metadata = hub.metadata_load(card_path)
    assert metadata["library_name"] == "rlbench"
    assert {"reinforcement-learning", "Acrobot-v1"} <= set(metadata["tags"])
    # The model-index huggingface_sb3 writes, through huggingface_hub's own helper.
    assert (
        metadata["model-index"]
        == hub.metadata_eval_result(
            model_pretty_name="good",
            task_pretty_name="reinforcement-learning",
            task_id="reinforcement-learning",
            metrics_pretty_name="mean_reward",
            metrics_id="mean_reward",
            metrics_value=value,
            dataset_pretty_name="Acrobot-v1",
            dataset_id="Acrobot-v1",
        )["model-index"]
    )
    name, [evaluation] = model_index_to_eval_results(metadata["model-index"])
    assert name == "good"
    assert (
        evaluation.metric_value == value == f"{final_score('good', 'Acrobot-v1', 3):.2f} +/- 1.00"
    )
    assert (
        evaluation.dataset_type == "Acrobot-v1" and evaluation.task_type == "reinforcement-learning"
    )
    assert evaluation.verified is False
    card = hub.ModelCard.load(card_path)
    assert card.data.eval_results[0].metric_value == value

    # The protocol, from config.json and provenance.json.
    body = card.text
    assert "1,000 environment steps, seed 3" in body
    assert "5 episodes with greedy actions" in body
    assert "every 250 steps" in body
    assert "0.1.0, commit 0123456789abcdef" in body


def test_model_card_of_a_real_run(tmp_path_factory: pytest.TempPathFactory) -> None:
    """End to end: a suite trained for a few hundred steps, then `rlbench export` in a fresh
    process, as a user runs it."""
    folder = tmp_path_factory.mktemp("real")
    suite = folder / "t.toml"
    suite.write_text(
        textwrap.dedent(
            TINY_SUITE.format(name="t", seeds=1, devices='["cpu"]', steps=300, eval_interval=150)
        )
    )
    proc = rlbench_cmd(
        "--no-plugin-autoload", "run", str(suite), "-j", "1", "--no-report", cwd=folder
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = next((folder / "results" / "t" / "runs").glob("dqn__*"))
    proc = rlbench_cmd("--no-plugin-autoload", "export", str(run_dir), "--format", "model-card")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = Path(proc.stdout.strip()).read_text()
    status = json.loads((run_dir / records.STATUS).read_text())
    value = f"{status['final_return_mean']:.2f} +/- {status['final_return_std']:.2f}"
    assert f'value: "{value}"' in text
    provenance = json.loads((run_dir / records.PROVENANCE).read_text())
    assert f"| rlbench | {provenance['rlbench']}, " in text
    proc = rlbench_cmd(
        "--no-plugin-autoload", "export", str(run_dir.parent.parent), "--format", "rliable"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    scores = load_rliable(proc.stdout.strip())
    assert scores["final"]["dqn"][0, 0] == status["final_return_mean"]


def test_model_card_needs_a_complete_run(suite_dir: Path) -> None:
    failed = next((suite_dir / "runs").glob("bad__CartPole-v1__seed5__*"))
    result = invoke(str(failed), "--format", "model-card")
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line == (
        f"error: {failed}: the run is failed: boom; a model card needs a complete run "
        "(`rlbench run` of its suite completes it)"
    )
    assert not (failed / "README.md").exists()


# ------------------------------------------------------------------------- bad input


def test_each_format_says_which_folder_to_pass(suite_dir: Path) -> None:
    run_dir = sorted((suite_dir / "runs").iterdir())[0]
    cases = {
        (suite_dir, "model-card"): f"is a suite's results folder: --format model-card writes "
        f"the card of one run; pass one of its runs, e.g. {run_dir}",
        (run_dir, "rliable"): f"is one run's folder: --format rliable exports a suite's "
        f"results; pass its suite's results folder, {suite_dir}",
        (run_dir, "marl-eval"): "pass its suite's results folder",
        (suite_dir.parent, "marl-eval"): f"is not a suite's results folder (it has no "
        f"suite.json and no runs/ folder); it holds the suite folders synth: pass e.g. "
        f"{suite_dir}",
        (suite_dir / "suite.json", "model-card"): "is a file: --format model-card writes the "
        "card of one run; pass a run's folder, RESULTS/<suite>/runs/<run_id>",
    }
    for (path, fmt), says in cases.items():
        result = invoke(str(path), "--format", fmt)
        assert result.exit_code == 2, (path, fmt, result.output)
        [line] = result.stderr.splitlines()
        assert line.startswith(f"error: {path} ") and says in line, line
    result = invoke(str(suite_dir), "--format", "csv")
    assert result.exit_code == 2
    assert "'csv' is not one of 'rlbench', 'rliable', 'marl-eval', 'model-card'" in result.stderr
