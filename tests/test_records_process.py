"""The record writer in its own process: every record handed off reaches the database exactly once, through
a writer process that dies, hangs, or cannot reach its database, and on the proxy's clean shutdown."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import threading
import time

from conftest import make_verdict
from sqlalchemy import func, select

from schoolproxy.records import Spool, open_database, upgrade
from schoolproxy.records.notice import record_acceptance
from schoolproxy.records.process import WriterProcess
from schoolproxy.records.schema import requests


def refs_in(engine) -> list[str]:
    with engine.connect() as c:
        return [r for (r,) in c.execute(select(requests.c.ref))]


def count(engine) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(requests)).scalar_one()


async def until(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def writer(url: str, tmp_path, **kw) -> WriterProcess:
    return WriterProcess(url, Spool(tmp_path / "spool"), batch_size=kw.pop("batch_size", 50),
                         max_delay=kw.pop("max_delay", 0.05), **kw)


async def test_every_record_reaches_the_database_once_and_counters_come_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    db = open_database(url)
    upgrade(db)
    w = writer(url, tmp_path).start()
    verdicts = [make_verdict(username=f"user{i % 5}", path=f"/p?q=frogs&sid={i}") for i in range(300)]
    for v in verdicts:
        w.submit(v)
    await until(lambda: w.written == 300)        # reported back by the writer process
    assert w.queue_depth == 0 and w.spooled == 0
    w.close()
    assert sorted(refs_in(db)) == sorted(v.ref for v in verdicts)
    with db.connect() as c:                      # rows are built (and redacted) in the writer process
        path = c.execute(select(requests.c.path).where(requests.c.ref == verdicts[7].ref)).scalar_one()
    assert path == "/p?q=frogs&sid=%E2%80%A6"


async def test_writer_process_killed_is_restarted_and_nothing_is_lost_or_doubled(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    db = open_database(url)
    upgrade(db)
    w = writer(url, tmp_path, max_delay=0.5).start()
    first = [make_verdict() for _ in range(200)]
    for v in first:
        w.submit(v)
    await asyncio.sleep(0.25)                    # handed off, not yet written (the writer batches every 0.5 s)
    os.kill(w._proc.pid, signal.SIGKILL)
    second = [make_verdict() for _ in range(200)]
    for v in second:
        w.submit(v)
    await until(lambda: count(db) == 400)
    w.close()
    assert w.restarts == 1
    assert sorted(refs_in(db)) == sorted(v.ref for v in first + second)


async def test_hung_writer_process_makes_the_proxy_spool_and_all_arrive_later(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    db = open_database(url)
    upgrade(db)
    w = writer(url, tmp_path, queue_size=100).start()
    os.kill(w._proc.pid, signal.SIGSTOP)         # alive but not reading: the pipe and the queue fill
    verdicts = [make_verdict() for _ in range(400)]
    for i in range(0, 400, 50):
        for v in verdicts[i:i + 50]:
            w.submit(v)
        await asyncio.sleep(0.12)                # one hand-off per 50
    assert w.spooled_here >= 200 and w.queue_depth <= 100   # past queue_size: straight to the spool
    os.kill(w._proc.pid, signal.SIGCONT)
    await until(lambda: count(db) == 400)         # what it was given, and the spool replayed
    w.close()
    assert sorted(refs_in(db)) == sorted(v.ref for v in verdicts) and w.dropped == 0


async def test_database_down_the_writer_process_spools_and_close_flushes(tmp_path):
    down = "postgresql+psycopg://postgres@127.0.0.1:9/none?connect_timeout=1"
    w = writer(down, tmp_path).start()
    verdicts = [make_verdict() for _ in range(120)]
    for v in verdicts:
        w.submit(v)
    w.close()                                    # immediately: the queue is flushed, into the spool
    assert w.spooled == 120 and w.written == 0 and w.dropped == 0
    spool = Spool(tmp_path / "spool")
    assert sum(len(rows) for rows in Spool.read(spool.path, 1000)) == 120


async def test_a_record_that_cannot_be_handed_off_is_spooled_not_lost(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    db = open_database(url)
    upgrade(db)
    w = writer(url, tmp_path).start()
    odd = make_verdict(device=object())          # not a plain value: cannot cross the pipe
    w.submit(odd)
    w.handoff()
    assert w.spooled == 1
    await until(lambda: odd.ref in refs_in(db))  # the writer process replays what the proxy spooled
    w.close()
    assert w.dropped == 0 and refs_in(db) == [odd.ref]


async def test_the_writer_process_gives_way_to_the_proxy(tmp_path):
    # A lower CPU priority: its batch inserts must not take a core from the proxy's event loop.
    url = f"sqlite:///{tmp_path / 'r.db'}"
    upgrade(open_database(url))
    w = writer(url, tmp_path).start()
    w.submit(make_verdict())
    await until(lambda: w.written == 1)          # started and working
    assert os.getpriority(os.PRIO_PROCESS, w._proc.pid) >= os.getpriority(os.PRIO_PROCESS, 0) + 10 or \
        os.getpriority(os.PRIO_PROCESS, w._proc.pid) == 19
    w.close()


async def test_reports_are_read_by_the_event_loop_not_by_a_thread(tmp_path):
    # Nothing but the event loop may run Python in the proxy while requests are in flight: a thread
    # reading the writer process's reports could hold the interpreter lock the loop waits for.
    url = f"sqlite:///{tmp_path / 'r.db'}"
    upgrade(open_database(url))
    before = set(threading.enumerate())
    w = writer(url, tmp_path).start()
    try:
        w.submit(make_verdict())
        await until(lambda: w.written == 1)      # its reports arrive
        assert [t.name for t in threading.enumerate() if t not in before] == []
    finally:
        w.close()


async def test_the_writer_process_reads_the_unblock_and_notice_state_for_the_proxy(tmp_path):
    # The proxy asks; the writer process, which holds the database, answers with what changed.
    url = f"sqlite:///{tmp_path / 'r.db'}"
    db = open_database(url)
    upgrade(db)
    w = writer(url, tmp_path).start()
    answers: list[dict] = []
    w.on_live = answers.append
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    try:
        w.ask_live([], since)
        await until(lambda: len(answers) == 1)   # the first answer has it all
        assert answers[0]["overrides"] == [] and answers[0]["outcomes"] == []
        assert answers[0]["accepted"]["subjects"] == []
        record_acceptance(db, "pupil1", "pupil1", "pupil", "10.0.0.7", "v1")
        w.ask_live([], since)
        await until(lambda: len(answers) == 2)
        assert answers[1] == {"accepted": {"since": since.isoformat(), "added": [["pupil1", "v1"]], "removed": []}}
        w.ask_live([], since)                    # nothing changed: no answer
        record_acceptance(db, "pupil2", "pupil2", "pupil", "10.0.0.8", "v1")
        w.ask_live([], since)
        await until(lambda: len(answers) == 3)
        assert answers[2]["accepted"]["added"] == [["pupil2", "v1"]]
    finally:
        w.close()
