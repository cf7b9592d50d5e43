"""The docs stay honest: every hook is documented, in the plugin guide and in its docstring,
with its exact signature, when it is called, each parameter and what it returns."""

from __future__ import annotations

import inspect

import pytest
from conftest import REPO

from rlbench import hookspecs

GUIDE = REPO / "docs" / "writing-plugins.md"
HOOKS = [name for name in dir(hookspecs) if name.startswith("rlbench_")]


def test_there_are_hooks_to_document():
    assert set(HOOKS) == {
        "rlbench_register_agents",
        "rlbench_register_environments",
        "rlbench_register_networks",
        "rlbench_search_space",
    }


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_is_in_the_plugin_guide_with_its_signature(name):
    function = getattr(hookspecs, name)
    signature = f"def {name}{inspect.signature(function)}".replace("'", "")
    assert signature in GUIDE.read_text(), f"{signature} is missing from {GUIDE.name}"


@pytest.mark.parametrize("name", HOOKS)
def test_the_hook_reference_is_the_hookspec_source(name):
    # The guide shows each specification exactly as rlbench/hookspecs.py defines it, so
    # the two cannot say different things.
    source = inspect.getsource(getattr(hookspecs, name))
    assert f"```python\n{source}```" in GUIDE.read_text(), (
        f"the reference of {name} in {GUIDE.name} differs from rlbench/hookspecs.py"
    )


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_says_when_it_is_called_its_parameters_and_its_return(name):
    function = getattr(hookspecs, name)
    doc = inspect.getdoc(function) or ""
    assert "Called " in doc, f"{name} does not say when it is called"
    assert ":returns:" in doc, f"{name} does not say what it returns"
    parameters = list(inspect.signature(function).parameters)
    for parameter in parameters:
        assert f":param {parameter}:" in doc, f"{name} does not document {parameter!r}"
    if not parameters:
        assert "Takes no parameters." in doc, f"{name} does not say it takes no parameters"
    documented = {line.split(":")[1].split()[1] for line in doc.splitlines() if ":param " in line}
    assert documented <= set(parameters), f"{name} documents parameters it does not have"
