"""Unblock requests and expiring overrides in the records database.

A request is made from the block page by the signed-in user (pending), and decided by an approver:
approved — which creates an expiring override and a decision-log entry in the same transaction — or
refused. Teachers' class allows are expiring overrides without a request. The policy questions (may
this be allowed at all, by whom, until when) are asked by :mod:`schoolproxy.standards.unblock`; this
module only stores.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, func, insert, or_, select, update

from schoolproxy.records.schema import expiring_overrides, policy_decisions, unblock_requests
from schoolproxy.verdict import new_reference

UTC = dt.timezone.utc
STATUSES = ("pending", "approved", "refused")


class UnblockError(ValueError):
    """A request or decision that cannot be made; the message says why, for the person making it."""


def aware(t: dt.datetime | None) -> dt.datetime | None:
    """SQLite returns naive datetimes (stored as UTC)."""
    return t if t is None or t.tzinfo else t.replace(tzinfo=UTC)


# -- requests -----------------------------------------------------------------------------------------
def add_request(engine: Engine, *, username: str, profile: str, client_ip: str, device: str | None, host: str,
                url: str, block_ref: str | None, rule: str, categories: str, reason: str,
                per_user_per_day: int, now: dt.datetime | None = None) -> dict:
    """Store a pending request. Refused (:class:`UnblockError`) past the user's daily limit, or while
    the same user already has one pending for the same site."""
    now = now or dt.datetime.now(UTC)
    with engine.begin() as conn:
        user = func.lower(unblock_requests.c.username) == username.lower()
        today = conn.execute(select(func.count()).where(user, unblock_requests.c.time >= now - dt.timedelta(days=1))
                             ).scalar_one()
        if today >= per_user_per_day:
            raise UnblockError(f"You have already asked {today} times today. Please ask your teacher instead.")
        if conn.execute(select(unblock_requests.c.id).where(user, unblock_requests.c.host == host,
                                                            unblock_requests.c.status == "pending")).first():
            raise UnblockError("You have already asked about this site. The computing lead will look at it soon.")
        row = {"ref": new_reference(), "time": now, "username": username[:256], "profile": profile[:64],
               "client_ip": client_ip[:64], "device": device[:128] if device else None, "host": host[:253],
               "url": url[:2100], "block_ref": block_ref, "rule": rule[:256], "categories": categories[:512],
               "reason": reason, "status": "pending"}
        row["id"] = conn.execute(insert(unblock_requests).values(**row).returning(unblock_requests.c.id)).scalar_one()
    return row


def get_request(engine: Engine, ref: str) -> dict:
    with engine.connect() as conn:
        row = conn.execute(select(unblock_requests).where(unblock_requests.c.ref == ref.strip().upper())
                           ).mappings().first()
    if row is None:
        raise UnblockError(f"no unblock request with reference {ref!r}")
    return dict(row)


def list_requests(engine: Engine, since: dt.datetime, status: str = "all", limit: int = 10_000) -> list[dict]:
    q = select(unblock_requests).where(unblock_requests.c.time >= since)
    if status != "all":
        q = q.where(unblock_requests.c.status == status)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(q.order_by(unblock_requests.c.time).limit(limit)).mappings()]


def decide(engine: Engine, ref: str, status: str, by: str, note: str, override: dict | None = None,
           decision: tuple[str, str] | None = None) -> dict:
    """Approve (with the override to create) or refuse a pending request, and write the decision log
    entry (change, rationale) — all in one transaction."""
    now = dt.datetime.now(UTC)
    with engine.begin() as conn:
        row = conn.execute(select(unblock_requests).where(unblock_requests.c.ref == ref.strip().upper())
                           .with_for_update()).mappings().first()
        if row is None:
            raise UnblockError(f"no unblock request with reference {ref!r}")
        if row["status"] != "pending":
            raise UnblockError(f"request {row['ref']} was already {row['status']} by {row['decided_by']}")
        override_id = None
        if override is not None:
            override_id = _insert_override(conn, override, now)
        conn.execute(update(unblock_requests).where(unblock_requests.c.id == row["id"]).values(
            status=status, decided_by=by[:256], decided_at=now, note=note, override_id=override_id))
        if decision is not None:
            conn.execute(insert(policy_decisions).values(time=now, author=by[:256], change=decision[0],
                                                         rationale=decision[1]))
    return {**dict(row), "status": status, "decided_by": by, "decided_at": now, "note": note,
            "override_id": override_id}


def outcomes_to_tell(engine: Engine, since: dt.datetime, shown_since: dt.datetime) -> list[dict]:
    """Decided requests (since ``since``) whose requester has not yet seen the outcome, or first saw it
    after ``shown_since`` (for their next block pages)."""
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(
            select(unblock_requests.c.id, unblock_requests.c.ref, unblock_requests.c.username,
                   unblock_requests.c.host, unblock_requests.c.status, unblock_requests.c.decided_at,
                   unblock_requests.c.note, unblock_requests.c.told_at, expiring_overrides.c.expires_at)
            .select_from(unblock_requests.outerjoin(expiring_overrides,
                                                    expiring_overrides.c.id == unblock_requests.c.override_id))
            .where(unblock_requests.c.status != "pending", unblock_requests.c.decided_at >= since,
                   or_(unblock_requests.c.told_at.is_(None), unblock_requests.c.told_at >= shown_since))
            ).mappings()]


def mark_told(engine: Engine, ids: list[int]) -> None:
    """The requester has seen the outcome (the first time is kept)."""
    if ids:
        with engine.begin() as conn:
            conn.execute(update(unblock_requests).where(unblock_requests.c.id.in_(ids),
                                                        unblock_requests.c.told_at.is_(None))
                         .values(told_at=dt.datetime.now(UTC)))


# -- expiring overrides -------------------------------------------------------------------------------
def _insert_override(conn, o: dict, now: dt.datetime) -> int:
    return conn.execute(insert(expiring_overrides).values(
        site=o["site"][:512], action=o.get("action", "allow"), scope=o["scope"], scope_value=o["scope_value"][:256],
        rationale=o["rationale"], author=o["author"][:256], created_at=now, expires_at=o["expires_at"],
        source=o["source"]).returning(expiring_overrides.c.id)).scalar_one()


def add_override(engine: Engine, override: dict, decision: tuple[str, str]) -> int:
    """An expiring override not tied to a request (a teacher's class allow), with its decision-log entry."""
    now = dt.datetime.now(UTC)
    with engine.begin() as conn:
        oid = _insert_override(conn, override, now)
        conn.execute(insert(policy_decisions).values(time=now, author=override["author"][:256], change=decision[0],
                                                     rationale=decision[1]))
    return oid


def active_overrides(engine: Engine, now: dt.datetime | None = None) -> list[dict]:
    """Overrides in force: not expired, not revoked."""
    now = now or dt.datetime.now(UTC)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(expiring_overrides).where(
            expiring_overrides.c.expires_at > now, expiring_overrides.c.revoked_at.is_(None))
            .order_by(expiring_overrides.c.id)).mappings()]


def list_overrides(engine: Engine, since: dt.datetime) -> list[dict]:
    """Every override created since, or still in force since (for the review pack), oldest first."""
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(expiring_overrides).where(or_(
            expiring_overrides.c.created_at >= since, expiring_overrides.c.expires_at >= since))
            .order_by(expiring_overrides.c.created_at)).mappings()]


def revoke_override(engine: Engine, override_id: int, by: str, why: str) -> dict:
    now = dt.datetime.now(UTC)
    with engine.begin() as conn:
        row = conn.execute(select(expiring_overrides).where(expiring_overrides.c.id == override_id)).mappings().first()
        if row is None:
            raise UnblockError(f"no override number {override_id}")
        if row["revoked_at"] is not None or aware(row["expires_at"]) <= now:
            raise UnblockError(f"override {override_id} is no longer in force")
        conn.execute(update(expiring_overrides).where(expiring_overrides.c.id == override_id)
                     .values(revoked_at=now, revoked_by=by[:256]))
        conn.execute(insert(policy_decisions).values(
            time=now, author=by[:256], rationale=why,
            change=f"Ended early: {row['action']} {row['site']} for {row['scope']} {row['scope_value']} "
                   f"(override {override_id})"))
    return dict(row)


def counts_by_status(engine: Engine, since: dt.datetime) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(unblock_requests.c.status, func.count()).where(
            unblock_requests.c.time >= since).group_by(unblock_requests.c.status)).all())

