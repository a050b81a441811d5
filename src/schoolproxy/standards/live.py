"""What the request path needs from the records for unblock requests and the notice, held in memory and
refreshed off the request path: the outcomes of requests not yet told to the person who asked, who has
accepted the notice since it was last due, and the blocks shown lately (what the form asks about). The
expiring allows in force are loaded by the same refresh and go into the running snapshot.

:meth:`LiveState.refresh` reads the database (run it in a thread, every few seconds); everything else is
a dictionary or set lookup, safe on the event loop. Each refresh builds new values and swaps them in
with single assignments, so a request never sees half a refresh.
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
    def refresh(self, db: Engine, config: Config, now: dt.datetime | None = None) -> ExpiringOverrides:
        """Reload from the database; returns the expiring allows now in force."""
        now = now or dt.datetime.now(UTC)
        told = set(self._told)
        unblock_log.mark_told(db, sorted(told))
        rows = unblock_log.active_overrides(db, now)
        overrides = ExpiringOverrides(rows, ZoneInfo(config.timezone))
        outcomes = {}
        for r in unblock_log.outcomes_to_tell(db, now - TELL_FOR, now - SHOW_FOR):
            outcomes[(r["username"].lower(), r["host"])] = Outcome(
                r["id"], r["status"], unblock_log.aware(r["decided_at"]), r["note"] or "",
                unblock_log.aware(r["expires_at"]) if r["expires_at"] else None,
                r["told_at"] is not None or r["id"] in told)
        self._outcomes = outcomes
        self._told -= told  # marked in the database
        if config.notice.enabled:
            since = notice.renewal_start(config, now)
            accepted = frozenset(notice_log.accepted_since(db, since))
            here = self._accepted_here
            self._accepted, self.notice_since = accepted, since
            self._accepted_here = {k for k in here if k not in accepted}
        self.loaded = True
        return overrides


def outcome_text(outcome: Outcome, tz: ZoneInfo, now: dt.datetime) -> str:
    """What the block page tells the person who asked."""
    asked = "You asked for this page to be checked."
    if outcome.status == "refused":
        return (f"{asked} On {outcome.decided_at.astimezone(tz):%A %d %B} the answer was no"
                + (f": “{outcome.note}”" if outcome.note else "."))
    if outcome.expires_at is not None and outcome.expires_at <= now:
        return f"{asked} It was allowed until {outcome.expires_at.astimezone(tz):%H:%M on %A %d %B}. That time is over."
    return f"{asked} It was allowed, but not this page. Ask your teacher."
