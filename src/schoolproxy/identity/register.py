"""The supply and student register: who held a shared logon (``Supply1``, ``Student1``) when.

The school office registers each visit (``schoolproxy register add``); every record and alert of a
shared logon is then tied to the person who held it at that moment — or says plainly that no one was
registered. Pure: the store loads visits from the database and asks :meth:`Register.who`.
"""

from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import dataclass

NO_ONE = "(no one registered)"


@dataclass(frozen=True, slots=True)
class Visit:
    logon: str
    person: str
    starts: dt.datetime
    ends: dt.datetime | None          # None: open-ended, until ended
    class_taught: str | None = None
    id: int | None = None
    created_by: str = ""

    def covers(self, at: dt.datetime) -> bool:
        return self.starts <= at and (self.ends is None or at < self.ends)


class Register:
    def __init__(self, visits: list[Visit]):
        self._by_logon: dict[str, list[Visit]] = {}
        for v in sorted(visits, key=lambda v: v.starts):
            self._by_logon.setdefault(v.logon.lower(), []).append(v)
        self._starts = {k: [v.starts for v in vs] for k, vs in self._by_logon.items()}

    def __contains__(self, logon: str) -> bool:
        return logon.lower() in self._by_logon

    def visits(self, logon: str) -> list[Visit]:
        """The visits on ``logon``, earliest first."""
        return list(self._by_logon.get(logon.lower(), []))

    def who(self, logon: str | None, at: dt.datetime) -> Visit | None:
        """The visit covering ``at`` (the latest-starting one, if an earlier one was left open)."""
        if logon is None:
            return None
        visits = self._by_logon.get(logon.lower())
        if not visits:
            return None
        i = bisect.bisect_right(self._starts[logon.lower()], at)
        for v in reversed(visits[:i]):
            if v.covers(at):
                return v
        return None

    def overlapping(self, logon: str, starts: dt.datetime, ends: dt.datetime | None) -> Visit | None:
        """An existing visit on ``logon`` that overlaps [starts, ends) — two people cannot share a logon."""
        for v in self._by_logon.get(logon.lower(), []):
            if (ends is None or v.starts < ends) and (v.ends is None or starts < v.ends):
                return v
        return None


def is_shared_logon(identity_rule: str | None, role: str | None) -> bool:
    """A logon used by whoever is visiting today: mapped by a pattern (``Supply*``) or a supply profile."""
    return role == "supply" or bool(identity_rule and identity_rule.startswith("pattern "))
