"""Acceptances of the acceptable-use notice: who accepted, when, and which version of the text."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, func, insert, select

from schoolproxy.records.schema import notice_acceptances

UTC = dt.timezone.utc


def record_acceptance(engine: Engine, subject: str, username: str | None, profile: str, client_ip: str,
                      version: str, when: dt.datetime | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(insert(notice_acceptances).values(
            time=when or dt.datetime.now(UTC), subject=subject[:300], username=username[:256] if username else None,
            profile=profile[:64], client_ip=client_ip[:64], version=version[:16]))


def accepted_since(engine: Engine, since: dt.datetime) -> set[tuple[str, str]]:
    """(subject, version) of every acceptance since a moment."""
    with engine.connect() as conn:
        return {(s, v) for s, v in conn.execute(
            select(notice_acceptances.c.subject, notice_acceptances.c.version)
            .where(notice_acceptances.c.time >= since).distinct())}


def acceptances(engine: Engine, since: dt.datetime, limit: int = 10_000) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(notice_acceptances).where(notice_acceptances.c.time >= since)
                                              .order_by(notice_acceptances.c.time).limit(limit)).mappings()]


def counts_by_profile(engine: Engine, since: dt.datetime) -> dict[str, int]:
    """How many different users (or devices) accepted since a moment, per profile."""
    with engine.connect() as conn:
        return dict(conn.execute(select(notice_acceptances.c.profile,
                                        func.count(func.distinct(notice_acceptances.c.subject)))
                                 .where(notice_acceptances.c.time >= since)
                                 .group_by(notice_acceptances.c.profile)).all())
