"""One ``rlbench run`` per suite folder at a time.

Two runs of one suite into one results folder would train the same runs side by side and
interleave their writes. ``rlbench run`` therefore holds an exclusive ``flock`` on a file in
the suite folder for as long as it runs; the lock goes with the process (a killed run holds
nothing), and the file says who holds it, for the message the next one prints.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from types import TracebackType

from rlbench.errors import RlbenchError

LOCK_FILE = ".rlbench-run.lock"


class SuiteInUse(RlbenchError):
    """Another process holds the suite folder's lock."""


class SuiteLock:
    """``with SuiteLock(suite_dir):`` holds the folder's lock, or raises :class:`SuiteInUse`
    saying who holds it. The folder must exist."""

    def __init__(self, suite_dir: Path) -> None:
        self.path = suite_dir / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> SuiteLock:
        # Opened without truncating: the holder's record stays readable until we hold it.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise SuiteInUse(
                f"{self.path.parent} is in use by another `rlbench run` ({self._holder()}); "
                "wait for it to finish, or give this one another --results"
            ) from None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(record) + "\n").encode())
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def _holder(self) -> str:
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
            return f"pid {record['pid']} on {record['host']}, started {record['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            # The holder has the lock but has not written its record yet.
            return "it has just started"
