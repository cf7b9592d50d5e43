"""Data flows one way: no module of rlbench imports one that stands after it on the data path
(docs/architecture.md), not even inside a function."""

from __future__ import annotations

import ast

from conftest import REPO

#: The data path, earliest first (docs/architecture.md). A module may import modules of an
#: earlier rank only.
ORDER = [
    [
        "errors",
        "defaults",
        "devices",
        "provenance",
        "stepping",
        "seeding",
        "snapshot",
        "allocator",
        "loggers",
        "fitting",
    ],
    ["agent"],
    ["lanes"],
    ["specs"],
    ["hookspecs"],
    ["plugins"],
    ["suite"],
    ["runspec"],
    ["records"],
    ["bundle"],
    ["evaluation"],
    ["recording"],
    ["building"],
    ["checkpoint"],
    ["training"],
    ["ray_executor"],
    ["executor"],
    ["tracking"],
    ["results"],
    ["stats"],
    ["figures"],
    ["report"],
    ["compare", "export"],
    ["tune"],
    ["saved_agent", "progress", "suite_lock", "listing"],
    ["cli"],
    ["__main__"],
]
RANK = {name: rank for rank, names in enumerate(ORDER) for name in names}


def step_of(module: str) -> str | None:
    """``rlbench.report.markdown`` -> ``report``; the package itself -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "rlbench" else None


def imports(path) -> set[str]:
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "rlbench":
                found.update(f"rlbench.{alias.name}" for alias in node.names)
            elif node.module.startswith("rlbench."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("rlbench."))
    return found


def test_every_module_is_on_the_data_path():
    steps = {p.name.removesuffix(".py") for p in (REPO / "rlbench").iterdir()}
    steps = {s for s in steps if not s.startswith("_") or s == "__main__"} - {"py.typed"}
    steps.discard("__pycache__")
    assert steps <= set(RANK), f"add {sorted(steps - set(RANK))} to ORDER and the docs"


def test_no_module_imports_one_that_stands_after_it():
    wrong = []
    for path in sorted((REPO / "rlbench").rglob("*.py")):
        relative = path.relative_to(REPO).with_suffix("").parts
        step = relative[1] if len(relative) > 1 else None
        if step is None or step == "__init__":
            continue  # the package's own lazy public names
        for target in imports(path):
            other = step_of(target)
            if other is None or other == step or other not in RANK:
                continue
            if RANK[other] >= RANK[step]:
                wrong.append(f"{'/'.join(relative)} imports {target}")
    assert not wrong, "imports against the data path:\n" + "\n".join(wrong)


#: Reading results never needs the training side (`rlbench report` stays free of torch).
READERS = {"results", "stats", "figures", "report"}
TRAINING_SIDE = {
    "agent",
    "lanes",
    "snapshot",
    "stepping",
    "seeding",
    "evaluation",
    "recording",
    "building",
    "checkpoint",
    "training",
    "ray_executor",
    "executor",
    "runspec",
}


def test_reading_results_imports_nothing_of_the_training_side():
    wrong = []
    for path in sorted((REPO / "rlbench").rglob("*.py")):
        relative = path.relative_to(REPO).with_suffix("").parts
        if len(relative) < 2 or relative[1] not in READERS:
            continue
        name = "/".join(relative)
        wrong += [f"{name} imports {t}" for t in imports(path) if step_of(t) in TRAINING_SIDE]
    assert not wrong, "\n".join(wrong)


def test_the_harness_does_not_import_the_lane_toolkit():
    """``rlbench.lanes`` is what lane agents are built from (the built-in plugins, users'
    plugins); the harness trains any agent the same way and never needs it."""
    wrong = []
    for path in sorted((REPO / "rlbench").rglob("*.py")):
        relative = path.relative_to(REPO).with_suffix("").parts
        if len(relative) > 1 and relative[1] == "lanes":
            continue
        name = "/".join(relative)
        wrong += [f"{name} imports {t}" for t in imports(path) if step_of(t) == "lanes"]
    assert not wrong, "\n".join(wrong)
