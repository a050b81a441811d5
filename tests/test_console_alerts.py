"""The inbox, an alert in full, the incident log and the exports: who sees which concern (enforced on
the server, by URL too), what they see, and what is recorded about their looking."""

from __future__ import annotations

import csv
import datetime as dt
import io
from zoneinfo import ZoneInfo

import pytest
from console_school import World, add_record, run_service, search

from schoolproxy.monitoring import store

UTC = dt.timezone.utc
ROLES = ("dsl1", "lead1", "head1", "chair1", "net1", "gov1", "office1")


@pytest.fixture
def world(tmp_path):
    return World(tmp_path)


def opens(world, ref: str) -> set[str]:
    return {u for u in ROLES if world.browser(u).get(f"/alerts/{ref}").status_code == 200}


def in_inbox(world, ref: str) -> set[str]:
    seen = set()
    for u in ROLES:
        b = world.browser(u)
        if b.get("/inbox").status_code == 200 and ref in b.last:
            seen.add(u)
    return seen


def test_a_pupil_concern_is_for_the_dsl_and_the_computing_lead_only(world):
    a = world.alert()
    assert opens(world, a["ref"]) == {"dsl1", "lead1"}
    assert in_inbox(world, a["ref"]) == {"dsl1", "lead1"}


def test_a_staff_concern_is_for_the_head_only_by_url_too(world):
    a = world.alert(role="staff", username="teacher1")
    assert opens(world, a["ref"]) == {"head1"}
    assert in_inbox(world, a["ref"]) == {"head1"}
    b = world.browser("dsl1")
    r = b.get(f"/alerts/{a['ref']}")
    assert r.status_code == 403 and "teacher1" not in b.last and "kill" not in b.last
    b.get("/inbox")
    assert r.status_code == 403
    nothing = b.get("/alerts/ZZZZ-ZZZZ-ZZZZ")                     # no such alert: the very same refusal
    assert nothing.status_code == 403 and "Not in your inbox" in b.last


def test_a_concern_about_the_head_goes_to_the_chair_of_governors(world):
    a = world.alert(role="staff", username="head1", profile="staff")
    assert opens(world, a["ref"]) == {"chair1"}


def test_actions_on_an_alert_you_cannot_open_are_refused_and_change_nothing(world):
    a = world.alert(role="staff", username="teacher1")
    b = world.browser("dsl1")
    b.get("/inbox")
    for action in ("ack", "action", "close", "note"):
        r = b.post(f"/alerts/{a['ref']}/{action}", {"note": "closing it quietly"})
        assert r.status_code == 403
    assert world.alert_row(a["ref"])["status"] == "new"
    assert store.get_alert(world.db, a["ref"])[1] == []


def test_the_inbox_line_names_the_pupil_and_class(world):
    world.alert(device="ICT-07")
    b = world.browser("dsl1")
    b.get("/inbox")
    assert "Jamie Smith (Year 4) searched &#39;how to kill myself&#39; on Google at" in b.last
    assert ", PC ICT-07 — self-harm, high" in b.last


def test_the_alert_shows_its_timeline_with_searches_and_hides_adult_content(world):
    now = dt.datetime.now(UTC)
    add_record(world.db, host="www.bbc.co.uk", path="/bitesize", when=now - dt.timedelta(minutes=20))
    add_record(world.db, host="www.google.com", path="/search?q=sad", search_term="why am i always sad",
               when=now - dt.timedelta(minutes=10))
    add_record(world.db, host="adultsite.test", path="/explicit-video-name", action="block", rule="category:adult",
               categories=("adult",), when=now - dt.timedelta(minutes=5))
    add_record(world.db, host="www.bbc.co.uk", path="/far-away", when=now - dt.timedelta(minutes=50))
    add_record(world.db, host="www.other-pupil.test", username="pupil2", when=now - dt.timedelta(minutes=3))
    a = world.alert(when=now)
    b = world.browser("dsl1")
    b.get(f"/alerts/{a['ref']}")
    page = b.last
    assert "why am i always sad" in page and "this raised the alert" in page and "/bitesize" in page
    assert "adultsite.test" in page and "explicit-video-name" not in page
    assert "far-away" not in page and "other-pupil" not in page
    b.get(f"/alerts/{a['ref']}?minutes=60")
    assert "far-away" in b.last
    assert "<a href=\"http" not in b.last and "href=\"https://www.bbc" not in b.last     # never a live link


def test_hostile_search_terms_and_urls_are_inert_text(world):
    term = "how to kill myself <script>alert(1)</script><img src=x onerror=alert(2)>"
    a = world.alert(term=term)
    add_record(world.db, host="evil.test", path="/\x1b[31mred\x1b]8;;http://x\x07link\u202eevil<script>x()</script>")
    b = world.browser("dsl1")
    for path in ("/inbox", f"/alerts/{a['ref']}"):
        b.get(path)
        assert "<script>alert(1)" not in b.last and "<img src=x" not in b.last and "\x1b" not in b.last
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in b.last
    assert "\u202e" not in b.last and "<script>x()" not in b.last


def test_the_incident_log_is_stamped_with_the_signed_in_person(world):
    a = world.alert()
    b = world.browser("dsl1")
    b.get(f"/alerts/{a['ref']}")
    assert b.post(f"/alerts/{a['ref']}/ack").status_code == 303
    b.get(f"/alerts/{a['ref']}")
    r = b.post(f"/alerts/{a['ref']}/close", {"note": " "})
    assert r.status_code == 400 and "Write the outcome" in b.last
    assert b.post(f"/alerts/{a['ref']}/action", {"note": "Spoke to Jamie; parents informed"}).status_code == 303
    b.get(f"/alerts/{a['ref']}")
    assert "Action recorded — recorded as Mrs D Lawrence." in b.last
    assert b.post(f"/alerts/{a['ref']}/note", {"note": "Mum called back"}).status_code == 303
    b.get(f"/alerts/{a['ref']}")
    assert b.post(f"/alerts/{a['ref']}/close", {"note": "Referred to early help"}).status_code == 303
    b.get(f"/alerts/{a['ref']}")
    r = b.post(f"/alerts/{a['ref']}/ack")
    assert r.status_code == 409 and "closed now" in b.last
    row, notes, _ = store.get_alert(world.db, a["ref"])
    assert row["status"] == "closed"
    assert [(n["action"], n["author"]) for n in notes] == [(x, "Mrs D Lawrence (dsl1)")
                                                            for x in ("ack", "action", "note", "close")]
    b.get(f"/alerts/{a['ref']}")
    summary = b.last[b.last.index('id="summary-text"'):]
    assert "Action taken by Mrs D Lawrence (dsl1): Spoke to Jamie; parents informed" in summary
    assert "Outcome: Referred to early help" in summary
    b.get("/inbox")
    assert a["ref"] not in b.last
    b.get("/inbox?show=closed")
    assert a["ref"] in b.last


def test_every_view_of_an_alert_is_in_the_access_audit(world):
    a = world.alert()
    staff = world.alert(role="staff", username="teacher1")
    world.browser("dsl1").get(f"/alerts/{a['ref']}")
    world.browser("dsl1").get(f"/alerts/{staff['ref']}")
    world.browser("head1").get(f"/alerts/{staff['ref']}")
    rows = [(r["viewer"], r["subject"], r["what"]) for r in world.audit_rows()]
    assert ("Mrs D Lawrence (dsl1)", "pupil1", f"alert {a['ref']} with browsing 30 minutes either side") in rows
    assert ("Mrs D Lawrence (dsl1)", "teacher1", f"REFUSED: alert {staff['ref']} (not in their audience)") in rows
    assert ("Mr R Patel (head1)", "teacher1", f"alert {staff['ref']} with browsing 30 minutes either side") in rows


def _download(b, group: str) -> list[dict]:
    b.get("/export")
    r = b.post("/export", {"group": group})
    assert r.status_code == 200 and r.mimetype == "text/csv"
    return list(csv.DictReader(io.StringIO(b.last)))


def test_pupil_export_for_cpoms_never_holds_staff_and_staff_export_is_the_heads(world):
    a = world.alert()
    store.transition(world.db, a["ref"], "close", "Mrs D Lawrence (dsl1)", '=HYPERLINK("http://evil.test","x")')
    world.alert(role="staff", username="teacher1")
    world.alert(role="supply", username="Supply3", person="Ms Aisha Khan")
    dsl = world.browser("dsl1")
    dsl.get("/export")
    assert "Pupils (for CPOMS)" in dsl.last and "Staff" not in dsl.last
    pupils = _download(dsl, "pupil")
    assert [(r["Student"], r["Class"], r["Logon"]) for r in pupils] == [("Jamie Smith", "Year 4", "pupil1")]
    assert pupils[0]["Category"] == "Online safety - Self-harm and suicide"
    assert pupils[0]["Incident"].startswith("Jamie Smith (Year 4) searched 'how to kill myself' on Google at ")
    assert pupils[0]["Outcome"].startswith("'=HYPERLINK")             # a spreadsheet shows it, never runs it
    assert _download(dsl, "staff") == []                              # nothing the DSL may not see
    head = world.browser("head1")
    staff = _download(head, "staff")
    assert [(r["Name"], r["Logon"]) for r in staff] == [("teacher1", "teacher1")]
    assert "teacher1" not in (dsl.last + str(pupils))
    exported = [r["what"] for r in world.audit_rows() if r["what"].startswith("export")]
    assert len(exported) == 3


def test_supply_concerns_name_the_person_on_the_register(world, monkeypatch):
    a = world.alert(role="supply", username="Supply3", person="Ms Aisha Khan")
    assert "slt" in a["route"]
    text = world.config.read_text().replace("office1: {name: Mrs S Hughes, roles: [office]}",
                                            "office1: {name: Mrs S Hughes, roles: [office, slt]}")
    world.config.write_text(text)
    from schoolproxy.console import state
    monkeypatch.setattr(state, "CHECK_EVERY", 0.0)
    b = world.browser("office1")
    b.get("/inbox")
    assert "Ms Aisha Khan (on the shared logon Supply3)" in b.last


def test_the_incident_log_works_the_same_on_postgresql(tmp_path, pg_url):
    world = World(tmp_path, database=pg_url)
    a = world.alert()
    b = world.browser("lead1")
    b.get(f"/alerts/{a['ref']}")
    assert "how to kill myself" in b.last
    assert b.post(f"/alerts/{a['ref']}/ack").status_code == 303
    assert world.alert_row(a["ref"])["status"] == "acknowledged"
    assert any(r["viewer"] == "Mr C Lead (lead1)" for r in world.audit_rows())
    world.db.dispose()


def test_a_concern_about_an_unidentified_device_names_its_address(world):
    a = world.alert(username=None, client_ip="10.0.20.15", role="pupil")
    add_record(world.db, username=None, client_ip="10.0.20.15", host="www.roblox.com")
    add_record(world.db, username=None, client_ip="10.0.20.99", host="someone-else.test")
    b = world.browser("dsl1")
    b.get("/inbox")
    assert "an unidentified computer (10.0.20.15) searched &#39;how to kill myself&#39;" in b.last
    b.get(f"/alerts/{a['ref']}")
    assert "www.roblox.com" in b.last and "someone-else.test" not in b.last


def test_the_alert_lists_every_search_that_raised_or_repeated_it(world):
    t0 = dt.datetime.now(UTC).timestamp() - 300
    searches = ("how to kill myself", "how to k1ll myself", "i want to die")
    run_service(world.config, world.db, [search(s, t0 + 60 * i) for i, s in enumerate(searches)])
    (a,) = store.list_alerts(world.db, dt.datetime.now(UTC) - dt.timedelta(days=1))
    b = world.browser("dsl1")
    b.get(f"/alerts/{a['ref']}")
    listed = b.last[b.last.index('<ol class="evidence">'):]
    listed = listed[:listed.index("</ol>")]
    assert listed.count("<li") == 3 and listed.count("raised the alert") == 1
    for i, s in enumerate(searches):
        t = dt.datetime.fromtimestamp(t0 + 60 * i, UTC).astimezone(ZoneInfo(world.cfg.timezone))
        assert f'{t:%d/%m/%Y %H:%M:%S}</span>\n        Searched for <q class="term">{s}</q> on Google' in listed
    summary = b.last[b.last.index('id="summary-text"'):]
    assert "Searches and visits:" in summary and "searched &#34;i want to die&#34; on Google" in summary
    (row,) = _download(b, "pupil")
    assert row["Evidence"].count("searched") == 3 and '"how to k1ll myself"' in row["Evidence"]
