from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rlbench.plugins import Catalogue, load_catalogue

REPO = Path(__file__).resolve().parents[1]

TINY_SUITE = """
name = "{name}"
seeds = {seeds}
devices = {devices}
environments = ["CartPole-v1"]

[budget]
steps = {steps}
eval_interval = {eval_interval}
eval_episodes = 2

[[agents]]
name = "naive_dqn"

[[agents]]
name = "dqn"
config = {{ learning_starts = 100, train_frequency = 50, gradient_steps = 5, buffer_size = 1000 }}
network = {{ name = "mlp", hidden_sizes = [16] }}
"""


#: Two lane groups, two seeds each, evaluated every 500 steps: dqn (a replay buffer) and ppo (a
#: rollout and running observation statistics). What the checkpoint and Ray tests train.
TWO_GROUPS_SUITE = """
name = "{name}"
seeds = 2
environments = ["CartPole-v1"]

[budget]
steps = {steps}
eval_interval = 500
eval_episodes = 2

[[agents]]
name = "dqn"
config = {{ learning_starts = 200, buffer_size = 2000 }}
network = {{ name = "mlp", hidden_sizes = [32] }}

[[agents]]
name = "ppo"
config = {{ num_envs = 2, n_steps = 64, batch_size = 32, n_epochs = 2, normalize_obs = true }}
network = {{ name = "mlp", hidden_sizes = [32] }}
"""


@pytest.fixture(scope="session")
def catalogue() -> Catalogue:
    return load_catalogue(autoload=False)


@pytest.fixture
def inline_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``inline_plugin(name, source)``: write ``source`` (dedented) as the module ``name``
    and return a catalogue of rlbench's own plugins plus that one. The module is forgotten
    after the test."""
    names: list[str] = []

    def load(name: str, source: str) -> Catalogue:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(tmp_path))
        names.append(name)
        return load_catalogue(autoload=False, extra_plugins=[name])

    yield load
    for name in names:
        sys.modules.pop(name, None)


@pytest.fixture
def write_suite(tmp_path: Path):
    """Write a small suite file; keyword arguments fill the template above."""

    def write(text: str | None = None, filename: str = "suite.toml", **fields) -> Path:
        if text is None:
            values = {
                "name": "t",
                "seeds": 2,
                "devices": '["cpu"]',
                "steps": 300,
                "eval_interval": 150,
            }
            values.update(fields)
            text = TINY_SUITE.format(**values)
        path = tmp_path / filename
        path.write_text(textwrap.dedent(text))
        return path

    return write


def rlbench_cmd(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the ``rlbench`` CLI in a fresh process, as a user would."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "rlbench", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )


HAVE_RAY = importlib.util.find_spec("ray") is not None
#: What a command that talks to the test cluster runs with: no usage stats, and this Python's
#: ``ray`` on the PATH (the cluster script calls it).
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
}


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory):
    """The address of a running Ray cluster: $RAY_ADDRESS (CI starts one), or one this test
    session starts with scripts/ray_cluster.sh on its own port and folder (and stops)."""
    if not HAVE_RAY:
        pytest.skip("Ray is not installed (pip install -c constraints.txt -e '.[ray]')")
    address = os.environ.get("RAY_ADDRESS")
    if address:
        yield address
        return
    folder = tmp_path_factory.mktemp("ray")
    env = {**os.environ, **RAY_ENV, "RLBENCH_RAY_PORT": "6399", "RLBENCH_RAY_DIR": str(folder)}
    started = subprocess.run(
        ["bash", str(REPO / "scripts" / "ray_cluster.sh"), "start"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert started.returncode == 0, started.stderr
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(
            ["bash", str(REPO / "scripts" / "ray_cluster.sh"), "stop"],
            capture_output=True,
            env=env,
            timeout=120,
        )
