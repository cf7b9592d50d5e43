"""What each file rlbench writes holds: the file names, ``status.json`` (:class:`RunStatus`),
``suite.json`` (:class:`SuiteManifest`, with :class:`EnvReference`), the CSV columns, and
:class:`RecordError` for a file that holds something rlbench never writes."""

from __future__ import annotations

import dataclasses
import json
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rlbench.errors import RlbenchError
from rlbench.records.atomic import atomic_write_json, atomic_write_text

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
#: A running run's last mid-run checkpoint (of its whole lane group; in the folder of the
#: group's first run), and what it holds (which runs, which step), read without torch.
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_INFO = "checkpoint.json"
#: In a results bundle's unpacked folder (rlbench.bundle): which bundle file it came from.
#: Its runs are complete without episodes.csv and weights.pt, which bundles do not ship.
BUNDLE_MARKER = "bundle.json"

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


def one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def json_type(value: Any) -> str:
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
    #: How often the run was resumed from a mid-run checkpoint, the step of the last resume,
    #: whether every resume was exact (every training environment restored) and, if not, why.
    resumes: int | None = None
    resumed_from_step: int | None = None
    resume_exact: bool | None = None
    resume_note: str | None = None
    #: Why the run could not checkpoint mid-run (an agent state rlbench cannot save).
    checkpoint_note: str | None = None

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
    _INTS = ("env_steps", "lanes", "episodes", "resumes", "resumed_from_step")
    _TEXTS = ("error", "reason", "resume_note", "checkpoint_note")
    _BOOLS = ("resume_exact",)

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
            elif f.name in self._BOOLS:
                ok, kind = isinstance(value, bool), "true or false"
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
            raise RecordError(f"it holds {json_type(data)}, not a JSON object")
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
    def declared(
        cls, catalogue: Catalogue, env: str, kwargs: Mapping[str, Any] | None = None
    ) -> EnvReference | None:
        """What the plugin providing ``env`` in ``catalogue`` declares for the environment
        made with ``kwargs`` (:meth:`~rlbench.specs.EnvironmentSpec.reference_for`), or
        ``None`` (none declared, or a plain Gymnasium id no plugin describes)."""
        provided = catalogue.environments.get(env)
        ref = provided.spec.reference_for(kwargs) if provided is not None else None
        if provided is None or ref is None:
            return None
        return cls(ref.random, ref.solved, provided.plugin.name)

    def to_json(self) -> dict[str, Any]:
        return {"random": self.random, "solved": self.solved, "plugin": self.plugin}

    @classmethod
    def from_json(cls, data: Any) -> EnvReference:
        if not isinstance(data, dict):
            raise RecordError(f"a reference should be an object, got {json_type(data)}")
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
    none). ``references`` is ``None`` in folders written before rlbench recorded them.
    ``skipped``: the agent × environment pairs the suite's ``skip_incompatible`` left out,
    one line each (``LABEL on 'ENV': REASON``)."""

    name: str
    source_path: str
    runs: tuple[str, ...]
    references: Mapping[str, EnvReference | None] | None = None
    skipped: tuple[str, ...] = ()

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
        if self.skipped:
            data["skipped"] = list(self.skipped)
        return data

    @classmethod
    def from_json(cls, data: Any) -> SuiteManifest:
        """Raises :class:`RecordError` saying what is wrong."""
        if not isinstance(data, dict):
            raise RecordError(f"it holds {json_type(data)}, not a JSON object")
        name, source, runs = data.get("name", ""), data.get("source_path", ""), data.get("runs")
        if not isinstance(runs, list) or not all(_is_run_id(r) for r in runs):
            raise RecordError(f"'runs' should be a list of run folder names, got {runs!r}")
        if not isinstance(name, str) or not isinstance(source, str):
            raise RecordError("'name' and 'source_path' should be strings")
        refs = data.get("references")
        if refs is not None and not isinstance(refs, dict):
            raise RecordError(f"'references' should be an object, got {json_type(refs)}")
        references = (
            None
            if refs is None
            else {
                str(env): None if ref is None else EnvReference.from_json(ref)
                for env, ref in refs.items()
            }
        )
        skipped = data.get("skipped", [])
        if not isinstance(skipped, list) or not all(isinstance(s, str) for s in skipped):
            raise RecordError(f"'skipped' should be a list of strings, got {skipped!r}")
        return cls(name, source, tuple(runs), references, tuple(skipped))

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
            raise RecordError(f"{path}: damaged ({one_line(exc)})") from None
        except RecordError as exc:
            raise RecordError(
                f"{path}: {exc}; rerun the suite with `rlbench run` to rewrite it"
            ) from None

    def write(self, suite_dir: Path, source_text: str) -> None:
        """Write ``suite.toml`` (the suite file's text) and ``suite.json``."""
        atomic_write_text(suite_dir / SUITE_SOURCE, source_text)
        atomic_write_json(suite_dir / MANIFEST, self.to_json())
