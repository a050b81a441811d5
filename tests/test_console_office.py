"""The supply register in the console: the office adds, ends and cancels visits, stamped with their name."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from console_school import World

from schoolproxy.records.visits import add_visit, list_visits

TZ = ZoneInfo("Europe/London")


@pytest.fixture
def world(tmp_path):
    return World(tmp_path)


def day(offset: int) -> str:
    return f"{dt.datetime.now(TZ).date() + dt.timedelta(days=offset):%d/%m/%Y}"


def visits(world):
    now = dt.datetime.now(TZ)
    return list_visits(world.db, now - dt.timedelta(days=30), now + dt.timedelta(days=30))


def test_the_office_adds_a_visit_stamped_with_their_name(world):
    b = world.browser("office1")
    b.get("/register")
    r = b.post("/register/add", {"logon": "Supply1", "person": "Ms Aisha Khan", "class": "Year 4",
                                 "date": day(1), "from": "08:30", "to": "15:30"})
    assert r.status_code == 303
    b.get("/register")
    assert "Registered: Supply1 is Ms Aisha Khan" in b.last and "booked" in b.last
    [v] = visits(world)
    assert (v.logon, v.person, v.class_taught, v.created_by) == ("Supply1", "Ms Aisha Khan", "Year 4",
                                                                 "Mrs S Hughes (office1)")
    assert v.starts.astimezone(TZ).strftime("%H:%M") == "08:30"


def test_a_future_visit_can_be_cancelled_a_current_one_ended_not_the_other_way(world):
    now = dt.datetime.now(TZ)
    future = add_visit(world.db, "Supply2", "Mr B Future", now + dt.timedelta(days=2), now + dt.timedelta(days=2, hours=6),
                       None, "test")
    current = add_visit(world.db, "Supply1", "Ms C Current", now - dt.timedelta(hours=1), now + dt.timedelta(hours=5),
                        None, "test")
    b = world.browser("office1")
    b.get("/register")
    assert b.post(f"/register/{current.id}/cancel").status_code == 409 and "already started" in b.last
    assert b.post(f"/register/{future.id}/end").status_code == 409
    assert b.post(f"/register/{future.id}/cancel").status_code == 303
    b.get("/register")
    assert b.post(f"/register/{current.id}/end").status_code == 303
    left = visits(world)
    assert [v.person for v in left] == ["Ms C Current"] and left[0].ends <= dt.datetime.now(TZ)


@pytest.mark.parametrize("form,message", [
    ({"logon": "", "person": "X"}, "Both the logon and the person"), ({"date": "32/13/2026"}, "is not a date"),
    ({"from": "25:00"}, "like 08:30"), ({"from": "15:00", "to": "09:00"}, "before it starts"),
    ({"person": "A\x00B"}, "Control characters are not allowed"),
])
def test_mistakes_are_explained_and_nothing_is_added(world, form, message):
    b = world.browser("office1")
    b.get("/register")
    data = {"logon": "Supply1", "person": "Ms A Khan", "class": "", "date": day(0), "from": "08:30", "to": "15:30", **form}
    r = b.post("/register/add", data)
    assert r.status_code == 400 and message in b.last
    assert visits(world) == []


def test_two_people_cannot_hold_one_logon_at_once(world):
    b = world.browser("office1")
    b.get("/register")
    base = {"logon": "Supply1", "class": "", "date": day(1), "from": "08:30", "to": "15:30"}
    assert b.post("/register/add", {**base, "person": "First Person"}).status_code == 303
    b.get("/register")
    r = b.post("/register/add", {**base, "person": "Second Person"})
    assert r.status_code == 400 and "already registered to First Person" in b.last


def test_only_the_office_head_and_slt_keep_the_register(world):
    assert world.browser("head1").get("/register").status_code == 200
    for logon in ("dsl1", "net1", "gov1"):
        assert world.browser(logon).get("/register").status_code == 403, logon
    b = world.browser("dsl1")
    b.get("/inbox")
    assert b.post("/register/add", {"logon": "Supply1", "person": "X", "date": day(0), "from": "08:00",
                                    "to": "09:00"}).status_code == 403
    assert visits(world) == []
