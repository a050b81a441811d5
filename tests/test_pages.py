"""The proxy's own pages (the unblock form, the acceptable-use notice), without a proxy: who is asking,
forged and cross-site posts, hostile input, limits."""

from __future__ import annotations

import datetime as dt
import os
import stat
from urllib.parse import urlencode

import pytest
import yaml
from test_locked import locked_school

from schoolproxy.identity.profiles import Identity
from schoolproxy.records import open_database, upgrade
from schoolproxy.records import unblock as store
from schoolproxy.records.notice import accepted_since
from schoolproxy.snapshot import build_snapshot
from schoolproxy.standards import notice, pages

UTC = dt.timezone.utc
HOST = "schoolproxy.invalid"
PUPIL = Identity("pupil1", "pupil", "proxy-auth", "group year4")
OTHER = Identity("pupil2", "pupil", "proxy-auth", "group year4")
NOBODY = Identity(None, "pupil", "default", "default (unidentified)")
REF = "2QVC-0000-0001"
BLOCK = pages.Blocked(REF, "pupil1", "pupil", "socialsite.test", "http://socialsite.test/feed?sid=…",
                      "category:social-networking", "social-networking")


@pytest.fixture
def ctx(tmp_path):
    config = locked_school(tmp_path, database=f"sqlite:///{tmp_path / 'records.db'}")
    data = yaml.safe_load(config.read_text())
    data["block_page"] = {"report_to": "Mrs Lawrence"}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    snap = build_snapshot(config, run_tests=False)
    db = open_database(snap.config.database_url())
    upgrade(db)
    seen: list[tuple[str, str]] = []
    recent = {REF: BLOCK, "2QVC-0000-0002": BLOCK._replace(ref="2QVC-0000-0002", rule="locked:child-abuse")}
    return pages.PagesContext(snap.config, db, os.urandom(32), recent=recent.get,
                              accepted=lambda s, v: seen.append((s, v)))


def get(ctx, path, identity=PUPIL, headers=None):
    return pages.handle(ctx, pages.PageRequest("GET", "http", path, headers or {}, b"", identity, "10.0.0.7"))


def post(ctx, path, fields, identity=PUPIL, origin=f"http://{HOST}"):
    headers = {"origin": origin} if origin else {}
    return pages.handle(ctx, pages.PageRequest("POST", "http", path, headers, urlencode(fields).encode(), identity,
                                               "10.0.0.7"))


def form_token(page: pages.Page) -> str:
    text = page.body.decode()
    i = text.index('name="token" value="') + len('name="token" value="')
    return text[i:text.index('"', i)]


def test_the_form_shows_the_blocked_address_and_sends_a_request_stamped_with_the_signed_in_user(ctx):
    page = get(ctx, f"/unblock?ref={REF}")
    assert page.status == 200 and "http://socialsite.test/feed?sid=…" in page.body.decode()
    assert page.headers["X-Frame-Options"] == "DENY" and "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    done = post(ctx, "/unblock", {"ref": REF, "token": form_token(page), "reason": "For my  project\n on online safety",
                                  "username": "someone-else"})
    assert done.status == 200 and "your request has been sent" in done.body.decode()
    [r] = store.list_requests(ctx.db, dt.datetime(2000, 1, 1, tzinfo=UTC))
    assert (r["username"], r["host"], r["reason"], r["block_ref"]) == ("pupil1", "socialsite.test",
                                                                       "For my project on online safety", REF)
    assert r["url"] == "http://socialsite.test/feed?sid=…"


def test_another_pupils_block_is_not_yours_to_ask_about(ctx):
    assert get(ctx, f"/unblock?ref={REF}", identity=OTHER).status == 404
    token = pages.token(ctx.key, "unblock", "pupil2", REF)
    assert post(ctx, "/unblock", {"ref": REF, "token": token, "reason": "Let me in please"}, identity=OTHER).status == 404
    assert store.list_requests(ctx.db, dt.datetime(2000, 1, 1, tzinfo=UTC)) == []


@pytest.mark.parametrize("origin, token_for", [
    ("https://evil.example", "pupil1"),   # a page elsewhere posting with the pupil's browser
    ("null", "pupil1"),
    (f"http://{HOST}", "pupil2"),         # a token made for someone else
    (f"http://{HOST}", None),             # no token
])
def test_forged_and_cross_site_posts_are_refused(ctx, origin, token_for):
    fields = {"ref": REF, "reason": "Forged reason text"}
    if token_for:
        fields["token"] = pages.token(ctx.key, "unblock", token_for, REF)
    page = post(ctx, "/unblock", fields, origin=origin)
    assert page.status == 403 and "did not come from the form" in page.body.decode()
    assert store.list_requests(ctx.db, dt.datetime(2000, 1, 1, tzinfo=UTC)) == []


def test_a_cross_site_post_without_origin_is_refused_by_fetch_metadata(ctx):
    token = pages.token(ctx.key, "unblock", "pupil1", REF)
    page = pages.handle(ctx, pages.PageRequest("POST", "http", "/unblock", {"sec-fetch-site": "cross-site"},
                                               urlencode({"ref": REF, "token": token, "reason": "abc def"}).encode(),
                                               PUPIL, "10.0.0.7"))
    assert page.status == 403


def test_a_device_nobody_signed_in_on_is_told_to_ask_a_teacher(ctx):
    page = get(ctx, f"/unblock?ref={REF}", identity=NOBODY)
    assert page.status == 403 and "not signed in" in page.body.decode() and REF in page.body.decode()


def test_a_locked_block_offers_no_form(ctx):
    page = get(ctx, "/unblock?ref=2QVC-0000-0002")
    assert page.status == 403 and "blocked for everyone" in page.body.decode() and "<form" not in page.body.decode()


@pytest.mark.parametrize("reason, message", [("", "Please say why"), ("x" * 600, "under 500 characters")])
def test_the_reason_is_bounded_and_the_form_comes_back_with_why(ctx, reason, message):
    token = pages.token(ctx.key, "unblock", "pupil1", REF)
    page = post(ctx, "/unblock", {"ref": REF, "token": token, "reason": reason})
    assert page.status == 400 and message in page.body.decode() and 'role="alert"' in page.body.decode()


def test_hostile_text_is_escaped(ctx):
    token = pages.token(ctx.key, "unblock", "pupil1", REF)
    page = post(ctx, "/unblock", {"ref": REF, "token": token, "reason": "<script>alert(1)</script>" + "x" * 600})
    assert "<script>" not in page.body.decode() and "&lt;script&gt;" in page.body.decode()
    ctx.recent = {REF: BLOCK._replace(url='http://x.test/"><script>alert(1)</script>')}.get
    assert "<script>" not in get(ctx, f"/unblock?ref={REF}").body.decode()


def test_a_huge_or_odd_ref_is_not_looked_up(ctx):
    assert get(ctx, "/unblock?ref=" + "A" * 10_000).status == 404
    assert get(ctx, "/unblock?ref=%00%0d%0a").status == 404


def test_the_daily_limit_is_shown_on_the_form(ctx):
    token = pages.token(ctx.key, "unblock", "pupil1", REF)
    for i in range(5):
        store.add_request(ctx.db, username="pupil1", profile="pupil", client_ip="10.0.0.7", device=None,
                          host=f"s{i}.test", url="u", block_ref=None, rule="r", categories="", reason="abcde",
                          per_user_per_day=5)
    page = post(ctx, "/unblock", {"ref": REF, "token": token, "reason": "One more please"})
    assert page.status == 400 and "already asked 5 times today" in page.body.decode()


def test_the_notice_is_accepted_once_with_its_version(ctx):
    page = get(ctx, "/notice?next=" + "http%3A%2F%2Flearning.test%2Flesson%3Fweek%3D3")
    text = page.body.decode()
    assert page.status == 200 and "monitored and recorded" in text and "at the start of each school year" in text
    version = notice.version(notice.text_for(ctx.config, "pupil"))
    done = post(ctx, "/notice", {"version": version, "next": "http://learning.test/lesson?week=3",
                                 "token": form_token(page)})
    assert done.status == 303 and done.headers["Location"] == "http://learning.test/lesson?week=3"
    assert accepted_since(ctx.db, dt.datetime(2000, 1, 1, tzinfo=UTC)) == {("pupil1", version)}
    # Asked again (another worker had not heard yet): straight on, without the text.
    again = get(ctx, "/notice?next=http%3A%2F%2Flearning.test%2F")
    assert again.status == 303


def test_staff_see_their_own_text(ctx):
    teacher = Identity("teacher1", "staff", "proxy-auth", "user teacher1")
    ctx.config = ctx.config.model_copy(update={"notice": ctx.config.notice.model_copy(
        update={"by_role": {"staff": "Staff code of conduct: your use is monitored."}})})
    assert "Staff code of conduct" in get(ctx, "/notice?next=http%3A%2F%2Fx.test%2F", identity=teacher).body.decode()


@pytest.mark.parametrize("nxt", ["javascript:alert(1)", "data:text/html,x", "//evil.example/", "/relative",
                                 "http://x.test/\r\nSet-Cookie: a=b"])
def test_the_notice_only_sends_you_on_to_a_web_address(ctx, nxt):
    version = notice.version(notice.text_for(ctx.config, "pupil"))
    token = pages.token(ctx.key, "notice", "pupil1", version)
    page = post(ctx, "/notice", {"version": version, "next": nxt, "token": token})
    assert page.status == 200 and "Location" not in page.headers


def test_a_forged_or_stale_notice_acceptance_is_not_recorded(ctx):
    version = notice.version(notice.text_for(ctx.config, "pupil"))
    bad = [({"version": version, "token": "0" * 32}, f"http://{HOST}"),
           ({"version": version, "token": pages.token(ctx.key, "notice", "pupil1", version)}, "https://evil.example"),
           ({"version": "oldversion", "token": pages.token(ctx.key, "notice", "pupil1", "oldversion")}, f"http://{HOST}")]
    for fields, origin in bad:
        page = post(ctx, "/notice", {"next": "http://x.test/", **fields}, origin=origin)
        assert page.status == 400 and "<form" in page.body.decode()
    assert accepted_since(ctx.db, dt.datetime(2000, 1, 1, tzinfo=UTC)) == set()


def test_an_unidentified_device_accepts_by_its_address(ctx):
    version = notice.version(notice.text_for(ctx.config, "pupil"))
    token = pages.token(ctx.key, "notice", "ip:10.0.0.7", version)
    assert post(ctx, "/notice", {"version": version, "next": "http://x.test/", "token": token},
                identity=NOBODY).status == 303
    assert accepted_since(ctx.db, dt.datetime(2000, 1, 1, tzinfo=UTC)) == {("ip:10.0.0.7", version)}


def test_the_forms_key_is_made_once_and_private(tmp_path):
    key = pages.load_key(tmp_path / "forms.key")
    assert len(key) == 32 and pages.load_key(tmp_path / "forms.key") == key
    assert stat.S_IMODE(os.stat(tmp_path / "forms.key").st_mode) == 0o600


def test_other_paths(ctx):
    assert get(ctx, "/").status == 200
    assert get(ctx, "/admin").status == 404


def test_token_is_tied_to_purpose_person_and_day():
    key = b"k" * 32
    t = pages.token(key, "unblock", "pupil1", REF)
    assert pages.token_ok(key, t, "unblock", "pupil1", REF)
    assert not pages.token_ok(key, t, "notice", "pupil1", REF)
    assert not pages.token_ok(key, t, "unblock", "pupil1", "2QVC-0000-0009")
    old = pages.token(key, "unblock", "pupil1", REF, dt.datetime.now(UTC).date() - dt.timedelta(days=2))
    assert not pages.token_ok(key, old, "unblock", "pupil1", REF)
