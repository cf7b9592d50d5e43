"""Real third-party plugin packages, built and installed with pip, used with no change to
rlbench: the example packages under examples/ (Double DQN, a subclass of the built-in DQN;
DDPG, a lane agent written from scratch on rlbench.lanes), and a broken one made here."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, rlbench_cmd

EXAMPLE = REPO / "examples" / "rlbench-double-dqn"
LANE_EXAMPLE = REPO / "examples" / "rlbench-lane-ddpg"
EXAMPLES = [EXAMPLE, LANE_EXAMPLE]


def pip_install_target(*packages: Path, target: Path) -> None:
    """Build and install ``packages`` into ``target`` (a directory that goes on PYTHONPATH),
    so the test's own environment is left as it was."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            *map(str, packages),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    pip_install_target(*EXAMPLES, target=target)
    return target


def test_installed_plugin_is_listed_with_its_distribution(site):
    proc = rlbench_cmd("list", env={"PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr
    assert "double_dqn" in proc.stdout
    assert "rlbench-double-dqn 0.1.0" in proc.stdout
    assert "lane_ddpg" in proc.stdout
    assert "rlbench-lane-ddpg 0.1.0" in proc.stdout


def test_installed_plugin_is_benchmarked_next_to_the_builtins(site, tmp_path):
    suite = tmp_path / "suite.toml"
    suite.write_text(
        textwrap.dedent("""
        name = "dd"
        seeds = 1
        environments = ["CartPole-v1"]
        [budget]
        steps = 400
        eval_interval = 200
        eval_episodes = 2
        [[agents]]
        name = "dqn"
        config = { learning_starts = 100, train_frequency = 50, gradient_steps = 5 }
        [[agents]]
        name = "double_dqn"
        config = { learning_starts = 100, train_frequency = 50, gradient_steps = 5 }
    """)
    )
    proc = rlbench_cmd(
        "run",
        str(suite),
        "--results",
        str(tmp_path / "res"),
        "-j",
        "1",
        env={"PYTHONPATH": str(site)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "double_dqn" in proc.stdout and "[2/2] complete" in proc.stdout
    [run] = (tmp_path / "res" / "dd" / "runs").glob("double_dqn__*")
    provenance = json.loads((run / "provenance.json").read_text())
    assert provenance["plugins"]["rlbench-double-dqn"] == "0.1.0"


def test_autoload_can_be_disabled_for_clean_runs(site):
    env = {"PYTHONPATH": str(site), "RLBENCH_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = rlbench_cmd("list", env=env)
    assert proc.returncode == 0
    assert "double_dqn" not in proc.stdout and "naive_dqn" in proc.stdout
    assert "lane_ddpg" not in proc.stdout
    flag = rlbench_cmd("--no-plugin-autoload", "list", env={"PYTHONPATH": str(site)})
    assert "double_dqn" not in flag.stdout
    # An explicitly named plugin still loads.
    named = rlbench_cmd("-p", "rlbench_double_dqn", "list", env=env)
    assert "double_dqn" in named.stdout


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_the_example_packages_own_tests_pass(site, example):
    """Each example's tests, run against the installed package (the lane example's train
    three seeds on Pendulum-v1 through ``rlbench run``, grouped and one by one)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(example / "tests")],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(site), "PATH": ""},
        cwd=example,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


#: What the lane example may import: rlbench's public API and what any plugin depends on.
PUBLIC = {"rlbench", "rlbench.lanes", "torch", "numpy", "gymnasium", "pydantic"}
#: What its tests may import besides: the catalogue and suite loading the guide's "Testing
#: your plugin" uses, pytest, and the package itself.
PUBLIC_FOR_TESTS = {"rlbench.plugins", "rlbench.suite", "pytest", "rlbench_lane_ddpg"}


def imported_modules(path: Path) -> set[str]:
    """The modules ``path`` imports from outside the standard library."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return {n for n in names if n.split(".")[0] not in sys.stdlib_module_names}


def test_the_lane_example_is_written_on_the_public_api_alone():
    """No built-in agent's module (rlbench_dqn, rlbench_pg) and no harness internals: what
    the guide documents is enough to write a lane agent."""
    [source] = (LANE_EXAMPLE / "src").rglob("*.py")
    assert imported_modules(source) <= PUBLIC
    for test in (LANE_EXAMPLE / "tests").rglob("*.py"):
        assert imported_modules(test) <= PUBLIC | PUBLIC_FOR_TESTS, test


BROKEN_PYPROJECT = """
    [build-system]
    requires = ["setuptools>=77"]
    build-backend = "setuptools.build_meta"

    [project]
    name = "rlbench-broken"
    version = "0.0.1"

    [project.entry-points.rlbench]
    broken = "rlbench_broken"
"""


def test_a_broken_plugin_fails_only_the_runs_that_need_it(tmp_path):
    package = tmp_path / "pkg"
    (package / "rlbench_broken").mkdir(parents=True)
    (package / "pyproject.toml").write_text(textwrap.dedent(BROKEN_PYPROJECT))
    (package / "rlbench_broken" / "__init__.py").write_text("import numpy_typo_xyz\n")
    site = tmp_path / "site"
    pip_install_target(package, target=site)

    suite = tmp_path / "suite.toml"
    suite.write_text(
        textwrap.dedent("""
        name = "mixed"
        seeds = 1
        environments = ["CartPole-v1"]
        [budget]
        steps = 200
        eval_interval = 100
        eval_episodes = 2
        [[agents]]
        name = "broken_agent"
        [[agents]]
        name = "naive_dqn"
    """)
    )
    proc = rlbench_cmd(
        "run",
        str(suite),
        "--results",
        str(tmp_path / "res"),
        "-j",
        "1",
        env={"PYTHONPATH": str(site)},
    )
    assert proc.returncode == 1
    assert (
        "warning: plugin 'broken' (rlbench-broken 0.0.1) failed to load: "
        "ModuleNotFoundError: No module named 'numpy_typo_xyz'"
    ) in proc.stderr
    assert "failed: broken_agent__CartPole-v1__seed0" in proc.stdout
    assert "unknown agent 'broken_agent'" in proc.stdout
    statuses = {
        run.name.split("__")[0]: json.loads((run / "status.json").read_text())["status"]
        for run in (tmp_path / "res" / "mixed" / "runs").iterdir()
    }
    assert statuses == {"broken_agent": "failed", "naive_dqn": "complete"}
