"""The alert service in a process of its own (monitoring/process.py): verdicts handed over from the event
loop raise alerts in the database, nothing of the rules runs in this process, a killed alert process is
restarted and given again what it had not acknowledged, and a stop flushes what was handed over."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

from conftest import make_school
from sqlalchemy import select

from schoolproxy.monitoring.process import AlertProcess
from schoolproxy.records import open_database, upgrade
from schoolproxy.records.schema import alerts
from schoolproxy.verdict import Verdict, new_reference


def blocked_adult(user: str) -> Verdict:
    return Verdict(ref=new_reference(), time=time.time(), client_ip="10.0.0.5", username=user, profile="pupil",
                   identity_source="proxy-auth", identity_rule="test", method="GET", scheme="http",
                   host="adultsite.test", port=80, path="/", action="block", rule="category:adult",
                   reason="adult is blocked", categories=("adult",))


def stored(db) -> list[dict]:
    with db.connect() as c:
        return [dict(r) for r in c.execute(select(alerts)).mappings()]


async def wait_until(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return False


def school(tmp_path: Path):
    config = make_school(tmp_path, database=f"sqlite:///{tmp_path / 'records.db'}")
    url = f"sqlite:///{tmp_path / 'records.db'}"
    db = open_database(url)
    upgrade(db)
    return config, url, db


async def test_verdicts_raise_alerts_in_the_alert_process_not_in_a_thread_here(tmp_path):
    config, url, db = school(tmp_path)
    service = AlertProcess(config, url, deliver=False).start()
    try:
        service.submit(blocked_adult("pupil1"))
        assert await wait_until(lambda: service.raised.get(("pornography", "high")) == 1), service.raised
        rows = stored(db)
        assert [(r["username"], r["theme"], r["severity"]) for r in rows] == [("pupil1", "pornography", "high")]
        # The rules ran in the child: this process has no alert threads, only the event loop's.
        assert not [t.name for t in threading.enumerate() if t.name.startswith("schoolproxy-alert")]
        service.submit(blocked_adult("pupil1"))  # throttled: counted as a repeat, not a second alert
        assert await wait_until(lambda: service.repeats == 1)
    finally:
        service.stop()
    assert len(stored(db)) == 1


async def test_a_killed_alert_process_is_restarted_and_its_counters_carry_on(tmp_path):
    config, url, db = school(tmp_path)
    service = AlertProcess(config, url, deliver=False).start()
    try:
        service.submit(blocked_adult("pupil1"))
        assert await wait_until(lambda: service.raised.get(("pornography", "high")) == 1)
        killed = service._proc
        first = killed.pid
        os.kill(first, signal.SIGKILL)
        # (the service may have noticed and started another before we look: poll the one we killed)
        assert await wait_until(lambda: killed.poll() is not None)
        service.submit(blocked_adult("teacher1"))  # handed to the restarted process
        assert await wait_until(lambda: service._proc.pid != first and service.restarts == 1)
        assert await wait_until(lambda: service.raised.get(("pornography", "high")) == 2), service.raised
    finally:
        service.stop()
    assert sorted(r["username"] for r in stored(db)) == ["pupil1", "teacher1"]


async def test_a_stop_evaluates_everything_handed_over(tmp_path):
    config, url, db = school(tmp_path)
    service = AlertProcess(config, url, deliver=False).start()
    users = [f"user{i}" for i in range(50)]
    for user in users:
        service.submit(blocked_adult(user))
    service.stop()  # at once: nothing has been handed off yet
    assert sorted(r["username"] for r in stored(db)) == sorted(users)
    assert service.raised == {("pornography", "high"): 50}


async def test_phrase_lists_that_fail_to_load_are_reported_and_a_reload_after_the_fix_turns_search_alerts_on(tmp_path):
    from schoolproxy.monitoring import status
    lists = tmp_path / "phrases" / "self-harm" / "en.txt"
    lists.parent.mkdir(parents=True)
    lists.write_text("< how to kill myself ><100>\nhow to kill myself 100\n")      # an edit gone wrong
    url = f"sqlite:///{tmp_path / 'records.db'}"
    config = make_school(tmp_path, f"alerts: {{phrases: {tmp_path / 'phrases'}}}\n", database=url)
    db = open_database(url)
    upgrade(db)
    service = AlertProcess(config, url, deliver=True).start()
    try:
        assert await wait_until(lambda: service.search_alerts_off is not None)
        assert "not a weighted phrase line" in service.search_alerts_off
        assert await wait_until(lambda: (s := status.search_alerts(db)) is not None and not s["ok"])
        lists.write_text("< how to kill myself ><100>\n")                          # fixed; the config unchanged
        service.reload()
        assert await wait_until(lambda: service.search_alerts_off is None)
        assert await wait_until(lambda: status.search_alerts(db)["ok"])
    finally:
        service.stop()


def test_a_phrase_list_edit_is_loaded_by_the_alert_service_and_a_broken_one_keeps_the_lists_before(tmp_path, caplog):
    # Driven by hand (no threads): the proxy rebuilds the snapshot when a phrase list file changes (it is
    # watched); the service loads the lists again although the config and alerts.phrases are the same.
    from conftest import make_verdict

    from schoolproxy.monitoring.service import AlertService
    from schoolproxy.snapshot import SnapshotHolder

    lists = tmp_path / "phrases" / "self-harm" / "en.txt"
    lists.parent.mkdir(parents=True)
    lists.write_text("< how to kill myself ><100>\n")
    url = f"sqlite:///{tmp_path / 'records.db'}"
    config = make_school(tmp_path, f"alerts: {{phrases: {tmp_path / 'phrases'}}}\n", database=url)
    db = open_database(url)
    upgrade(db)
    snapshots = SnapshotHolder()
    snapshots.load(config)
    service = AlertService(snapshots, db)

    def search(user: str, term: str) -> list[str]:
        service.submit(make_verdict(username=user, profile="pupil", host="www.google.com", action="allow",
                                    path="/search?q=" + term.replace(" ", "+"), search_term=term, categories=()))
        service.process()
        return [r["search_term"] for r in stored(db) if r["username"] == user]

    assert search("pupil1", "zorblat quimbly") == [] and service.search_alerts_off is None
    lists.write_text("< how to kill myself ><100>\n< zorblat quimbly ><100>\n")
    snapshots.swap(snapshots.build())
    assert search("pupil1", "zorblat quimbly") == ["zorblat quimbly"]

    lists.write_text("< how to kill myself ><100>\n< zorblat quimbly ><100>\nsnorkel wumpus 100\n")
    snapshots.swap(snapshots.build())
    assert search("pupil2", "zorblat quimbly") == ["zorblat quimbly"]      # the lists before, still on
    assert service.search_alerts_off is None                              # and the gauge says so
    assert "phrase list edit REFUSED" in caplog.text and "not a weighted phrase line" in caplog.text
    db.dispose()
