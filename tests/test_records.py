"""The records store against real SQLite and real PostgreSQL: nothing lost, nothing duplicated."""

from __future__ import annotations

import datetime as dt
import io
import time

import pytest
from conftest import make_verdict
from sqlalchemy import func, insert, select

from schoolproxy.records import RecordWriter, Spool, open_database, upgrade
from schoolproxy.records.database import current_revision, head_revision
from schoolproxy.records.purge import purge
from schoolproxy.records.redact import redact_path
from schoolproxy.records.reports import by_ref, format_table, user_history, write_csv
from schoolproxy.records.schema import requests
from schoolproxy.records.writer import to_row


def count(engine) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(requests)).scalar_one()


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def db(db_url):
    engine = open_database(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def writer_for(engine, tmp_path, **kw) -> RecordWriter:
    return RecordWriter(engine, Spool(tmp_path / "spool"), batch_size=kw.pop("batch_size", 50),
                        max_delay=kw.pop("max_delay", 0.05), **kw)


def test_every_verdict_becomes_exactly_one_row(db, tmp_path):
    w = writer_for(db, tmp_path).start()
    verdicts = [make_verdict(username=f"user{i % 7}") for i in range(437)]
    for v in verdicts:
        w.submit(v)
    w.submit(verdicts[0])  # the same reference again: still one row
    w.close()
    assert count(db) == 437 and w.written == 438 and w.spooled == 0
    [row] = by_ref(db, verdicts[5].ref)
    assert (row["username"], row["profile"], row["action"], row["category"], row["rule"]) == \
           ("user5", "pupil", "block", "social-networking", "category:social-networking")


def test_database_down_spools_and_replays_exactly_once(tmp_path, pg_url):
    # PostgreSQL through a URL whose port refuses, then the real one: the writer's view of an outage.
    down = open_database("postgresql+psycopg://postgres@127.0.0.1:9/none?connect_timeout=1")
    w = writer_for(down, tmp_path).start()
    verdicts = [make_verdict() for _ in range(120)]
    for v in verdicts:
        w.submit(v)
    wait_until(lambda: w.spooled == 120)
    w.close()
    assert w.written == 0 and w.dropped == 0 and w.db_errors >= 1
    up = open_database(pg_url)
    upgrade(up)
    w2 = writer_for(up, tmp_path).start()   # a restart finds the spool and replays it
    wait_until(lambda: w2.replayed == 120)
    w2.close()
    assert count(up) == 120 and not Spool(tmp_path / "spool").pending()


def test_outage_while_running_recovers_on_its_own(tmp_path):
    dbfile = tmp_path / "r.db"
    engine = open_database(f"sqlite:///{dbfile}")
    upgrade(engine)
    w = writer_for(engine, tmp_path).start()
    lock = engine.raw_connection()
    lock.execute("BEGIN EXCLUSIVE")           # another process holds the database: writes fail (locked)
    w.engine = open_database(f"sqlite:///{dbfile}?timeout=0.1")
    first = [make_verdict() for _ in range(30)]
    for v in first:
        w.submit(v)
    wait_until(lambda: w.spooled == 30)
    lock.rollback()
    lock.close()
    second = [make_verdict() for _ in range(30)]
    for v in second:
        w.submit(v)
    wait_until(lambda: count(engine) == 60, timeout=20)   # backoff, then replay: all there, once
    w.close()
    assert count(engine) == 60 and w.spooled >= 30 and w.replayed == w.spooled and w.dropped == 0


def test_crash_left_spool_and_torn_line_are_replayed(db, tmp_path):
    spool = Spool(tmp_path / "spool")
    rows = [to_row(make_verdict()) for _ in range(10)]
    spool.append(rows)
    spool.append(rows[:3])                      # duplicates from a replay interrupted by a crash
    with open(spool.path, "a") as f:
        f.write('{"ref": "TORN')                 # the line being written when the power went
    w = writer_for(db, tmp_path).start()
    wait_until(lambda: not spool.pending())
    w.close()
    assert count(db) == 10


def test_full_queue_spills_to_spool_not_dropped(db, tmp_path):
    w = writer_for(db, tmp_path, queue_size=5)   # not started: nothing drains the queue
    for _ in range(25):
        w.submit(make_verdict())
    assert w.queue_depth == 5 and w.spooled == 20 and w.dropped == 0
    w.start()
    w.close()
    assert count(db) == 25


def test_migrations_upgrade_an_empty_and_the_previous_schema(db_url):
    engine = open_database(db_url)
    upgrade(engine, "0001")
    assert current_revision(engine) == "0001"
    row = to_row(make_verdict())
    with engine.begin() as c:
        c.execute(insert(requests), [row])
    upgrade(engine, "0002")
    with engine.begin() as c:  # an alert made under 0002 survives the upgrade that adds alert columns
        c.exec_driver_sql("INSERT INTO alerts (ref, time, theme, severity, evidence, route, status, updated_at) "
                          "VALUES ('A1', '2026-11-25 10:00:00', 'self-harm', 'high', 'x', 'dsl', 'new', "
                          "'2026-11-25 10:00:00')")
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert count(engine) == 1
    with engine.connect() as c:
        assert c.exec_driver_sql("SELECT ref, repeats, rule FROM alerts").one() == ("A1", 0, "")
    upgrade(engine)  # idempotent


def test_purge_removes_only_old_rows(db, tmp_path):
    now = time.time()
    old = [make_verdict(time=now - 400 * 86400) for _ in range(5)]
    new = [make_verdict(time=now - 10 * 86400) for _ in range(3)]
    with db.begin() as c:
        c.execute(insert(requests), [to_row(v) for v in old + new])
    assert purge(db, 365, 2555)["requests"] == 5
    assert count(db) == 3


def test_user_history_over_a_date_range(db):
    t0 = dt.datetime(2026, 11, 20, 10, tzinfo=dt.timezone.utc).timestamp()
    with db.begin() as c:
        c.execute(insert(requests), [to_row(make_verdict(username="jsmith", time=t0 + i * 86400)) for i in range(5)]
                  + [to_row(make_verdict(username="other", time=t0))])
    rows = user_history(db, "jsmith", dt.datetime(2026, 11, 21, tzinfo=dt.timezone.utc),
                        dt.datetime(2026, 11, 23, 23, tzinfo=dt.timezone.utc))
    assert len(rows) == 3 and {r["username"] for r in rows} == {"jsmith"}


def test_user_history_finds_every_case_of_the_name(db):
    # Records made before names were recorded in one spelling: `report user jsmith` missed the JSmith rows.
    t0 = dt.datetime(2026, 11, 20, 10, tzinfo=dt.timezone.utc).timestamp()
    with db.begin() as c:
        c.execute(insert(requests), [to_row(make_verdict(username=u, time=t0 + i))
                                     for i, u in enumerate(["jsmith", "JSmith", "JSMITH", "jsmithy"])])
    day = (dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc), dt.datetime(2026, 11, 21, tzinfo=dt.timezone.utc))
    assert [r["username"] for r in user_history(db, "jsmith", *day)] == ["jsmith", "JSmith", "JSMITH"]
    assert len(user_history(db, "JSmith", *day)) == 3


@pytest.mark.parametrize("path, expected", [
    ("/search?q=how+to&sid=abc123&token=x", "/search?q=how+to&sid=%E2%80%A6&token=%E2%80%A6"),
    ("/results?search_query=minecraft", "/results?search_query=minecraft"),
    ("/page#secret", "/page"),
    ("/plain", "/plain"),
])
def test_query_values_redacted_except_search_terms(path, expected):
    assert redact_path(path) == expected


def test_reports_neutralise_hostile_text():
    row = to_row(make_verdict(host="evil.test", path="/=HYPERLINK(\"http://x\")\x1b[31m"))
    row["path"] = "=cmd|' /C calc'!A0"
    table = format_table([row | {"host": "a\x1b[2Jb"}])
    assert "\x1b" not in table and "a?[2Jb" in table
    out = io.StringIO()
    write_csv([row], out)
    assert "'=cmd" in out.getvalue()


def test_schema_matches_the_migrations(db_url):
    # schema.py is what the code queries; the migrations are what databases get. They must agree.
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from schoolproxy.records.schema import metadata
    engine = open_database(db_url)
    upgrade(engine)
    with engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), metadata) == []


def test_search_alerts_state_keeps_when_it_began_and_when_it_was_last_said(db_url):
    from schoolproxy.monitoring import status
    db = open_database(db_url)
    upgrade(db)
    t0 = dt.datetime(2026, 12, 2, 9, 0, tzinfo=dt.timezone.utc)
    assert status.search_alerts(db) is None
    status.record(db, "phrase list directory not found", t0)
    status.record(db, "phrase list directory not found", t0 + dt.timedelta(minutes=1))   # restamped
    said = status.search_alerts(db)
    assert (said["ok"], said["since"], said["reported_at"]) == (False, t0, t0 + dt.timedelta(minutes=1))
    assert not status.is_stale(said, t0 + dt.timedelta(minutes=3))
    assert status.is_stale(said, t0 + dt.timedelta(minutes=7))
    status.record(db, None, t0 + dt.timedelta(minutes=2))                                 # fixed
    said = status.search_alerts(db)
    assert (said["ok"], said["detail"], said["since"]) == (True, "", t0 + dt.timedelta(minutes=2))
