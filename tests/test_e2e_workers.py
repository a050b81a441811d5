"""`schoolproxy run --workers 2`: two processes on one port (SO_REUSEPORT), one set of records and logons."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import PASSWORD, make_school
from internet import Internet
from proxyproc import BIN, ProxyProcess, free_port
from sqlalchemy import select

from schoolproxy.records import open_database
from schoolproxy.records.schema import requests

pytestmark = pytest.mark.e2e
SECRET = "feed-secret-0123456789abcdef"


def metric(port: int, name: str) -> float | None:
    """Sum of a metric's samples on one worker's /metrics, or None if that worker is not up."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def record_count(root: Path) -> int:
    db = open_database(f"sqlite:///{root / 'records.db'}")
    try:
        with db.connect() as c:
            return len(c.execute(select(requests.c.ref)).all())
    except Exception:  # not created yet
        return 0
    finally:
        db.dispose()


def get(proxy: ProxyProcess, url: str, user: str | None = None) -> httpx.Response:
    # A new client per request: a new connection, which the kernel may hand to either worker.
    with httpx.Client(proxy=proxy.auth_url(user, PASSWORD) if user else proxy.url, timeout=15) as c:
        return c.get(url)


def worker_pids(supervisor: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(supervisor)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def exited(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_two_workers_share_the_port_the_logons_and_the_records(tmp_path: Path):
    with Internet(tmp_path / "internet") as internet:
        root = tmp_path / "school"
        root.mkdir()
        config = make_school(root, upstream=internet.proxy_url, database=f"sqlite:///{root / 'records.db'}")
        data = yaml.safe_load(config.read_text())
        feed_port = free_port()
        (root / "feed-secret").write_text(SECRET + "\n")
        data["identity"]["logon_feed"] = {"listen": f"127.0.0.1:{feed_port}", "secret_file": "feed-secret",
                                          "state_file": "logons.json"}
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        metrics_port = int(data["metrics"]["listen"].rpartition(":")[2])

        port = free_port()
        proxy = ProxyProcess([str(BIN / "schoolproxy"), "run", "--config", str(config), "--listen-port", str(port),
                              "--workers", "2"], port, root / "run.log")
        with proxy:
            assert wait_for(lambda: all(metric(metrics_port + i, "schoolproxy_requests_total") is not None
                                        for i in (0, 1))), proxy.log()
            assert "Error logged during startup" not in proxy.log()  # e.g. two workers migrating at once
            # A logon arrives at worker 0's feed; both workers attribute the device's requests to it.
            r = httpx.post(f"http://127.0.0.1:{feed_port}/logon", json={"user": "pupil1", "device": "IT-07"},
                           headers={"Authorization": f"Bearer {SECRET}"}, timeout=5)
            assert r.status_code == 200
            time.sleep(1.5)
            refs = []
            for i in range(40):
                r = get(proxy, "http://socialsite.test/")
                assert r.status_code == 403, (i, r.status_code, proxy.log()[-2000:])  # pupil1, on either worker
                refs.append(r.headers["X-Schoolproxy-Reference"])
                r = get(proxy, "http://socialsite.test/", user="teacher1")
                assert r.status_code == 200
            served = [metric(metrics_port + i, "schoolproxy_requests_total") for i in (0, 1)]
            assert all(n and n > 0 for n in served), served  # the kernel spread connections over both

            # A worker that dies is restarted; the proxy keeps serving meanwhile.
            # What was served is on record before a worker is killed (kill -9 may lose its last 0.1 s).
            assert wait_for(lambda: record_count(root) >= 80), proxy.log()
            pids = worker_pids(proxy.proc.pid)
            assert len(pids) == 2
            os.kill(pids[1], signal.SIGKILL)
            # Connections the kernel had already queued on the dead worker's socket are reset (a browser
            # retries them); once it has exited, every new connection goes to the living worker.
            assert wait_for(lambda: exited(pids[1]))
            for _ in range(10):
                r = get(proxy, "http://socialsite.test/", user="pupil1")
                assert r.status_code == 403
                refs.append(r.headers["X-Schoolproxy-Reference"])
            assert wait_for(lambda: len(set(worker_pids(proxy.proc.pid)) - set(pids)) == 1), proxy.log()
            assert "restarting it" in proxy.log()

        # A clean stop flushes every worker's records: each request is on record exactly once.
        assert proxy.proc.returncode == 0, proxy.log()
        db = open_database(f"sqlite:///{root / 'records.db'}")
        with db.connect() as c:
            rows = [dict(r) for r in c.execute(select(requests)).mappings()]
        db.dispose()
        by_ref = {r["ref"]: r for r in rows}
        assert len(by_ref) == len(rows)
        assert all(ref in by_ref for ref in refs)
        assert {by_ref[ref]["username"] for ref in refs} == {"pupil1"}
        assert by_ref[refs[0]]["identity_source"] == "logon-feed" and by_ref[refs[0]]["device"] == "IT-07"
        assert sum(1 for r in rows if r["username"] == "teacher1") == 40


def test_bad_worker_count_is_refused(tmp_path: Path):
    config = make_school(tmp_path)
    r = subprocess.run([str(BIN / "schoolproxy"), "run", "--config", str(config), "--workers", "0"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--workers must be between 1 and 64" in r.stderr
