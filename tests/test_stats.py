"""rlbench.stats and the tidy loader, checked against known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic_results import FakeRun, write_results

from rlbench import records, stats
from rlbench.results import (
    load_evaluations,
    load_run_table,
    load_runs,
    load_tidy,
    normalize,
    source_names,
    summary_table,
)
from rlbench.specs import ReferenceScores

CARTPOLE = ReferenceScores(random=22.2, solved=475.0)
REFS = {"CartPole-v1": CARTPOLE, "Acrobot-v1": ReferenceScores(-500.0, -100.0), "Pendulum-v1": None}


def _tidy(folder: Path | list[Path]) -> pd.DataFrame:
    return load_tidy(folder, references=REFS)


# ---------------------------------------------------------------- estimators


def test_iqm_of_known_arrays() -> None:
    assert stats.iqm(np.arange(1, 9)) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert stats.iqm([1.0, 2.0, 3.0, 1000.0]) == pytest.approx(2.5)  # 1 cut at each end
    assert stats.iqm([1.0, 2.0, 6.0]) == pytest.approx(3.0)  # fewer than 4: the mean
    assert stats.iqm([[1, 2, 3, 4], [5, 6, 7, 8]]) == pytest.approx(4.5)  # pooled


def test_iqm_matches_rliable() -> None:
    metrics = pytest.importorskip("rliable.metrics")
    scores = np.random.default_rng(3).normal(size=(7, 3))
    assert stats.iqm(scores) == pytest.approx(metrics.aggregate_iqm(scores))


def test_bootstrap_ci_covers_the_true_value() -> None:
    rng = np.random.default_rng(42)
    low, high = stats.bootstrap_ci([rng.normal(10.0, 1.0, size=30)], stats._iqm_stat)
    assert low < 10.0 < high
    # And its coverage over many experiments is near the nominal 95%.
    hits = 0
    for _ in range(100):
        sample = rng.normal(10.0, 1.0, size=15)
        low, high = stats.bootstrap_ci(
            [sample], stats._iqm_stat, n_resamples=1000, seed=int(rng.integers(1 << 30))
        )
        hits += low <= 10.0 <= high
    assert 85 <= hits <= 100


def test_bootstrap_ci_is_reproducible_and_nan_for_one_run() -> None:
    x = np.array([1.0, 4.0, 2.0, 8.0])
    first = stats.bootstrap_ci([x], stats._iqm_stat, seed=7)
    again = stats.bootstrap_ci([x], stats._iqm_stat, seed=7)
    assert np.array_equal(first, again)
    low, high = stats.bootstrap_ci([np.array([3.0])], stats._iqm_stat)
    assert np.isnan(low) and np.isnan(high)


def test_normalization_example() -> None:
    assert normalize(475.0, 22.2, 475.0) == pytest.approx(1.0)
    assert normalize(22.2, 22.2, 475.0) == pytest.approx(0.0)
    assert normalize(248.6, 22.2, 475.0) == pytest.approx(0.5)
    assert normalize(-300.0, -500.0, -100.0) == pytest.approx(0.5)  # negative returns


def test_probability_of_improvement_known_answers() -> None:
    better, worse = np.arange(10.0, 15.0), np.arange(0.0, 5.0)
    assert stats.probability_of_improvement_point(better, worse) == 1.0
    assert stats.probability_of_improvement_point(worse, better) == 0.0
    assert stats.probability_of_improvement_point(worse, worse) == 0.5
    # [1, 3] vs [2, 2]: 1 < 2 twice, 3 > 2 twice.
    assert stats.probability_of_improvement_point([1.0, 3.0], [2.0, 2.0]) == 0.5
    assert stats.probability_of_improvement_point([2.0, 3.0], [2.0, 1.0]) == 0.875


def test_probability_of_improvement_matches_rliable() -> None:
    metrics = pytest.importorskip("rliable.metrics")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 3)), rng.normal(0.3, size=(4, 3))
    ours = np.mean([stats.probability_of_improvement_point(x[:, t], y[:, t]) for t in range(3)])
    assert ours == pytest.approx(metrics.probability_of_improvement(x, y))


def test_aggregate_point_matches_rliable() -> None:
    metrics = pytest.importorskip("rliable.metrics")
    scores = np.random.default_rng(1).uniform(-0.2, 1.4, size=(5, 3))
    ours = stats.aggregate_point(*[scores[:, t] for t in range(3)])
    theirs = [
        metrics.aggregate_median(scores),
        metrics.aggregate_iqm(scores),
        metrics.aggregate_mean(scores),
        metrics.aggregate_optimality_gap(scores),
    ]
    assert ours == pytest.approx(theirs)


# ---------------------------------------------------------------- on a results folder


@pytest.fixture(scope="module")
def two_agents(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = []
    for seed in range(5):
        runs.append(FakeRun("good", "CartPole-v1", seed, final=470.0 + seed * 5, start=20.0))
        runs.append(
            FakeRun(
                "bad", "CartPole-v1", seed, final=30.0 + seed, start=20.0, steps_per_second=500.0
            )
        )
        runs.append(FakeRun("good", "Acrobot-v1", seed, final=-100.0 + seed, start=-500.0))
        runs.append(FakeRun("bad", "Acrobot-v1", seed, final=-450.0 + seed, start=-500.0))
        runs.append(FakeRun("good", "Pendulum-v1", seed, final=-200.0, start=-1500.0))
        runs.append(FakeRun("bad", "Pendulum-v1", seed, final=-1200.0, start=-1500.0))
    runs.append(FakeRun("bad", "CartPole-v1", 5, status=records.FAILED, error="ValueError: nan"))
    return write_results(tmp_path_factory.mktemp("results"), "synthetic", runs)


def test_tidy_frame(two_agents: Path) -> None:
    tidy = _tidy(two_agents)
    # one row per complete run x evaluation step (5 evaluations: 0, 250, ..., 1000)
    assert len(tidy) == 30 * 5
    assert set(tidy["status"]) == {"complete"}
    assert tidy.groupby(["run_id"])["final"].sum().eq(1).all()
    cart = tidy[(tidy["env"] == "CartPole-v1") & tidy["final"] & (tidy["label"] == "good")]
    expected = (cart["return_mean"] - 22.2) / (475.0 - 22.2)
    assert np.allclose(cart["normalized"], expected)
    assert tidy.loc[tidy["env"] == "Pendulum-v1", "normalized"].isna().all()
    assert "config.learning_rate" in tidy.columns and "network.hidden_sizes" in tidy.columns


def test_existing_loaders_unchanged(two_agents: Path) -> None:
    runs = load_runs(two_agents)
    assert len(runs) == 31 and (runs["status"] == "failed").sum() == 1
    assert len(load_evaluations(two_agents)) == 150
    table = summary_table(runs)
    assert (
        table.loc[
            (table["label"] == "bad") & (table["env"] == "CartPole-v1"), "not_complete"
        ].item()
        == 1
    )


def test_score_table(two_agents: Path) -> None:
    runs = load_run_table(two_agents)
    table = stats.score_table(_tidy(two_agents), runs, n_resamples=2000)
    row = table[(table["agent_key"] == "good") & (table["env"] == "CartPole-v1")].iloc[0]
    finals = np.array([470.0, 475.0, 480.0, 485.0, 490.0])
    assert row["n"] == 5
    assert row["mean"] == pytest.approx(finals.mean())
    assert row["std"] == pytest.approx(finals.std(ddof=1))
    assert row["median"] == pytest.approx(480.0)
    assert row["iqm"] == pytest.approx(480.0)  # mean of 475, 480, 485
    assert row["ci_low"] <= row["iqm"] <= row["ci_high"]
    assert row["success_rate"] == pytest.approx(0.8)  # 470 < 475
    assert row["steps_to_solved"] == 1000 and row["reached_solved"] == pytest.approx(0.8)
    assert row["steps_per_s[cpu]"] == pytest.approx(1000.0)
    bad = table[(table["agent_key"] == "bad") & (table["env"] == "CartPole-v1")].iloc[0]
    assert bad["n"] == 5 and bad["not_complete"] == 1 and bad["success_rate"] == 0
    assert np.isnan(bad["steps_to_solved"])
    pendulum = table[table["env"] == "Pendulum-v1"]
    assert pendulum["success_rate"].isna().all()


def test_steps_to_threshold(tmp_path: Path) -> None:
    folder = write_results(
        tmp_path,
        "s",
        [
            FakeRun("a", "CartPole-v1", 0, curve=[10, 100, 480, 300, 500]),
            FakeRun("a", "CartPole-v1", 1, curve=[10, 100, 200, 300, 400]),
        ],
    )
    reach = stats.steps_to_threshold(_tidy(folder)).sort_values("run_id")
    assert list(reach["steps_to_solved"].fillna(-1)) == [500.0, -1.0]
    row = stats.score_table(_tidy(folder)).iloc[0]
    assert row["reached_solved"] == 0.5 and row["success_rate"] == 0.5
    assert np.isnan(row["steps_to_solved"])  # median of (500, never) is never
    folder = write_results(
        tmp_path,
        "t",
        [
            FakeRun("a", "CartPole-v1", 0, curve=[10, 100, 480, 300, 500]),
            FakeRun("a", "CartPole-v1", 1, curve=[10, 480, 480, 480, 480]),
            FakeRun("a", "CartPole-v1", 2, curve=[10, 100, 200, 300, 400]),
        ],
    )
    assert stats.score_table(_tidy(folder)).iloc[0]["steps_to_solved"] == 500.0


def test_aggregate_over_environments(two_agents: Path) -> None:
    agg = stats.aggregate_metrics(_tidy(two_agents), n_resamples=2000)
    assert agg.envs == ["CartPole-v1", "Acrobot-v1"]
    assert "Pendulum-v1" in agg.left_out_envs
    good = agg.table[agg.table["agent_key"] == "good"].set_index("metric")
    cart = (np.array([470.0, 475, 480, 485, 490]) - 22.2) / 452.8
    acro = (np.array([-100.0, -99, -98, -97, -96]) + 500) / 400
    assert good.loc["mean", "value"] == pytest.approx((cart.mean() + acro.mean()) / 2)
    assert good.loc["iqm", "value"] == pytest.approx(stats.iqm(np.concatenate([cart, acro])))
    for metric in stats.AGGREGATE_METRICS:
        assert (
            good.loc[metric, "ci_low"] <= good.loc[metric, "value"] <= good.loc[metric, "ci_high"]
        )
    bad = agg.table[agg.table["agent_key"] == "bad"].set_index("metric")
    assert bad.loc["iqm", "ci_high"] < good.loc["iqm", "ci_low"]


def test_aggregate_leaves_out_an_agent_missing_an_environment(tmp_path: Path) -> None:
    folder = write_results(
        tmp_path,
        "s",
        [
            FakeRun("a", "CartPole-v1", 0, final=100),
            FakeRun("a", "Acrobot-v1", 0, final=-200),
            FakeRun("b", "CartPole-v1", 0, final=200),
            FakeRun("b", "Acrobot-v1", 0, status=records.FAILED),
        ],
    )
    agg = stats.aggregate_metrics(_tidy(folder))
    assert set(agg.table["agent_key"]) == {"a"}
    assert "Acrobot-v1" in agg.left_out_agents["b"]


def test_probability_of_improvement_table(two_agents: Path) -> None:
    poi = stats.probability_of_improvement(_tidy(two_agents), n_resamples=2000)
    overall = poi[poi["env"] == stats.ALL_ENVS].iloc[0]
    assert (overall["agent_a"], overall["agent_b"]) == ("good", "bad")
    assert overall["poi"] == 1.0 and overall["ci_low"] > 0.9
    assert overall["verdict"] == "a better" and overall["n_envs"] == 3
    assert set(poi["env"]) == {stats.ALL_ENVS, "CartPole-v1", "Acrobot-v1", "Pendulum-v1"}


def test_probability_of_improvement_claims_nothing_from_noise(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    runs = [
        FakeRun(label, "CartPole-v1", seed, final=float(rng.normal(200, 50)))
        for label in ("a", "b")
        for seed in range(5)
    ]
    runs += [FakeRun("c", "CartPole-v1", seed, final=400.0 + seed) for seed in range(2)]
    poi = stats.probability_of_improvement(_tidy(write_results(tmp_path, "s", runs)))
    pair = poi[(poi["agent_a"] == "a") & (poi["agent_b"] == "b")].iloc[0]
    assert pair["ci_low"] < 0.5 < pair["ci_high"] and pair["verdict"] == "no conclusion"
    few = poi[poi["agent_b"] == "c"]
    assert (few["verdict"] == "too few runs").all()  # only 2 runs of c: nothing claimed


def test_performance_profile(two_agents: Path) -> None:
    profile = stats.performance_profile(_tidy(two_agents), n_resamples=500)
    for _, p in profile.groupby("agent_key"):
        assert p["fraction"].iloc[0] == 1.0 and p["fraction"].iloc[-1] == 0.0
        assert (np.diff(p["fraction"]) <= 1e-12).all()
        assert (p["ci_low"] <= p["fraction"] + 1e-12).all()
        assert (p["fraction"] <= p["ci_high"] + 1e-12).all()
    taus = stats.performance_profile(_tidy(two_agents), [0.5], n_resamples=200)
    good = taus[taus["agent_key"] == "good"]["fraction"].item()
    assert good == 1.0


def test_learning_curves_and_throughput(two_agents: Path) -> None:
    tidy = _tidy(two_agents)
    curves = stats.learning_curves(tidy, n_resamples=200)
    first = curves[(curves["agent_key"] == "good") & (curves["env"] == "CartPole-v1")]
    assert list(first["step"]) == [0, 250, 500, 750, 1000]
    assert first["iqm"].iloc[-1] == pytest.approx(480.0) and (first["n"] == 5).all()
    speed = stats.throughput(tidy)
    row = speed[(speed["agent_key"] == "bad") & (speed["env"] == "CartPole-v1")].iloc[0]
    assert row["steps_per_s_mean"] == 500.0 and row["n"] == 5
    assert row["device_name"] == "Test CPU"


def test_several_folders_keep_same_labels_apart(tmp_path: Path) -> None:
    one = write_results(tmp_path / "first", "s", [FakeRun("dqn", "CartPole-v1", 0, final=10)])
    two = write_results(
        tmp_path / "second",
        "s",
        [FakeRun("dqn", "CartPole-v1", 0, final=20), FakeRun("ppo", "CartPole-v1", 0, final=30)],
    )
    names = source_names([one, two])
    assert names == {one: "first/s", two: "second/s"}
    tidy = _tidy([one, two])
    assert set(tidy["agent_key"]) == {"dqn @ first/s", "dqn @ second/s", "ppo"}


def test_not_started_runs_are_listed(tmp_path: Path) -> None:
    folder = write_results(
        tmp_path,
        "s",
        [FakeRun("a", "CartPole-v1", 0, final=1)],
        not_started=["a__CartPole-v1__seed1__cpu__0123456789"],
    )
    runs = load_run_table(folder)
    missing = runs[runs["status"] == "not started"].iloc[0]
    assert (missing["label"], missing["env"], missing["seed"]) == ("a", "CartPole-v1", 1)
