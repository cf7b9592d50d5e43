"""rlbench's built-in off-policy actor-critics for continuous actions: SAC and TD3.

Both follow Stable-Baselines3 (its defaults, RL Zoo's tuned values in each field's
docstring), act on bounded ``Box`` action spaces (``check_spaces`` refuses the others), and
train several seeds at once as lanes like every built-in agent. Each reads top to bottom in
its own module (:mod:`rlbench_offpolicy.sac`, :mod:`rlbench_offpolicy.td3`);
:mod:`rlbench_offpolicy.common` holds the action contract they share.

The default search spaces for ``rlbench tune`` follow RL Zoo's ``sample_sac_params`` and
``sample_td3_params`` (``rl_zoo3/hyperparams_opt.py``), narrowed where a value makes no sense
at the budgets rlbench tunes at (tens of thousands of steps): the learning rate stops at 1e-2
(Zoo: 1), the largest batches (1024, 2048) and a ``learning_starts`` of 20,000 are left out.
The Zoo ties ``gradient_steps`` to ``train_freq``; here ``gradient_steps = -1`` (fixed) does
the same. The Zoo's ``net_arch`` and ``log_std_init`` (gSDE only) are not config keys here (a
suite's ``network`` shapes the networks), and td3 has Gaussian noise only, so ``noise_type``
is not a dimension.
"""

from __future__ import annotations

from typing import Any

from rlbench import AgentSpec, hookimpl
from rlbench_offpolicy.sac import SAC
from rlbench_offpolicy.td3 import TD3

_COMMON: dict[str, Any] = {
    "learning_rate": {"low": 1e-5, "high": 1e-2, "log": True},
    "gamma": {"choices": [0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999]},
    "buffer_size": {"choices": [10_000, 100_000, 1_000_000]},
    "tau": {"choices": [0.001, 0.005, 0.01, 0.02, 0.05, 0.08]},
    "train_freq": {"choices": [1, 4, 8, 16, 32, 64, 128, 256, 512]},
    "gradient_steps": -1,  # the Zoo's gradient_steps = train_freq
}

SEARCH_SPACES: dict[str, dict[str, Any]] = {
    "sac": {
        **_COMMON,
        "batch_size": {"choices": [16, 32, 64, 128, 256, 512]},
        "learning_starts": {"choices": [0, 1_000, 10_000]},
    },
    "td3": {
        **_COMMON,
        "batch_size": {"choices": [16, 32, 64, 100, 128, 256, 512]},
        "exploration_noise": {"low": 0.0, "high": 1.0},  # the Zoo's noise_std
    },
}


@hookimpl
def rlbench_register_agents() -> list[AgentSpec]:
    return [AgentSpec(name="sac", agent=SAC), AgentSpec(name="td3", agent=TD3)]


@hookimpl
def rlbench_search_space(agent_name: str) -> dict[str, Any] | None:
    """A fresh copy of sac's or td3's default space (``None`` for other agents)."""
    space = SEARCH_SPACES.get(agent_name)
    if space is None:
        return None
    return {k: dict(v) if isinstance(v, dict) else v for k, v in space.items()}
