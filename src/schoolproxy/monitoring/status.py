"""Whether search alerts are on: what the running alert service says, kept where the console can read it.

Search alerts need the phrase lists. When they cannot be loaded (a wrong ``alerts.phrases``, a list with
a mistake in it, a directory missing after an upgrade) the proxy serves on and every other alert still
works, but no search is checked for concerns — so that must not go unnoticed. The alert process reports it
to the proxy (the ``schoolproxy_search_alerts_off`` gauge) and records it here, in the records database,
for the console's banner and health page: one row, restamped every ``REPORT_EVERY`` seconds while the
proxy runs, so that a state nobody has confirmed for a while is seen to be old.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, delete, insert, select

from schoolproxy.records.schema import service_status

UTC = dt.timezone.utc
SEARCH_ALERTS = "search_alerts"
REPORT_EVERY = 60.0                        # seconds between restamps by the running alert service
STALE_AFTER = dt.timedelta(minutes=5)      # not restamped for this long: the proxy is probably not running


def off_because(reason: str) -> str:
    """The one line every place says it with (start-up log, banner, health page)."""
    return (f"Search alerts are OFF: the phrase lists could not be loaded ({reason}). Searches are not being "
            f"checked for concerns. Tell the network manager.")


def record(engine: Engine, off: str | None, now: dt.datetime | None = None) -> None:
    """The alert service's word: search alerts are on (``off`` None) or off, and why."""
    now = now or dt.datetime.now(UTC)
    ok, detail = off is None, (off or "")[:2000]
    with engine.begin() as conn:
        old = conn.execute(select(service_status).where(service_status.c.name == SEARCH_ALERTS)).mappings().first()
        since = old["since"] if old is not None and old["ok"] == ok and old["detail"] == detail else now
        conn.execute(delete(service_status).where(service_status.c.name == SEARCH_ALERTS))
        conn.execute(insert(service_status).values(name=SEARCH_ALERTS, ok=ok, detail=detail, since=since,
                                                   reported_at=now))


def search_alerts(engine: Engine) -> dict | None:
    """The last word of the alert service (``ok``, ``detail``, ``since``, ``reported_at``), or None if it
    has never said."""
    with engine.connect() as conn:
        row = conn.execute(select(service_status).where(service_status.c.name == SEARCH_ALERTS)).mappings().first()
    if row is None:
        return None
    row = dict(row)
    for k in ("since", "reported_at"):
        if row[k].tzinfo is None:  # SQLite keeps no zone
            row[k] = row[k].replace(tzinfo=UTC)
    return row


def is_stale(row: dict, now: dt.datetime | None = None) -> bool:
    return (now or dt.datetime.now(UTC)) - row["reported_at"] > STALE_AFTER
