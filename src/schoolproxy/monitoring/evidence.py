"""The evidence of an alert: every search, visit or page that raised it or was counted as a repeat of it,
as the person typed it or met it — never a phrase of the watch lists that they did not type.

One ``alert_evidence`` row per matching request, written in the transaction that stores the alert or
counts its repeats. Only the first :data:`MAX_PER_ALERT` rows of an alert are kept (its ``repeats``
still counts every one), so a flood of searches cannot grow one alert without bound.

A site's address is kept with its query values redacted (search words stay) and cut short; for adult and
possibly illegal content only the host: staff must never be led to such content (SPEC 2, 5.8).
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, func, insert, select

from schoolproxy.monitoring.rules import Candidate
from schoolproxy.monitoring.searchterms import clean, engine_of
from schoolproxy.records.redact import redact_path
from schoolproxy.records.schema import alert_evidence

UTC = dt.timezone.utc
MAX_PER_ALERT = 200
MAX_URL = 300
MAX_WORDS = 500
#: Themes whose evidence is the host and time only: no address, no words from the page.
HOST_ONLY_THEMES = frozenset({"pornography", "upstream-block"})
_ENGINES = {"duckduckgo": "DuckDuckGo", "youtube": "YouTube"}


def row_of(c: Candidate) -> dict:
    """The evidence row of one match (without its alert id). Pure."""
    v = c.verdict
    host_only = c.theme in HOST_ONLY_THEMES
    if c.rule == "search-phrases":
        kind, words, matched = "search", c.search_term or v.search_term, " / ".join(c.words) or None
    elif c.rule == "content":
        kind, words, matched = "content", None if host_only else " / ".join(f'"{w}"' for w in c.words), None
    else:
        kind, words, matched = "visit", None, None
    url = None
    if kind == "visit" and not host_only and v.layer == "http":
        url = f"{v.scheme}://{v.host}{redact_path(v.path or '/')}"
        if len(url) > MAX_URL:
            url = url[:MAX_URL - 1] + "…"
    return {"time": dt.datetime.fromtimestamp(v.time, UTC), "kind": kind, "rule": c.rule[:64],
            "words": clean(words)[:MAX_WORDS] if words else None, "matched": clean(matched)[:MAX_WORDS] if matched else None,
            "host": (v.host or "")[:253], "url": url, "action": v.action[:8], "request_ref": v.ref}


def add(conn: Connection, alert_id: int, rows: list[dict]) -> int:
    """Store ``rows`` on the alert, up to its :data:`MAX_PER_ALERT`; returns how many were stored."""
    if not rows:
        return 0
    have = conn.execute(select(func.count()).select_from(alert_evidence)
                        .where(alert_evidence.c.alert_id == alert_id)).scalar_one()
    room = max(0, MAX_PER_ALERT - have)
    if room:
        conn.execute(insert(alert_evidence), [{**r, "alert_id": alert_id} for r in rows[:room]])
    return min(room, len(rows))


def of_alert(engine: Engine | Connection, alert_id: int) -> list[dict]:
    """The alert's evidence, oldest first."""
    q = select(alert_evidence).where(alert_evidence.c.alert_id == alert_id) \
        .order_by(alert_evidence.c.time, alert_evidence.c.id)
    if isinstance(engine, Connection):
        return [dict(r) for r in engine.execute(q).mappings()]
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def not_listed(alert: dict, rows: list[dict]) -> int:
    """Matches counted on the alert (the first and its repeats) beyond the evidence kept."""
    return max(0, 1 + int(alert.get("repeats") or 0) - len(rows)) if rows else 0


def engine_name(host: str | None) -> str | None:
    e = engine_of((host or "").lower())
    return _ENGINES.get(e, e.capitalize()) if e else None


def shown_matched(row: dict) -> str | None:
    """The words of a search that matched, when they are not the whole search."""
    matched = row.get("matched")
    return matched if matched and matched.lower() != (row.get("words") or "").lower() else None


def describe(row: dict) -> str:
    """What happened, in words: 'searched "how to kill myself" on Google (matched: kill myself)'."""
    host = clean(row.get("host") or "")[:253] or "a website"
    rule, blocked = row.get("rule") or "", row.get("action") == "block"
    if row["kind"] == "search":
        where = engine_name(host) or host
        text = f'searched "{clean(row.get("words") or "")}" on {where}'
        return text + (f" (matched: {clean(row['matched'])})" if shown_matched(row) else "")
    if row["kind"] == "content":
        verb = "was stopped from reading" if blocked else "read"
        return f"{verb} a page on {host}" + (f" containing {clean(row['words'])}" if row.get("words") else "")
    if rule == "upstream-block":
        return f"was stopped by the school's upstream filter at {host} (address not kept)"
    if rule == "bare-ip":
        return f"opened a tunnel to the bare IP address {host}"
    if rule == "interception-refused":
        return f"a connection to {host} refused the school's HTTPS inspection"
    where = clean(row.get("url") or "") or host
    category = rule.partition(":")[2] if rule.startswith("category:") else ""
    return f"{'tried to visit' if blocked else 'visited'} {where}" + (f" (category {category})" if category else "")


def lines(alert: dict, rows: list[dict], tz: ZoneInfo) -> list[str]:
    """Each piece of evidence on a line with its UK date and time ('25/11/2026 10:42:05  searched …'),
    then how many more were counted but not kept."""
    out = []
    for r in rows:
        t = r["time"] if r["time"].tzinfo else r["time"].replace(tzinfo=UTC)  # SQLite gives back naive UTC
        out.append(f"{t.astimezone(tz):%d/%m/%Y %H:%M:%S}  {describe(r)}")
    more = not_listed(alert, rows)
    if more:
        out.append(f"… and {more} more time(s), counted but not listed (the first {MAX_PER_ALERT} are kept)")
    return out
