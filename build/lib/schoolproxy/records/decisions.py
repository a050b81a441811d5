"""The decision log: why the filtering policy was changed, by whom and when (the school's filtering
and monitoring review asks for it; the DfE standards expect changes to be recorded with a reason)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, insert, select

from schoolproxy.records.schema import policy_decisions

UTC = dt.timezone.utc


class DecisionError(ValueError):
    pass


def add_decision(engine: Engine, change: str, rationale: str, author: str) -> int:
    """Record one policy change; returns its number."""
    change, rationale, author = change.strip(), rationale.strip(), author.strip()
    if not change or not rationale or not author:
        raise DecisionError("a decision needs the change, the rationale and the author")
    with engine.begin() as conn:
        return conn.execute(insert(policy_decisions).values(
            time=dt.datetime.now(UTC), author=author[:256], rationale=rationale, change=change)).inserted_primary_key[0]


def list_decisions(engine: Engine, since: dt.datetime) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(policy_decisions).where(policy_decisions.c.time >= since)
                            .order_by(policy_decisions.c.time)).mappings()
        return [dict(r) for r in rows]
