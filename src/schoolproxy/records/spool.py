"""The on-disk spool: where records go when the database cannot take them (down, locked, disk full)
or the queue is full, until they can be replayed. Append-only JSON lines.

Durability: with ``fsync="batch"`` every spooled batch is fsynced before the writer moves on, so a
crash loses at most the records still in memory (the queue and the batch being written: at most
``queue_size + batch_size`` records, normally well under a second of traffic). With ``fsync="none"``
the operating system's page cache may also lose the last few seconds on a power cut.

Replay renames the file first (``.replaying``) so new records keep spooling while it runs, and deletes
it only after the database has committed every row; rows are inserted idempotently on their reference
id, so a crash in the middle of a replay never duplicates anything.

Two processes write one spool (the proxy when its writer process is behind, and the writer process):
appending and the replay's rename hold an exclusive ``flock`` on ``<name>.lock``, so no append can land
in a file that is already being replayed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from schoolproxy.private import private_dir

log = logging.getLogger(__name__)


class Spool:
    def __init__(self, directory: Path, fsync: str = "batch", name: str = "records"):
        self.dir = directory
        private_dir(self.dir, tighten=True)  # records name pupils and what they looked at
        # One file per worker process (``records-w1``…): appends from two processes never interleave.
        self.name = name
        self.path = directory / f"{name}.jsonl"
        self.replaying = directory / f"{name}.jsonl.replaying"
        self.fsync = fsync == "batch"
        self._lock = threading.Lock()
        self._lockfile = directory / f"{name}.lock"

    @contextmanager
    def _locked(self):
        # The thread lock orders this process's threads; flock orders the processes.
        with self._lock:
            fd = os.open(self._lockfile, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def append(self, rows: list[dict]) -> None:
        """Append rows (raises OSError if the disk refuses)."""
        data = "".join(json.dumps(r, default=str, separators=(",", ":")) + "\n" for r in rows).encode()
        with self._locked():
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)

    def save(self, rows: list[dict]) -> bool:
        """Append rows; if the disk refuses, log them as LOST and return False (the caller counts them)."""
        try:
            self.append(rows)
            return True
        except OSError as e:
            log.error("schoolproxy: %d records LOST: cannot write the spool %s: %s", len(rows), self.path, e)
            return False

    def pending(self) -> bool:
        return self.size() > 0 or self.replaying.exists()

    def size(self) -> int:
        # Either file may be renamed or removed by the writer thread between a check and a stat.
        total = 0
        for p in (self.path, self.replaying):
            try:
                total += p.stat().st_size
            except FileNotFoundError:
                pass
        return total

    def take(self) -> Path | None:
        """Start a replay: the file to replay (an interrupted replay first), or None."""
        with self._locked():
            if self.replaying.exists():
                return self.replaying
            if self.path.exists() and self.path.stat().st_size > 0:
                os.replace(self.path, self.replaying)
                return self.replaying
            return None

    def finish(self, taken: Path) -> None:
        taken.unlink(missing_ok=True)

    @staticmethod
    def read(taken: Path, batch: int) -> Iterator[list[dict]]:
        rows: list[dict] = []
        with open(taken, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a torn last line after a crash: nothing to save
                    log.warning("spool %s line %d unreadable, skipped", taken, n)
                    continue
                if len(rows) >= batch:
                    yield rows
                    rows = []
        if rows:
            yield rows
