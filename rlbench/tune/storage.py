"""Where a study's trials are stored (the journal file or a database), the lock workers
claim trials under, and how a failed trial is queued for retry."""

from __future__ import annotations

import copy
import fcntl
import hashlib
import importlib.util
import os
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url

from rlbench.errors import RlbenchError
from rlbench.tune.job import JOURNAL_FILE, StudyLocation

#: A trial whose worker died is retried this many times, then counts as failed.
MAX_RETRIES = 1
#: Database storages only: seconds between heartbeats, and without one before a running
#: trial counts as dead.
HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 60
#: Tries at opening a database whose schema other workers may be creating at that moment.
_SCHEMA_ATTEMPTS = 4


def queue_retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a retry of failed ``trial`` with the same parameters (Optuna's
    ``RetryHeartbeatStaleTrialCallback``, at most :data:`MAX_RETRIES` times per trial).

    The callback gets a copy without user attributes. A copy, because the callback
    appends to the trial's ``retry_history`` list in place: on a worker's cached trial
    (``get_trials(deepcopy=False)``) a retry that failed again would then list itself as
    retried, stop counting as finished, and the study would end with a trial too many.
    No user attributes, because they belong to the failed attempt (its worker, its
    ``error``): a retry that completes must not say that its worker died."""
    fresh = copy.deepcopy(trial)
    fresh.user_attrs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)(study, fresh)


def _database_url(url: str) -> str:
    """``url`` with a driver SQLAlchemy can import. A bare ``postgresql://`` means psycopg 3
    to SQLAlchemy 2.1 (psycopg2 to 2.0): where that driver is missing and psycopg2 (the
    ``rlbench[tune-postgres]`` extra) is installed, the URL names psycopg2."""
    scheme = "postgresql://"
    if not url.startswith(scheme):
        return url
    try:
        make_url(url).get_dialect().import_dbapi()
    except ImportError:
        if importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url[len(scheme) :]
    return url


def open_storage(location: StudyLocation) -> optuna.storages.BaseStorage:
    """The study's storage: the journal file (several local processes may share it), or
    the database at ``storage_url`` with heartbeats. Raises :class:`RlbenchError` when the
    database cannot be opened."""
    if location.storage_url is None:
        location.tune_dir.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(location.journal_path)))
    url = _database_url(location.storage_url)
    for attempt in range(_SCHEMA_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # heartbeats: experimental in name since 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    heartbeat_interval=HEARTBEAT_INTERVAL_S,
                    grace_period=GRACE_PERIOD_S,
                    heartbeat_stale_trial_callback=queue_retry,
                )
        except ModuleNotFoundError as exc:
            raise RlbenchError(
                f"--storage: the database driver is not installed ({exc}); for PostgreSQL: "
                "pip install 'rlbench[tune-postgres]'"
            ) from None
        except Exception as exc:
            # Workers started together on a new database race to create Optuna's tables
            # (PostgreSQL: "duplicate key ... pg_type_typname_nsp_index" on CREATE TYPE);
            # the loser finds them created when it tries again.
            if attempt + 1 < _SCHEMA_ATTEMPTS and _schema_race(exc):
                time.sleep(0.5 * (attempt + 1))
                continue
            raise RlbenchError(f"--storage: cannot open {location.storage_url!r}: {exc}") from None
    raise AssertionError("unreachable")


def _schema_race(exc: Exception) -> bool:
    """Whether ``exc`` is another process creating the same schema at the same time."""
    message = str(exc).lower()
    return type(exc).__name__ in ("IntegrityError", "ProgrammingError") and (
        "already exists" in message or "duplicate" in message
    )


class ClaimLock:
    """Serializes "count the trials, then start one" across every worker of a study, so
    that no more trials start than the study needs. A file lock for the journal file and
    SQLite; a session advisory lock for PostgreSQL and MySQL (released by the server if
    the worker dies)."""

    def __init__(self, location: StudyLocation, storage: optuna.storages.BaseStorage) -> None:
        self._file: Path | None = None
        self._engine: Engine | None = None
        self._connection: Connection | None = None
        self._release: tuple[str, dict[str, Any]] = ("", {})
        self._fd: int | None = None
        self._key = f"rlbench:{location.suite}:{location.study_name}"
        if location.storage_url is None:
            self._file = location.journal_path.with_name(JOURNAL_FILE + ".claim-lock")
        elif isinstance(storage, RDBStorage):
            engine = storage.engine
            if engine.dialect.name == "sqlite":
                database = engine.url.database
                if database and database != ":memory:":
                    self._file = Path(database + ".claim-lock")
            elif engine.dialect.name in ("postgresql", "mysql"):
                self._engine = engine
            else:
                warnings.warn(
                    f"no claim lock for {engine.dialect.name}: with several workers the study "
                    "may end with up to one extra trial per worker",
                    stacklevel=2,
                )

    def __enter__(self) -> ClaimLock:
        if self._file is not None:
            self._fd = os.open(self._file, os.O_RDWR | os.O_CREAT, 0o666)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        elif self._engine is not None:
            self._connection = self._engine.connect()
            if self._engine.dialect.name == "postgresql":
                key = int.from_bytes(
                    hashlib.sha256(self._key.encode()).digest()[:8], "big", signed=True
                )
                self._connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
                self._release = ("SELECT pg_advisory_unlock(:k)", {"k": key})
            else:
                name = hashlib.sha256(self._key.encode()).hexdigest()[:60]
                self._connection.execute(text("SELECT GET_LOCK(:k, -1)"), {"k": name})
                self._release = ("SELECT RELEASE_LOCK(:k)", {"k": name})
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
        elif self._connection is not None:
            sql, params = self._release
            try:
                self._connection.execute(text(sql), params)
            finally:
                self._connection.close()
                self._connection = None
