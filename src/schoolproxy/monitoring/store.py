"""Alerts in the records database: raising them (with their outbox rows, in one transaction), counting
repeats, the delivery outbox, the weekly digest, and the incident-log lifecycle."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, and_, func, insert, select, update

from schoolproxy.config import Config
from schoolproxy.monitoring import evidence, message, pending
from schoolproxy.monitoring.access import audience, for_the_head_alone
from schoolproxy.monitoring.rules import Candidate
from schoolproxy.records.schema import alert_notes, alert_outbox, alerts
from schoolproxy.verdict import new_reference

UTC = dt.timezone.utc
STATUSES = ("new", "acknowledged", "actioned", "closed")
# action → (allowed from, new status)
TRANSITIONS = {"ack": (("new",), "acknowledged"), "action": (("new", "acknowledged"), "actioned"),
               "close": (("new", "acknowledged", "actioned"), "closed"), "note": (STATUSES, None),
               "reopen": (("closed",), "acknowledged")}


class AlertError(ValueError):
    """An incident-log change that cannot be made; the message says why."""


def recipients_for(config: Config, role: str, username: str | None = None) -> list[tuple[str, str]]:
    """(recipient role, address) pairs a concern about ``username`` (of ``role``) goes to."""
    s = config.alerts
    return [(target, address) for target in audience(config, role, username)
            for address in s.recipients.get(target, [])]


def raise_alert(engine: Engine, config: Config, c: Candidate, role: str, person: str | None) -> dict | None:
    """Insert the alert and, if its severity is sent at once, its outbox rows — one transaction.

    None if the subject already has an alert of this theme within the throttle window (raised by
    another worker process, or before a restart): this one is counted as a repeat on it instead."""
    v = c.verdict
    now = dt.datetime.now(UTC)
    s = config.alerts
    routes = audience(config, role, v.username)
    row = {
        "ref": new_reference(), "time": dt.datetime.fromtimestamp(v.time, UTC), "theme": c.theme[:32],
        "severity": c.severity, "username": v.username, "person": person, "profile": v.profile,
        "device": v.device, "evidence": c.evidence[:4000], "route": ",".join(routes)[:64], "status": "new",
        "updated_at": now, "rule": c.rule[:64], "score": c.score, "client_ip": v.client_ip,
        "request_ref": v.ref, "search_term": (c.search_term or v.search_term or None), "repeats": 0,
    }
    if row["search_term"]:
        row["search_term"] = row["search_term"][:512]
    tz = ZoneInfo(config.timezone)
    window = dt.datetime.fromtimestamp(v.time - config.alerts.throttle_minutes * 60, UTC)
    with engine.begin() as conn:
        recent = conn.execute(select(func.max(alerts.c.id)).where(
            _subject(v.username, v.client_ip), alerts.c.theme == row["theme"], alerts.c.time >= window)).scalar()
        if recent is not None:
            conn.execute(update(alerts).where(alerts.c.id == recent).values(repeats=alerts.c.repeats + 1))
            evidence.add(conn, recent, [evidence.row_of(c)])
            return None
        alert_id = conn.execute(insert(alerts).values(**row).returning(alerts.c.id)).scalar_one()
        evidence.add(conn, alert_id, [evidence.row_of(c)])
        if c.severity in s.immediate:
            subj = message.subject(row, config.school)
            text = message.body(row, config.school, tz, s.procedure)
            outbox = pending.outbox_rows(config, alert_id, "alert",
                                         [addr for _, addr in recipients_for(config, role, v.username)], subj, text, now,
                                         about_staff=for_the_head_alone(config, row))
            if outbox:
                conn.execute(insert(alert_outbox), outbox)
    row["id"] = alert_id
    return row


def _subject(username: str | None, client_ip: str):
    """Whose alerts: the user's (any case), or an unidentified device's."""
    if username:
        return func.lower(alerts.c.username) == username.lower()
    return and_(alerts.c.username.is_(None), alerts.c.client_ip == client_ip)


def count_repeats(engine: Engine, counts: dict[tuple[str | None, str, str], int],
                  found: dict[tuple[str | None, str, str], list[dict]] | None = None) -> None:
    """Add throttled repeats to each subject's latest alert of the theme, all in one transaction.

    ``counts`` maps (username, client IP, theme) to how many repeats; a flood of blocked requests is a
    handful of statements per batch, not one transaction per request. ``found``: the same keys to the
    repeats' evidence rows (:func:`evidence.row_of`), kept on the alert with its count."""
    with engine.begin() as conn:
        for key, n in counts.items():
            username, client_ip, theme = key
            latest = conn.execute(select(func.max(alerts.c.id)).where(
                _subject(username, client_ip), alerts.c.theme == theme)).scalar()
            if latest is not None:
                conn.execute(update(alerts).where(alerts.c.id == latest).values(repeats=alerts.c.repeats + n))
                evidence.add(conn, latest, (found or {}).get(key, []))


# -- the outbox ---------------------------------------------------------------------------------------
def due(engine: Engine, limit: int = 50) -> list[dict]:
    now = dt.datetime.now(UTC)
    with engine.connect() as conn:
        rows = conn.execute(select(alert_outbox, alerts.c.ref).select_from(
            alert_outbox.outerjoin(alerts, alerts.c.id == alert_outbox.c.alert_id))
            .where(alert_outbox.c.status == "pending", alert_outbox.c.next_attempt <= now)
            .order_by(alert_outbox.c.id).limit(limit)).mappings()
        return [dict(r) for r in rows]


def pending_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(alert_outbox)
                            .where(alert_outbox.c.status == "pending")).scalar_one()


def mark_sent(engine: Engine, outbox_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(update(alert_outbox).where(alert_outbox.c.id == outbox_id)
                     .values(status="sent", sent_at=dt.datetime.now(UTC), last_error=None))


def mark_failed(engine: Engine, outbox_id: int, attempts: int, error: str, retry_seconds: float) -> None:
    delay = min(retry_seconds * 2 ** max(0, attempts - 1), 900.0)
    with engine.begin() as conn:
        conn.execute(update(alert_outbox).where(alert_outbox.c.id == outbox_id).values(
            attempts=attempts, last_error=error[:300],
            next_attempt=dt.datetime.now(UTC) + dt.timedelta(seconds=delay)))


# -- the weekly digest ------------------------------------------------------------------------------
def queue_digest(engine: Engine, config: Config, since: dt.datetime, until: dt.datetime) -> tuple[str, str, int | None]:
    """Put the digest into the outbox: the alerts not sent at once, each in one digest; and first, in every
    digest until someone has them, the high and critical alerts that have reached no one. Returns
    (subject, body, number of messages queued for people — emails and webhook calls — or None when there
    was nothing to send)."""
    s = config.alerts
    tz = ZoneInfo(config.timezone)
    now = dt.datetime.now(UTC)
    unseen = pending.undelivered(engine, config, now)
    with engine.begin() as conn:
        rows = [dict(r) for r in conn.execute(select(alerts).where(
            alerts.c.time >= since, alerts.c.time < until, alerts.c.severity.not_in(s.immediate),
            alerts.c.digested_at.is_(None)).order_by(alerts.c.time)).mappings()]
        subj, text = message.digest(rows, config.school, tz, since, until, unseen)
        if not rows and not unseen:
            return subj, text, None
        # Each address gets the alerts routed to its roles only: a concern about staff stays with the head.
        out = []
        for addr, (mine, mine_unseen) in sorted(_by_address(config, rows, unseen).items()):
            about_staff = any(for_the_head_alone(config, a) for a in mine + mine_unseen)
            out += pending.outbox_rows(config, None, "digest", [addr],
                                       *message.digest(mine, config.school, tz, since, until, mine_unseen), now,
                                       copies=False, about_staff=about_staff)
        # The webhook and the copy on the gateway leave out the concerns about staff: they are the head's alone.
        shared = [a for a in rows if not for_the_head_alone(config, a)]
        shared_unseen = [a for a in unseen if not for_the_head_alone(config, a)]
        if pending.webhook_carries(config, about_staff=True):
            out.append(pending.webhook_row(config, None, "digest", subj, text, now))
        elif pending.webhook_carries(config, about_staff=False) and (shared or shared_unseen):
            out.append(pending.webhook_row(config, None, "digest",
                                           *message.digest(shared, config.school, tz, since, until, shared_unseen),
                                           now))
        if config.alerts.mailbox is not None and (shared or shared_unseen):
            out.append(pending.mailbox_row(config, None, "digest",
                                           *message.digest(shared, config.school, tz, since, until, shared_unseen),
                                           now))
        if out:
            conn.execute(insert(alert_outbox), out)
        if rows:
            conn.execute(update(alerts).where(alerts.c.id.in_([a["id"] for a in rows])).values(digested_at=now))
    return subj, text, sum(o["channel"] in pending.TELLING for o in out)


def _by_address(config: Config, rows: list[dict], unseen: list[dict]) -> dict[str, tuple[list[dict], list[dict]]]:
    """address → (its alerts of ``rows``, of ``unseen``): those routed to a role the address receives for."""
    out: dict[str, tuple[list[dict], list[dict]]] = {}
    for i, alerts_ in enumerate((rows, unseen)):
        for a in alerts_:
            addresses = {addr for t in a["route"].split(",") if t for addr in config.alerts.recipients.get(t, [])}
            for addr in sorted(addresses):
                out.setdefault(addr, ([], []))[i].append(a)
    return out


# -- the incident log -------------------------------------------------------------------------------
def list_alerts(engine: Engine, since: dt.datetime, status: str = "open", limit: int = 1000) -> list[dict]:
    q = select(alerts).where(alerts.c.time >= since)
    if status == "open":
        q = q.where(alerts.c.status != "closed")
    elif status != "all":
        q = q.where(alerts.c.status == status)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(q.order_by(alerts.c.time.desc()).limit(limit)).mappings()]


def get_alert(engine: Engine, ref: str) -> tuple[dict, list[dict], list[dict]]:
    with engine.connect() as conn:
        row = conn.execute(select(alerts).where(alerts.c.ref == ref.strip().upper())).mappings().first()
        if row is None:
            raise AlertError(f"no alert with reference {ref!r}")
        notes = [dict(n) for n in conn.execute(select(alert_notes).where(alert_notes.c.alert_id == row["id"])
                                               .order_by(alert_notes.c.id)).mappings()]
        sent = [dict(o) for o in conn.execute(select(alert_outbox.c.channel, alert_outbox.c.recipient,
                                                     alert_outbox.c.status, alert_outbox.c.attempts,
                                                     alert_outbox.c.sent_at, alert_outbox.c.last_error)
                                              .where(alert_outbox.c.alert_id == row["id"])).mappings()]
    return dict(row), notes, sent


def transition(engine: Engine, ref: str, action: str, author: str, note: str) -> dict:
    if action not in TRANSITIONS:
        raise AlertError(f"unknown action {action!r}")
    allowed, new_status = TRANSITIONS[action]
    note = " ".join(note.split()) if note else ""
    if action in ("action", "close", "note") and not note:
        raise AlertError(f"'{action}' needs --note saying what was done" + (" (the outcome)" if action == "close" else ""))
    if any(ord(c) < 32 for c in author):
        raise AlertError("author contains control characters")
    now = dt.datetime.now(UTC)
    with engine.begin() as conn:
        row = conn.execute(select(alerts).where(alerts.c.ref == ref.strip().upper())).mappings().first()
        if row is None:
            raise AlertError(f"no alert with reference {ref!r}")
        if row["status"] not in allowed:
            raise AlertError(f"alert {row['ref']} is {row['status']}: cannot {action} it")
        if new_status is not None:
            conn.execute(update(alerts).where(alerts.c.id == row["id"]).values(status=new_status, updated_at=now))
        conn.execute(insert(alert_notes).values(alert_id=row["id"], time=now, author=author[:256], action=action,
                                                note=note[:4000] or "(no note)"))
    return {**dict(row), "status": new_status or row["status"]}
