"""What the request path reads from the records about unblock requests and the notice: outcomes told for
a while from when they are first seen, acceptances counted at once, recent blocks bounded."""

from __future__ import annotations

import datetime as dt

from test_unblock import ask, world  # noqa: F401 (world: the test school's snapshot and database)

from schoolproxy.records import unblock as store
from schoolproxy.records.notice import record_acceptance
from schoolproxy.standards import live as live_module
from schoolproxy.standards import unblock
from schoolproxy.standards.live import LiveState, outcome_text
from schoolproxy.standards.pages import Blocked

UTC = dt.timezone.utc


def test_an_outcome_is_told_on_the_block_page_for_half_an_hour_from_when_it_is_first_seen(world):
    snap, db = world
    r = ask(db)
    unblock.refuse(db, snap, r["ref"], "clawrence", "Use the class blog")
    state = LiveState()
    state.refresh(db, snap.config)
    told = state.outcome_for("PUPIL1", "socialsite.test")
    assert told is not None and told.status == "refused" and told.note == "Use the class blog"
    assert state.outcome_for("pupil1", "other.test") is None
    state.refresh(db, snap.config)                                      # marks it seen, first time kept
    first = store.get_request(db, r["ref"])["told_at"]
    assert first is not None
    assert state.outcome_for("pupil1", "socialsite.test").told         # a reload or another tab still shows it
    state.refresh(db, snap.config)
    assert store.get_request(db, r["ref"])["told_at"] == first
    later = store.aware(first) + live_module.SHOW_FOR + dt.timedelta(seconds=1)
    state.refresh(db, snap.config, now=later)
    assert state.outcome_for("pupil1", "socialsite.test") is None      # and then no more


def test_the_expiring_allows_come_with_each_refresh(world):
    snap, db = world
    assert len(LiveState().refresh(db, snap.config)) == 0
    unblock.approve(db, snap, ask(db)["ref"], "clawrence", "day", "Project")
    assert len(LiveState().refresh(db, snap.config)) == 1


def test_an_acceptance_counts_at_once_here_and_after_the_refresh_everywhere(world):
    snap, db = world
    state = LiveState()
    state.refresh(db, snap.config)
    assert not state.has_accepted("pupil1", "v1")
    state.accepted("pupil1", "v1")
    assert state.has_accepted("pupil1", "v1")
    other = LiveState()
    record_acceptance(db, "pupil1", "pupil1", "pupil", "10.0.0.7", "v1")
    other.refresh(db, snap.config)
    assert other.has_accepted("pupil1", "v1") and not other.has_accepted("pupil1", "v2")


def test_recent_blocks_are_bounded(monkeypatch):
    monkeypatch.setattr(live_module, "RECENT_BLOCKS", 3)
    state = LiveState()
    for i in range(5):
        state.remember_block(Blocked(f"R{i}", "pupil1", "pupil", "x.test", "http://x.test/", "category:games", "games"))
    assert state.recent("R0") is None and state.recent("R4") is not None


def test_outcome_words():
    tz = dt.timezone.utc
    now = dt.datetime(2026, 11, 25, 12, 0, tzinfo=tz)
    refused = live_module.Outcome(1, "refused", now, "Use the blog", None)
    over = live_module.Outcome(2, "approved", now, "", now - dt.timedelta(minutes=5))
    assert outcome_text(refused, tz, now).endswith("the answer was no: “Use the blog”")
    assert "It was allowed until 11:55 on Wednesday 25 November. That time is over." in outcome_text(over, tz, now)
