"""What the request path needs from the records for unblock requests and the notice, held in memory and
refreshed off the request path: the outcomes of requests not yet told to the person who asked, who has
accepted the notice since it was last due, and the blocks shown lately (what the form asks about). The
expiring allows in force are loaded by the same refresh and go into the running snapshot.

The database is read where it is held (:func:`read_live`, in the proxy's record writer process, every
few seconds), and the answer — plain values, only what changed since the last one — is applied on the
event loop (:meth:`LiveState.apply`); :meth:`LiveState.refresh` does both at once (tests, tools). Everything
else is a dictionary or set lookup, safe on the event loop. Each answer builds new values and swaps them
in with single assignments, so a request never sees half a refresh.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import OrderedDict
from typing import NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from schoolproxy.config import Config
from schoolproxy.filtering.expiring import ExpiringOverrides
from schoolproxy.records import notice as notice_log
from schoolproxy.records import unblock as unblock_log
from schoolproxy.standards import notice
from schoolproxy.standards.pages import Blocked

log = logging.getLogger(__name__)
UTC = dt.timezone.utc
RECENT_BLOCKS = 20_000
#: How far back an outcome is still worth telling.
TELL_FOR = dt.timedelta(days=30)
#: Once seen, an outcome stays on the site's block page this long: a browser may load a page more than once
#: (a retry, another tab, its own HTTPS attempt first), and the pupil should not miss it.
SHOW_FOR = dt.timedelta(minutes=30)


class Outcome(NamedTuple):
    id: int
    status: str                 # approved | refused
    decided_at: dt.datetime
    note: str
    expires_at: dt.datetime | None
    told: bool = False          # already marked as seen in the database


class LiveState:
    def __init__(self) -> None:
        self._outcomes: dict[tuple[str, str], Outcome] = {}
        self._accepted: frozenset[tuple[str, str]] = frozenset()
        self._accepted_here: set[tuple[str, str]] = set()   # since the last refresh, by this process
        self.notice_since: dt.datetime | None = None
        self._recent: OrderedDict[str, Blocked] = OrderedDict()
        #: Outcomes shown on a block page, not yet marked as told in the database.
        self._told: set[int] = set()
        self.loaded = False

    # -- the request path -------------------------------------------------------------------------------
    def outcome_for(self, username: str | None, host: str) -> Outcome | None:
        if not username or not self._outcomes:
            return None
        found = self._outcomes.get((username.lower(), host))
        if found is not None and not found.told:
            self._told.add(found.id)
        return found

    def has_accepted(self, subject: str, version: str) -> bool:
        key = (subject, version)
        return key in self._accepted or key in self._accepted_here

    def accepted(self, subject: str, version: str) -> None:
        self._accepted_here.add((subject, version))

    def remember_block(self, block: Blocked) -> None:
        recent = self._recent
        recent[block.ref] = block
        if len(recent) > RECENT_BLOCKS:
            recent.popitem(last=False)

    def recent(self, ref: str) -> Blocked | None:
        return self._recent.get(ref)

    # -- off the request path -------------------------------------------------------------------------
    def take_told(self) -> list[int]:
        """The outcomes shown on a block page since the last call, for :func:`read_live` to mark as told."""
        told, self._told = self._told, set()
        return sorted(told)

    def apply(self, live: dict, tz: dt.tzinfo) -> ExpiringOverrides | None:
        """Take an answer of :func:`read_live` (the parts that changed); returns the expiring allows now in
        force if they changed."""
        if "outcomes" in live:
            self._outcomes = {(username, host): Outcome(i, status, _time(decided), note, _time(expires), told)
                              for username, host, i, status, decided, note, expires, told in live["outcomes"]}
        if "accepted" in live:
            part = live["accepted"]
            if "subjects" in part:
                accepted = frozenset(map(tuple, part["subjects"]))
            else:  # what was added and removed since the last answer
                accepted = self._accepted.difference(map(tuple, part["removed"])).union(map(tuple, part["added"]))
            here = self._accepted_here
            self._accepted, self.notice_since = accepted, _time(part["since"])
            self._accepted_here = {k for k in here if k not in accepted}
        self.loaded = True
        if "overrides" not in live:
            return None
        return ExpiringOverrides([{**row, "expires_at": _time(row["expires_at"])} for row in live["overrides"]], tz)

    def refresh(self, db: Engine, config: Config, now: dt.datetime | None = None) -> ExpiringOverrides:
        """Reload from the database here; returns the expiring allows now in force."""
        now = now or dt.datetime.now(UTC)
        since = notice.renewal_start(config, now) if config.notice.enabled else None
        expiring = self.apply(read_live(db, self.take_told(), since, now), ZoneInfo(config.timezone))
        assert expiring is not None
        return expiring


def read_live(db: Engine, told: list[int], notice_since: dt.datetime | None,
              now: dt.datetime | None = None) -> dict:
    """Mark the outcomes in ``told`` as seen, and read what :meth:`LiveState.apply` takes, as plain values:
    the expiring allows in force, the outcomes to tell, and (with ``notice_since``) the acceptances of the
    notice since it was last due."""
    now = now or dt.datetime.now(UTC)
    unblock_log.mark_told(db, told)
    live: dict = {"overrides": [
        {"id": r["id"], "site": r["site"], "action": r["action"], "scope": r["scope"],
         "scope_value": r["scope_value"], "expires_at": _iso(r["expires_at"]), "author": r["author"],
         "rationale": r["rationale"]}
        for r in unblock_log.active_overrides(db, now)]}
    live["outcomes"] = [
        [r["username"].lower(), r["host"], r["id"], r["status"], _iso(r["decided_at"]), r["note"] or "",
         _iso(r["expires_at"]), r["told_at"] is not None or r["id"] in told]
        for r in unblock_log.outcomes_to_tell(db, now - TELL_FOR, now - SHOW_FOR)]
    if notice_since is not None:
        live["accepted"] = {"since": notice_since.isoformat(),
                            "subjects": sorted(notice_log.accepted_since(db, notice_since))}
    return live


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else unblock_log.aware(t).isoformat()


def _time(iso: str | None) -> dt.datetime | None:
    return None if iso is None else dt.datetime.fromisoformat(iso)


def outcome_text(outcome: Outcome, tz: ZoneInfo, now: dt.datetime) -> str:
    """What the block page tells the person who asked."""
    asked = "You asked for this page to be checked."
    if outcome.status == "refused":
        return (f"{asked} On {outcome.decided_at.astimezone(tz):%A %d %B} the answer was no"
                + (f": “{outcome.note}”" if outcome.note else "."))
    if outcome.expires_at is not None and outcome.expires_at <= now:
        return f"{asked} It was allowed until {outcome.expires_at.astimezone(tz):%H:%M on %A %d %B}. That time is over."
    return f"{asked} It was allowed, but not this page. Ask your teacher."
