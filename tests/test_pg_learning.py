"""Learning check for ppo: RL Zoo's tuned CartPole-v1 settings solve CartPole in 100k steps.
Slow (minutes): ``pytest -m slow tests/test_pg_learning.py``."""

from __future__ import annotations

import textwrap

import pytest
import torch

from rlbench.runspec import expand
from rlbench.stats import iqm
from rlbench.suite import load_suite
from rlbench.training import execute_lanes

pytestmark = pytest.mark.slow

# RL Zoo's budget for PPO on CartPole-v1 (hyperparams/ppo.yml), ppo's defaults, 3 seeds.
SUITE = """
name = "ppo-cartpole"
seeds = 3
devices = ["cpu"]
environments = ["CartPole-v1"]

[budget]
steps = 100_000
eval_interval = 10_000
eval_episodes = 10

[[agents]]
name = "ppo"
"""


def test_ppo_solves_cartpole(tmp_path, catalogue):
    path = tmp_path / "ppo.toml"
    path.write_text(textwrap.dedent(SUITE))
    suite = load_suite(path, catalogue)
    torch.set_num_threads(1)
    outcomes = execute_lanes(list(expand(suite)), tmp_path, catalogue)
    assert [o.status for o in outcomes] == ["complete"] * 3, [o.error for o in outcomes]
    finals = [o.final_return for o in outcomes]
    # 475 counts as solved (500 is the maximum); a random policy scores about 22.
    assert iqm(finals) >= 475, finals
