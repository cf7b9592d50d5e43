"""The plugin catalogue: built-ins through entry points, duplicates, broken plugins."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from conftest import rlbench_cmd

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
    # FrozenLake-v1: a Gymnasium id no built-in plugin describes.
    spec = catalogue.environment("FrozenLake-v1")
    env = spec.create()
    assert env.spec.id == "FrozenLake-v1"
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


# ------------------------------------------------------------------------- what hooks return

GOOD_AGENT = "from rlbench_dqn.naive_dqn import NaiveDQN\n"

# (case id, plugin source, what `rlbench list` says is wrong with the plugin)
GARBAGE = [
    (
        "a string",
        "@hookimpl\ndef rlbench_register_agents():\n    return 'dqn'\n",
        "rlbench_register_agents returned 'dqn' (a str); it must return a list of AgentSpec "
        "(an empty list registers nothing)",
    ),
    (
        "None",
        "@hookimpl\ndef rlbench_register_agents():\n    pass\n",
        "rlbench_register_agents returned None; it must return a list of AgentSpec",
    ),
    (
        "an int",
        "@hookimpl\ndef rlbench_register_networks():\n    return 42\n",
        "rlbench_register_networks returned 42 (an int); it must return a list of NetworkSpec",
    ),
    (
        "None in the list",
        "@hookimpl\ndef rlbench_register_agents():\n    return [None]\n",
        "rlbench_register_agents returned None where an AgentSpec belongs",
    ),
    (
        "an int as the agent class",
        "@hookimpl\ndef rlbench_register_agents():\n    return [AgentSpec(name='five', agent=5)]\n",
        "rlbench_register_agents returned agent 'five': AgentSpec.agent is 5 (an int), "
        "not a subclass of rlbench.Agent",
    ),
    (
        "a class that is not an Agent",
        "@hookimpl\ndef rlbench_register_agents():\n"
        "    return [AgentSpec(name='dict', agent=dict)]\n",
        "rlbench_register_agents returned agent 'dict': AgentSpec.agent is the class dict, "
        "not a subclass of rlbench.Agent",
    ),
    (
        "a NetworkSpec where an AgentSpec belongs",
        "from rlbench_mlp import build_mlp\n"
        "@hookimpl\ndef rlbench_register_agents():\n"
        "    return [NetworkSpec(name='wide_mlp', build=build_mlp)]\n",
        "rlbench_register_agents returned a NetworkSpec ('wide_mlp') where an AgentSpec "
        "belongs; return it from rlbench_register_networks",
    ),
    (
        "a Config that is not a pydantic model",
        GOOD_AGENT + "class Odd(NaiveDQN):\n    Config = dict\n"
        "@hookimpl\ndef rlbench_register_agents():\n"
        "    return [AgentSpec(name='odd', agent=Odd)]\n",
        "rlbench_register_agents returned agent 'odd': Odd.Config is the class dict, not a "
        "subclass of rlbench.AgentConfig",
    ),
    (
        "a network config_model that is not a pydantic model",
        "from rlbench_mlp import build_mlp\n"
        "@hookimpl\ndef rlbench_register_networks():\n"
        "    return [NetworkSpec(name='odd_mlp', build=build_mlp, config_model=dict)]\n",
        "rlbench_register_networks returned network 'odd_mlp': NetworkSpec.config_model is "
        "the class dict, not a subclass of rlbench.NetworkConfig",
    ),
    (
        "an environment that cannot be made",
        "@hookimpl\ndef rlbench_register_environments():\n"
        "    return [EnvironmentSpec(name='Odd-v0', make=5)]\n",
        "rlbench_register_environments returned environment 'Odd-v0': EnvironmentSpec.make "
        "is 5 (an int), not a function",
    ),
    (
        "an AgentSpec where an EnvironmentSpec belongs",
        GOOD_AGENT + "@hookimpl\ndef rlbench_register_environments():\n"
        "    return [AgentSpec(name='odd', agent=NaiveDQN)]\n",
        "rlbench_register_environments returned an AgentSpec ('odd') where an "
        "EnvironmentSpec belongs; return it from rlbench_register_agents",
    ),
]

SLASHES = "must not start or end with '/', or contain '//' or a '.' part"
HOSTILE_NAMES = [
    ("agent", "../x", "must not contain '..'"),
    ("agent", "/tmp/x", "must not contain '/'"),
    ("agent", "a/../../b", "must not contain '..'"),
    ("agent", "", "must not be empty"),
    ("agent", "x\x00y", "must not contain the control character '\\x00'"),
    ("agent", "a\\b", "must not contain '\\'"),
    ("agent", 7, "must be a string, not int"),
    ("network", "nets/mlp", "must not contain '/'"),
    ("environment", "../x", "must not contain '..'"),
    ("environment", "/tmp/x", SLASHES),
    ("environment", "ALE/../../b", "must not contain '..'"),
    ("environment", "ALE//Pong-v5", SLASHES),
    ("environment", "ALE/./Pong-v5", SLASHES),
    ("environment", "Pong\nv5", "must not contain the control character '\\n'"),
]


def _hostile_source(kind: str, name: object) -> str:
    spec = {
        "agent": "AgentSpec(name={name!r}, agent=NaiveDQN)",
        "network": "NetworkSpec(name={name!r}, build=build_mlp)",
        "environment": "EnvironmentSpec(name={name!r}, make=lambda: None)",
    }[kind].format(name=name)
    return (
        GOOD_AGENT + "from rlbench_mlp import build_mlp\n"
        f"@hookimpl\ndef rlbench_register_{kind}s():\n    return [{spec}]\n"
    )


BAD_PLUGINS = [pytest.param(source, why, id=case) for case, source, why in GARBAGE] + [
    pytest.param(
        _hostile_source(kind, name),
        f"rlbench_register_{kind}s returned the {kind} name {name!r}, which {why}",
        id=f"{kind} named {name!r}",
    )
    for kind, name, why in HOSTILE_NAMES
]

PLUGIN_HEADER = "from rlbench import AgentSpec, EnvironmentSpec, NetworkSpec, hookimpl\n"


def _one_spaced(text: str) -> str:
    """The terminal wraps long lines; compare what it shows word by word."""
    return " ".join(text.split())


@pytest.mark.parametrize(("source", "why"), BAD_PLUGINS)
def test_rlbench_list_names_a_plugin_with_bad_hook_returns_as_broken(plugin_dir, source, why):
    from click.testing import CliRunner

    from rlbench.cli import cli

    module = _write(plugin_dir, "fake_plugin_bad", PLUGIN_HEADER + source)
    result = CliRunner().invoke(cli, ["--no-plugin-autoload", "-p", module, "list"])
    assert result.exit_code == 0, result.output
    reason = f"plugin '{module}' (RLBENCH_PLUGINS -) failed to load: {why}"
    assert f"warning: {reason}" in _one_spaced(result.stderr)
    assert f"broken: {reason}" in _one_spaced(result.stdout)
    # The good plugins are all there; the broken one contributes nothing.
    for name in ("naive_dqn", "dqn (rlbench", "mlp (rlbench", "CartPole-v1"):
        assert name in result.stdout
    assert f"{module} (RLBENCH_PLUGINS -)" not in result.stdout


def test_a_broken_plugin_contributes_none_of_its_names(plugin_dir):
    module = _write(
        plugin_dir,
        "fake_plugin_half",
        PLUGIN_HEADER
        + GOOD_AGENT
        + """
@hookimpl
def rlbench_register_agents():
    return [AgentSpec(name="half_good", agent=NaiveDQN)]

@hookimpl
def rlbench_register_networks():
    return "not a list"
""",
    )
    catalogue = load_catalogue(autoload=False, extra_plugins=[module])
    assert [b.name for b in catalogue.broken] == [module]
    assert "half_good" not in catalogue.agents and "dqn" in catalogue.agents
    assert module not in [p.name for p in catalogue.plugins]
    with pytest.raises(RlbenchError, match=r"unknown agent 'half_good'.*fake_plugin_half"):
        catalogue.agent("half_good")


def test_namespaced_environment_ids_are_accepted(plugin_dir):
    module = _write(
        plugin_dir,
        "fake_plugin_namespaced",
        PLUGIN_HEADER
        + """
import functools
import gymnasium as gym

@hookimpl
def rlbench_register_environments():
    make = functools.partial(gym.make, "CartPole-v1")
    return [EnvironmentSpec(name="mine/CartPole-v1", make=make)]
""",
    )
    catalogue = load_catalogue(autoload=False, extra_plugins=[module])
    assert not catalogue.broken
    assert catalogue.environments["mine/CartPole-v1"].plugin.name == module


def test_a_user_sees_the_broken_plugin_and_the_others_work(plugin_dir):
    module = _write(plugin_dir, "fake_plugin_escape", _hostile_source("agent", "../escape"))
    module_text = (plugin_dir / f"{module}.py").read_text()
    (plugin_dir / f"{module}.py").write_text(PLUGIN_HEADER + module_text)
    proc = rlbench_cmd("-p", module, "list", env={"PYTHONPATH": str(plugin_dir)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[0] == (
        "warning: plugin 'fake_plugin_escape' (RLBENCH_PLUGINS -) failed to load: "
        "rlbench_register_agents returned the agent name '../escape', which must not "
        "contain '..'"
    )
    assert "naive_dqn" in proc.stdout and "../escape" not in proc.stdout.split("broken:")[0]


# ------------------------------------------------------------------------- two plugins, one name


def _fake_distribution(site: Path, dist: str, entry_point: str, module: str, agent: str) -> None:
    """A distribution as pip would install it: its metadata and one module, in ``site``."""
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[rlbench]\n{entry_point} = {module}\n")
    (site / f"{module}.py").write_text(
        PLUGIN_HEADER + GOOD_AGENT + f"@hookimpl\ndef rlbench_register_agents():\n"
        f"    return [AgentSpec(name={agent!r}, agent=NaiveDQN)]\n"
    )


def test_two_distributions_with_one_entry_point_name_load_one_and_report_the_other(plugin_dir):
    _fake_distribution(plugin_dir, "fake-clash-b", "fake_clash", "fake_plugin_clash_b", "b_agent")
    _fake_distribution(plugin_dir, "fake-clash-a", "fake_clash", "fake_plugin_clash_a", "a_agent")
    catalogue = load_catalogue(autoload=True)
    [broken] = [b for b in catalogue.broken if b.name == "fake_clash"]
    assert broken.describe() == (
        "plugin 'fake_clash' (fake-clash-b 1.0) failed to load: the plugin name 'fake_clash' "
        "is already taken by fake-clash-a 1.0; rename one of them (the entry point's name in "
        "its pyproject.toml, or the module given with -p)"
    )
    assert catalogue.agents["a_agent"].plugin.distribution == "fake-clash-a"
    assert "b_agent" not in catalogue.agents and "dqn" in catalogue.agents


def test_p_for_an_installed_plugin_loads_it_once_without_a_word(plugin_dir):
    _fake_distribution(plugin_dir, "fake-once", "fake_once", "fake_plugin_once", "once_agent")
    catalogue = load_catalogue(autoload=True, extra_plugins=["fake_plugin_once"])
    assert not [b for b in catalogue.broken if "once" in b.name]
    [info] = [p for p in catalogue.plugins if p.module == "fake_plugin_once"]
    assert (info.name, info.distribution) == ("fake_once", "fake-once")
    assert catalogue.agents["once_agent"].plugin == info
    # Without autoload, -p is what loads it (under its module name).
    alone = load_catalogue(autoload=False, extra_plugins=["fake_plugin_once"])
    assert alone.agents["once_agent"].plugin.name == "fake_plugin_once"


# ------------------------------------------------------------------------- search spaces

COUNTING_SPACE = """
from rlbench import hookimpl

calls = []

@hookimpl
def rlbench_search_space(agent_name):
    calls.append(agent_name)
    if agent_name == "dqn":
        return {"gamma": {"choices": [0.9, 0.99]}}
    return None
"""


def test_search_space_asks_the_hook_once_per_agent_and_the_last_plugin_wins(plugin_dir):
    module = _write(plugin_dir, "fake_plugin_space", COUNTING_SPACE)
    catalogue = load_catalogue(autoload=False, extra_plugins=[module])
    assert catalogue.search_space("dqn") == {"gamma": {"choices": [0.9, 0.99]}}
    assert catalogue.search_space("dqn") == {"gamma": {"choices": [0.9, 0.99]}}
    assert catalogue.search_space_plugin("dqn") == module
    # naive_dqn: this plugin knows nothing, so the built-in dqn plugin answers.
    assert "learning_rate" in catalogue.search_space("naive_dqn")
    assert catalogue.search_space_plugin("naive_dqn") == "dqn"
    assert catalogue.search_space("mystery") is None
    assert catalogue.search_space_plugin("mystery") == ""
    assert sys.modules[module].calls == ["dqn", "naive_dqn", "mystery"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "return 'lr'",
            "plugin 'fake_plugin_space_bad': rlbench_search_space(agent_name='dqn') returned "
            "'lr' (a str); it must return a dict {hyperparameter: dimension} or None",
        ),
        (
            "raise KeyError('dqn')",
            "plugin 'fake_plugin_space_bad': rlbench_search_space(agent_name='dqn') raised "
            "KeyError: 'dqn'",
        ),
    ],
)
def test_a_bad_search_space_hook_is_an_error_naming_the_plugin(plugin_dir, body, message):
    source = f"from rlbench import hookimpl\n@hookimpl\ndef rlbench_search_space():\n    {body}\n"
    module = _write(plugin_dir, "fake_plugin_space_bad", source)
    catalogue = load_catalogue(autoload=False, extra_plugins=[module])
    with pytest.raises(PluginError) as info:
        catalogue.search_space("dqn")
    assert str(info.value) == message


def test_trace_shows_every_hook_call(plugin_dir, monkeypatch, capsys):
    module = _write(plugin_dir, "fake_plugin_space", COUNTING_SPACE)
    monkeypatch.setenv("RLBENCH_TRACE_HOOKS", "1")
    catalogue = load_catalogue(autoload=False, extra_plugins=[module])
    space = catalogue.search_space("naive_dqn")
    catalogue.search_space("naive_dqn")
    # One line per registration hook of every plugin, in the order they were called...
    registered = []
    for info in catalogue.plugins:
        for hook, table in (
            ("rlbench_register_agents", catalogue.agents),
            ("rlbench_register_networks", catalogue.networks),
            ("rlbench_register_environments", catalogue.environments),
            ("rlbench_register_loggers", catalogue.loggers),
        ):
            names = [name for name, provided in table.items() if provided.plugin == info]
            if names:
                registered.append(f"{hook}() [{info.name}] -> [{', '.join(names)}]")
    assert "rlbench_register_agents() [dqn] -> [naive_dqn, target_dqn, replay_dqn, dqn]" in (
        registered
    )
    # ...then the search space, asked once: this plugin declines, the dqn plugin answers.
    assert capsys.readouterr().err.splitlines() == [
        *registered,
        f"rlbench_search_space(agent_name='naive_dqn') [{module}] -> None",
        "rlbench_search_space(agent_name='naive_dqn') [offpolicy] -> None",
        "rlbench_search_space(agent_name='naive_dqn') [dqn] -> {" + ", ".join(space) + "}",
    ]
