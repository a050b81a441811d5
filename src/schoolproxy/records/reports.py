"""Reports for people (the DSL, the computing lead) who are not database experts: one user's history,
what was blocked, one record by the reference on a block page — as readable tables or CSV.

Every report is written to the access audit (who looked at whose browsing, and when), as UK GDPR
expects. URLs and hostnames are attacker-controlled: control characters are removed before they reach
a terminal, and CSV cells that a spreadsheet would run as a formula are neutralised.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from typing import IO, Callable, Iterable, Sequence
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, insert, select

from schoolproxy.identity.register import NO_ONE
from schoolproxy.records.schema import access_audit, alerts, requests
from schoolproxy.records.visits import aware, load_register

COLUMNS = ("time", "ref", "username", "person", "profile", "client_ip", "device", "action", "category", "method",
           "host", "path", "search_term", "status", "rule")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")  # incl. bidi overrides
_FORMULA = ("=", "+", "-", "@", "\t", "\r")
MAX_CELL = 120
LONDON = ZoneInfo("Europe/London")


def user_history(engine: Engine, username: str, since: dt.datetime, until: dt.datetime, limit: int = 10_000):
    """One user's records in any case of the name (Windows logons are case-insensitive; records made
    before names were recorded in one spelling may differ), through the index on lower(username)."""
    q = (select(requests).where(func.lower(requests.c.username) == username.lower(), requests.c.time >= since,
                                requests.c.time < until).order_by(requests.c.time).limit(limit))
    with engine.connect() as conn:
        return list(conn.execute(q).mappings())


def name_people(engine: Engine, rows: Sequence, is_shared: Callable[[str, str], bool]) -> list[dict]:
    """Fill ``person`` from the supply register (which may have been completed after the request), and
    say plainly when a shared logon had no one registered. ``is_shared(username, profile)``."""
    if not rows:
        return []
    times = [aware(r["time"]) for r in rows]
    register = load_register(engine, min(times) - dt.timedelta(days=1))
    out = []
    for r, t in zip(rows, times):
        r = dict(r)
        user = r.get("username")
        visit = register.who(user, t) if user else None
        if visit is not None:
            r["person"] = visit.person
        elif not r.get("person") and user and is_shared(user, r.get("profile") or ""):
            r["person"] = NO_ONE
        out.append(r)
    return out


def blocked(engine: Engine, since: dt.datetime, until: dt.datetime, category: str | None = None,
            limit: int = 10_000):
    q = select(requests).where(requests.c.action == "block", requests.c.time >= since, requests.c.time < until)
    if category:
        q = q.where(requests.c.category == category)
    with engine.connect() as conn:
        return list(conn.execute(q.order_by(requests.c.time).limit(limit)).mappings())


def by_ref(engine: Engine, ref: str):
    with engine.connect() as conn:
        return list(conn.execute(select(requests).where(requests.c.ref == ref.strip().upper())).mappings())


#: A reference as block pages and alerts show it: 1BM9-7DG0-034X.
REFERENCE = re.compile(r"[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}")


def reference_time(engine: Engine, ref: str, username: str | None = None) -> tuple[dt.datetime, str] | None:
    """When the alert, else the browsing record, with reference ``ref`` happened, and which it was
    ("alert" or "record"); None if neither has it. ``username``: only an alert or record about them (a
    report of one person's browsing must not tell the time of someone else's alert)."""
    ref = ref.strip().upper()
    with engine.connect() as conn:
        for table, kind in ((alerts, "alert"), (requests, "record")):
            q = select(table.c.time).where(table.c.ref == ref)
            if username is not None:
                q = q.where(func.lower(table.c.username) == username.lower())
            t = conn.execute(q).scalar()
            if t is not None:
                return aware(t), kind
    return None


def audit(engine: Engine, viewer: str, subject: str, what: str) -> None:
    with engine.begin() as conn:
        conn.execute(insert(access_audit).values(time=dt.datetime.now(dt.timezone.utc), viewer=viewer[:256],
                                                 subject=subject[:256], what=what[:512]))


def _text(value, tz: ZoneInfo) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:  # SQLite returns naive UTC
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
    return _CONTROL.sub("?", str(value))


def format_table(rows: Sequence, columns: Sequence[str] = COLUMNS, tz: ZoneInfo = LONDON) -> str:
    cells = [[_text(r[c], tz) for c in columns] for r in rows]
    cells = [[c if len(c) <= MAX_CELL else c[:MAX_CELL - 1] + "…" for c in row] for row in cells]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths, strict=True)).rstrip()
    out = [line(columns), line(["-" * w for w in widths])] + [line(row) for row in cells]
    out.append(f"({len(rows)} record{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def write_csv(rows: Iterable, out: IO[str], columns: Sequence[str] = COLUMNS,
              tz: ZoneInfo = LONDON) -> None:
    w = csv.writer(out)
    w.writerow(columns)
    for r in rows:
        vals = [_text(r[c], tz) for c in columns]
        w.writerow(["'" + v if v.startswith(_FORMULA) else v for v in vals])
