"""Expiring overrides as the request path sees them: for whom, where, and until when."""

from __future__ import annotations

import datetime as dt

import pytest

from schoolproxy.filtering.expiring import NONE, ExpiringOverrides
from schoolproxy.filtering.policy import Decision
from schoolproxy.identity.profiles import Identity

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
PUPIL = Identity("pupil1", "pupil", "proxy-auth", "group year4")
OTHER = Identity("pupil2", "pupil", "proxy-auth", "group year3")
BLOCK = Decision("block", "category:games", "games is blocked for pupil", 4)


def row(i, site, scope, value, minutes=60, **kw):
    return {"id": i, "site": site, "scope": scope, "scope_value": value, "action": "allow", "author": "Mrs C Lawrence",
            "rationale": "Maths lesson", "expires_at": T0 + dt.timedelta(minutes=minutes), "revoked_at": None, **kw}


def at(minutes):
    return (T0 + dt.timedelta(minutes=minutes)).timestamp()


@pytest.mark.parametrize("scope, value, pupil, other", [
    ("profile", "pupil", True, True),
    ("group", "year4", True, False),
    ("user", "PUPIL1", True, False),
])
def test_scope(scope, value, pupil, other):
    o = ExpiringOverrides([row(1, "gamesite.test", scope, value)])
    assert (o.match(PUPIL, "gamesite.test", "/", at(0)) is not None) == pupil
    assert (o.match(OTHER, "gamesite.test", "/", at(0)) is not None) == other


def test_site_covers_subdomains_and_a_path_only_its_prefix():
    o = ExpiringOverrides([row(1, "gamesite.test/maths", "profile", "pupil"), row(2, "video.test", "profile", "pupil")])
    assert o.match(PUPIL, "gamesite.test", "/maths/tables", at(0)).id == 1
    assert o.match(PUPIL, "gamesite.test", "/mathsx", at(0)) is None
    assert o.match(PUPIL, "gamesite.test", "/", at(0)) is None
    assert o.match(PUPIL, "www.video.test", "/", at(0)).id == 2


def test_it_expires_by_itself_on_the_next_request():
    o = ExpiringOverrides([row(1, "gamesite.test", "profile", "pupil", minutes=60)])
    d = o.apply(BLOCK, PUPIL, "gamesite.test", "/", at(59))
    assert (d.action, d.rule) == ("allow", "expiring[1]:gamesite.test") and "Mrs C Lawrence" in d.reason
    assert o.apply(BLOCK, PUPIL, "gamesite.test", "/", at(60)) is BLOCK


def test_the_longest_lasting_of_two_wins():
    o = ExpiringOverrides([row(1, "gamesite.test", "profile", "pupil", 30), row(2, "gamesite.test", "profile", "pupil", 90)])
    assert o.match(PUPIL, "gamesite.test", "/", at(45)).id == 2


@pytest.mark.parametrize("rule", ["locked:child-abuse", "override[0]:learning.test/forum", "invalid-host", "error",
                                  "unknown-profile", "connect-port"])
def test_never_changes_what_it_may_not(rule):
    o = ExpiringOverrides([row(1, "gamesite.test", "profile", "pupil")])
    d = Decision("block", rule, "x", 1)
    assert o.apply(d, PUPIL, "gamesite.test", "/", at(0)) is d


@pytest.mark.parametrize("rule", ["category:games", "window:lunchtime:category:games", "default:guest"])
def test_changes_category_rules_and_defaults(rule):
    o = ExpiringOverrides([row(1, "gamesite.test", "profile", "pupil")])
    assert o.apply(Decision("block", rule, "x", 1), PUPIL, "gamesite.test", "/", at(0)).action == "allow"


def test_revoked_and_unparseable_rows_are_left_out():
    o = ExpiringOverrides([row(1, "gamesite.test", "profile", "pupil", revoked_at=T0), row(2, "exa mple", "profile", "pupil")])
    assert not o and len(o) == 0 and not NONE


def test_trace_says_why():
    trace: list[str] = []
    ExpiringOverrides([row(7, "gamesite.test", "group", "year4")]).apply(BLOCK, PUPIL, "gamesite.test", "/", at(0), trace)
    assert 'expiring allow expiring[7]:gamesite.test: allowed for group year4 until Wed 25 Nov 11:00 — "Maths lesson"' \
        in trace[0]
