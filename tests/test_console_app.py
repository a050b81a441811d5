"""The console's front door: signing in and out, sessions, CSRF on every change, security headers, and
refusing bad input plainly without changing or revealing anything."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from conftest import PASSWORD
from console_school import PEOPLE, World, csrf_of
from sqlalchemy import update

from schoolproxy.console import state as console_state
from schoolproxy.console.sessions import COOKIE
from schoolproxy.records.schema import console_sessions


@pytest.fixture
def world(tmp_path):
    return World(tmp_path)


def test_every_page_needs_signing_in(world):
    b = world.browser()
    for path in ("/", "/inbox", "/people", "/export", "/weekly", "/register", "/decisions", "/health", "/audit",
                 "/alerts/AAAA-BBBB-CCCC"):
        r = b.get(path)
        assert r.status_code == 303 and r.headers["Location"].startswith("/signin"), path
    assert b.get("/inbox").headers["Location"] == "/signin?next=/inbox"


def test_signing_in_gives_a_host_only_secure_httponly_strict_session_cookie(world):
    b = world.browser()
    r = b.signin("dsl1")
    assert r.status_code == 303 and r.headers["Location"] == "/"
    cookie = next(c for c in r.headers.getlist("Set-Cookie") if c.startswith(COOKIE + "="))
    for flag in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert flag in cookie
    assert "Domain" not in cookie and "Max-Age" not in cookie and "Expires" not in cookie   # gone with the browser
    assert b.get("/").headers["Location"] == "/inbox"
    assert "Mrs D Lawrence" in b.get("/inbox").get_data(as_text=True)


def test_next_takes_you_back_to_the_alert_but_never_elsewhere(world):
    b = world.browser()
    b.get("/signin?next=/alerts/AAAA-BBBB-CCCC")
    r = b.post("/signin", {"username": "dsl1", "password": PASSWORD, "next": "/alerts/AAAA-BBBB-CCCC"})
    assert r.headers["Location"] == "/alerts/AAAA-BBBB-CCCC"
    for target in ("https://evil.test/", "//evil.test/", "/\\evil.test", "javascript:alert(1)"):
        b = world.browser()
        b.get("/signin")
        r = b.post("/signin", {"username": "dsl1", "password": PASSWORD, "next": target})
        assert r.headers["Location"] == "/", target


def test_wrong_passwords_are_refused_logged_without_the_password_and_then_throttled(world, caplog):
    caplog.set_level(logging.INFO)
    b = world.browser()
    for i in range(5):
        b.get("/signin")
        r = b.post("/signin", {"username": "dsl1", "password": f"Guess-{i}-secret"})
        assert r.status_code == 401 and "do not match" in b.last
    b.get("/signin")
    r = b.post("/signin", {"username": "dsl1", "password": PASSWORD})      # right, but too soon
    assert r.status_code == 429 and "Try again after" in b.last
    assert COOKIE not in " ".join(r.headers.getlist("Set-Cookie"))
    logged = caplog.text
    assert "sign-in failed for dsl1 from 127.0.0.1" in logged and "refused without checking" in logged
    assert "Guess-" not in logged and PASSWORD not in logged
    assert "Guess-" not in b.last and PASSWORD not in b.last                  # not echoed back either


def test_a_password_that_is_right_for_someone_without_a_role_opens_nothing(world):
    b = world.browser()
    r = b.signin("pupil1")
    assert r.status_code == 403 and "no role in the console" in b.last
    assert b.get("/inbox").status_code == 303


def test_the_sign_in_form_needs_its_own_token(world):
    b = world.browser()
    b.get("/signin")
    r = b.post("/signin", {"username": "dsl1", "password": PASSWORD, "csrf": "forged"})
    assert r.status_code == 403 and "out of date" in b.last


def test_signing_out_ends_the_session_on_the_server(world):
    b = world.browser("dsl1")
    b.get("/inbox")
    token = b.client.get_cookie(COOKIE, domain="console.test").value
    r = b.post("/signout")
    assert r.headers["Location"] == "/signin?why=out"
    b.client.set_cookie(COOKIE, token, domain="console.test", secure=True)   # replaying the old cookie
    assert b.get("/inbox").status_code == 303


def _age_sessions(world, minutes: int, created_too: bool = False):
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=minutes)
    values = {"last_seen": past, **({"created_at": past} if created_too else {})}
    with world.db.begin() as conn:
        conn.execute(update(console_sessions).values(**values))


def test_an_idle_session_ends_and_a_change_sent_from_it_is_refused(world):
    a = world.alert()
    b = world.browser("dsl1")
    b.get(f"/alerts/{a['ref']}")
    csrf = csrf_of(b.last)
    _age_sessions(world, 16)
    r = b.post(f"/alerts/{a['ref']}/ack", {"csrf": csrf})
    assert r.status_code == 303 and "/signin?why=idle" in r.headers["Location"]
    assert world.alert_row(a["ref"])["status"] == "new"
    r = b.get(r.headers["Location"])
    assert "not used for a while" in b.last


def test_a_session_ends_after_the_school_day_however_busy(world):
    b = world.browser("dsl1")
    _age_sessions(world, 11 * 60, created_too=True)
    r = b.get("/inbox")
    assert "why=expired" in r.headers["Location"]


def test_forged_and_tampered_cookies_are_nobody(world):
    b = world.browser("dsl1")
    token = b.client.get_cookie(COOKIE, domain="console.test").value
    for forged in (token[:-1] + ("A" if token[-1] != "A" else "B"), "x" * 3000, "",
                   '{"username": "head1", "roles": ["head"]}'):
        b.client.set_cookie(COOKIE, forged, domain="console.test", secure=True)
        assert b.get("/inbox").status_code == 303, forged
    # A Flask-style session cookie claiming a role is simply not read.
    b2 = world.browser("net1")
    b2.client.set_cookie("session", "eyJyb2xlcyI6WyJkc2wiXX0.forged", domain="console.test", secure=True)
    b2.client.set_cookie("roles", "dsl,head", domain="console.test", secure=True)
    assert b2.get("/inbox").status_code == 403


def test_a_role_taken_away_in_the_config_is_gone_at_the_next_click(world, monkeypatch):
    monkeypatch.setattr(console_state, "CHECK_EVERY", 0.0)
    b = world.browser("dsl1")
    assert b.get("/inbox").status_code == 200
    text = world.config.read_text().replace("dsl1: {name: Mrs D Lawrence, roles: [dsl]}",
                                            "dsl1: {name: Mrs D Lawrence, roles: [governor]}")
    world.config.write_text(text)
    assert b.get("/inbox").status_code == 403
    assert b.get("/weekly").status_code == 200


def test_a_change_without_the_csrf_token_is_refused_and_changes_nothing(world):
    a = world.alert()
    b = world.browser("dsl1")
    b.get(f"/alerts/{a['ref']}")
    for data in ({}, {"csrf": "wrong"}, {"csrf": ""}):
        r = b.post(f"/alerts/{a['ref']}/ack", data, csrf=False)
        assert r.status_code == 403 and "Nothing was changed" in b.last
    other = world.browser("lead1")
    other.get(f"/alerts/{a['ref']}")
    r = b.post(f"/alerts/{a['ref']}/ack", {"csrf": csrf_of(other.last)}, csrf=False)   # another person's token
    assert r.status_code == 403
    b.get(f"/alerts/{a['ref']}")
    r = b.post(f"/alerts/{a['ref']}/ack", headers={"Origin": "https://evil.test"})        # from another site
    assert r.status_code == 403
    assert world.alert_row(a["ref"])["status"] == "new"
    b.get(f"/alerts/{a['ref']}")
    assert b.post(f"/alerts/{a['ref']}/ack", headers={"Origin": "https://console.test"}).status_code == 303


def test_security_headers_on_every_page(world):
    b = world.browser()
    for r in (b.get("/signin"), world.browser("dsl1").get("/inbox"), b.get("/nowhere")):
        h = r.headers
        assert "script-src 'self'" in h["Content-Security-Policy"] and "frame-ancestors 'none'" in h["Content-Security-Policy"]
        assert h["X-Frame-Options"] == "DENY" and h["Cache-Control"] == "no-store"
        assert h["Referrer-Policy"] == "same-origin" and h["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path,status", [
    ("/inbox?x=" + "A" * 5000, 414), ("/alerts/<img src=x onerror=alert(1)>", 404), ("/alerts/..%2f..%2fetc", 404),
    ("/weekly?weeks_ago=-1", 400), ("/weekly?weeks_ago=99999999999999999999", 400), ("/nowhere", 404),
])
def test_hostile_addresses_get_a_plain_refusal(world, path, status):
    b = world.browser("dsl1")
    r = b.get(path)
    assert r.status_code == status
    assert "Traceback" not in b.last and "onerror=alert" not in b.last


def test_hostile_minutes_on_an_alert(world):
    a = world.alert()
    b = world.browser("dsl1")
    for minutes in ("999999", "abc", "-5", "0", "1e9", "30;drop"):
        r = b.get(f"/alerts/{a['ref']}?minutes={minutes}")
        assert r.status_code == 400 and "minutes from 5 to 240" in b.last, minutes
    assert b.get(f"/alerts/{a['ref']}?minutes=120").status_code == 200


def test_a_huge_form_is_refused_and_nothing_saved(world):
    a = world.alert()
    b = world.browser("dsl1")
    b.get(f"/alerts/{a['ref']}")
    r = b.post(f"/alerts/{a['ref']}/note", {"note": "x" * 200_000})
    assert r.status_code == 413
    b.get(f"/alerts/{a['ref']}")
    r = b.post(f"/alerts/{a['ref']}/note", {"note": "y" * 5000})
    assert r.status_code == 400 and "too long" in b.last
    assert world.alert_row(a["ref"])["status"] == "new"
    from schoolproxy.monitoring import store
    assert store.get_alert(world.db, a["ref"])[1] == []


def test_the_log_holds_paths_never_query_strings(world, caplog):
    caplog.set_level(logging.INFO, logger="schoolproxy.console")
    b = world.browser("dsl1")
    b.get("/inbox?search=how+to+kill+myself")
    assert "GET /inbox dsl1" in caplog.text and "kill" not in caplog.text


def test_everyone_in_the_people_list_can_sign_in(world):
    for logon in PEOPLE:
        assert world.browser(logon).get("/").status_code == 303


def test_a_wifi_sign_in_page_can_use_the_same_accounts_and_throttle(tmp_path):
    """The seam for a BYOD / Wi-Fi sign-in page: no console session needed, the same password checks."""
    from flask import Blueprint, current_app, request

    from schoolproxy.console import create_app
    from console_school import make_console_school, open_db
    wifi = Blueprint("wifi", __name__)

    @wifi.post("/wifi")
    def sign_in_device():
        console = current_app.extensions["schoolproxy_console"]
        attempt = console.throttle.begin(request.remote_addr, request.form["username"])
        if not attempt.allowed:
            return "wait", 429
        checked = console.live.current().accounts.check(request.form["username"], request.form["password"])
        if checked.outcome != "ok":
            console.throttle.failed(attempt, request.remote_addr, request.form["username"])
            return "no", 401
        console.throttle.succeeded(attempt, checked.username)
        return f"device tied to {checked.username}"

    config = make_console_school(tmp_path)
    _, db = open_db(config)
    app = create_app(config, db, public=[wifi])
    client = app.test_client()
    ok = client.post("/wifi", data={"username": "pupil1", "password": PASSWORD}, base_url="https://console.test")
    assert ok.status_code == 200 and ok.get_data(as_text=True) == "device tied to pupil1"
    assert "script-src 'self'" in ok.headers["Content-Security-Policy"]
    for _ in range(5):
        client.post("/wifi", data={"username": "pupil1", "password": "x"}, base_url="https://console.test")
    assert client.post("/wifi", data={"username": "pupil1", "password": PASSWORD},
                       base_url="https://console.test").status_code == 429
    assert client.get("/inbox", base_url="https://console.test").status_code == 303   # the console still needs signing in


def test_a_new_mis_export_is_read_without_a_restart(world, monkeypatch):
    monkeypatch.setattr(console_state, "CHECK_EVERY", 0.0)
    world.alert()
    b = world.browser("dsl1")
    b.get("/inbox")
    assert "Jamie Smith (Year 4)" in b.last
    (world.root / "pupils.csv").write_text("Logon,Forename,Surname,Reg Group\npupil1,Jamie,Smith,Year 5\n")
    b.get("/inbox")
    assert "Jamie Smith (Year 5)" in b.last


def test_the_console_command_refuses_a_wildcard_address(world):
    import subprocess

    from proxyproc import BIN
    r = subprocess.run([str(BIN / "schoolproxy"), "console", "--config", str(world.config), "--listen", "0.0.0.0:8443"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--listen: " in r.stderr and "not every interface" in r.stderr


def test_a_database_outage_is_said_plainly(tmp_path, pg_url):
    import psycopg
    from conftest import PG_ADMIN
    w = World(tmp_path, database=pg_url)
    b = w.browser("dsl1")
    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    r = b.get("/inbox")
    assert r.status_code == 503 and "The records database is not answering" in b.last
    assert "Traceback" not in b.last and "psycopg" not in b.last
    w.db.dispose()
