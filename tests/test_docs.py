"""The docs stay honest: every hook is documented, in the plugin guide and in its docstring,
with its exact signature, when it is called, each parameter and what it returns."""

from __future__ import annotations

import inspect
import re

import pytest
from conftest import REPO

from rlbench import hookspecs

GUIDE = REPO / "docs" / "writing-plugins.md"
HOOKS = [name for name in dir(hookspecs) if name.startswith("rlbench_")]


def test_there_are_hooks_to_document():
    assert set(HOOKS) == {
        "rlbench_register_agents",
        "rlbench_register_environments",
        "rlbench_register_loggers",
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


def _import_table() -> dict[str, set[str]]:
    """The guide's "What to import from where" table: ``{module: names}``."""
    text = GUIDE.read_text()
    table = text[text.index("**What to import from where.**") : text.index("## The 2-minute")]
    found: dict[str, set[str]] = {}
    for module, names in re.findall(r"`from (rlbench[\w.]*) import ([\w, ]+)`", table):
        found.setdefault(module, set()).update(n.strip() for n in names.split(","))
    return found


def test_the_guide_says_where_to_import_every_name_it_imports():
    # A plugin author copies an import from an example: each must be in the table, which
    # is where the guide says what is the plugin API and what is the harness.
    table = _import_table()
    imports = re.findall(
        r"^from (rlbench(?:\.\w+)*) import (\([^)]*\)|.+)$", GUIDE.read_text(), re.M
    )
    assert len(imports) > 5
    for module, names in imports:
        for name in (n.strip(" ()") for n in names.replace("\n", ",").split(",")):
            if name:
                assert name in table.get(module, set()), (
                    f"`from {module} import {name}` is not in the guide's import table"
                )


def test_the_import_table_names_the_whole_public_api_and_the_errors():
    import rlbench

    table = _import_table()
    assert set(rlbench.__all__) - {"__version__"} <= table["rlbench"]
    assert {"SuiteError", "RlbenchError"} <= table["rlbench.errors"]


@pytest.mark.parametrize("document", [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])
def test_every_make_network_in_the_docs_takes_a_role(document):
    # make_network(in_features, out_features, role=None) everywhere: a factory written in
    # a test without `role` would build an actor-critic's networks alike.
    for factory in re.findall(r"make(?:_lane)?_networks?=lambda ([^:]*):", document.read_text()):
        assert "role" in factory, f"{document.name}: make_network=lambda {factory}: lacks role"
