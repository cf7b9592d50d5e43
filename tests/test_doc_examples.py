"""Every Python and TOML example in README.md and docs/ is run or validated, so the docs
cannot drift from the code.

A fenced block may be preceded by HTML comments (invisible on GitHub) that say what it is:

- ``<!-- module: NAME -->`` (Python): the file ``NAME.py`` of a plugin; it is loaded as a
  plugin and must register without being reported broken. Later blocks may import it.
- ``<!-- file: NAME -->`` (any): the file ``NAME`` that later commands in the same document
  use (``rlbench validate bad.toml``); a ``pyproject.toml`` is installed as a distribution's
  metadata, so its entry points load as they would after ``pip install``.
- ``<!-- plugins: A, B -->`` (TOML): the plugin modules a suite needs (``-p A -p B``).
- ``<!-- fragment -->`` (TOML): part of a suite, validated inside a small whole suite.
- ``<!-- invalid -->`` (TOML): a suite that must fail validation (the console block after
  it shows how).
- ``<!-- excerpt: PATH -->`` (Python): lines quoted from the repository's file ``PATH`` (an
  example package's source), in order; a line ``...`` stands for lines left out, and the
  block may be indented less than the file. The file itself is run by its own tests
  (test_third_party_plugin.py).

The example packages' ``src`` folders are importable in every document's workspace, so a
suite may name their plugins (``<!-- plugins: rlbench_lane_ddpg -->``). Every dotted name of
rlbench, its built-in plugins and its lane toolkit that a document quotes (`` `rlbench_dqn.td.
td_targets` ``, `` `LaneReplayBuffer.for_agent(...)` ``) must exist.

Without a comment, a Python block is executed as it stands (in a folder with a small
``results/cartpole``), and every ``test_*`` function it defines is called; one with
``@hookimpl`` functions is loaded as a plugin; the hook reference (``@hookspec``) is
checked by test_docs.py. A TOML block with ``name`` and ``[[agents]]`` is a whole suite and
must pass ``rlbench validate``; any other is a fragment. A console block that runs
``rlbench validate`` and shows its errors must show what rlbench prints.
"""

from __future__ import annotations

import importlib
import inspect
import re
import shlex
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import REPO, rlbench_cmd

from rlbench.cli import cli
from rlbench.plugins import load_catalogue

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
EXAMPLE_SOURCES = sorted((REPO / "examples").glob("*/src"))
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!--\s*([\w-]+)\s*(?::\s*(.*?))?\s*-->$")


@dataclass
class Block:
    document: Path
    line: int
    language: str
    text: str
    markers: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.document.relative_to(REPO)}:{self.line}"

    def plugins(self) -> list[str]:
        return [p.strip() for p in self.markers.get("plugins", "").split(",") if p.strip()]


def blocks(document: Path) -> Iterator[Block]:
    lines = document.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start = i
        i += 1
        while not lines[i].startswith("```"):
            i += 1
        markers: dict[str, str] = {}
        j = start - 1
        while j >= 0 and (lines[j].strip() == "" or MARKER.match(lines[j].strip())):
            if marker := MARKER.match(lines[j].strip()):
                markers[marker.group(1)] = marker.group(2) or ""
            elif markers:  # a blank line above the comments ends them
                break
            j -= 1
        text = "\n".join(lines[start + 1 : i]) + "\n"
        yield Block(document, start + 1, match.group(1), text, markers)
        i += 1


ALL_BLOCKS = [block for document in DOCUMENTS for block in blocks(document)]
# The hook reference blocks are the hookspecs' own source: test_docs.py checks them.
PYTHON = [b for b in ALL_BLOCKS if b.language == "python" and not b.text.startswith("@hookspec")]
TOML = [b for b in ALL_BLOCKS if b.language == "toml"]
# Console blocks that show what `rlbench validate` prints (a line after the command).
CONSOLE = [
    b
    for b in ALL_BLOCKS
    if b.language == "console" and re.search(r"^\$ rlbench validate .*\n[^$]", b.text, re.M)
]


def test_every_document_has_examples_and_every_marker_is_known():
    assert {b.document.name for b in PYTHON} >= {"README.md", "writing-plugins.md", "tuning.md"}
    known = {"module", "file", "plugins", "fragment", "invalid", "excerpt"}
    for block in ALL_BLOCKS:
        assert set(block.markers) <= known, f"{block.id}: unknown marker {block.markers}"
        if block.markers:
            assert block.language in ("python", "toml"), f"{block.id}: marker on {block.language}"


# ------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def workspaces(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    """Per document, a folder holding its ``module:`` and ``file:`` blocks (and, for a
    ``pyproject.toml``, the distribution metadata pip would have installed)."""
    spaces = {}
    for document in DOCUMENTS:
        folder = tmp_path_factory.mktemp(document.stem)
        for block in blocks(document):
            if "module" in block.markers:
                (folder / f"{block.markers['module']}.py").write_text(block.text)
            if "file" in block.markers:
                (folder / block.markers["file"]).write_text(block.text)
        if (folder / "pyproject.toml").exists():
            _install_metadata(folder, tomllib.loads((folder / "pyproject.toml").read_text()))
        spaces[document] = folder
    return spaces


def _install_metadata(folder: Path, pyproject: dict[str, Any]) -> None:
    project = pyproject["project"]
    info = folder / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    entry_points = project["entry-points"]["rlbench"]
    lines = [f"{name} = {module}" for name, module in entry_points.items()]
    (info / "entry_points.txt").write_text("[rlbench]\n" + "\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def cartpole_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``results/cartpole``: a few hundred steps of two agents, three seeds
    (what the README's and reports.md's analysis examples read)."""
    folder = tmp_path_factory.mktemp("analysis")
    suite = folder / "cartpole.toml"
    suite.write_text(
        textwrap.dedent("""
        name = "cartpole"
        seeds = 3
        environments = ["CartPole-v1"]
        [budget]
        steps = 300
        eval_interval = 150
        eval_episodes = 2
        [[agents]]
        name = "naive_dqn"
        [[agents]]
        name = "dqn"
        config = { learning_starts = 100, train_frequency = 50, gradient_steps = 5 }
        network = { name = "mlp", hidden_sizes = [16] }
        """)
    )
    proc = rlbench_cmd("--no-plugin-autoload", "run", str(suite), "-j", "1", cwd=folder)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return folder


@pytest.fixture
def in_workspace(workspaces, monkeypatch):
    """``in_workspace(document)``: its folder, importable and the current directory; the
    modules imported from it are forgotten afterwards."""
    before = set(sys.modules)

    def enter(document: Path) -> Path:
        folder = workspaces[document]
        for source in EXAMPLE_SOURCES:
            monkeypatch.syspath_prepend(str(source))
        monkeypatch.syspath_prepend(str(folder))
        monkeypatch.chdir(folder)
        return folder

    yield enter
    folders = [str(folder) for folder in [*workspaces.values(), *EXAMPLE_SOURCES]]
    for name in set(sys.modules) - before:
        module_file = getattr(sys.modules[name], "__file__", None) or ""
        if module_file.startswith(tuple(folders)):
            del sys.modules[name]


# ------------------------------------------------------------------------- python


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: b.id)
def test_python_example(block: Block, in_workspace, request):
    if "excerpt" in block.markers:
        problem = _excerpt_problem(block)
        assert problem is None, f"{block.id}: {problem}"
        return
    folder = in_workspace(block.document)
    if "module" in block.markers or "@hookimpl" in block.text:
        module = block.markers.get("module")
        if module is None:  # an excerpt of a plugin module: give it its import
            module = f"doc_plugin_{block.line}"
            header = "" if "import hookimpl" in block.text else "from rlbench import hookimpl\n"
            (folder / f"{module}.py").write_text(header + block.text)
        catalogue = load_catalogue(autoload=False, extra_plugins=[module])
        assert not catalogue.broken, [b.describe() for b in catalogue.broken]
        assert module in [p.name for p in catalogue.plugins]
        return
    if "results/" in block.text:
        request.getfixturevalue("monkeypatch").chdir(request.getfixturevalue("cartpole_results"))
    namespace: dict[str, Any] = {"__name__": f"doc_example_{block.line}"}
    exec(compile(block.text, block.id, "exec"), namespace)
    for name, value in list(namespace.items()):
        if name.startswith("test_") and callable(value):
            value()


def _excerpt_problem(block: Block) -> str | None:
    """Why ``block`` is not lines of its ``excerpt`` file, in order, or ``None``."""
    path = REPO / block.markers["excerpt"]
    if not path.is_file():
        return f"no file {block.markers['excerpt']}"
    source = path.read_text().splitlines()
    chunks: list[list[str]] = [[]]
    for line in block.text.splitlines():
        if line.strip() == "...":
            chunks.append([])
        else:
            chunks[-1].append(line)
    start = 0
    for chunk in chunks:
        while chunk and not chunk[-1].strip():
            chunk.pop()
        if not chunk:
            continue
        found = _find_lines(source, chunk, start)
        if found is None:
            return f"these lines are not in {path.name} (after line {start}): {chunk!r}"
        start = found + len(chunk)
    return None


def _find_lines(source: list[str], chunk: list[str], start: int) -> int | None:
    """The first index from ``start`` where ``source`` holds ``chunk``, indented alike by
    some prefix of whitespace (blank lines match blank lines)."""
    for i in range(start, len(source) - len(chunk) + 1):
        first = source[i]
        if not first.endswith(chunk[0]):
            continue
        indent = first[: len(first) - len(chunk[0])]
        if indent.strip():
            continue
        if all(
            (not line.strip() and not source[i + j].strip()) or source[i + j] == indent + line
            for j, line in enumerate(chunk)
        ):
            return i
    return None


# ----------------------------------------------------------------- quoted names

#: Spans of inline code that name something of rlbench's: a dotted path into rlbench, the
#: built-in plugins or the lane toolkit's names (``LaneParameters.zero_grad()``).
DOTTED = re.compile(r"`((?:rlbench|rlbench_dqn|rlbench_pg|rlbench_mlp)(?:\.[A-Za-z_]\w*)+)")
TOOLKIT = re.compile(r"`([A-Z]\w*(?:\.[A-Za-z_]\w*)*)")


def _quoted_names() -> list[tuple[str, str]]:
    import rlbench.lanes

    found = []
    for document in DOCUMENTS:
        text = document.read_text()
        names = set(DOTTED.findall(text))
        names |= {n for n in TOOLKIT.findall(text) if n.split(".")[0] in rlbench.lanes.__all__}
        found += [(str(document.relative_to(REPO)), name) for name in sorted(names)]
    return found


def _resolve(name: str) -> object:
    """The object a dotted name designates: the longest importable module, then attributes
    (a bare name is looked up in rlbench.lanes). An attribute of a class's instances
    (``LaneParameters.grad``) is one its source assigns (``self.grad = ...``)."""
    parts = name.split(".")
    if not parts[0].startswith("rlbench"):
        parts = ["rlbench", "lanes", *parts]
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            assigned = rf"\bself\.{attribute}\b(: [^=]+)? = "
            if (
                isinstance(obj, type)
                and not hasattr(obj, attribute)
                and re.search(assigned, inspect.getsource(obj))
            ):
                return None  # an instance attribute: nothing further to look up
            obj = getattr(obj, attribute)
        return obj
    raise ImportError(name)


@pytest.mark.parametrize(
    "where, name", _quoted_names(), ids=[f"{w}:{n}" for w, n in _quoted_names()]
)
def test_every_quoted_rlbench_name_exists(where, name):
    """A renamed or removed module, class or method is not left in the docs."""
    try:
        _resolve(name)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"{where} names `{name}`, which does not exist ({exc})")


# ------------------------------------------------------------------------- toml

BASE_SUITE = {
    "name": "doc-fragment",
    "seeds": 1,
    "environments": ["CartPole-v1"],
    "budget": {"steps": 50_000, "eval_interval": 5_000},
    "agents": [{"name": "dqn"}],
}


@pytest.mark.parametrize("block", TOML, ids=lambda b: b.id)
def test_toml_example(block: Block, in_workspace, tmp_path):
    folder = in_workspace(block.document)
    data = tomllib.loads(block.text)  # every example is valid TOML
    if "project" in data or "build-system" in data:
        # A plugin's pyproject.toml: its entry points name modules the document defines.
        for name, module in data["project"]["entry-points"]["rlbench"].items():
            assert (folder / f"{module}.py").exists(), f"entry point {name}: no module {module}"
        return
    if "invalid" in block.markers:
        return  # the console block after it checks what validate says
    whole = "name" in data and "agents" in data and "fragment" not in block.markers
    if whole:
        suite = folder / block.markers["file"] if "file" in block.markers else tmp_path / "s.toml"
        if not suite.exists():
            suite.write_text(block.text)
    else:
        suite = tmp_path / "fragment.toml"
        suite.write_text(_dumps({**BASE_SUITE, **data}))
    args = ["--no-plugin-autoload"]
    for plugin in block.plugins():
        args += ["-p", plugin]
    result = CliRunner().invoke(cli, [*args, "validate", str(suite)])
    assert result.exit_code == 0, f"{block.id}: rlbench validate says\n{result.output}"


def _dumps(data: dict[str, Any]) -> str:
    """Just enough TOML writing for a suite: scalars, lists, tables, arrays of tables."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict | list)]
    lines += [f"{k} = {value(v)}" for k, v in data.items() if isinstance(v, list) and k != "agents"]
    for key, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {value(v)}" for k, v in table.items() if not isinstance(v, dict)]
            for sub, subtable in table.items():
                if isinstance(subtable, dict):
                    lines.append(f"[{key}.{sub}]")
                    lines += [f"{k} = {value(v)}" for k, v in subtable.items()]
    for agent in data.get("agents", []):
        lines.append("[[agents]]")
        lines += [f"{k} = {value(v)}" for k, v in agent.items()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------- console


@pytest.mark.parametrize("block", CONSOLE, ids=lambda b: b.id)
def test_console_validate_shows_what_rlbench_prints(block: Block, in_workspace, monkeypatch):
    in_workspace(block.document)
    if block.document.name == "README.md":
        monkeypatch.chdir(REPO)  # the README's paths are the repository's
    lines = block.text.splitlines()
    [start] = [i for i, line in enumerate(lines) if line.startswith("$ rlbench validate")]
    command = shlex.split(lines[start][2:].split("#")[0])
    shown = []
    for line in lines[start + 1 :]:
        if line.startswith("$ "):
            break
        shown.append(line)
    result = CliRunner().invoke(cli, command[1:])
    assert result.exit_code == 2, result.output
    # The terminal wraps long lines where the docs do not: compare word by word.
    assert " ".join(result.stderr.split()) == " ".join("\n".join(shown).split())


# ----------------------------------------------------------------- command lines


def _command_lines() -> list[tuple[str, str]]:
    """``(block id, command line)`` of every ``rlbench ...`` line of a bash or console block
    or a CI step (``- run: rlbench ...`` in YAML); a synopsis line with ``[...]`` or ``|``
    alternatives is checked word by word too."""
    found = []
    for block in ALL_BLOCKS:
        if block.language not in ("bash", "console", "sh", "yaml"):
            continue
        for line in block.text.splitlines():
            line = line.strip().removeprefix("$ ").removeprefix("- run: ").removeprefix("run: ")
            # The command after `&&` (pip install ... && rlbench run ...), without a comment.
            line = line.split("&&")[-1].split(" #")[0].strip()
            if line.startswith("rlbench "):
                found.append((block.id, line))
    return found


@pytest.mark.parametrize("where, line", _command_lines(), ids=[w for w, _ in _command_lines()])
def test_every_rlbench_command_in_the_docs_names_real_options(where, line):
    """Each option of each documented command exists, and a choice given is one it takes."""
    words = shlex.split(line.replace("[", " ").replace("]", " ").replace("|", " "))
    command = cli.get_command(None, words[1])  # type: ignore[arg-type]
    assert command is not None, f"{where}: no command {words[1]!r}"
    options = {opt: param for param in command.params for opt in param.opts + param.secondary_opts}
    for i, word in enumerate(words[2:], start=2):
        if not word.startswith("-") or word == "-":
            continue
        name = word.split("=")[0]
        assert name in options, f"{where}: `{line}`: {command.name} has no option {name}"
        param = options[name]
        choices = getattr(param.type, "choices", None)
        if choices and i + 1 < len(words) and not words[i + 1].isupper():
            assert words[i + 1] in choices, f"{where}: `{line}`: {name} takes {choices}"
