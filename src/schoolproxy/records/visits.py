"""The supply register in the records database: add, list and end visits; load them as a Register."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, func, insert, select, update

from schoolproxy.identity.register import Register, Visit
from schoolproxy.records.schema import supply_register

UTC = dt.timezone.utc


class RegisterError(ValueError):
    """A register change that cannot be made; the message says why."""


def aware(t: dt.datetime | None) -> dt.datetime | None:
    if t is None or t.tzinfo is not None:
        return t
    return t.replace(tzinfo=UTC)  # SQLite gives back naive UTC


def _visit(row) -> Visit:
    return Visit(row.logon, row.person, aware(row.starts), aware(row.ends), row.class_taught, row.id,
                 row.created_by)


#: Visits that are in the register: not cancelled.
_LIVE = supply_register.c.cancelled_at.is_(None)


def load_register(engine: Engine, since: dt.datetime | None = None) -> Register:
    q = select(supply_register).where(_LIVE)
    if since is not None:
        q = q.where((supply_register.c.ends.is_(None)) | (supply_register.c.ends >= since))
    with engine.connect() as conn:
        return Register([_visit(r) for r in conn.execute(q)])


def list_visits(engine: Engine, since: dt.datetime, until: dt.datetime) -> list[Visit]:
    q = (select(supply_register)
         .where(_LIVE, supply_register.c.starts < until,
                (supply_register.c.ends.is_(None)) | (supply_register.c.ends > since))
         .order_by(supply_register.c.starts))
    with engine.connect() as conn:
        return [_visit(r) for r in conn.execute(q)]


def add_visit(engine: Engine, logon: str, person: str, starts: dt.datetime, ends: dt.datetime | None,
              class_taught: str | None, created_by: str) -> Visit:
    tz = starts.tzinfo
    logon, person = logon.strip(), " ".join(person.split())
    if not logon or not person:
        raise RegisterError("both --logon and --person are needed")
    if len(logon) > 256 or len(person) > 256 or (class_taught and len(class_taught) > 256):
        raise RegisterError("logon, person and class must each be at most 256 characters")
    if any(ord(c) < 32 for c in logon + person + (class_taught or "")):
        raise RegisterError("control characters are not allowed")
    if ends is not None and ends <= starts:
        raise RegisterError(f"the visit ends ({ends:%Y-%m-%d %H:%M}) before it starts ({starts:%Y-%m-%d %H:%M})")
    with engine.begin() as conn:
        existing = Register([_visit(r) for r in conn.execute(
            select(supply_register).where(_LIVE, func.lower(supply_register.c.logon) == logon.lower()))])
        clash = existing.overlapping(logon, starts, ends)
        if clash is not None:
            until = f"{clash.ends.astimezone(tz):%Y-%m-%d %H:%M}" if clash.ends else "open-ended"
            raise RegisterError(f"{logon} is already registered to {clash.person} from "
                                f"{clash.starts.astimezone(tz):%Y-%m-%d %H:%M} to {until} (visit {clash.id}); "
                                f"end that visit first (schoolproxy register end --logon {logon})")
        row = conn.execute(insert(supply_register).values(
            logon=logon, person=person, class_taught=class_taught or None, starts=starts, ends=ends,
            created_by=created_by[:256], created_at=dt.datetime.now(UTC)).returning(supply_register.c.id)).one()
    return Visit(logon, person, starts, ends, class_taught, row.id, created_by)


def end_visit(engine: Engine, logon: str, at: dt.datetime) -> Visit:
    """End the visit on ``logon`` that covers ``at`` (usually now). Never at the moment it starts: that
    would leave a visit of no length in the register (a visit that has not started is cancelled instead)."""
    with engine.begin() as conn:
        reg = Register([_visit(r) for r in conn.execute(
            select(supply_register).where(_LIVE, func.lower(supply_register.c.logon) == logon.strip().lower()))])
        visit = reg.who(logon, at)
        if visit is None:
            tz = at.tzinfo
            upcoming = next((v for v in reg.visits(logon) if v.starts >= at), None)
            if upcoming is not None:
                raise RegisterError(f"{upcoming.person}'s visit on {upcoming.logon} (visit {upcoming.id}) has not "
                                    f"started yet (it starts {upcoming.starts.astimezone(tz):%d/%m/%Y %H:%M}): "
                                    f"cancel it instead")
            raise RegisterError(f"no one is registered on {logon} at {at:%d/%m/%Y %H:%M}")
        if visit.starts == at:
            raise RegisterError(f"{visit.person}'s visit on {visit.logon} (visit {visit.id}) starts at "
                                f"{at:%d/%m/%Y %H:%M}: ending it then would leave a visit of no length; cancel it "
                                f"instead")
        conn.execute(update(supply_register).where(supply_register.c.id == visit.id).values(ends=at))
    return Visit(visit.logon, visit.person, visit.starts, at, visit.class_taught, visit.id, visit.created_by)


def cancel_visit(engine: Engine, visit_id: int, now: dt.datetime, by: str) -> Visit:
    """Cancel a visit that has not started yet (booked by mistake, or the visitor is not coming): it leaves
    the register, and stays on file stamped with ``by`` and the time. A visit that has started is part of
    the record: end it instead."""
    with engine.begin() as conn:
        row = conn.execute(select(supply_register).where(supply_register.c.id == visit_id)).first()
        if row is None:
            raise RegisterError(f"there is no visit {visit_id}")
        if row.cancelled_at is not None:
            raise RegisterError(f"visit {visit_id} was already cancelled, by {row.cancelled_by}")
        visit = _visit(row)
        if visit.starts <= now:
            raise RegisterError(f"visit {visit_id} has already started: end it instead")
        conn.execute(update(supply_register).where(supply_register.c.id == visit_id)
                     .values(cancelled_by=by[:256], cancelled_at=dt.datetime.now(UTC)))
    return visit
