"""The docs stay honest: every hook is documented, with its exact signature."""

from __future__ import annotations

import inspect

from conftest import REPO

from rlbench import hookspecs


def test_every_hook_is_in_the_plugin_guide_with_its_signature():
    guide = (REPO / "docs" / "writing-plugins.md").read_text()
    hooks = [name for name in dir(hookspecs) if name.startswith("rlbench_")]
    assert len(hooks) >= 4
    for name in hooks:
        function = getattr(hookspecs, name)
        signature = f"def {name}{inspect.signature(function)}".replace("'", "")
        assert signature in guide, f"{signature} is missing from docs/writing-plugins.md"
        assert function.__doc__ and "Called" in function.__doc__, f"{name} lacks 'when called'"
