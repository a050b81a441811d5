"""An alert keeps what happened: every search and visit that raised it or was counted as a repeat, as the
person typed it (never a list phrase they did not type), bounded per alert — stored by the real alert
service in a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import make_verdict
from console_school import make_console_school, open_db, run_service, search

from schoolproxy.config import load_config
from schoolproxy.monitoring import evidence, store
from schoolproxy.monitoring.phrases import load_phrase_lists
from schoolproxy.monitoring.rules import AlertRules, Candidate
from schoolproxy.records.purge import purge

ROOT = Path(__file__).resolve().parent.parent
UTC = dt.timezone.utc
LONDON = ZoneInfo("Europe/London")
SEARCHES = ("how to kill myself", "how to k1ll myself", "i want to die")


@pytest.fixture
def school(tmp_path, db_url):
    config = make_console_school(tmp_path, database=db_url)
    cfg, db = open_db(config)
    yield config, cfg, db
    db.dispose()


def the_alert(db, theme: str = "self-harm") -> dict:
    rows = [a for a in store.list_alerts(db, dt.datetime(2000, 1, 1, tzinfo=UTC), "all") if a["theme"] == theme]
    assert len(rows) == 1, rows
    return rows[0]


def test_every_search_that_raised_or_repeated_an_alert_is_kept(school):
    config, cfg, db = school
    t0 = dt.datetime.now(UTC).timestamp() - 120
    run_service(config, db, [search(term, t0 + i * 20) for i, term in enumerate(SEARCHES)])
    alert = the_alert(db)
    assert alert["repeats"] == 2
    rows = evidence.of_alert(db, alert["id"])
    assert [(r["kind"], r["words"], r["host"]) for r in rows] == [("search", s, "www.google.com") for s in SEARCHES]
    assert [r["rule"] for r in rows] == ["search-phrases"] * 3
    assert rows[1]["matched"] == "how to k1ll myself"              # the words as typed, leetspeak and all
    assert evidence.not_listed(alert, rows) == 0
    lines = evidence.lines(alert, rows, LONDON)
    first = dt.datetime.fromtimestamp(t0, UTC).astimezone(LONDON)
    assert lines[0] == f'{first:%d/%m/%Y %H:%M:%S}  searched "how to kill myself" on Google'
    assert [line.split("  ", 1)[1].split(" (matched")[0] for line in lines] == \
        [f'searched "{s}" on Google' for s in SEARCHES]


def test_a_repeat_found_by_another_worker_is_kept_on_the_alert_too(school):
    config, cfg, db = school
    t0 = dt.datetime.now(UTC).timestamp() - 60
    first = Candidate("self-harm", "high", "search-phrases", "x", search(SEARCHES[0], t0), 120, SEARCHES[0],
                      words=("kill myself",))
    again = Candidate("self-harm", "high", "search-phrases", "x", search(SEARCHES[2], t0 + 5), 120, SEARCHES[2],
                      words=("want to die",))
    assert store.raise_alert(db, cfg, first, "pupil", None) is not None
    assert store.raise_alert(db, cfg, again, "pupil", None) is None     # throttled: counted on the first
    alert = the_alert(db)
    assert alert["repeats"] == 1
    assert [r["words"] for r in evidence.of_alert(db, alert["id"])] == [SEARCHES[0], SEARCHES[2]]


def test_evidence_is_bounded_per_alert_and_says_how_many_more(school):
    config, cfg, db = school
    t0 = dt.datetime.now(UTC).timestamp() - 600
    n = evidence.MAX_PER_ALERT + 50
    run_service(config, db, [search(f"how to kill myself {i}", t0 + i) for i in range(n)])
    alert = the_alert(db)
    rows = evidence.of_alert(db, alert["id"])
    assert alert["repeats"] == n - 1 and len(rows) == evidence.MAX_PER_ALERT
    assert rows[-1]["words"] == f"how to kill myself {evidence.MAX_PER_ALERT - 1}"
    assert evidence.lines(alert, rows, LONDON)[-1] == \
        f"… and 50 more time(s), counted but not listed (the first {evidence.MAX_PER_ALERT} are kept)"


def test_visits_keep_a_redacted_address_and_adult_sites_only_the_host(school):
    config, cfg, db = school
    t0 = dt.datetime.now(UTC).timestamp() - 60
    vpn = make_verdict(username="pupil1", time=t0, host="vpnsite.test", path="/login?session=abc123&lang=en",
                       categories=("vpn-proxy",), rule="category:vpn-proxy")
    adult = make_verdict(username="pupil1", time=t0 + 1, host="adultsite.test", path="/explicit-video-name",
                         categories=("adult",), rule="category:adult")
    run_service(config, db, [vpn, adult])
    (vpn_row,) = evidence.of_alert(db, the_alert(db, "circumvention")["id"])
    assert vpn_row["kind"] == "visit" and vpn_row["url"] == "http://vpnsite.test/login?session=%E2%80%A6&lang=%E2%80%A6"
    assert evidence.describe(vpn_row) == ("tried to visit http://vpnsite.test/login?session=%E2%80%A6&lang=%E2%80%A6 "
                                          "(category vpn-proxy)")
    (adult_row,) = evidence.of_alert(db, the_alert(db, "pornography")["id"])
    assert adult_row["url"] is None and adult_row["host"] == "adultsite.test"
    assert "explicit" not in evidence.describe(adult_row)


def test_an_upstream_block_keeps_the_host_and_never_the_address():
    v = make_verdict(host="iwf-listed.test", path="/some/path", rule="upstream-block", action="block")
    row = evidence.row_of(Candidate("upstream-block", "critical", "upstream-block", "x", v))
    assert row["url"] is None and "/some/path" not in evidence.describe(row)


@pytest.fixture(scope="module")
def rules():
    cfg = load_config(ROOT / "config" / "schoolproxy.yaml")
    return AlertRules(cfg.alerts, load_phrase_lists(ROOT / "filterlists" / "phrases"), {},
                      {n: p.role for n, p in cfg.profiles.items()})


@pytest.mark.parametrize("typed", ["send nudes", "send me nudes", "s3nd nudez", "sucide methods",
                                   "my new friend says keep our chats secret", "how to k i l l myself"])
def test_the_evidence_names_only_what_was_typed(rules, typed):
    # A fuzzy match once showed the Polish list word "nudesy" for "send nudes": the evidence, the alert's
    # text and its lines must hold the person's own words, never a list phrase they did not type.
    found = rules.evaluate(search(typed, 1764072000.0, user=f"u{abs(hash(typed))}"))
    assert found
    for c in found:
        row = evidence.row_of(c)
        assert row["words"] == typed
        for part in row["matched"].split(" / "):
            assert part in typed, (part, typed)
        assert "nudesy" not in evidence.describe(row) and "nudesy" not in c.evidence
        assert ("(matched: " in evidence.describe(row)) == (row["matched"] != typed)


def test_purge_removes_an_old_alert_with_its_evidence(school):
    config, cfg, db = school
    old = dt.datetime.now(UTC).timestamp() - 400 * 86400
    run_service(config, db, [search(term, old + i) for i, term in enumerate(SEARCHES)])
    alert = the_alert(db)
    assert len(evidence.of_alert(db, alert["id"])) == 3
    assert purge(db, 365, 300)["alerts"] == 1
    assert evidence.of_alert(db, alert["id"]) == []


def test_a_page_is_kept_with_the_words_as_on_the_page(rules):
    v = make_verdict(host="forum.test", path="/thread/9?session=x", action="block", rule="content:self-harm",
                     categories=(), content=(("self-harm", 150, ("how to kill yourself", "painless"), "block", 100,
                                              "page"),))
    (c,) = [c for c in rules.evaluate(v) if c.rule == "content"]
    row = evidence.row_of(c)
    assert (row["kind"], row["words"], row["url"]) == ("content", '"how to kill yourself" / "painless"', None)
    assert evidence.describe(row) == 'was stopped from reading a page on forum.test containing "how to kill ' \
                                     'yourself" / "painless"'
