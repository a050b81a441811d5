"""Alerts that must reach a person at once (``alerts.immediate``: high and critical) — and whether they have.

An immediate alert has *reached someone* when an email or a webhook call about it was sent. Until then,
and until someone acknowledges it in the incident log (a person has it in hand), it is *undelivered*:
counted in the metrics, listed first in every weekly digest and report, in the console's red banner and
by ``schoolproxy check``. The copy kept in the mailbox folder on the gateway is not telling anyone, and
never counts as reaching someone.

Where an immediate alert's messages go (:func:`outbox_rows`): an email to each address of the roles it is
routed to, when an email server is set up — or when no way of sending is set up at all: those emails then
wait in the outbox, counted, and go once one is; the webhook; the mailbox folder.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, and_, exists, func, or_, select, update

from schoolproxy.config import Config
from schoolproxy.records.schema import alert_outbox, alerts

UTC = dt.timezone.utc
#: Channels that reach a person. "mailbox" is a copy kept on the gateway.
TELLING = ("email", "webhook")
#: A new alert is normally sent within seconds: only after this is one still on its way counted.
DELIVERY_GRACE = dt.timedelta(minutes=2)
WITHDRAWN = "withdrawn"


def ways_to_tell(config: Config) -> list[str]:
    """The configured channels that reach a person: email, webhook."""
    s = config.alerts
    return [name for name, on in (("email", s.smtp is not None), ("webhook", s.webhook is not None)) if on]


def nowhere_to_go(config: Config) -> list[str]:
    """One plain line each, for ``schoolproxy check`` and start-up, when immediate alerts would reach no one."""
    s = config.alerts
    if not s.enabled or not s.immediate:
        return []
    levels = " and ".join(s.immediate)
    if not ways_to_tell(config):
        kept = f"; a copy of each is kept in {config.path(s.mailbox)}" if s.mailbox is not None else ""
        return [f"alerts: {levels} alerts have nowhere to go — no email (alerts.smtp) or webhook (alerts.webhook) "
                f"is set up, so they reach no one until someone opens the console or runs 'schoolproxy alerts "
                f"list --by THEIR-LOGON'{kept}"]
    out = []
    for role, targets in s.routes.items():
        if webhook_carries(config, about_staff=role == "staff"):
            continue
        if s.smtp is None:
            out.append(f"alerts: {levels} alerts about {role} users reach no one at once — they never go to the "
                       f"webhook (a concern about staff is the head teacher's alone) and no email server is set up "
                       f"(alerts.smtp); set one up, or set alerts.webhook.staff_concerns: true if the webhook "
                       f"reaches the head teacher alone")
        elif not any(s.recipients.get(t) for t in targets):
            out.append(f"alerts: {levels} alerts about {role} users reach no one — alerts.recipients has no "
                       f"address for {' or '.join(targets)}")
    return out


def webhook_carries(config: Config, about_staff: bool) -> bool:
    """Whether the webhook is sent this message: never a concern about staff (access.for_the_head_alone),
    unless the school says its webhook reaches the head alone (``alerts.webhook.staff_concerns``)."""
    hook = config.alerts.webhook
    return hook is not None and (not about_staff or hook.staff_concerns)


def outbox_rows(config: Config, alert_id: int | None, kind: str, addresses: list[str], subject: str, body: str,
                now: dt.datetime, copies: bool = True, about_staff: bool = False) -> list[dict]:
    """The outbox rows of one message (an alert or a digest) to ``addresses``; ``copies``: also to the
    webhook and the mailbox folder. A concern about staff (``about_staff``) is the head's alone: no copy in
    the mailbox folder, and the webhook only as :func:`webhook_carries` says."""
    s = config.alerts
    webhook = copies and webhook_carries(config, about_staff)
    rows = []
    # With no email server, the emails wait in the outbox for one — unless the webhook carries the message.
    if s.smtp is not None or not webhook_carries(config, about_staff):
        rows += [outbox_row(alert_id, kind, "email", a, subject, body, now) for a in addresses]
    if webhook:
        rows.append(webhook_row(config, alert_id, kind, subject, body, now))
    if copies and s.mailbox is not None and not about_staff:
        rows.append(mailbox_row(config, alert_id, kind, subject, body, now))
    return rows


def webhook_row(config: Config, alert_id: int | None, kind: str, subject: str, body: str, now: dt.datetime) -> dict:
    """A call to the webhook (``alerts.webhook``, which must be set)."""
    return outbox_row(alert_id, kind, "webhook", config.alerts.webhook.url, subject, body, now)


def mailbox_row(config: Config, alert_id: int | None, kind: str, subject: str, body: str, now: dt.datetime) -> dict:
    """The copy kept in the mailbox folder on the gateway (``alerts.mailbox``, which must be set)."""
    return outbox_row(alert_id, kind, "mailbox", str(config.path(config.alerts.mailbox)), subject, body, now)


def outbox_row(alert_id, kind, channel, recipient, subject, body, now) -> dict:
    return {"alert_id": alert_id, "kind": kind, "channel": channel, "recipient": recipient[:320],
            "subject": subject[:300], "body": body, "status": "pending", "attempts": 0, "next_attempt": now,
            "created_at": now}


def _undelivered(config: Config, now: dt.datetime):
    o = alert_outbox.c
    mine = and_(o.alert_id == alerts.c.id, o.channel.in_(TELLING))
    told = exists().where(mine, o.status == "sent")
    where = [alerts.c.status == "new", alerts.c.severity.in_(list(config.alerts.immediate)), ~told]
    if ways_to_tell(config):
        # A moment to send it first — unless nothing about it is on its way (a failed attempt, no address).
        on_its_way = exists().where(mine, o.status == "pending", o.attempts == 0)
        where.append(or_(alerts.c.time <= now - DELIVERY_GRACE, ~on_its_way))
    return and_(*where)


def count_undelivered(engine: Engine, config: Config, now: dt.datetime | None = None) -> int:
    """How many open immediate alerts have reached no one (see the module's docstring)."""
    if not config.alerts.immediate:
        return 0
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(alerts)
                            .where(_undelivered(config, now or dt.datetime.now(UTC)))).scalar_one()


def undelivered(engine: Engine, config: Config, now: dt.datetime | None = None, limit: int = 500) -> list[dict]:
    """The open immediate alerts that have reached no one, oldest first, each with ``why`` in plain words."""
    if not config.alerts.immediate:
        return []
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(alerts).where(_undelivered(config, now or dt.datetime.now(UTC)))
                                              .order_by(alerts.c.time).limit(limit)).mappings()]
        messages: dict[int, list[str | None]] = {}   # alert id → the last error of each of its messages
        if rows:
            for alert_id, error in conn.execute(
                    select(alert_outbox.c.alert_id, alert_outbox.c.last_error)
                    .where(alert_outbox.c.alert_id.in_([r["id"] for r in rows]), alert_outbox.c.channel.in_(TELLING))
                    .order_by(alert_outbox.c.id)):
                messages.setdefault(alert_id, []).append(error)
    for r in rows:
        errors = [e for e in messages.get(r["id"], []) if e]
        if not ways_to_tell(config):
            r["why"] = "no email or webhook is set up"
        elif errors:
            r["why"] = f"sending failed: {errors[-1]}"
        elif r["id"] not in messages:
            r["why"] = "no one to send it to (no address in alerts.recipients for its route)"
        else:
            r["why"] = "not sent yet"
    return rows


def withdraw_acknowledged(engine: Engine) -> int:
    """Messages about an alert that have failed to go, once someone has acknowledged the alert: a person has
    it in hand, so they are withdrawn rather than sent late (or waiting for ever for an email server).
    Returns how many."""
    o = alert_outbox.c
    seen = select(alerts.c.id).where(alerts.c.status != "new")
    with engine.begin() as conn:
        return conn.execute(update(alert_outbox).where(o.status == "pending", o.attempts > 0, o.kind == "alert",
                                                       o.alert_id.in_(seen))
                            .values(status=WITHDRAWN, last_error="not sent: the alert was acknowledged first")
                            ).rowcount


def digest_queued_since(engine: Engine, at: dt.datetime) -> bool:
    """Whether a weekly digest was put in the outbox at or after ``at`` (by this process before a restart, or
    by another): the unseen alerts it repeats must not go out again with every restart."""
    with engine.connect() as conn:
        return conn.execute(select(func.count()).where(alert_outbox.c.kind == "digest",
                                                       alert_outbox.c.created_at >= at)).scalar_one() > 0
