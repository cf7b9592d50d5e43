"""Built-in environments: reference scores (also by kwargs), the optional Box2D and MuJoCo
extras, the random-score script, and returns printed at their environment's precision."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic_results import FakeRun, write_results

from rlbench import EnvironmentSpec, ReferenceScores, records, report
from rlbench.errors import SuiteError
from rlbench.executor import write_manifest
from rlbench.report import formatting as fmt
from rlbench.runspec import expand
from rlbench.specs import spec_problem
from rlbench.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]
HAS_BOX2D = importlib.util.find_spec("Box2D") is not None
HAS_MUJOCO = importlib.util.find_spec("mujoco") is not None

SUITE = """
    name = "envs"
    seeds = 1
    devices = ["cpu"]
    environments = [{environments}]

    [[agents]]
    name = "{agent}"

    [budget]
    steps = 100
    eval_interval = 100
"""


def suite_file(tmp_path: Path, environments: str, agent: str = "ppo") -> Path:
    path = tmp_path / "envs.toml"
    path.write_text(SUITE.format(environments=environments, agent=agent))
    return path


# ----------------------------------------------------------------- reference scores


def test_every_built_in_task_declares_reference_scores(catalogue):
    expected = {  # name: solved (Gymnasium's reward_threshold, else RL Zoo's PPO score)
        "Pendulum-v1": -172.225,
        "MountainCarContinuous-v0": 90.0,
        "LunarLander-v3": 200.0,
        "HalfCheetah-v5": 4800.0,
        "Hopper-v5": 3800.0,
        "Walker2d-v5": 3478.798,
        "Ant-v5": 6000.0,
    }
    for name, solved in expected.items():
        ref = catalogue.environment(name).reference_for({})
        assert ref is not None and ref.solved == solved, name
        assert ref.random < ref.solved, name
    assert catalogue.environments["HalfCheetah-v5"].plugin.name == "box2d_mujoco"


def test_lunar_lander_continuous_gets_its_own_scores(catalogue):
    spec = catalogue.environment("LunarLander-v3")
    discrete, continuous = spec.reference_for({}), spec.reference_for({"continuous": True})
    assert (discrete.random, continuous.random) == (-181.7, -209.8)
    assert spec.reference_for({"continuous": False}) == discrete
    # Other kwargs keep the scores of the variant they do not change.
    assert spec.reference_for({"continuous": True, "enable_wind": True}) == continuous


def test_the_most_specific_reference_wins_and_default_kwargs_count():
    base = ReferenceScores(0.0, 10.0)
    hard = ReferenceScores(0.0, 5.0, kwargs={"hard": True})
    hard_long = ReferenceScores(0.0, 8.0, kwargs={"hard": True, "long": True})
    spec = EnvironmentSpec(
        "Toy-v0", make=lambda **kw: None, reference=base, variants=(hard_long, hard)
    )
    assert spec.reference_for(None) is base
    assert spec.reference_for({"hard": True}) is hard
    assert spec.reference_for({"hard": True, "long": True}) is hard_long
    defaulted = EnvironmentSpec(
        "Toy-v0", make=lambda **kw: None, variants=(hard,), default_kwargs={"hard": True}
    )
    assert defaulted.reference_for({}) is hard
    assert defaulted.reference_for({"hard": False}) is None  # only the variant was declared


def test_a_bad_variant_is_refused_at_registration():
    make = lambda **kw: None  # noqa: E731
    problem = spec_problem("environment", EnvironmentSpec("T-v0", make, variants=(1.0,)))
    assert problem == (
        "environment 'T-v0': EnvironmentSpec.variants is (1.0,) (a tuple), not a tuple of "
        "rlbench.ReferenceScores"
    )
    bad = EnvironmentSpec("T-v0", make, variants=(ReferenceScores(0, 1, kwargs=[1]),))
    assert "EnvironmentSpec.variants[0].kwargs is [1] (a list), not a mapping" in spec_problem(
        "environment", bad
    )


VARIANT_PLUGIN = """
    import functools

    import gymnasium as gym

    from rlbench import EnvironmentSpec, ReferenceScores, hookimpl

    @hookimpl
    def rlbench_register_environments():
        return [
            EnvironmentSpec(
                name="Pole-v0",
                make=lambda length=0.5: gym.make("CartPole-v1", max_episode_steps=50),
                reference=ReferenceScores(random=20.0, solved=45.0),
                variants=(ReferenceScores(random=9.0, solved=30.0, kwargs={"length": 2.0}),),
            )
        ]
"""


def test_suite_json_records_the_reference_for_the_runs_kwargs(tmp_path, inline_plugin):
    catalogue = inline_plugin("variant_envs", VARIANT_PLUGIN)
    path = suite_file(tmp_path, '{ id = "Pole-v0", kwargs = { length = 2.0 } }', agent="dqn")
    suite = load_suite(path, catalogue)
    write_manifest(suite, expand(suite), tmp_path, catalogue)
    recorded = records.SuiteManifest.read(tmp_path).references["Pole-v0"]
    assert (recorded.random, recorded.solved, recorded.plugin) == (9.0, 30.0, "variant_envs")


# ----------------------------------------------------------------- optional extras


def _hide_module(monkeypatch: pytest.MonkeyPatch, module: str, *loaded: str) -> None:
    """Make ``import module`` fail as when it is not installed, and forget the modules
    ``loaded`` (Gymnasium's env modules that imported it), so they import it again."""
    monkeypatch.setitem(sys.modules, module, None)  # import raises ModuleNotFoundError
    for name in [n for n in sys.modules if n.startswith(loaded)]:
        monkeypatch.delitem(sys.modules, name)


@pytest.mark.parametrize(
    ("env", "module", "loaded", "extra"),
    [
        ("LunarLander-v3", "Box2D", ("gymnasium.envs.box2d",), "box2d"),
        ("HalfCheetah-v5", "mujoco", ("gymnasium.envs.mujoco",), "mujoco"),
    ],
)
def test_a_missing_extra_is_one_line_with_the_install_command(
    tmp_path, catalogue, monkeypatch, env, module, loaded, extra
):
    _hide_module(monkeypatch, module, *loaded)
    path = suite_file(tmp_path, f'"CartPole-v1", "{env}"')
    with pytest.raises(SuiteError) as info:
        load_suite(path, catalogue)
    assert str(info.value).splitlines() == [
        f"{path}: environments[1]: '{env}' needs the module '{module}', which is not "
        f'installed; install it with: pip install -c constraints.txt ".[{extra}]"'
    ]


def test_rlbench_validate_prints_the_install_command_without_a_traceback(tmp_path):
    # A fresh process, as a user runs it; sitecustomize hides Box2D there.
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['Box2D'] = None\n")
    path = suite_file(tmp_path, '"LunarLander-v3"')
    result = subprocess.run(
        [sys.executable, "-m", "rlbench", "validate", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path), "COLUMNS": "200"},
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert 'pip install -c constraints.txt ".[box2d]"' in result.stderr


@pytest.mark.skipif(not HAS_BOX2D, reason='needs Box2D: pip install -c constraints.txt ".[box2d]"')
def test_lunar_lander_both_variants_validate_and_step(tmp_path, catalogue):
    suite = load_suite(
        suite_file(tmp_path, '{ id = "LunarLander-v3", kwargs = { continuous = true } }'),
        catalogue,
    )
    env = catalogue.environment("LunarLander-v3").create(**suite.file.environments[0].kwargs)
    env.reset(seed=0)
    assert env.action_space.shape == (2,)
    env.step(env.action_space.sample())


@pytest.mark.skipif(
    not HAS_MUJOCO, reason='needs MuJoCo: pip install -c constraints.txt ".[mujoco]"'
)
def test_half_cheetah_validates_and_steps(tmp_path, catalogue):
    load_suite(suite_file(tmp_path, '"HalfCheetah-v5"'), catalogue)
    env = catalogue.environment("HalfCheetah-v5").create()
    env.reset(seed=0)
    _, reward, *_ = env.step(env.action_space.sample())
    assert isinstance(float(reward), float)


# ----------------------------------------------------------------- random scores


def random_scores(*args: str, plugin_dir: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "RLBENCH_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("RLBENCH_PLUGINS", None)
    if plugin_dir is not None:
        env |= {"PYTHONPATH": str(plugin_dir), "RLBENCH_PLUGINS": "score_envs"}
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "random_scores.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


SCORE_PLUGIN = """
    import gymnasium as gym

    from rlbench import EnvironmentSpec, hookimpl

    class Constant(gym.Env):
        '''Episodes of `length` steps, reward `reward` each.'''

        observation_space = gym.spaces.Box(0.0, 1.0, (1,))
        action_space = gym.spaces.Discrete(2)

        def __init__(self, length=3, reward=0.25):
            self.length, self.reward, self.t = length, reward, 0

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.t = 0
            return self.observation_space.low, {}

        def step(self, action):
            self.t += 1
            return self.observation_space.low, self.reward, False, self.t >= self.length, {}

    @hookimpl
    def rlbench_register_environments():
        return [EnvironmentSpec("Constant-v0", make=Constant, default_kwargs={"length": 4})]
"""


def test_random_scores_measures_a_plugin_environment_with_kwargs(tmp_path):
    (tmp_path / "score_envs.py").write_text(SCORE_PLUGIN.replace("\n    ", "\n"))
    result = random_scores(
        "Constant-v0", "--episodes", "3", "--kwargs", '{"reward": 0.5}', plugin_dir=tmp_path
    )
    assert result.returncode == 0, result.stderr
    # default_kwargs (4 steps) and --kwargs (0.5 a step) both reach the environment.
    assert result.stdout == ('Constant-v0 with kwargs {"reward": 0.5}: 2.0 ± 0.0 over 3 episodes\n')


def test_random_scores_refuses_an_unknown_name_in_one_line():
    result = random_scores("CartPol-v1", "--episodes", "1")
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown environment 'CartPol-v1'")
    assert len(result.stderr.splitlines()) == 1


def test_random_scores_reproduces_the_declared_cartpole_floor(catalogue):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from random_scores import random_return
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    mean, _ = random_return(catalogue, "CartPole-v1", 50)
    assert mean == pytest.approx(catalogue.environment("CartPole-v1").reference.random, abs=3)


# ----------------------------------------------------------------- precision


def test_returns_keep_three_significant_digits_of_their_scale():
    cartpole = ReferenceScores(22.2, 475.0)
    assert fmt.return_decimals(cartpole) == 1  # as every table printed before
    assert fmt.num(409.56, fmt.return_decimals(cartpole)) == "409.6"
    unit = ReferenceScores(0.0, 0.85)
    assert fmt.return_decimals(unit) == 3
    assert fmt.return_decimals(None, [0.61, -0.2, float("nan")]) == 3  # no reference
    assert fmt.return_decimals(None, [0.004]) == 5
    assert fmt.return_decimals(None, []) == fmt.MIN_DECIMALS
    assert fmt.return_decimals(ReferenceScores(-181.7, 200.0)) == 1


def test_thresholds_print_exactly():
    assert fmt.exact(0.85) == "0.85"  # one decimal would read 0.8: another threshold
    assert fmt.exact(475.0) == "475.0"
    assert fmt.exact(-172.225) == "-172.225"
    assert fmt.exact(4800.0) == "4,800.0"
    assert fmt.exact(0.1 + 0.2) == "0.3"


def test_report_tables_print_small_rewards_at_their_scale(tmp_path, inline_plugin):
    catalogue = inline_plugin(
        "unit_envs",
        """
        import gymnasium as gym
        from rlbench import EnvironmentSpec, ReferenceScores, hookimpl

        @hookimpl
        def rlbench_register_environments():
            return [EnvironmentSpec("Unit-v0", make=lambda: gym.make("CartPole-v1"),
                                    reference=ReferenceScores(random=0.0, solved=0.85))]
        """,
    )
    runs = [FakeRun("a", "Unit-v0", s, final=0.8 + 0.01 * s, start=0.1) for s in range(4)]
    folder = write_results(tmp_path, "s", runs)
    path = report.write_report([folder], catalogue=catalogue, n_resamples=200)
    text = path.read_text(encoding="utf-8")
    assert "| a | Unit-v0 | 4 | 0.815 ± 0.013 | 0.815 |" in text
    assert "No run of a ended at or above Unit-v0's solved threshold (0.85)." in text
    table = report.rich_score_table(path.parent)
    iqm = next(c for c in table.columns if c.header == "IQM [95% CI]")
    assert next(iter(iqm.cells)).startswith("0.815 [")


def test_the_suite_json_of_old_folders_still_reads(tmp_path):
    """Folders written before reference scores had kwargs: same keys, same scores."""
    (tmp_path / "suite.json").write_text(
        json.dumps(
            {
                "name": "s",
                "source_path": "s.toml",
                "runs": [],
                "references": {"CartPole-v1": {"random": 22.2, "solved": 475.0, "plugin": "x"}},
            }
        )
    )
    ref = records.SuiteManifest.read(tmp_path).references["CartPole-v1"]
    assert (ref.random, ref.solved) == (22.2, 475.0)


def test_run_summary_prints_each_environment_at_its_scale(tmp_path, capsys):
    from rlbench import cli

    runs = [FakeRun("a", "CartPole-v1", s, final=480.0 + s) for s in range(4)]
    runs += [FakeRun("a", "Unit-v0", s, final=0.8 + 0.01 * s) for s in range(4)]
    unit = records.EnvReference(0.0, 0.85, "unit_envs")
    cartpole = records.EnvReference(22.2, 475.0, "classic_control")
    folder = write_results(
        tmp_path, "s", runs, references={"CartPole-v1": cartpole, "Unit-v0": unit}
    )
    cli._print_summary(folder)
    out = capsys.readouterr().out
    assert "481.5 ± 1.3" in out  # one decimal, as before
    assert "0.815 ± 0.013" in out
    summary = (folder / "summary.csv").read_text()
    assert "0.815" in summary and "0.0129" in summary  # full precision
