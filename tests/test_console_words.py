"""The console's words: one plain line per alert, why it fired, a readable timeline, UK dates."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from schoolproxy.console import words

TZ = ZoneInfo("Europe/London")
UTC = dt.timezone.utc
TODAY = dt.date(2026, 12, 2)
T = dt.datetime(2026, 12, 2, 10, 42, tzinfo=UTC)


def alert(**kw):
    base = {"ref": "1BMA-00G2-7Q1X", "time": T, "theme": "self-harm", "severity": "high", "rule": "search-phrases",
            "search_term": "how to kill myself", "evidence": 'searched for "how to kill myself" on google',
            "device": "ICT-07", "username": "jsmith", "profile": "pupil", "repeats": 0, "score": 120}
    base.update(kw)
    return base


def test_the_line_a_dsl_reads_in_the_inbox():
    line = words.alert_line(alert(), "Jamie Smith (Year 4)", {"host": "www.google.co.uk"}, TZ, TODAY)
    assert line == "Jamie Smith (Year 4) searched 'how to kill myself' on Google at 10:42, PC ICT-07 — self-harm, high"


def test_lines_for_visits_circumvention_and_the_upstream_filter():
    visit = alert(rule="category:adult", theme="pornography", search_term=None,
                  evidence="tried to visit adultsite.test (category adult)", device=None)
    assert words.alert_line(visit, "jsmith", None, TZ, TODAY) == \
        "jsmith tried to visit adultsite.test (adult content) at 10:42 — pornography, high"
    upstream = alert(rule="upstream-block", theme="upstream-block", severity="critical", search_term=None,
                     evidence="the upstream filter blocked bad.test (record X); the content is not kept or shown here")
    assert "was stopped by the school's upstream filter at bad.test" in \
        words.alert_line(upstream, "jsmith", None, TZ, TODAY)
    assert words.alert_line(upstream, "jsmith", None, TZ, TODAY).endswith("possibly illegal content, critical")
    tunnel = alert(rule="bare-ip", theme="circumvention", severity="medium", search_term=None,
                   evidence="opened a tunnel to the bare IP address 1.2.3.4:443")
    assert words.alert_line(tunnel, "jsmith", None, TZ, TODAY).startswith(
        "jsmith opened a tunnel to the bare IP address 1.2.3.4:443 at 10:42")


def test_when_is_said_as_a_teacher_would():
    assert words.moment(T, TZ, TODAY) == "10:42"
    assert words.moment(T, TZ, TODAY + dt.timedelta(days=1)) == "10:42 yesterday"
    assert words.moment(T, TZ, TODAY + dt.timedelta(days=9)) == "10:42 on 02/12/2026"
    assert words.moment(T, TZ, None) == "10:42 on 02/12/2026"
    summer = dt.datetime(2026, 7, 1, 9, 5, tzinfo=UTC)
    assert words.uk_datetime(summer, TZ) == "01/07/2026 10:05"       # British Summer Time


@pytest.mark.parametrize("text,day", [("02/12/2026", dt.date(2026, 12, 2)), ("2/12/26", dt.date(2026, 12, 2)),
                                      ("02-12-2026", dt.date(2026, 12, 2)), ("2026-12-02", dt.date(2026, 12, 2))])
def test_uk_dates_are_read(text, day):
    assert words.parse_uk_date(text) == day


@pytest.mark.parametrize("text", ["12/31/2026", "31/02/2026", "tomorrow", "", "<script>", "9" * 500])
def test_a_date_that_is_not_one_says_how_to_write_it(text):
    with pytest.raises(ValueError, match="dd/mm/yyyy"):
        words.parse_uk_date(text)


def test_inbox_order_newest_day_first_and_most_severe_first_within_a_day():
    a = [alert(ref="low-now", severity="low", time=T), alert(ref="high-earlier", severity="high", time=T - dt.timedelta(hours=2)),
         alert(ref="critical-yesterday", severity="critical", time=T - dt.timedelta(days=1)),
         alert(ref="high-later", severity="high", time=T + dt.timedelta(minutes=5))]
    assert [x["ref"] for x in words.sort_inbox(a)] == ["high-later", "high-earlier", "low-now", "critical-yesterday"]


def test_why_in_plain_words_never_names_the_matched_phrases():
    reasons = words.why(alert(repeats=3, evidence='searched for "x" (matched: nudesy; score 120)'), 60, 60, True)
    text = " ".join(reasons)
    assert "watch list for self-harm and suicide" in text and "scored 120" in text and "at 60" in text
    assert "3 more times within 60 minutes" in text and "sent to the people responsible at once" in text
    assert "nudesy" not in text


def rec(minute, host="www.bbc.co.uk", **kw):
    return {"time": T + dt.timedelta(minutes=minute), "host": host, "path": "/a/b?x=1", "action": "allow",
            "category": "", "categories": "", "rule": "default", "search_term": None, "ref": f"R{minute}", **kw}


def test_timeline_merges_repeated_requests_and_keeps_every_search():
    rows = [rec(0), rec(0.5), rec(1), rec(2, "www.google.com", search_term="volcano facts"),
            rec(3, "www.google.com", search_term="how to kill myself", ref="RAISED"), rec(4), rec(9)]
    entries = words.timeline(rows, frozenset(), raised_ref="RAISED")
    assert [(e.kind, e.host, e.count) for e in entries] == [
        ("visit", "www.bbc.co.uk", 3), ("search", "www.google.com", 1), ("search", "www.google.com", 1),
        ("visit", "www.bbc.co.uk", 1), ("visit", "www.bbc.co.uk", 1)]
    assert entries[2].raised and entries[2].term == "how to kill myself" and entries[2].detail == "Google"
    assert entries[3].detail == "/a/b"           # a single visit shows its path, never the query


def test_adult_and_upstream_blocked_records_show_host_and_time_only():
    rows = [rec(0, "adultsite.test", category="adult", categories="adult", path="/explicit/thing", action="block"),
            rec(1, "iwf.test", rule="upstream-block", path="/illegal/path"),
            rec(2, "adultsite.test", categories="adult", search_term="something", path="/search?q=something")]
    entries = words.timeline(rows, frozenset({"adult"}))
    assert all(e.hidden and e.detail == "" and e.term == "" for e in entries)
    assert "explicit" not in repr(entries) and "illegal" not in repr(entries) and "something" not in repr(entries)


def test_terminal_escapes_and_bidi_overrides_become_visible_text():
    assert words.plain("red\x1b[31mtext\u202eevil\x00") == "red?[31mtext?evil?"
    assert words.plain("a" * 300, 10) == "a" * 9 + "…"


def test_a_search_alert_never_shows_the_phrases_matched_only_what_was_typed():
    a = alert(search_term=None, evidence='searched for "nudes" (matched: nudesy, send nudes; score 90)')
    line = words.alert_line(a, "jsmith", {"host": "www.google.com"}, TZ, TODAY)
    assert "nudesy" not in line and "searched for words on the watch list on Google" in line
