"""Learning checks for ppo: RL Zoo's tuned settings solve CartPole-v1 and learn Pendulum-v1 in
100k steps. Slow (minutes): ``pytest -m slow tests/test_pg_learning.py``."""

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


# RL Zoo's tuned Pendulum-v1 settings (hyperparams/ppo.yml) but for gSDE, which rlbench's ppo
# does not have (it explores with a state-independent Gaussian), 3 seeds.
PENDULUM = """
name = "ppo-pendulum"
seeds = 3
devices = ["cpu"]
environments = ["Pendulum-v1"]

[budget]
steps = 100_000
eval_interval = 20_000
eval_episodes = 10

[[agents]]
name = "ppo"
[agents.config]
num_envs = 4
n_steps = 1024
batch_size = 64
gae_lambda = 0.95
gamma = 0.9
n_epochs = 10
learning_rate = 1e-3
learning_rate_schedule = "constant"
clip_range = 0.2
clip_range_schedule = "constant"
"""


def test_ppo_learns_pendulum(tmp_path, catalogue):
    """A uniformly random policy scores -1208 ± 294 on Pendulum-v1 (100 episodes); these
    settings reached -175, -194 and -220 (RL Zoo's one model with gSDE: -172 ± 104). The
    check asks for an IQM above -400: two thirds of the way from random to those runs."""
    path = tmp_path / "pendulum.toml"
    path.write_text(textwrap.dedent(PENDULUM))
    suite = load_suite(path, catalogue)
    torch.set_num_threads(1)
    outcomes = execute_lanes(list(expand(suite)), tmp_path, catalogue)
    assert [o.status for o in outcomes] == ["complete"] * 3, [o.error for o in outcomes]
    finals = [o.final_return for o in outcomes]
    assert iqm(finals) >= -400, finals
