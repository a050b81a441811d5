"""Retention: records older than ``retention_days`` are deleted (with unblock requests, acceptances of
the notice and expiring overrides that ended that long ago), alerts (with their notes and evidence)
after ``alert_retention_days``. Deleted in chunks so a big purge never holds a long lock."""

from __future__ import annotations

import datetime as dt
import logging
import threading

from sqlalchemy import Engine, Table, delete, select

from schoolproxy.records.schema import (alert_evidence, alert_notes, alerts, expiring_overrides, notice_acceptances,
                                         requests, unblock_requests)

log = logging.getLogger(__name__)
CHUNK = 10_000


def purge(engine: Engine, retention_days: int, alert_retention_days: int,
          now: dt.datetime | None = None) -> dict[str, int]:
    now = now or dt.datetime.now(dt.timezone.utc)
    old = now - dt.timedelta(days=retention_days)
    done = {"requests": _purge(engine, requests, old)}
    done["unblock_requests"] = _purge(engine, unblock_requests, old)
    done["notice_acceptances"] = _purge(engine, notice_acceptances, old)
    done["expiring_overrides"] = _purge(engine, expiring_overrides, old, expiring_overrides.c.expires_at)
    cutoff = now - dt.timedelta(days=alert_retention_days)
    with engine.begin() as conn:  # notes and evidence first: SQLite may not enforce ON DELETE CASCADE
        for table in (alert_notes, alert_evidence):
            conn.execute(delete(table).where(table.c.alert_id.in_(select(alerts.c.id).where(alerts.c.time < cutoff))))
    done["alerts"] = _purge(engine, alerts, cutoff)
    return done


def _purge(engine: Engine, table: Table, cutoff: dt.datetime, column=None) -> int:
    column = table.c.time if column is None else column
    total = 0
    while True:
        with engine.begin() as conn:
            ids = select(table.c.id).where(column < cutoff).limit(CHUNK).scalar_subquery()
            n = conn.execute(delete(table).where(table.c.id.in_(ids))).rowcount
        total += n
        if n < CHUNK:
            return total


class Purger:
    """Runs :func:`purge` in a background thread every ``hours`` (first run a minute after start)."""

    def __init__(self, engine: Engine, retention_days: int, alert_retention_days: int, hours: int):
        self.engine, self.days, self.alert_days, self.interval = engine, retention_days, alert_retention_days, hours * 3600
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="schoolproxy-purge", daemon=True)
        self.last: dict[str, int] | None = None

    def start(self) -> "Purger":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        wait = 60.0
        while not self._stop.wait(wait):
            try:
                self.last = purge(self.engine, self.days, self.alert_days)
                log.info("schoolproxy: retention purge removed %(requests)d records, %(alerts)d alerts", self.last)
            except Exception:
                log.exception("schoolproxy: retention purge failed; will retry")
            wait = self.interval
