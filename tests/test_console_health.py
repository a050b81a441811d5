"""Health checks in plain words: the proxy's metrics endpoints, delivery, records, directory, lists and
certificates; and when high alerts have reached no one."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from console_school import World, add_directory
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from sqlalchemy import update

from schoolproxy.config import load_config
from schoolproxy.console import certs, health
from schoolproxy.console.state import build_state
from schoolproxy.monitoring import store
from schoolproxy.records.schema import alerts

UTC = dt.timezone.utc


def metrics_server(port: int, **values: float):
    registry = CollectorRegistry()
    for name, value in values.items():
        Gauge(name, name, registry=registry).set(value)
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    return server


def state_of(world):
    return world.app.extensions["schoolproxy_console"].live.current()


def test_proxy_workers_are_counted_on_consecutive_metrics_ports(tmp_path):
    w = World(tmp_path)
    port = int(w.cfg.metrics.listen.rpartition(":")[2])
    check, _ = health.proxy_check(state_of(w))
    assert check.ok is False and "Not answering" in check.summary
    servers = [metrics_server(port + i, schoolproxy_active_users=3 + i, schoolproxy_directory_up=1) for i in range(2)]
    try:
        check, answers = health.proxy_check(state_of(w))
        assert check.ok and len(answers) == 2
        assert check.details[:2] == ["2 proxy processes answering", "7 people browsing in the last five minutes"]
    finally:
        for s in servers:
            s.shutdown()


def test_undelivered_high_alerts_are_counted_until_sent_or_acknowledged(tmp_path):
    w = World(tmp_path, alerts_extra="""\
        recipients: {dsl: [d@school.test], computing_lead: [c@school.test], head: [h@school.test], slt: [s@school.test]}
        smtp: {host: 127.0.0.1, port: 9, security: none, from: f@school.test}
        """)
    st = state_of(w)
    fresh = w.alert()
    assert health.undelivered_high(st) == 0                             # a moment to send it first
    w.alert(severity="medium", theme="bullying")
    with w.db.begin() as conn:
        conn.execute(update(alerts).values(time=dt.datetime.now(UTC) - dt.timedelta(minutes=5)))
    assert health.undelivered_high(st) == 1                             # medium waits for the digest: not counted
    for row in store.due(w.db):
        store.mark_failed(w.db, row["id"], 3, "connection refused", 30)
    check = health.delivery_check(st, dt.datetime.now(UTC))
    assert check.ok is False and "1 high alert(s) have reached no one" in check.summary
    assert "last error: connection refused" in check.details
    store.transition(w.db, fresh["ref"], "ack", "Mrs D Lawrence (dsl1)", "")
    assert health.undelivered_high(st) == 0 and health.delivery_warning(st) is None


def test_no_channel_at_all_is_the_banner(tmp_path):
    w = World(tmp_path)
    assert "No email or webhook is set up" in health.delivery_warning(state_of(w))
    assert health.delivery_check(state_of(w), dt.datetime.now(UTC)).ok is False


def test_records_waiting_in_the_spool_need_attention(tmp_path):
    w = World(tmp_path)
    st = state_of(w)
    assert health.records_check(st, dt.datetime.now(UTC)).ok
    spool = w.cfg.path(w.cfg.records.spool_dir)
    spool.mkdir(parents=True, exist_ok=True)
    (spool / "records.spool").write_bytes(b"x" * 2_500_000)
    check = health.records_check(st, dt.datetime.now(UTC))
    assert check.ok is False and "2.5 MB of records are waiting" in check.summary


def test_list_age_and_certificate_expiry(tmp_path):
    w = World(tmp_path)
    st = state_of(w)
    now = dt.datetime.now(UTC)
    assert health.lists_check(st, now).ok and "(0 days ago)" in health.lists_check(st, now).summary
    old = time.time() - 200 * 86400
    for f in (tmp_path / "lists").rglob("*"):
        if f.name in ("domains", "urls"):
            os.utime(f, (old, old))
    assert health.lists_check(st, now).ok is False
    files = certs.console_certificate(w.cfg)
    check = health.certificate_check(st, now, files.certificate)
    assert check.ok and any(d.startswith("this console's certificate: expires") for d in check.details)
    assert health.certificate_check(st, now + dt.timedelta(days=380), files.certificate).ok is False


def test_the_directory_check_asks_the_directory(own_slapd, tmp_path):
    w = World(tmp_path)
    add_directory(w.config, own_slapd)
    st = build_state(load_config(w.config), w.db)
    assert health.directory_check(st, []).ok
    own_slapd.stop()
    check = health.directory_check(st, [])
    assert check.ok is False and "Not answering" in check.summary


@pytest.mark.parametrize("text", ["not prometheus {{{", ""])
def test_a_garbled_metrics_answer_is_not_a_crash(tmp_path, text):
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass
    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        got = health.scrape(f"http://127.0.0.1:{server.server_address[1]}/metrics")
        assert got in (None, {})
    finally:
        server.shutdown()


def test_the_banner_the_health_page_and_who_was_told_agree_with_the_cli(tmp_path):
    from schoolproxy.monitoring import pending
    from schoolproxy.monitoring.service import AlertService
    from schoolproxy.snapshot import SnapshotHolder
    w = World(tmp_path, alerts_extra="""\
        recipients: {dsl: [d@school.test], computing_lead: [c@school.test], head: [h@school.test], slt: [s@school.test]}
        mailbox: state/alert-mailbox
        """)
    st = state_of(w)
    a = w.alert()
    holder = SnapshotHolder()
    holder.load(w.config)
    AlertService(holder, w.db, retry_seconds=60).deliver()               # the delivery thread's first go
    assert health.undelivered_high(st) == pending.count_undelivered(w.db, w.cfg) == 1
    assert [u["ref"] for u in pending.undelivered(w.db, w.cfg)] == [a["ref"]]
    b = w.browser("dsl1")
    page = b.get(f"/alerts/{a['ref']}").get_data(as_text=True)
    assert "1 high or critical alert has reached no one but this console" in page      # the red banner
    assert "Email to d@school.test: NOT sent yet (1 failed attempt: no email server is set up (alerts.smtp))" in page
    assert "A copy in the mailbox folder on the gateway: kept (this tells no one)" in page
    check = health.delivery_check(st, dt.datetime.now(UTC))
    assert check.ok is False and "(1 waiting for someone now)" in check.summary
    store.transition(w.db, a["ref"], "ack", "Mrs D Lawrence (dsl1)", "")
    assert health.undelivered_high(st) == 0
    inbox = b.get("/inbox")
    assert inbox.status_code == 200 and "No email or webhook is set up" in inbox.get_data(as_text=True)
    assert "reached no one" not in inbox.get_data(as_text=True)


def test_search_alerts_off_is_on_the_health_page_and_in_the_banner_until_the_proxy_says_they_are_on(tmp_path):
    from schoolproxy.monitoring import status
    w = World(tmp_path)
    st = state_of(w)
    b = w.browser("dsl1")
    assert health.search_alerts_warning(st) is None                       # the proxy has not said anything
    status.record(w.db, "/srv/filterlists/phrases: phrase list directory not found")
    line = ("Search alerts are OFF: the phrase lists could not be loaded (/srv/filterlists/phrases: phrase list "
            "directory not found). Searches are not being checked for concerns. Tell the network manager.")
    assert line in b.get("/inbox").get_data(as_text=True)                 # the banner, on every page
    check = health.search_alerts_check(st, [], dt.datetime.now(UTC))
    assert check.ok is False and line in check.summary
    assert line in w.browser("net1").get("/health").get_data(as_text=True)
    # Not restamped for a while (the proxy stopped?): still said, with when it was last said.
    later = dt.datetime.now(UTC) + status.STALE_AFTER + dt.timedelta(minutes=1)
    assert "it has not said since" in health.search_alerts_warning(st, later)
    # The proxy's metrics say so even before anything is recorded.
    status.record(w.db, None)
    check = health.search_alerts_check(st, [{"schoolproxy_search_alerts_off": 1.0,
                                             "schoolproxy_content_scoring_off": 1.0}], dt.datetime.now(UTC))
    assert check.ok is False and "(the proxy's log says why)" in check.summary
    assert any("every page of the profiles that score content is being blocked" in d for d in check.details)
    status.record(w.db, None)                                             # a reload fixed the lists
    assert "Search alerts are OFF" not in b.get("/inbox").get_data(as_text=True)
    assert health.search_alerts_check(st, [{"schoolproxy_search_alerts_off": 0.0}], dt.datetime.now(UTC)).ok
