"""Every request on record, through a real proxy: SQLite by default, PostgreSQL by URL, an outage in
the middle of traffic, and a proxy killed outright and restarted."""

from __future__ import annotations

import signal
import time

import httpx
import pytest
from conftest import PASSWORD, add_people, make_school
from internet import Internet
from proxyproc import ProxyProcess
from relay import TcpRelay
from sqlalchemy import select
from waits import wait_until

from schoolproxy.records import open_database
from schoolproxy.records.schema import requests

pytestmark = pytest.mark.e2e


def rows(url: str) -> list[dict]:
    engine = open_database(url)
    try:
        with engine.connect() as c:
            return [dict(r) for r in c.execute(select(requests)).mappings()]
    except Exception:
        return []
    finally:
        engine.dispose()


def wait_rows(url: str, n: int, timeout: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = rows(url)
        if len(found) >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def spooled(state_dir) -> int:
    """Records waiting in the spool (one JSON line each, in any worker's file or one being replayed)."""
    return sum(len(f.read_bytes().splitlines()) for f in (state_dir / "spool").glob("records*.jsonl*"))


def traffic(proxy: ProxyProcess, n: int, user: str = "pupil1") -> list[str]:
    """n requests alternating allowed and blocked; returns the block pages' references."""
    refs = []
    with httpx.Client(proxy=proxy.auth_url(user, PASSWORD), timeout=10) as c:
        for i in range(n):
            r = c.get("http://socialsite.test/x" if i % 2 else f"http://learning.test/p?q=frogs&sid={i}")
            assert r.status_code in (200, 403)
            if r.status_code == 403:
                refs.append(r.headers["X-Schoolproxy-Reference"])
    return refs


def start(tmp_path, internet, database: str) -> ProxyProcess:
    config = make_school(tmp_path, upstream=internet.proxy_url, database=database)
    return ProxyProcess.schoolproxy_run(config, tmp_path)


def test_n_requests_make_n_rows_in_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'records.db'}"
    with Internet(tmp_path / "net") as internet, start(tmp_path, internet, url) as proxy:
        refs = traffic(proxy, 40)
        found = wait_rows(url, 40)
    assert len(found) == 40
    blocked = {r["ref"]: r for r in found if r["action"] == "block"}
    assert set(refs) == set(blocked)              # the block page's reference finds its row
    row = blocked[refs[0]]
    assert (row["username"], row["profile"], row["category"], row["host"], row["status"]) == \
           ("pupil1", "pupil", "social-networking", "socialsite.test", 403)
    allowed = [r for r in found if r["action"] == "allow"][0]
    assert allowed["path"].startswith("/p?q=frogs&sid=%E2%80%A6")   # search kept, session id redacted
    assert allowed["category"] == "education" and allowed["status"] == 200


def test_postgresql_outage_mid_run_loses_and_duplicates_nothing(tmp_path, pg_url):
    relay = TcpRelay(5432)
    url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{relay.port}") + "?connect_timeout=2"
    try:
        with Internet(tmp_path / "net") as internet, start(tmp_path, internet, url) as proxy:
            traffic(proxy, 20)
            assert len(wait_rows(pg_url, 20)) == 20
            relay.down()                                   # the database disappears mid-run
            traffic(proxy, 30)                             # ... and the proxy keeps serving
            wait_until(lambda: spooled(tmp_path) >= 30, timeout=30, what="the 30 records spooled", detail=proxy.log)
            assert len(rows(pg_url)) == 20
            relay.up()
            found = wait_rows(pg_url, 50, timeout=60)      # replayed after the writer's backoff
    finally:
        relay.close()
    assert len(found) == 50 and len({r["ref"] for r in found}) == 50


def test_killed_proxy_replays_its_spool_after_restart(tmp_path, pg_url):
    relay = TcpRelay(5432)
    url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{relay.port}") + "?connect_timeout=2"
    try:
        with Internet(tmp_path / "net") as internet:
            proxy = start(tmp_path, internet, url)
            traffic(proxy, 4)
            assert len(wait_rows(pg_url, 4)) == 4
            relay.down()
            traffic(proxy, 16)
            wait_until(lambda: spooled(tmp_path) >= 16, timeout=30, what="the 16 records spooled", detail=proxy.log)
            proxy.signal(signal.SIGKILL)                   # no clean shutdown, no flush
            proxy.proc.wait(5)
            proxy.stop()
            relay.up()
            with ProxyProcess.schoolproxy_run(tmp_path / "schoolproxy.yaml", tmp_path):
                found = wait_rows(pg_url, 20, timeout=30)
    finally:
        relay.close()
    assert len(found) == 20 and len({r["ref"] for r in found}) == 20


def test_reports_find_records_by_user_blocked_and_reference_and_are_audited(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    url = f"sqlite:///{tmp_path / 'records.db'}"
    with Internet(tmp_path / "net") as internet, start(tmp_path, internet, url) as proxy:
        refs = traffic(proxy, 6)
        wait_rows(url, 6)
    cli = [str(Path(sys.executable).parent / "schoolproxy"), "report"]
    cfg = ["--config", str(add_people(tmp_path / "schoolproxy.yaml"))]
    r = subprocess.run(cli + ["ref", refs[0], *cfg, "--viewer", "clawrence"], capture_output=True, text=True)
    assert r.returncode == 0 and refs[0] in r.stdout and "socialsite.test" in r.stdout and "(1 record)" in r.stdout
    r = subprocess.run(cli + ["user", "pupil1", "--since", "1h", *cfg, "--viewer", "clawrence"], capture_output=True, text=True)
    assert "(6 records)" in r.stdout and "learning.test" in r.stdout
    r = subprocess.run(cli + ["blocked", "--since", "2020-01-01", "--csv", *cfg, "--viewer", "clawrence"],
                       capture_output=True, text=True)
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("time,ref,username") and len(lines) == 1 + len(refs)
    r = subprocess.run(cli + ["ref", "NOPE-NOPE-NOPE", *cfg, "--by", "clawrence"], capture_output=True, text=True)
    assert r.returncode == 1 and "no record with the reference 'NOPE-NOPE-NOPE' that you can see" in r.stderr
    assert r.stdout == ""
    r = subprocess.run(cli + ["user", "pupil1", "--since", "yesterday-ish", *cfg, "--by", "clawrence"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "cannot read the time" in r.stderr
    from schoolproxy.records.schema import access_audit
    engine = open_database(url)
    with engine.connect() as c:
        audit = [dict(a) for a in c.execute(select(access_audit)).mappings()]
    assert {(a["viewer"], a["subject"]) for a in audit} >= {("Mrs C Lawrence (clawrence)", "pupil1")}
    assert ("Mrs C Lawrence (clawrence)", f"record {refs[0]}") in {(a["viewer"], a["what"]) for a in audit}
