"""The weekly report, the decision log, the health page and the access audit in the console."""

from __future__ import annotations

import datetime as dt

import pytest
from console_school import World, add_record
from sqlalchemy import update

from schoolproxy.monitoring import store
from schoolproxy.records.schema import alerts


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    w.pupil = w.alert()
    w.staff = w.alert(role="staff", username="teacher1", term="how to kill myself tonight")
    add_record(w.db, host="www.tiktok.com", action="block", rule="category:social-networking",
               categories=("social-networking",))
    return w


def test_governors_see_figures_and_never_a_name(world):
    b = world.browser("gov1")
    assert b.get("/weekly").status_code == 200
    page = b.last
    assert "concerns raised" in page and "Self-harm and suicide" in page and "social networking" in page
    for secret in ("pupil1", "Jamie", "teacher1", "kill", world.pupil["ref"]):
        assert secret not in page, secret
    assert b.get("/inbox").status_code == 403
    assert b.get(f"/alerts/{world.pupil['ref']}").status_code == 403


def test_the_dsl_weekly_report_lists_only_the_concerns_that_are_theirs(world):
    b = world.browser("dsl1")
    b.get("/weekly")
    assert "Jamie Smith (Year 4) searched" in b.last and "teacher1" not in b.last and "tonight" not in b.last
    assert b.get("/weekly?weeks_ago=52").status_code == 200 and b.get("/weekly?weeks_ago=53").status_code == 400


def test_the_network_manager_sees_health_never_browsing(world):
    b = world.browser("net1")
    assert b.get("/health").status_code == 200
    page = b.last
    for name in ("The filter (proxy)", "Alert delivery", "Records of browsing", "School directory", "Filter lists",
                 "Certificates"):
        assert name in page
    assert "pupil1" not in page and "kill" not in page and "Jamie" not in page
    for path in ("/inbox", f"/alerts/{world.pupil['ref']}", "/people", "/audit", "/export"):
        assert b.get(path).status_code == 403, path


def test_decisions_are_recorded_with_who_and_why(world):
    b = world.browser("net1")
    b.get("/decisions")
    r = b.post("/decisions", {"change": "Allow scratch.mit.edu for pupils", "why": ""})
    assert r.status_code == 400 and "why" in b.last
    assert b.post("/decisions", {"change": "Allow scratch.mit.edu for pupils",
                                 "why": "Computing curriculum, Year 3-6"}).status_code == 303
    gov = world.browser("gov1")
    gov.get("/decisions")
    assert "Allow scratch.mit.edu for pupils" in gov.last and "decided by Mr T Evans (net1)" in gov.last
    assert "Record a decision" not in gov.last
    assert gov.post("/decisions", {"change": "x", "why": "because"}).status_code == 403
    assert world.browser("office1").get("/decisions").status_code == 403


def test_the_access_audit_shows_each_view_to_those_whose_concerns_they_are(world):
    world.browser("dsl1").get(f"/alerts/{world.pupil['ref']}")
    world.browser("head1").get(f"/alerts/{world.staff['ref']}")
    dsl = world.browser("dsl1")
    dsl.get("/audit")
    assert "Mrs D Lawrence (dsl1)</strong> looked at <strong>Jamie Smith (Year 4)" in dsl.last
    assert "teacher1" not in dsl.last and "Mr R Patel" not in dsl.last    # the head's look into a teacher: not theirs
    head = world.browser("head1")
    head.get("/audit")
    assert "Mr R Patel (head1)</strong> looked at <strong>teacher1" in head.last
    assert "Jamie Smith" not in head.last
    for logon in ("lead1", "net1", "gov1", "office1"):
        assert world.browser(logon).get("/audit").status_code == 403, logon


@pytest.mark.parametrize("logon,page", [("office1", "/register"), ("gov1", "/weekly"), ("net1", "/health"),
                                        ("dsl1", "/inbox"), ("head1", "/decisions")])
def test_the_red_banner_is_on_every_page_while_high_alerts_reach_no_one(world, logon, page):
    b = world.browser(logon)
    b.get(page)
    assert "High alerts are not reaching anyone" in b.last and 'role="alert"' in b.last


def test_no_banner_once_alerts_are_delivered(tmp_path):
    w = World(tmp_path, alerts_extra="""\
        recipients: {dsl: [dsl@school.test], computing_lead: [cl@school.test], head: [head@school.test], slt: [s@school.test]}
        smtp: {host: 127.0.0.1, port: 2525, security: none, from: filter@school.test}
        """)
    b = w.browser("office1")
    b.get("/register")
    assert "High alerts are not reaching anyone" not in b.last
    a = w.alert()
    with w.db.begin() as conn:   # raised ten minutes ago and still not sent
        conn.execute(update(alerts).values(time=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10)))
    b.get("/register")
    assert "1 high or critical alert has not reached anyone" in b.last
    for row in store.due(w.db):
        store.mark_sent(w.db, row["id"])
    b.get("/register")
    assert "High alerts are not reaching anyone" not in b.last
    assert a["ref"] not in b.last
