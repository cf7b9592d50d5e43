"""Learning check for sac and td3: RL Zoo's tuned Pendulum-v1 settings learn the swing-up, 3
seeds each trained as the lanes of one group.
Slow (minutes): ``pytest -m slow tests/test_offpolicy_learning.py``.

The settings are RL Zoo's (``hyperparams/sac.yml``, ``hyperparams/td3.yml``, Pendulum-v1):

- sac: learning_rate 1e-3, the rest SB3's defaults (256-256 networks, learning_starts 100,
  batch 256, train_freq 1, gradient_steps 1, tau 0.005, gamma 0.99, ent_coef "auto").
- td3: learning_rate 1e-3, gamma 0.98, buffer_size 200000, learning_starts 10000, Gaussian
  exploration noise of std 0.1, 400-300 networks, gradient_steps -1 with train_freq
  [1, "episode"], which on Pendulum-v1's fixed 200-step episodes is train_freq = 200.

The Zoo trains both for 20,000 steps. At that budget they end at IQMs of -169.6 (sac: -176.6,
-174.5, -157.5) and -168.1 (td3: -158.9, -176.9, -168.5), but the two groups took 14 min 39 s
side by side on a 2-core machine shared with other work (sac's group 872 s, td3's 630 s; about
7 and 5.5 min on idle cores: sac's 20,000 gradient steps of 3 lanes x 256 rows through
256-256 networks are some 30 TFLOP), too long for CI. Their curves had flattened long before:
sac's IQM was -167.6 at 5,000 steps, td3's -198.4 at 15,000 (5,000 steps after its 10,000
random ones). So the check trains each to there, with everything else as the Zoo: sac 5,000
steps, td3 15,000 (149 s and 178 s on the same shared machine; the numbers are those of the
20,000-step runs at those steps, bit for bit). A uniformly random policy scores -1208 ± 294
on Pendulum-v1; the check asks for an IQM of at least -250 (with 3 seeds the IQM is the
mean).
"""

from __future__ import annotations

import textwrap

import pytest
import torch

from rlbench.runspec import expand
from rlbench.stats import iqm
from rlbench.suite import load_suite
from rlbench.training import execute_lanes

pytestmark = pytest.mark.slow

SUITE = """
name = "{agent}-pendulum"
seeds = 3
devices = ["cpu"]
environments = ["Pendulum-v1"]

[budget]
steps = {steps}
eval_interval = 5_000
eval_episodes = 10

[[agents]]
name = "{agent}"
{settings}
"""

ZOO_SETTINGS = {
    "sac": """
config = { learning_rate = 1e-3 }
""",
    "td3": """
network = { name = "mlp", hidden_sizes = [400, 300] }
[agents.config]
learning_rate = 1e-3
gamma = 0.98
buffer_size = 200_000
learning_starts = 10_000
exploration_noise = 0.1
train_freq = 200  # [1, "episode"] on Pendulum-v1's 200-step episodes
gradient_steps = -1
""",
}
STEPS = {"sac": 5_000, "td3": 15_000}  # RL Zoo: 20_000 (see above)


@pytest.mark.parametrize("agent", ["sac", "td3"])
def test_zoo_settings_learn_pendulum(tmp_path, catalogue, agent):
    path = tmp_path / "pendulum.toml"
    text = SUITE.format(agent=agent, steps=STEPS[agent], settings=ZOO_SETTINGS[agent])
    path.write_text(textwrap.dedent(text))
    suite = load_suite(path, catalogue)
    torch.set_num_threads(1)
    outcomes = execute_lanes(list(expand(suite)), tmp_path, catalogue)
    assert [o.status for o in outcomes] == ["complete"] * 3, [o.error for o in outcomes]
    finals = [o.final_return for o in outcomes]
    assert iqm(finals) >= -250, finals
