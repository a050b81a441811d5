"""The background writer: every Verdict becomes one database row, off the request path, none lost.

``submit()`` runs on the proxy's event loop for every request: it only appends the Verdict to a
bounded deque (no lock, no thread wake-up: waking the writer per record cost the proxy ~15% of its
throughput in GIL hand-offs, measured by make bench). The writer thread wakes every ``max_delay``
seconds, drains what is there in batches of at most ``batch_size``, and inserts each batch in one
transaction.

Nothing is dropped silently:
- queue full → the record goes straight to the on-disk spool;
- the database refuses a batch (down, locked, disk full) → the batch goes to the spool, and the
  database is retried with backoff; when it answers again the spool is replayed;
- inserts are idempotent on the reference id, so a replay after a crash never duplicates a row;
- only if the spool itself cannot be written is a record dropped, and that is counted and logged.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import deque

from sqlalchemy import Engine

from schoolproxy.identity.register import Register
from schoolproxy.monitoring.searchterms import extract
from schoolproxy.records.redact import SEARCH_PARAMS, redact_path
from schoolproxy.records.spool import Spool
from schoolproxy.records.visits import load_register
from schoolproxy.verdict import Verdict

log = logging.getLogger(__name__)
UTC = dt.timezone.utc
MAX_BACKOFF = 30.0
REGISTER_REFRESH = 15.0  # seconds: a visit registered now names records within this long


def to_row(v: Verdict, keep: frozenset[str] = SEARCH_PARAMS, redact: bool = True) -> dict:
    """The database row of a Verdict (runs in the writer thread, not on the event loop)."""
    return {
        "ref": v.ref,
        "time": dt.datetime.fromtimestamp(v.time, UTC),
        "username": v.username,
        "person": v.person,
        "profile": v.profile,
        "client_ip": v.client_ip,
        "device": v.device,
        "method": v.method[:16],
        "scheme": v.scheme[:8],
        "host": v.host[:253],
        "port": v.port,
        "path": redact_path(v.path, keep, redact),
        "status": v.status,
        "bytes": v.bytes,
        "category": v.category[:64],
        "categories": ",".join(v.categories)[:512],
        "action": v.action,
        "rule": v.rule[:256],
        "reason": v.reason[:512],
        "search_term": (v.search_term or (extract(v.host, v.path) if v.path else None) or None),
        "layer": v.layer,
        "identity_source": v.identity_source,
        "duration_ms": round(v.duration * 1000, 3) if v.duration is not None else None,
        "error": v.error[:200] if v.error else None,
    }


COLUMNS = ("ref", "time", "username", "person", "profile", "client_ip", "device", "method", "scheme", "host",
           "port", "path", "status", "bytes", "category", "categories", "action", "rule", "reason",
           "search_term", "layer", "identity_source", "duration_ms", "error")


def insert_sql(dialect: str) -> str:
    """The idempotent INSERT, written once: SQLAlchemy compiling each batch held the GIL for ~8 ms per
    500 rows and stalled the proxy's event loop (measured by make bench)."""
    cols = ", ".join(COLUMNS)
    if dialect == "postgresql":
        return (f"INSERT INTO requests ({cols}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
                f"ON CONFLICT (ref) DO NOTHING")
    return f"INSERT OR IGNORE INTO requests ({cols}) VALUES ({', '.join(['?'] * len(COLUMNS))})"


def _db_time(value: dt.datetime, dialect: str):
    # SQLite stores DateTime as text in SQLAlchemy's format (UTC here); PostgreSQL takes the object.
    if dialect == "postgresql":
        return value
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class RecordWriter:
    def __init__(self, engine: Engine, spool: Spool, batch_size: int = 500, max_delay: float = 0.5,
                 queue_size: int = 10_000, keep: frozenset[str] = SEARCH_PARAMS, redact: bool = True):
        self.engine = engine
        self.spool = spool
        self.batch_size = batch_size
        self.max_delay = max_delay
        self.keep, self.redact = keep, redact
        self._queue: deque[Verdict] = deque()
        self._queue_size = queue_size
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="schoolproxy-records", daemon=True)
        self._dialect = engine.dialect.name
        self._sql = insert_sql(self._dialect)
        self._db_ok = True
        self._retry_at = 0.0
        self._backoff = 1.0
        self.written = self.spooled = self.replayed = self.dropped = self.db_errors = self.batches = 0
        self._register: Register | None = None
        self._register_at = 0.0

    # -- event loop side --------------------------------------------------------------------------
    def submit(self, verdict: Verdict) -> None:
        """Hot path: enqueue and return. Never blocks on the database, never raises."""
        if len(self._queue) < self._queue_size:
            self._queue.append(verdict)  # deque.append is atomic: safe against the writer's popleft
        else:
            self._to_spool([to_row(verdict, self.keep, self.redact)])

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> "RecordWriter":
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Flush everything: to the database if it answers, else to the spool."""
        self._stop.set()
        self._thread.join(timeout)
        leftovers = []
        while self._queue:
            leftovers.append(to_row(self._queue.popleft(), self.keep, self.redact))
        if leftovers:
            self._to_spool(leftovers)

    # -- writer thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        self._replay()  # whatever a previous run (or crash) left behind
        while True:
            stopping = self._stop.wait(self.max_delay)
            if self._queue and time.monotonic() >= self._register_at:
                self._refresh_register()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
                self._name_people(batch)
                self._write([to_row(v, self.keep, self.redact) for v in batch])
                time.sleep(0)  # let the proxy's event loop have the GIL between batches
            if self.spool.pending() and time.monotonic() >= self._retry_at:
                self._replay()
            if stopping:
                return

    def _refresh_register(self) -> None:
        """Reload the supply register now and then (the office adds visits through the CLI)."""
        self._register_at = time.monotonic() + REGISTER_REFRESH
        if not self._db_ok:
            return
        try:
            self._register = load_register(self.engine, dt.datetime.now(UTC) - dt.timedelta(days=2))
        except Exception as e:  # keep the register we have; records still get written
            log.debug("supply register not refreshed: %s", e)

    def _name_people(self, batch: list[Verdict]) -> None:
        """The person behind a shared logon at the moment of each request (reports re-check later entries)."""
        reg = self._register
        if reg is None:
            return
        for i, v in enumerate(batch):
            if v.person is None and v.username is not None and v.username in reg:
                visit = reg.who(v.username, dt.datetime.fromtimestamp(v.time, UTC))
                if visit is not None:
                    batch[i] = v._replace(person=visit.person)

    def _write(self, rows: list[dict]) -> None:
        if not self._db_ok and time.monotonic() < self._retry_at:
            self._to_spool(rows)  # database known to be down: don't wait on it for every batch
            return
        try:
            self._insert_rows(rows)
            self.written += len(rows)
        except Exception as e:
            self._failed(e)
            self._to_spool(rows)

    def _insert_rows(self, rows: list[dict]) -> None:
        d = self._dialect
        params = [tuple(_db_time(r[c], d) if c == "time" else r[c] for c in COLUMNS) for r in rows]
        with self.engine.begin() as conn:
            conn.exec_driver_sql(self._sql, params)
        self.batches += 1
        if not self._db_ok:
            log.warning("schoolproxy: record database is back")
        self._db_ok, self._backoff = True, 1.0

    def _failed(self, e: Exception) -> None:
        self.db_errors += 1
        if self._db_ok:
            log.error("schoolproxy: record database unavailable, spooling to %s: %s", self.spool.dir,
                      str(e).splitlines()[0][:200])
        self._db_ok = False
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)

    def _replay(self) -> None:
        while (taken := self.spool.take()) is not None:
            try:
                for rows in Spool.read(taken, self.batch_size):
                    for r in rows:
                        if isinstance(r["time"], str):
                            r["time"] = dt.datetime.fromisoformat(r["time"])
                    self._insert_rows(rows)
                    self.replayed += len(rows)
            except Exception as e:
                self._failed(e)
                return  # the rest stays in the spool for the next attempt
            self.spool.finish(taken)
            log.info("schoolproxy: replayed spooled records from %s", taken.name)

    def _to_spool(self, rows: list[dict]) -> None:
        if self.spool.save(rows):
            self.spooled += len(rows)
        else:
            self.dropped += len(rows)
