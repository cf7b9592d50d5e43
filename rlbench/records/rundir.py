"""A run's folder, ``<suite results>/runs/<run_id>/``: writing its files, reading its status and
config back, and :meth:`RunDir.complete_problem`, the one decision whether a run is complete
(``rlbench run`` skips it, reports trust it)."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rlbench.records.atomic import (
    atomic_write_bytes,
    csv_bytes,
    inside,
    json_bytes,
    read_json,
)
from rlbench.records.formats import (
    BUNDLE_MARKER,
    COMPLETE,
    CONFIG,
    CONFIG_FIELDS,
    EPISODE_COLUMNS,
    EPISODES,
    EVALUATION_COLUMNS,
    EVALUATIONS,
    PROVENANCE,
    RUNS_DIRNAME,
    STATUS,
    WEIGHTS,
    RecordError,
    RunStatus,
    json_type,
    one_line,
)


def _csv_problem(path: Path, columns: Sequence[str], numeric: Sequence[str]) -> str | None:
    """Why ``path`` is not a CSV file as rlbench writes it (UTF-8, a header with
    ``columns``, every row as long as the header, ``numeric`` columns numbers, at least one
    row), or ``None``."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return f"{path.name} is missing"
    except OSError as exc:
        return f"{path.name} cannot be read ({one_line(exc)})"
    except UnicodeDecodeError:
        return f"{path.name} is not UTF-8 text"
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        return f"{path.name} is not a CSV file ({one_line(exc)})"
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


#: ``sink(run_id, name, data)``: told of every file a :class:`RunDir` writes (``data``) or
#: removes (``None``), after it did so, e.g. to send the run's records to another machine.
FileSink = Callable[[str, str, "bytes | None"], None]


class RunDir:
    """The files of one run: ``<suite results>/runs/<run_id>/``. Every write is atomic
    (:func:`~rlbench.records.atomic.atomic_write_bytes`) and goes through :meth:`put_bytes`,
    which also tells ``sink``, when there is one, what it wrote."""

    def __init__(self, suite_dir: Path, run_id: str, sink: FileSink | None = None) -> None:
        self.path = inside(suite_dir / RUNS_DIRNAME, suite_dir / RUNS_DIRNAME / run_id)
        self.run_id = run_id
        self.sink = sink

    def put_bytes(self, name: str, data: bytes) -> None:
        """Write the run's file ``name`` (atomically), then tell the sink."""
        atomic_write_bytes(inside(self.path, self.file(name)), data)
        if self.sink is not None:
            self.sink(self.run_id, name, data)

    def remove(self, name: str) -> None:
        """Remove the run's file ``name`` if it is there, then tell the sink."""
        inside(self.path, self.file(name)).unlink(missing_ok=True)
        if self.sink is not None:
            self.sink(self.run_id, name, None)

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
            raise RecordError(f"{STATUS} cannot be read ({one_line(exc)})") from None
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
            raise RecordError(f"{CONFIG} cannot be read ({one_line(exc)})") from None
        if not isinstance(data, dict):
            raise RecordError(f"{CONFIG} holds {json_type(data)}, not a JSON object")
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
        # A results bundle's runs (rlbench.bundle) ship without training logs and weights.
        bundled = (self.path.parent.parent / BUNDLE_MARKER).is_file()
        for name, columns, numeric in (
            (EVALUATIONS, EVALUATION_COLUMNS, ("step", "return_mean")),
            *(() if bundled else ((EPISODES, EPISODE_COLUMNS, ()),)),
        ):
            problem = _csv_problem(self.file(name), columns, numeric)
            # A run too short to finish an episode has a header-only episodes.csv.
            if problem and not (name == EPISODES and problem.endswith("has no rows")):
                return problem
        if bundled:
            return None
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

    def write_status(self, status: str, **fields: Any) -> dict[str, Any]:
        """Write ``status.json``; ``fields`` are :class:`RunStatus`'s (a misspelt or
        wrongly-typed one raises instead of being written). Returns what it wrote."""
        data = RunStatus(status, **fields).to_json()
        self.put_bytes(STATUS, json_bytes(data))
        return data

    def write_json(self, name: str, data: Any) -> None:
        self.put_bytes(name, json_bytes(data))

    def write_text(self, name: str, text: str) -> None:
        self.put_bytes(name, text.encode("utf-8"))

    def write_csv(
        self, name: str, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]
    ) -> None:
        self.put_bytes(name, csv_bytes(columns, rows))

    def save_weights(self, state: Mapping[str, Any]) -> None:
        import torch  # here, not at the top: readers of results never need it

        buffer = io.BytesIO()
        torch.save(dict(state), buffer)
        self.put_bytes(WEIGHTS, buffer.getvalue())

    def remove_temporaries(self) -> None:
        """Remove the temporary files of writes that a kill cut short (``.NAME.*.tmp``)."""
        if self.path.is_dir():
            for child in self.path.glob(".*.tmp"):
                child.unlink(missing_ok=True)

    def clear(self) -> None:
        """Remove the files of an earlier attempt (before redoing the run)."""
        if self.path.is_dir():
            for child in sorted(self.path.iterdir()):
                if child.is_file() and not child.name.startswith("."):
                    self.remove(child.name)
                elif child.is_file():  # a temporary file a killed writer left
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
