"""The plugin catalogue: built-ins through entry points, duplicates, broken plugins."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from rlbench.errors import PluginError, RlbenchError
from rlbench.plugins import load_catalogue


def test_builtins_come_from_the_rlbench_entry_points(catalogue):
    assert {"naive_dqn", "target_dqn", "replay_dqn", "dqn"} <= set(catalogue.agents)
    assert "mlp" in catalogue.networks
    assert catalogue.environment("CartPole-v1").reference.solved == 475.0
    provided = catalogue.agents["dqn"]
    assert provided.plugin.distribution == "rlbench"
    assert provided.plugin.module == "rlbench_dqn"
    assert not catalogue.broken


def test_any_gymnasium_id_is_an_environment(catalogue):
    spec = catalogue.environment("Pendulum-v1")
    env = spec.create()
    assert env.spec.id == "Pendulum-v1"
    assert spec.reference is None


def test_unknown_names_get_a_did_you_mean(catalogue):
    with pytest.raises(RlbenchError, match=r"unknown agent 'dqm' \(did you mean 'dqn'"):
        catalogue.agent("dqm")
    with pytest.raises(RlbenchError, match="did you mean 'CartPole-v1'"):
        catalogue.environment("CartPole-v2")


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("fake_plugin_")]:
        del sys.modules[name]


def _write(plugin_dir: Path, name: str, body: str) -> str:
    (plugin_dir / f"{name}.py").write_text(textwrap.dedent(body))
    return name


DUPLICATE_DQN = """
    from rlbench import AgentSpec, hookimpl
    from rlbench_dqn.dqn import DQN

    @hookimpl
    def rlbench_register_agents():
        return [AgentSpec(name="dqn", agent=DQN)]
"""


def test_two_providers_of_one_name_is_an_error_naming_both(plugin_dir):
    module = _write(plugin_dir, "fake_plugin_dup", DUPLICATE_DQN)
    with pytest.raises(PluginError) as info:
        load_catalogue(autoload=False, extra_plugins=[module])
    message = str(info.value)
    assert "agent 'dqn' is registered by two plugins" in message
    assert "'dqn' (rlbench" in message and "'fake_plugin_dup'" in message


def test_a_plugin_that_fails_to_import_is_reported_and_the_others_load(plugin_dir):
    module = _write(plugin_dir, "fake_plugin_broken", "import not_a_real_module_xyz\n")
    catalogue = load_catalogue(autoload=False, extra_plugins=[module])
    assert "dqn" in catalogue.agents
    [broken] = catalogue.broken
    assert broken.name == "fake_plugin_broken"
    assert "ModuleNotFoundError" in broken.error and "not_a_real_module_xyz" in broken.error
    # A name that plugin might have provided says so instead of only "unknown".
    with pytest.raises(RlbenchError, match=r"fake_plugin_broken.*failed to load"):
        catalogue.agent("my_agent")


def test_a_hook_that_raises_is_reported_like_a_broken_import(plugin_dir):
    module = _write(
        plugin_dir,
        "fake_plugin_raises",
        """
        from rlbench import hookimpl

        @hookimpl
        def rlbench_register_agents():
            raise RuntimeError("boom")
    """,
    )
    catalogue = load_catalogue(autoload=False, extra_plugins=[module])
    assert [b.name for b in catalogue.broken] == ["fake_plugin_raises"]
    assert "RuntimeError: boom" in catalogue.broken[0].error
    assert "dqn" in catalogue.agents


def test_a_misspelt_hook_is_an_error(plugin_dir):
    module = _write(
        plugin_dir,
        "fake_plugin_typo",
        """
        from rlbench import hookimpl

        @hookimpl
        def rlbench_register_agent():
            return []
    """,
    )
    with pytest.raises(PluginError, match="rlbench_register_agent"):
        load_catalogue(autoload=False, extra_plugins=[module])


def test_extra_plugins_come_from_the_environment_variable(plugin_dir, monkeypatch):
    module = _write(
        plugin_dir,
        "fake_plugin_env",
        """
        import functools
        import gymnasium as gym
        from rlbench import EnvironmentSpec, ReferenceScores, hookimpl

        @hookimpl
        def rlbench_register_environments():
            return [EnvironmentSpec(
                name="ShortCartPole",
                make=functools.partial(gym.make, "CartPole-v1", max_episode_steps=50),
                reference=ReferenceScores(random=20.0, solved=50.0),
            )]
    """,
    )
    monkeypatch.setenv("RLBENCH_PLUGINS", module)
    catalogue = load_catalogue(autoload=False)
    env = catalogue.environment("ShortCartPole").create()
    assert env.spec.max_episode_steps == 50
    assert catalogue.environments["ShortCartPole"].plugin.name == module
