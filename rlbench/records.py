"""What rlbench writes, and the one place that says what each file holds.

Every file is written to a temporary name in the same directory, flushed, fsynced and then
renamed over its final name, so a reader sees the old file or the new one, never half of
one. ``status.json`` is written first as ``running`` and last as ``complete``: a run is
trusted (skipped on rerun, loaded by reports) only when its status says ``complete`` and
every file it needs is present and parses (:meth:`RunDir.complete_problem`).

The formats: a suite's results folder holds ``suite.toml`` (the suite file as run) and
``suite.json`` (:class:`SuiteManifest`: its run ids and environments' reference scores);
each run's folder holds ``config.json``, ``provenance.json``, ``status.json``
(:class:`RunStatus`), ``evaluations.csv`` (:data:`EVALUATION_COLUMNS`), ``episodes.csv``
(:data:`EPISODE_COLUMNS`), ``metrics.csv`` and ``weights.pt``.

Nothing here imports torch or gymnasium: ``rlbench report`` reads results without them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import numbers
import os
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rlbench.errors import RlbenchError

if TYPE_CHECKING:
    from rlbench.plugins import Catalogue

RUNS_DIRNAME = "runs"
MANIFEST = "suite.json"
SUITE_SOURCE = "suite.toml"
CONFIG = "config.json"
PROVENANCE = "provenance.json"
STATUS = "status.json"
EVALUATIONS = "evaluations.csv"
EPISODES = "episodes.csv"
METRICS = "metrics.csv"
WEIGHTS = "weights.pt"
ERROR = "error.txt"

COMPLETE, FAILED, SKIPPED, RUNNING = "complete", "failed", "skipped", "running"
STATUSES = (COMPLETE, FAILED, SKIPPED, RUNNING)
#: What readers call a run whose files cannot be trusted (never written to ``status.json``).
DAMAGED = "damaged"

#: ``evaluations.csv``: one row per evaluation (step 0, every ``eval_interval``, the end).
EVALUATION_COLUMNS = [
    "step",
    "return_mean",
    "return_std",
    "return_min",
    "return_max",
    "length_mean",
    "episodes",
    "wall_time_s",
]
#: ``episodes.csv``: one row per training episode, at the step it ended.
EPISODE_COLUMNS = ["step", "return", "length", "terminated"]
#: ``config.json`` keys that readers rely on, and their JSON types (the file is a
#: :class:`~rlbench.runspec.RunSpec`'s ``to_json``).
CONFIG_FIELDS: dict[str, type | tuple[type, ...]] = {
    "suite": str,
    "agent": str,
    "label": str,
    "env": str,
    "seed": int,
    "device": str,
    "steps": int,
    "agent_config": dict,
    "network": dict,
}


class RecordError(RlbenchError):
    """A file rlbench wrote holds something it never writes (damaged or edited by hand)."""


def _file_mode() -> int:
    # mkstemp creates files readable by the owner only; results are meant to be shared, so
    # give them the mode any other new file would get under the process's umask.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


# ---------------------------------------------------------------- atomic writers


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def atomic_savefig(fig: Any, path: Path, **savefig_kwargs: Any) -> None:
    """Save a matplotlib figure to ``path`` atomically (a kill never leaves a truncated
    image): rendered in memory in the format ``path``'s suffix names, then written like
    every other file. ``savefig_kwargs`` go to ``fig.savefig`` (``dpi``, ``bbox_inches``…)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or None, **savefig_kwargs)
    atomic_write_bytes(path, buffer.getvalue())


def read_json(path: Path) -> Any | None:
    """The parsed file, or ``None`` if it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def inside(root: Path, path: Path) -> Path:
    """``path``, once checked to resolve strictly inside ``root``: the one check that keeps
    names from suites and plugins (which become path parts) from writing anywhere else.
    Raises :class:`~rlbench.errors.RlbenchError` otherwise."""
    resolved_root = root.resolve()
    if resolved_root not in path.resolve().parents:
        raise RlbenchError(
            f"refusing to write {path}: it is not inside {root}; "
            "rename what gives it its name (suite, label, agent or environment)"
        )
    return path


# ---------------------------------------------------------------- formats


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if _is_number(value) else "null" if value is None else "?"
    )


@dataclass(frozen=True)
class RunStatus:
    """``status.json``: where a run stands. ``complete`` carries the run's totals, ``failed``
    its ``error`` (one line; the traceback is in ``error.txt``), ``skipped`` the ``reason``
    it could not start; ``running`` nothing. Fields left ``None`` are not written.
    Constructing one validates it (:class:`RecordError` naming the field)."""

    status: str
    error: str | None = None
    reason: str | None = None
    env_steps: int | None = None
    wall_time_s: float | None = None
    train_time_s: float | None = None
    eval_time_s: float | None = None
    steps_per_second: float | None = None
    #: Seeds trained together with this one (1 alone); absent in results before lanes.
    lanes: int | None = None
    final_return_mean: float | None = None
    final_return_std: float | None = None
    episodes: int | None = None

    #: What each status must carry.
    REQUIRED = {
        COMPLETE: (
            "env_steps",
            "wall_time_s",
            "train_time_s",
            "eval_time_s",
            "steps_per_second",
            "final_return_mean",
            "final_return_std",
            "episodes",
        ),
        FAILED: ("error",),
        SKIPPED: ("reason",),
        RUNNING: (),
    }
    _INTS = ("env_steps", "lanes", "episodes")
    _TEXTS = ("error", "reason")

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise RecordError(
                f"'status' should be one of {', '.join(STATUSES)}, got {self.status!r}"
            )
        for f in dataclasses.fields(self)[1:]:
            value = getattr(self, f.name)
            if value is None:
                if f.name in self.REQUIRED[self.status]:
                    raise RecordError(f"a {self.status} run needs {f.name!r}; it is missing")
                continue
            if f.name in self._TEXTS:
                ok, kind = isinstance(value, str), "a string"
            elif f.name in self._INTS:
                ok, kind = _is_int(value), "an integer"
            else:
                ok, kind = _is_number(value), "a number"
            if not ok:
                raise RecordError(f"{f.name!r} should be {kind}, got {value!r}")

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to ``status.json``: ``status`` and every field set."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }

    @classmethod
    def from_json(cls, data: Any) -> RunStatus:
        """The status in ``data`` (parsed ``status.json``). Keys it does not know are
        ignored (a newer rlbench may add some). Raises :class:`RecordError` saying what is
        wrong."""
        if not isinstance(data, dict):
            raise RecordError(f"it holds {_json_type(data)}, not a JSON object")
        if "status" not in data:
            raise RecordError("it has no 'status'")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class Reference(Protocol):
    """Reference scores as reports use them (:class:`~rlbench.specs.ReferenceScores` or a
    recorded :class:`EnvReference`)."""

    @property
    def random(self) -> float: ...

    @property
    def solved(self) -> float: ...


@dataclass(frozen=True)
class EnvReference:
    """An environment's reference scores as recorded in ``suite.json`` at run time, and the
    plugin that declared them (so reports need no plugin to normalize)."""

    random: float
    solved: float
    plugin: str = ""

    @classmethod
    def declared(cls, catalogue: Catalogue, env: str) -> EnvReference | None:
        """What the plugin providing ``env`` in ``catalogue`` declares, or ``None`` (none
        declared, or a plain Gymnasium id no plugin describes)."""
        provided = catalogue.environments.get(env)
        ref = provided.spec.reference if provided is not None else None
        if provided is None or ref is None:
            return None
        return cls(ref.random, ref.solved, provided.plugin.name)

    def to_json(self) -> dict[str, Any]:
        return {"random": self.random, "solved": self.solved, "plugin": self.plugin}

    @classmethod
    def from_json(cls, data: Any) -> EnvReference:
        if not isinstance(data, dict):
            raise RecordError(f"a reference should be an object, got {_json_type(data)}")
        random, solved, plugin = data.get("random"), data.get("solved"), data.get("plugin", "")
        if not (_is_number(random) and _is_number(solved) and isinstance(plugin, str)):
            raise RecordError(
                "a reference needs numbers 'random' and 'solved' (and a string 'plugin'), "
                f"got {data!r}"
            )
        return cls(random, solved, plugin)


def _is_run_id(value: Any) -> bool:
    # A run id names a folder under runs/: one path part, never a way out of it.
    if not isinstance(value, str) or value in ("", ".", ".."):
        return False
    return not any(c in value for c in "/\\\0")


@dataclass(frozen=True)
class SuiteManifest:
    """``suite.json``: the suite as last run: its name, the suite file it came from, its run
    ids in suite order (reports read these, leaving out leftovers of earlier
    configurations) and each environment's reference scores (``None`` for one that declares
    none). ``references`` is ``None`` in folders written before rlbench recorded them."""

    name: str
    source_path: str
    runs: tuple[str, ...]
    references: Mapping[str, EnvReference | None] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "source_path": self.source_path,
            "runs": list(self.runs),
        }
        if self.references is not None:
            data["references"] = {
                env: None if ref is None else ref.to_json() for env, ref in self.references.items()
            }
        return data

    @classmethod
    def from_json(cls, data: Any) -> SuiteManifest:
        """Raises :class:`RecordError` saying what is wrong."""
        if not isinstance(data, dict):
            raise RecordError(f"it holds {_json_type(data)}, not a JSON object")
        name, source, runs = data.get("name", ""), data.get("source_path", ""), data.get("runs")
        if not isinstance(runs, list) or not all(_is_run_id(r) for r in runs):
            raise RecordError(f"'runs' should be a list of run folder names, got {runs!r}")
        if not isinstance(name, str) or not isinstance(source, str):
            raise RecordError("'name' and 'source_path' should be strings")
        refs = data.get("references")
        if refs is not None and not isinstance(refs, dict):
            raise RecordError(f"'references' should be an object, got {_json_type(refs)}")
        references = (
            None
            if refs is None
            else {
                str(env): None if ref is None else EnvReference.from_json(ref)
                for env, ref in refs.items()
            }
        )
        return cls(name, source, tuple(runs), references)

    @classmethod
    def read(cls, suite_dir: Path) -> SuiteManifest | None:
        """The manifest of a suite's results folder, or ``None`` when it has none. Raises
        :class:`RecordError` naming the file when it is damaged."""
        path = suite_dir / MANIFEST
        if not path.exists():
            return None
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:  # UnicodeDecodeError, JSONDecodeError are ones
            raise RecordError(f"{path}: damaged ({_one_line(exc)})") from None
        except RecordError as exc:
            raise RecordError(
                f"{path}: {exc}; rerun the suite with `rlbench run` to rewrite it"
            ) from None

    def write(self, suite_dir: Path, source_text: str) -> None:
        """Write ``suite.toml`` (the suite file's text) and ``suite.json``."""
        atomic_write_text(suite_dir / SUITE_SOURCE, source_text)
        atomic_write_json(suite_dir / MANIFEST, self.to_json())


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]


def _csv_problem(path: Path, columns: Sequence[str], numeric: Sequence[str]) -> str | None:
    """Why ``path`` is not a CSV file as rlbench writes it (UTF-8, a header with
    ``columns``, every row as long as the header, ``numeric`` columns numbers, at least one
    row), or ``None``."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return f"{path.name} is missing"
    except OSError as exc:
        return f"{path.name} cannot be read ({_one_line(exc)})"
    except UnicodeDecodeError:
        return f"{path.name} is not UTF-8 text"
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        return f"{path.name} is not a CSV file ({_one_line(exc)})"
    if not rows or any(c not in rows[0] for c in columns):
        return f"{path.name} lacks the columns {', '.join(columns)}"
    header, body = rows[0], rows[1:]
    if not body:
        return f"{path.name} has no rows"
    where = [header.index(c) for c in numeric]
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            return f"{path.name} line {line} has {len(row)} fields, the header {len(header)}"
        for i in where:
            try:
                float(row[i])
            except ValueError:
                return f"{path.name} line {line}: {header[i]} is {row[i]!r}, not a number"
    return None


class RunDir:
    """The files of one run: ``<suite results>/runs/<run_id>/``."""

    def __init__(self, suite_dir: Path, run_id: str) -> None:
        self.path = inside(suite_dir / RUNS_DIRNAME, suite_dir / RUNS_DIRNAME / run_id)

    def file(self, name: str) -> Path:
        return self.path / name

    def read_status(self) -> RunStatus | None:
        """The run's status, or ``None`` when it has no ``status.json`` yet. Raises
        :class:`RecordError` when the file is damaged."""
        path = self.file(STATUS)
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise RecordError(f"{STATUS} cannot be read ({_one_line(exc)})") from None
        try:
            return RunStatus.from_json(json.loads(text))
        except ValueError:
            raise RecordError(f"{STATUS} is not JSON") from None
        except RecordError as exc:
            raise RecordError(f"{STATUS}: {exc}") from None

    def status(self) -> dict[str, Any] | None:
        """``status.json`` as a dict, or ``None`` when it is missing or damaged."""
        try:
            status = self.read_status()
        except RecordError:
            return None
        return None if status is None else status.to_json()

    def read_config(self) -> dict[str, Any] | None:
        """``config.json``, or ``None`` when there is none yet (a run that never started).
        Raises :class:`RecordError` when it is damaged or lacks a field readers need."""
        path = self.file(CONFIG)
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise RecordError(f"{CONFIG} cannot be read ({_one_line(exc)})") from None
        if not isinstance(data, dict):
            raise RecordError(f"{CONFIG} holds {_json_type(data)}, not a JSON object")
        for key, kind in CONFIG_FIELDS.items():
            value = data.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise RecordError(f"{CONFIG}: {key!r} is {value!r}")
        return data

    def damage(self) -> str | None:
        """Why the run's files cannot be trusted, in one line, or ``None``: its folder is a
        file, or a file it has (or, when its status says complete, one it needs) is missing
        or does not parse. A run that failed, was skipped, interrupted or never started is
        not damaged: it is simply not complete."""
        if not self.path.exists():
            return None
        if not self.path.is_dir():
            return f"{self.path.name} is a file, not a run folder"
        try:
            config = self.read_config()
            status = self.read_status()
        except RecordError as exc:
            return str(exc)
        if status is None or status.status != COMPLETE:
            return None
        if config is None:
            return f"{CONFIG} is missing"
        provenance = read_json(self.file(PROVENANCE))
        if not isinstance(provenance, dict):
            return f"{PROVENANCE} is missing or damaged"
        for name, columns, numeric in (
            (EVALUATIONS, EVALUATION_COLUMNS, ("step", "return_mean")),
            (EPISODES, EPISODE_COLUMNS, ()),
        ):
            problem = _csv_problem(self.file(name), columns, numeric)
            # A run too short to finish an episode has a header-only episodes.csv.
            if problem and not (name == EPISODES and problem.endswith("has no rows")):
                return problem
        # torch.save writes a zip archive; checking that needs no torch.
        if not self.file(WEIGHTS).is_file():
            return f"{WEIGHTS} is missing"
        if not zipfile.is_zipfile(self.file(WEIGHTS)):
            return f"{WEIGHTS} is not a saved state (not a zip archive)"
        return None

    def complete_problem(self) -> str | None:
        """``None`` when the run is complete: its status says so and every file it needs is
        present and parses. Otherwise why not, in one line (see :meth:`damage`)."""
        damage = self.damage()
        if damage is not None:
            return damage
        status = self.read_status() if self.path.is_dir() else None
        if status is None:
            return "it has not started" if not self.path.exists() else "it has no status yet"
        if status.status != COMPLETE:
            return f"its status is {status.status}"
        return None

    def is_complete(self) -> bool:
        return self.complete_problem() is None

    def write_status(self, status: str, **fields: Any) -> None:
        """Write ``status.json``; ``fields`` are :class:`RunStatus`'s (a misspelt or
        wrongly-typed one raises instead of being written)."""
        atomic_write_json(self.file(STATUS), RunStatus(status, **fields).to_json())

    def write_json(self, name: str, data: Any) -> None:
        atomic_write_json(self.file(name), data)

    def write_csv(
        self, name: str, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]
    ) -> None:
        atomic_write_csv(self.file(name), columns, rows)

    def save_weights(self, state: Mapping[str, Any]) -> None:
        import torch  # here, not at the top: readers of results never need it

        buffer = io.BytesIO()
        torch.save(dict(state), buffer)
        atomic_write_bytes(self.file(WEIGHTS), buffer.getvalue())

    def clear(self) -> None:
        """Remove the files of an earlier attempt (before redoing the run)."""
        if self.path.is_dir():
            for child in self.path.iterdir():
                if child.is_file():
                    child.unlink()


def damaged_runs(suite_dir: Path, run_ids: Iterable[str]) -> dict[str, str]:
    """``{run_id: why}`` for each of the runs whose files are damaged (see
    :meth:`RunDir.damage`), in the order given."""
    found = {}
    for run_id in run_ids:
        damage = RunDir(suite_dir, run_id).damage()
        if damage is not None:
            found[run_id] = damage
    return found
