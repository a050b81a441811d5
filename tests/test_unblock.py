"""Unblock requests and expiring overrides: who may decide, what can never be allowed, until when, and
the limits on what a pupil can send."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from proxyproc import BIN
from sqlalchemy import select
from test_locked import LOCKED_SITE, locked_school

from schoolproxy.records import open_database, upgrade
from schoolproxy.records import unblock as store
from schoolproxy.records.decisions import list_decisions
from schoolproxy.records.schema import access_audit, unblock_requests
from schoolproxy.snapshot import build_snapshot
from schoolproxy.standards import unblock

LONDON = ZoneInfo("Europe/London")
UTC = dt.timezone.utc
WED_10 = dt.datetime(2026, 11, 25, 10, 0, tzinfo=LONDON)


def school(root: Path) -> Path:
    config = locked_school(root, database=f"sqlite:///{root / 'records.db'}")
    data = yaml.safe_load(config.read_text())
    data["people"] = {"clawrence": {"name": "Mrs C Lawrence", "roles": ["computing_lead"]},
                      "mbrown": {"name": "Mr M Brown", "roles": ["teacher"], "classes": ["year4"]},
                      "tevans": {"name": "Mr T Evans", "roles": ["network_manager"]}}
    for profile in data["profiles"].values():   # no lunchtime window: games stay blocked whenever the suite runs
        profile.pop("windows", None)
    data["terms"] = [{"name": "Autumn", "from": "2026-09-03", "to": "2026-12-18"},
                     {"name": "Spring", "from": "2027-01-05", "to": "2027-03-26"}]
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


@pytest.fixture
def world(tmp_path):
    snap = build_snapshot(school(tmp_path), run_tests=False)
    db = open_database(snap.config.database_url())
    upgrade(db)
    return snap, db


def ask(db, host="socialsite.test", user="pupil1", reason="For my project on online safety", limit=5, **kw):
    return store.add_request(db, username=user, profile=kw.get("profile", "pupil"), client_ip="10.0.0.7", device=None,
                             host=host, url=f"http://{host}/page?sid=…", block_ref="REF",
                             rule=kw.get("rule", "category:social-networking"), categories="social-networking",
                             reason=reason, per_user_per_day=limit)


@pytest.mark.parametrize("until, expected", [
    ("lesson", dt.datetime(2026, 11, 25, 11, 0, tzinfo=LONDON)),
    ("day", dt.datetime(2026, 11, 25, 23, 59, 59, tzinfo=LONDON)),
    ("term", dt.datetime(2026, 12, 18, 23, 59, 59, tzinfo=LONDON)),
    ("2026-11-27", dt.datetime(2026, 11, 27, 23, 59, 59, tzinfo=LONDON)),
    ("2026-11-27 15:30", dt.datetime(2026, 11, 27, 15, 30, tzinfo=LONDON)),
])
def test_expiry(world, until, expected):
    assert unblock.expiry(world[0].config, until, WED_10) == expected


def test_term_in_a_holiday_runs_to_the_end_of_the_next_term(world):
    christmas = dt.datetime(2026, 12, 28, 10, 0, tzinfo=LONDON)
    assert unblock.expiry(world[0].config, "term", christmas).date() == dt.date(2027, 3, 26)


@pytest.mark.parametrize("until, message", [("yesterday", "say lesson, day, term"), ("2026-11-24", "not in the future"),
                                            ("2028-01-01", "at most a year")])
def test_bad_expiry(world, until, message):
    with pytest.raises(store.UnblockError, match=message):
        unblock.expiry(world[0].config, until, WED_10)


def test_approval_creates_an_expiring_override_and_a_decision(world):
    snap, db = world
    r = ask(db)
    done = unblock.approve(db, snap, r["ref"], "clawrence", "day", "Year 4 research on social media safety")
    assert done["status"] == "approved" and done["decided_by"] == "Mrs C Lawrence (clawrence)"
    [o] = store.active_overrides(db)
    assert (o["site"], o["scope"], o["scope_value"], o["source"]) == ("socialsite.test", "profile", "pupil", "unblock")
    assert o["rationale"] == "Year 4 research on social media safety" and o["author"] == "Mrs C Lawrence (clawrence)"
    [d] = list_decisions(db, dt.datetime(2000, 1, 1, tzinfo=UTC))
    assert d["change"].startswith("Allowed socialsite.test for profile pupil until ")
    assert f"(unblock request {r['ref']})" in d["change"] and "pupil1" not in d["change"]


def test_approval_for_the_requester_only_or_a_class(world):
    snap, db = world
    unblock.approve(db, snap, ask(db)["ref"], "clawrence", "lesson", "Just this pupil", scope="user")
    unblock.approve(db, snap, ask(db, host="gamesite.test")["ref"], "clawrence", "lesson", "Year 4 maths",
                    scope="group", scope_value="year4")
    scopes = {(o["scope"], o["scope_value"]) for o in store.active_overrides(db)}
    assert scopes == {("user", "pupil1"), ("group", "year4")}


def test_only_approvers_decide(world):
    snap, db = world
    r = ask(db)
    for who in ("tevans", "mbrown", "pupil1", ""):
        with pytest.raises(store.UnblockError, match="only computing_lead, dsl"):
            unblock.approve(db, snap, r["ref"], who, "day", "Because")
    assert store.get_request(db, r["ref"])["status"] == "pending"


def test_a_locked_site_can_never_be_approved(world):
    snap, db = world
    r = ask(db, host=f"www.{LOCKED_SITE}", rule="locked:child-abuse")
    with pytest.raises(store.UnblockError, match="locked category child-abuse .illegal content.: it can never be allowed"):
        unblock.approve(db, snap, r["ref"], "clawrence", "lesson", "Looks harmless")
    with pytest.raises(store.UnblockError, match="can never be allowed"):  # nor by naming a wider site
        unblock.approve(db, snap, ask(db)["ref"], "clawrence", "lesson", "x y z", site=f"www.{LOCKED_SITE}/a")
    assert store.active_overrides(db) == []


def test_a_site_the_config_blocks_is_changed_in_the_config(world):
    snap, db = world
    r = ask(db, host="learning.test", rule="override[0]:learning.test/forum")
    with pytest.raises(store.UnblockError, match=r"the config's own rule override\[0\]:learning.test/forum blocks"):
        unblock.approve(db, snap, r["ref"], "clawrence", "day", "Forum needed", site="learning.test/forum")


def test_a_request_is_decided_once(world):
    snap, db = world
    r = ask(db)
    unblock.refuse(db, snap, r["ref"], "clawrence", "Not suitable for pupils")
    with pytest.raises(store.UnblockError, match="already refused by Mrs C Lawrence"):
        unblock.approve(db, snap, r["ref"], "clawrence", "day", "Changed my mind")


def test_daily_limit_and_one_pending_request_per_site(world):
    _, db = world
    ask(db)
    with pytest.raises(store.UnblockError, match="already asked about this site"):
        ask(db)
    with pytest.raises(store.UnblockError, match="already asked about this site"):
        ask(db, user="PUPIL1")  # the same logon in another case
    for i in range(4):
        ask(db, host=f"site{i}.test")
    with pytest.raises(store.UnblockError, match="already asked 5 times today"):
        ask(db, host="another.test")
    ask(db, host="another.test", user="pupil2")  # others are not affected


@pytest.mark.parametrize("text, cleaned", [
    ("  For my\n\nproject  ", "For my project"),
    ("Homework\x1b[31m about\u202e volcanoes", "Homework [31m about volcanoes"),
])
def test_reasons_are_cleaned(text, cleaned):
    assert unblock.clean_reason(text, 500) == cleaned


@pytest.mark.parametrize("text, message", [("", "Please say why"), ("ok", "Please say why"),
                                           ("x" * 501, "under 500 characters")])
def test_reasons_are_bounded(text, message):
    with pytest.raises(store.UnblockError, match=message):
        unblock.clean_reason(text, 500)


def test_teacher_allows_a_site_for_their_own_class_for_a_lesson(world):
    snap, db = world
    oid, expires, site = unblock.class_allow(db, snap, "mbrown", "Year4", "gamesite.test/maths", "lesson",
                                             "Times-tables game", now=WED_10)
    assert site == "gamesite.test/maths" and expires == WED_10 + dt.timedelta(minutes=60)
    [o] = store.active_overrides(db, now=WED_10)
    assert (o["scope"], o["scope_value"], o["author"], o["source"]) == ("group", "year4", "Mr M Brown (mbrown)", "class")
    assert store.active_overrides(db, now=WED_10 + dt.timedelta(minutes=61)) == []   # it expires by itself
    with pytest.raises(store.UnblockError, match="their own classes only .year4."):
        unblock.class_allow(db, snap, "mbrown", "year3", "gamesite.test", "lesson", "x y z")
    with pytest.raises(store.UnblockError, match="a lesson or the rest of the day"):
        unblock.class_allow(db, snap, "mbrown", "year4", "gamesite.test", "term", "x y z")
    with pytest.raises(store.UnblockError, match="is not a teacher"):
        unblock.class_allow(db, snap, "clawrence", "year4", "gamesite.test", "lesson", "x y z")
    with pytest.raises(store.UnblockError, match="never be allowed"):
        unblock.class_allow(db, snap, "mbrown", "year4", "terror.test", "lesson", "x y z")


def test_ending_an_override_early_is_logged(world):
    snap, db = world
    oid, _, _ = unblock.class_allow(db, snap, "mbrown", "year4", "gamesite.test", "day", "Games club")
    store.revoke_override(db, oid, "Mrs C Lawrence (clawrence)", "Lesson over")
    assert store.active_overrides(db) == []
    assert list_decisions(db, dt.datetime(2000, 1, 1, tzinfo=UTC))[-1]["change"].startswith("Ended early: allow gamesite.test")


def cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "schoolproxy"), *args, "--config", str(config)], capture_output=True, text=True,
                          timeout=60)


def test_the_queue_from_the_command_line(tmp_path):
    config = school(tmp_path)
    snap = build_snapshot(config, run_tests=False)
    db = open_database(snap.config.database_url())
    upgrade(db)
    r = ask(db)
    listed = cli(config, "unblock", "list", "--by", "clawrence")
    assert r["ref"] in listed.stdout and "pupil1 (pupil) asked for http://socialsite.test/page?sid=…" in listed.stdout
    assert 'reason: "For my project on online safety"' in listed.stdout
    refused = cli(config, "unblock", "approve", r["ref"], "--by", "mbrown", "--until", "day", "--why", "ok then")
    assert refused.returncode == 2 and "only computing_lead, dsl" in refused.stderr
    ok = cli(config, "unblock", "approve", r["ref"], "--by", "clawrence", "--until", "lesson", "--why", "Project work")
    assert ok.returncode == 0, ok.stderr
    assert f"approved {r['ref']}: socialsite.test allowed for profile pupil until" in ok.stdout
    assert "socialsite.test for profile pupil until" in cli(config, "unblock", "overrides", "--by", "clawrence").stdout
    assert "no pending unblock requests" in cli(config, "unblock", "list", "--by", "clawrence").stdout
    cls = cli(config, "unblock", "class", "gamesite.test", "--class", "year4", "--by", "mbrown", "--why", "Maths game")
    assert cls.returncode == 0 and "gamesite.test allowed for year4 until" in cls.stdout
    with db.connect() as c:
        assert c.execute(select(unblock_requests.c.status)).scalar_one() == "approved"


def test_explain_shows_an_expiring_allow_in_force(tmp_path):
    config = school(tmp_path)
    snap = build_snapshot(config, run_tests=False)
    db = open_database(snap.config.database_url())
    upgrade(db)
    before = cli(config, "explain", "--user", "pupil1", "http://gamesite.test/maths")
    assert "verdict:  BLOCK — rule category:games" in before.stdout
    oid, _, _ = unblock.class_allow(db, snap, "mbrown", "year4", "gamesite.test/maths", "day", "Times-tables game")
    after = cli(config, "explain", "--user", "pupil1", "http://gamesite.test/maths")
    assert f"expiring allow expiring[{oid}]:gamesite.test/maths: allowed for group year4 until" in after.stdout
    assert f"verdict:  ALLOW — rule expiring[{oid}]:gamesite.test/maths" in after.stdout
    assert "BLOCK" in cli(config, "explain", "--user", "pupil1", "http://gamesite.test/").stdout


def test_expiring_allows_at_the_command_line_follow_the_console(tmp_path):
    """Who may list and end expiring allows at a shell is who may in the console: an approver every allow
    (a pupil's own names them), a teacher the allows for their own classes and those they made, anyone
    else none; every look audited."""
    config = school(tmp_path)
    snap = build_snapshot(config, run_tests=False)
    db = open_database(snap.config.database_url())
    upgrade(db)
    r = ask(db)
    unblock.approve(db, snap, r["ref"], "clawrence", "day", "Just this pupil's project", scope="user")
    oid, _, _ = unblock.class_allow(db, snap, "mbrown", "year4", "gamesite.test/maths", "day", "Times-tables game")

    everything = cli(config, "unblock", "overrides", "--by", "clawrence")
    assert everything.returncode == 0 and "for user pupil1" in everything.stdout and "gamesite.test" in everything.stdout
    teacher = cli(config, "unblock", "overrides", "--by", "mbrown")
    assert teacher.returncode == 0 and "gamesite.test/maths for group year4" in teacher.stdout
    assert "pupil1" not in teacher.stdout and "socialsite" not in teacher.stdout
    nm = cli(config, "unblock", "overrides", "--by", "tevans")
    assert nm.returncode == 2 and "Nothing has been shown" in nm.stderr and "pupil1" not in nm.stdout + nm.stderr
    nobody = cli(config, "unblock", "overrides", "--by", "someone")
    assert nobody.returncode != 0 and "pupil1" not in nobody.stdout
    with db.connect() as c:
        audited = [tuple(row) for row in c.execute(select(access_audit.c.viewer, access_audit.c.what))]
    assert any("tevans" in v and "REFUSED" in w for v, w in audited)
    assert any("mbrown" in v and "unblock overrides" in w for v, w in audited)

    [pupils] = [o for o in store.active_overrides(db) if o["scope"] == "user"]
    not_theirs = cli(config, "unblock", "end", str(pupils["id"]), "--by", "mbrown", "--why", "tidying up")
    assert not_theirs.returncode == 2 and "may end only the allows they made" in not_theirs.stderr
    assert any(o["id"] == pupils["id"] for o in store.active_overrides(db))
    own = cli(config, "unblock", "end", str(oid), "--by", "mbrown", "--why", "Lesson over")
    assert own.returncode == 0 and "ended by Mr M Brown (mbrown)" in own.stdout
    approver = cli(config, "unblock", "end", str(pupils["id"]), "--by", "clawrence", "--why", "Project done")
    assert approver.returncode == 0
    assert store.active_overrides(db) == []
