"""The annual review pack: every section filled from a seeded database, nothing personal in it, and
the document as a governor sees it in real Chromium (screen and print to PDF)."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import make_verdict
from proxyproc import BIN
from sqlalchemy import insert
from test_locked import locked_school

from schoolproxy.monitoring import store
from schoolproxy.records import open_database, to_row, upgrade
from schoolproxy.records import unblock as unblock_log
from schoolproxy.records.checks import CheckResult, record_run
from schoolproxy.records.decisions import add_decision
from schoolproxy.records.notice import record_acceptance
from schoolproxy.records.schema import alerts, requests
from schoolproxy.snapshot import build_snapshot
from schoolproxy.standards import reviewpack, unblock
from schoolproxy.standards.notice import text_for, version

UTC = dt.timezone.utc
NOW = dt.datetime.now(UTC)
#: Personal details seeded into the records that must never reach the pack.
SECRETS = ("pupil-logon-jsmith", "secret search about my family", "my private reason for asking",
           "evidence-text-about-a-child", "10.66.6.6")


def school(root: Path) -> Path:
    config = locked_school(root, database=f"sqlite:///{root / 'records.db'}", lunchtime=True)
    data = yaml.safe_load(config.read_text())
    data["people"] = {
        "clawrence": {"name": "Mrs C Lawrence", "roles": ["dsl", "computing_lead"]},
        "rpatel": {"name": "Mr R Patel", "roles": ["head"]},
        "jokafor": {"name": "Mrs J Okafor", "roles": ["chair_of_governors", "governor"]},
        "tevans": {"name": "Mr T Evans", "roles": ["network_manager"]},
        "mbrown": {"name": "Mr M Brown", "roles": ["teacher"], "classes": ["year4"]},
    }
    data["role_groups"] = {"dsl": ["Safeguarding Team"]}
    today = NOW.date()
    data["terms"] = [{"name": "This term", "from": str(today - dt.timedelta(days=40)), "to": str(today + dt.timedelta(days=30))}]
    data["alerts"] = {"recipients": {"dsl": ["dsl@school.test"], "computing_lead": ["cl@school.test"],
                                     "head": ["head@school.test"], "slt": ["slt@school.test"]},
                      "webhook": {"url": "http://127.0.0.1:1/hook"}, "procedure": "Online Safety Policy, section 7",
                      "phrases": str(Path(__file__).resolve().parent.parent / "filterlists" / "phrases")}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


def seed(snap, db) -> None:
    cfg = snap.config
    t = NOW - dt.timedelta(days=20)
    # Browsing: blocked and allowed, with a pupil's logon and a search term.
    with db.begin() as c:
        c.execute(insert(requests), [to_row(make_verdict(time=(t + dt.timedelta(minutes=i)).timestamp(),
                                                         username=SECRETS[0], client_ip=SECRETS[4],
                                                         search_term=SECRETS[1] if i == 0 else None))
                                     for i in range(12)]
                  + [to_row(make_verdict(time=t.timestamp(), action="allow", rule="default:pupil", host="learning.test",
                                         username=SECRETS[0]))]
                  + [to_row(make_verdict(time=t.timestamp(), profile="guest", rule="default:guest", categories=(),
                                         host="example.org", username=None))])
    # Alerts, one taken through to a recorded outcome.
    with db.begin() as c:
        for i, (theme, severity) in enumerate([("self-harm", "high"), ("self-harm", "high"), ("circumvention", "medium"),
                                               ("pornography", "medium")]):
            c.execute(insert(alerts).values(ref=f"ALERT{i}", time=t, theme=theme, severity=severity, username=SECRETS[0],
                                            evidence=SECRETS[3], route="dsl,computing_lead", status="new", updated_at=t,
                                            search_term=SECRETS[1], client_ip=SECRETS[4]))
    store.transition(db, "ALERT0", "ack", "Mrs C Lawrence", "")
    store.transition(db, "ALERT0", "close", "Mrs C Lawrence", "Spoke to pupil; parents informed")
    store.transition(db, "ALERT2", "ack", "Mrs C Lawrence", "")
    # The decision log, the checks log.
    add_decision(db, "YouTube allowed for staff", "Head asked: lesson videos", "Mr R Patel")
    record_run(db, "daily timer (schoolproxy-checks.timer)", t, [
        CheckResult("policy-test[0]", "user pupil1 (pupil): http://socialsite.test/ should be blocked", "pass", "block"),
        CheckResult("safesearch", "SafeSearch is enforced", "pass", "enforced"),
        CheckResult("upstream", "an ordinary page comes back", "pass", "status 200")])
    record_run(db, "Mr T Evans (tevans)", t + dt.timedelta(days=1), [
        CheckResult("upstream", "an ordinary page comes back through the upstream filter", "fail",
                    "status 502: the proxy could not reach the upstream filter or the site")])
    # Unblock requests: approved (an expiring override), refused, pending; and a teacher's class allow.
    def ask(host: str, n: int):
        return unblock_log.add_request(db, username=SECRETS[0], profile="pupil", client_ip=SECRETS[4], device=None,
                                       host=host, url=f"http://{host}/", block_ref=f"REF{n}",
                                       rule="category:social-networking", categories="social-networking",
                                       reason=SECRETS[2], per_user_per_day=10)
    approved, refused = ask("socialsite.test", 1), ask("www.facebook.com", 2)
    ask("gamesite.test", 3)
    unblock.approve(db, snap, approved["ref"], "clawrence", "term", "Year 4 project on online communities")
    unblock.refuse(db, snap, refused["ref"], "clawrence", "Not suitable for pupils; use the class blog")
    unblock.class_allow(db, snap, "mbrown", "year4", "gamesite.test/maths", "lesson", "Times-tables game in maths")
    # The notice, accepted by two pupils.
    v = version(text_for(cfg, "pupil"))
    record_acceptance(db, "pupil1", "pupil1", "pupil", "10.0.0.7", v)
    record_acceptance(db, SECRETS[0], SECRETS[0], "pupil", SECRETS[4], v)


@pytest.fixture
def pack_file(tmp_path) -> tuple[Path, Path]:
    config = school(tmp_path)
    snap = build_snapshot(config, run_tests=False)
    db = open_database(snap.config.database_url())
    upgrade(db)
    seed(snap, db)
    out = tmp_path / "review.html"
    r = subprocess.run([str(BIN / "schoolproxy"), "review-pack", "--config", str(config), "--since", "365d",
                        "--by", "clawrence", "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "review pack for Test Primary" in r.stdout
    return out, config


def test_every_section_is_filled_from_the_records(pack_file):
    out, _ = pack_file
    html = out.read_text()
    for n in range(1, 12):
        assert f'id="s{n}"' in html
    assert 'class="empty"' not in html, re.findall(r'class="empty">([^<]*)', html)
    # Roles by name; profiles in words; UKSIC mapping; every exception with who, why and until when.
    assert "Mrs C Lawrence" in html and "Designated safeguarding lead" in html and "Safeguarding Team" in html
    assert "members of the group year4" in html and "anyone not identified (the fail-closed default)" in html
    assert "Mon–Fri 12:00–13:00 (lunchtime): allowed: games" in html
    assert "child-abuse (locked)" in html and "Illegal content (IWF child abuse images" in html
    assert "the upstream filter only (no local list)" not in html or "Hate speech" in html
    assert "Unmoderated forum" in html                                     # the config's own override
    assert "Year 4 project on online communities" in html and "Times-tables game in maths" in html
    assert "teacher&#39;s class allow" in html and "Mr M Brown (mbrown)" in html
    # The decision log, including the approval (naming the request, not the pupil).
    assert "YouTube allowed for staff" in html and "Allowed socialsite.test for profile pupil until" in html
    assert "Refused unblock request" in html
    # Checks, tests, alerts (counts), over-blocking, the notice.
    assert "status 502: the proxy could not reach the upstream filter" in html
    assert "<td>a pupil (profile pupil)</td><td>http://socialsite.test/</td>" in html   # a policy test, run today
    assert "pupil1" not in html                                            # not the logon it names
    assert re.search(r"<td>Self-harm and suicide</td><td class=\"n\">1</td><td class=\"n\">0</td>"
                     r"<td class=\"n\">0</td><td class=\"n\">1</td><td class=\"n\">2</td>", html)
    assert "1 approved, 1 refused, 1 waiting" in html
    assert "2 users of the pupil profile" in html and "Everything you do on the school internet is monitored" in html


def test_nothing_personal_reaches_the_pack(pack_file):
    html = pack_file[0].read_text()
    for secret in SECRETS:
        assert secret not in html


def test_standards_items_say_met_or_not_with_where(pack_file):
    html = pack_file[0].read_text()
    rows = re.findall(r'<tr><td>(DfE [a-z]+|UKSIC|UK GDPR)</td><td>([^<]*)</td>\s*<td class="status ([a-z-]+)">', html)
    items = {text: status for _, text, status in rows}
    assert len(items) >= 15
    assert items["Filtering is not one blanket profile: pupils and staff are filtered differently"] == "met"
    assert items["All internet access goes through the school&#39;s certified filtering provider"] == "not-met"
    assert items["Users are told they are monitored"] == "met"
    assert items["Checks that filtering works are made regularly and recorded (when, who, what, result)"] == "met"


def test_a_hostile_school_name_cannot_break_the_document(tmp_path):
    config = school(tmp_path)
    config.write_text(config.read_text().replace("school: Test Primary", "school: 'St Mary''s </style><script>x()</script> \"q\"'"))
    snap = build_snapshot(config, run_tests=False)
    db = open_database(snap.config.database_url())
    upgrade(db)
    html = reviewpack.render(reviewpack.gather(snap, db, NOW - dt.timedelta(days=30), NOW, "Mrs C Lawrence"))
    assert "<script>" not in html and html.count("</style>") == 1
    assert "St Mary&#39;s &lt;/style&gt;" in html


def test_the_pack_in_chromium_on_screen_and_printed(pack_file, chromium, tmp_path):
    out, _ = pack_file
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    page.goto(out.as_uri())
    assert page.title().startswith("Filtering and monitoring review — Test Primary")
    # Self-contained: nothing is fetched from anywhere.
    assert page.evaluate("performance.getEntriesByType('resource').length") == 0
    page.screenshot(path=str(tmp_path / "review-top.png"))
    page.locator("#s10").scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "review-overblocking.png"))
    page.screenshot(path=str(tmp_path / "review-full.png"), full_page=True)
    page.emulate_media(media="print")
    pdf = page.pdf(format="A4", print_background=True, display_header_footer=False)
    pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf))
    assert pdf.startswith(b"%PDF") and 6 <= pages <= 30
