"""Learning checks: the agents must actually learn. Slow (minutes): ``pytest -m slow``."""

from __future__ import annotations

import pandas as pd
import pytest

from rlbench.executor import run_suite
from rlbench.results import load_evaluations, load_runs
from rlbench.runspec import expand
from rlbench.suite import load_suite

pytestmark = pytest.mark.slow

# Best evaluation return over the run that seed 0 of the default suite must reach. A random
# policy scores about 22 on CartPole-v1 and 475 counts as solved; dqn and replay_dqn solve it
# within 50k steps, the two online variants learn but stay unstable (see the README table).
REQUIRED_BEST = {"dqn": 475, "replay_dqn": 475, "naive_dqn": 150, "target_dqn": 150}


def test_default_suite_agents_learn_cartpole(tmp_path, catalogue):
    suite = load_suite("suites/cartpole.toml", catalogue)
    runs = [run for run in expand(suite) if run.seed == 0]
    result = run_suite(suite, runs, tmp_path, catalogue=catalogue, jobs=2, threads=1)
    status = load_runs(result.suite_dir)
    assert (status["status"] == "complete").all(), status["error"].tolist()
    curves = load_evaluations(result.suite_dir)
    best = curves.groupby("label")["return_mean"].max()
    required = pd.Series(REQUIRED_BEST)
    assert (best[required.index] >= required).all(), best.to_dict()
