"""The console's unblock queue, teachers' class allows and the review pack (Flask test client over HTTPS,
real SQLite; the queue also looked at in real Chromium)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from conftest import PASSWORD, hash_pw
from sqlalchemy import select
from console_school import PEOPLE, Browser, make_console_school, open_db
from test_locked import LOCKED_METADATA

from schoolproxy.records import unblock as store
from schoolproxy.records.decisions import list_decisions
from schoolproxy.records.schema import access_audit

UTC = dt.timezone.utc
ROOT = Path(__file__).resolve().parent.parent
CONSOLE_CSS = ROOT / "src" / "schoolproxy" / "console" / "static" / "console.css"


class World:
    def __init__(self, root: Path):
        from schoolproxy.console import create_app
        people = {**PEOPLE, "teach1": ("Mr M Brown", ["teacher"])}
        self.config = make_console_school(root, people=people, extra="terms:\n  - {name: Now, from: 2026-09-01, to: 2027-08-31}\n")
        text = self.config.read_text().replace("teach1: {name: Mr M Brown, roles: [teacher]}",
                                               "teach1: {name: Mr M Brown, roles: [teacher], classes: [year4]}")
        self.config.write_text(text)
        with open(root / "console-users.htpasswd", "a") as f:
            f.write(f"teach1:{hash_pw(PASSWORD)}\n")
        with open(root / "lists" / "categories.yaml", "a") as f:
            f.write(LOCKED_METADATA)
        (root / "lists" / "child-abuse").mkdir()
        (root / "lists" / "child-abuse" / "domains").write_text("abuse.test\n")
        self.cfg, self.db = open_db(self.config)
        self.app = create_app(self.config, self.db)

    def browser(self, user: str) -> Browser:
        b = Browser(self.app)
        assert b.signin(user).status_code == 303, b.last[:2000]
        return b

    def ask(self, host: str = "socialsite.test", reason: str = "For our poster about staying safe online") -> dict:
        return store.add_request(self.db, username="pupil1", profile="pupil", client_ip="10.0.0.7", device=None,
                                 host=host, url=f"http://{host}/", block_ref=None, rule="category:social-networking",
                                 categories="social-networking", reason=reason, per_user_per_day=5)


@pytest.fixture
def world(tmp_path):
    return World(tmp_path)


def test_the_computing_lead_approves_from_the_queue(world):
    r = world.ask()
    b = world.browser("lead1")
    assert b.get("/unblock").status_code == 200
    assert "Jamie Smith (Year 4)" in b.last and "For our poster about staying safe online" in b.last
    done = b.post(f"/unblock/{r['ref']}/approve", {"until": "lesson", "scope": "profile", "site": "socialsite.test",
                                                   "why": "Poster project, supervised"})
    assert done.status_code == 303
    b.get("/unblock")
    assert f"Request {r['ref']} approved" in b.last and "Poster project, supervised" in b.last
    [o] = store.active_overrides(world.db)
    assert (o["site"], o["author"], o["source"]) == ("socialsite.test", "Mr C Lead (lead1)", "unblock")
    changes = [d["change"] for d in list_decisions(world.db, dt.datetime(2000, 1, 1, tzinfo=UTC))]
    assert any(c.startswith("Allowed socialsite.test for profile pupil until") for c in changes)
    with world.db.connect() as c:
        seen = [r.what for r in c.execute(select(access_audit.c.what).where(access_audit.c.viewer.like("%lead1%")))]
    assert any(w.startswith("unblock requests: 1 waiting") for w in seen)


def test_refusing_says_why_and_a_locked_site_is_never_allowed(world):
    refused, locked = world.ask(), world.ask(host="www.abuse.test", reason="Please let me see this page")
    b = world.browser("dsl1")
    b.get("/unblock")
    assert b.post(f"/unblock/{refused['ref']}/refuse", {"why": "Use the class blog"}).status_code == 303
    b.get("/unblock")
    r = b.post(f"/unblock/{locked['ref']}/approve", {"until": "day", "scope": "profile", "site": "www.abuse.test",
                                                      "why": "Looks fine"})
    assert r.status_code == 400 and "locked category child-abuse (illegal content): it can never be allowed" in b.last
    assert store.get_request(world.db, refused["ref"])["status"] == "refused"
    assert store.get_request(world.db, locked["ref"])["status"] == "pending" and store.active_overrides(world.db) == []


def test_a_teacher_allows_a_site_for_their_own_class_and_sees_no_pupils_requests(world):
    world.ask()
    b = world.browser("teach1")
    assert b.get("/").status_code == 303 and b.get("/unblock").status_code == 200
    assert "Jamie" not in b.last and "For our poster" not in b.last and "Allow a site for your class" in b.last
    assert b.post("/unblock/class", {"class": "year3", "site": "gamesite.test", "until": "lesson",
                                     "why": "Maths"}).status_code == 400
    assert "their own classes only" in b.last
    b.get("/unblock")
    assert b.post("/unblock/class", {"class": "year4", "site": "gamesite.test/maths", "until": "lesson",
                                     "why": "Times-tables game"}).status_code == 303
    b.get("/unblock")
    assert "gamesite.test/maths is allowed for year4 until" in b.last
    [o] = store.active_overrides(world.db)
    assert (o["scope"], o["scope_value"], o["author"]) == ("group", "year4", "Mr M Brown (teach1)")
    assert b.post(f"/unblock/allows/{o['id']}/end", {}).status_code == 303
    assert store.active_overrides(world.db) == []
    assert b.get("/inbox").status_code == 403 and b.get("/review").status_code == 403


def test_changes_need_the_forms_token(world):
    r = world.ask()
    b = world.browser("lead1")
    b.get("/unblock")
    refused = b.post(f"/unblock/{r['ref']}/approve", {"until": "day", "why": "x y z"}, csrf=False)
    assert refused.status_code == 403 and store.get_request(world.db, r["ref"])["status"] == "pending"


def test_governors_open_the_review_pack_and_never_the_queue(world):
    world.ask()
    b = world.browser("gov1")
    assert b.get("/unblock").status_code == 403
    assert b.get("/review").status_code == 200 and "Open the review pack" in b.last
    today = dt.date.today()
    r = b.get(f"/review/pack?since={today - dt.timedelta(days=365)}&until={today}")
    assert r.status_code == 200 and "Filtering and monitoring review" in b.last
    assert "script-src" not in r.headers["Content-Security-Policy"] and "style-src 'unsafe-inline'" in \
        r.headers["Content-Security-Policy"]
    assert "Prepared by Mr G Governor (gov1)" in b.last
    assert "pupil1" not in b.last and "Jamie" not in b.last and "For our poster" not in b.last
    assert b.get("/review/pack?since=2026-13-01&until=x").status_code == 400


def test_the_queue_in_chromium(world, chromium, tmp_path):
    world.ask()
    world.ask(host="gamesite.test", reason="Maths homework game <b>please</b>")
    b = world.browser("lead1")
    b.get("/unblock")
    html = b.last.replace('<link rel="stylesheet" href="/static/console.css">',
                          f"<style>{CONSOLE_CSS.read_text()}</style>")
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    page.set_content(html)
    assert "<b>please</b>" in page.inner_text("main")   # shown as text, never as markup
    page.screenshot(path=str(tmp_path / "console-unblock.png"), full_page=True)
