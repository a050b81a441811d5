"""One person's browsing: found by logon or name, never named in the address, audited, and only for
those whose concerns the person's are."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from console_school import World, add_record

UTC = dt.timezone.utc


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    now = dt.datetime.now(UTC)
    add_record(w.db, host="www.bbc.co.uk", path="/bitesize", when=now - dt.timedelta(days=1))
    add_record(w.db, host="www.google.com", path="/search?q=volcano", search_term="volcano facts",
               when=now - dt.timedelta(days=1, minutes=-5))
    add_record(w.db, host="www.tiktok.com", action="block", rule="category:social-networking",
               categories=("social-networking",), when=now - dt.timedelta(hours=1))
    add_record(w.db, host="staffroom.test", username="teacher1", profile="staff", when=now)
    return w


def today(days_ago: int = 0) -> str:
    return f"{dt.datetime.now(UTC).date() - dt.timedelta(days=days_ago):%d/%m/%Y}"


def find(b, who: str, start: str | None = None, end: str | None = None, **extra):
    b.get("/people")
    return b.post("/people", {"who": who, "from": start or today(6), "to": end or today(), **extra})


def test_by_logon_searches_first_then_day_by_day_and_nothing_in_the_address(world):
    b = world.browser("dsl1")
    r = find(b, "pupil1")
    assert r.status_code == 303
    where = r.headers["Location"]
    assert re.fullmatch(r"/people/v/[\w-]{10,40}", where) and "pupil1" not in where
    b.get(where)
    page = b.last
    assert "Jamie Smith (Year 4)" in page and page.index("Searches (1)") < page.index("Browsing, day by day")
    assert "volcano facts" in page and "www.tiktok.com" in page and "Blocked" in page
    assert re.search(r"(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday) \d\d/\d\d/\d{4}", page)
    audit = world.audit_rows()[-1]
    assert (audit["viewer"], audit["subject"]) == ("Mrs D Lawrence (dsl1)", "pupil1")
    assert audit["what"] == f"browsing {today(6)} to {today()}"


def test_by_name_from_the_mis_export_and_a_choice_when_several_match(world):
    b = world.browser("dsl1")
    r = find(b, "jamie")
    assert r.status_code == 200 and "More than one person matches" in b.last
    assert "Jamie Smith (Year 4) — logon pupil1" in b.last and "Jamie Jones (Year 6) — logon pupil2" in b.last
    r = b.post("/people", {"who": "jamie", "logon": "pupil1", "from": today(6), "to": today()})
    assert r.status_code == 303
    assert find(b, "Jamie Smith").status_code == 303


def test_a_teachers_browsing_is_not_for_the_dsl(world):
    b = world.browser("dsl1")
    r = find(b, "teacher1")
    assert r.status_code == 303
    r = b.get(r.headers["Location"])
    assert r.status_code == 403 and "staffroom.test" not in b.last
    assert world.audit_rows()[-1]["what"].startswith("REFUSED: browsing")
    head = world.browser("head1")
    r = find(head, "teacher1")
    head.get(r.headers["Location"])
    assert "staffroom.test" in head.last


def test_someone_whose_records_say_staff_is_not_shown_to_the_dsl_whatever_the_config_says(world):
    add_record(world.db, host="private.test", username="newteacher", profile="staff")   # not in the config
    b = world.browser("dsl1")
    r = find(b, "newteacher")
    assert b.get(r.headers["Location"]).status_code == 403


def test_a_view_belongs_to_the_session_that_made_it(world):
    b = world.browser("dsl1")
    where = find(b, "pupil1").headers["Location"]
    other = world.browser("lead1")
    r = other.get(where)
    assert r.status_code == 404 and "volcano" not in other.last


@pytest.mark.parametrize("who,start,end,message", [
    ("pupil1", "31/02/2026", None, "is not a date"), ("pupil1", None, "yesterday", "is not a date"),
    ("pupil1", today(1), today(5), "on or before"), ("pupil1", today(200), None, "at most 92 days"),
    ("", None, None, "Type the person"), ("nobody-here", None, None, "No one with that logon or name"),
    ("<script>alert(1)</script>", None, None, "No one with that logon or name"),
])
def test_bad_searches_say_what_is_wrong(world, who, start, end, message):
    b = world.browser("dsl1")
    r = find(b, who, start, end)
    assert r.status_code in (400, 404) and message in b.last
    assert "<script>alert(1)" not in b.last


def test_only_those_with_an_inbox_may_look_anyone_up(world):
    for logon in ("net1", "gov1", "office1"):
        b = world.browser(logon)
        assert b.get("/people").status_code == 403
        b.get("/decisions" if logon != "office1" else "/register")   # a page with the person's CSRF token
        assert b.post("/people", {"who": "pupil1", "from": today(6), "to": today()}).status_code == 403
