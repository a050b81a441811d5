"""Online-safety alerts end to end: a real mitmdump, a real SMTP server (aiosmtpd) and a webhook receiver
on loopback. A pupil's concerning search reaches the DSL and computing lead; staff's reaches the head
only; benign look-alikes raise nothing; SMTP down and a restart lose nothing and duplicate nothing."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import PASSWORD, make_school, metrics_url, require
from internet import Internet
from proxyproc import BIN, ProxyProcess, free_port
from sqlalchemy import select
from waits import wait_until

from schoolproxy.config import load_config
from schoolproxy.records import open_database
from schoolproxy.records.schema import alert_outbox, alerts

pytestmark = pytest.mark.e2e

DSL, LEAD, HEAD, SLT = "dsl@school.test", "computing@school.test", "head@school.test", "slt@school.test"


class Mailbox:
    """A real SMTP server (aiosmtpd) that keeps what it receives; stop()/start() for an outage."""

    def __init__(self):
        try:
            from aiosmtpd.controller import Controller
        except ImportError:
            require("aiosmtpd is not installed")
        self.messages: list[dict] = []
        self.port = free_port()
        box = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                from email import message_from_bytes, policy
                msg = message_from_bytes(envelope.content, policy=policy.default)
                box.messages.append({"to": list(envelope.rcpt_tos), "subject": str(msg["Subject"]),
                                     "body": msg.get_content(), "id": msg["Message-ID"]})
                return "250 OK"
        self._controller_cls, self._handler = Controller, Handler()
        self.controller = None

    def start(self) -> "Mailbox":
        self.controller = self._controller_cls(self._handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def to(self, address: str) -> list[dict]:
        return [m for m in self.messages if address in m["to"]]

    def wait(self, predicate, timeout: float = 20.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for m in self.messages if predicate(m)]
            if found:
                return found
            time.sleep(0.2)
        return []


class Webhook:
    def __init__(self):
        self.received: list[dict] = []
        hook = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def school_with_alerts(root: Path, internet: Internet, smtp_port: int, webhook_url: str) -> Path:
    config = make_school(root, upstream=internet.proxy_url, database=f"sqlite:///{root / 'records.db'}",
                         users=("pupil1", "teacher1", "Supply3", "visitor"))
    data = yaml.safe_load(config.read_text())
    data["alerts"] = {
        "phrases": str(Path(__file__).resolve().parent.parent / "filterlists" / "phrases"),
        "recipients": {"dsl": [DSL], "computing_lead": [LEAD], "head": [HEAD], "slt": [SLT]},
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "none", "from": "filter@school.test"},
        "webhook": {"url": webhook_url},
    }
    data["people"] = {"dsl1": {"name": "Mrs D Jones", "roles": ["dsl"]}, "head1": {"name": "Mr R Patel", "roles": ["head"]}}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


def start(config: Path, root: Path, internet: Internet) -> ProxyProcess:
    return ProxyProcess.mitmdump(config, root, "--mode", f"upstream:{internet.proxy_url}",
                                 "--set", "schoolproxy_alert_retry_seconds=1")


def search(proxy: ProxyProcess, user: str, term: str, engine: str = "http://www.google.com/search") -> int:
    with httpx.Client(proxy=proxy.auth_url(user, PASSWORD), timeout=15) as c:
        return c.get(engine, params={"q": term}).status_code


def outbox(config: Path) -> list[dict]:
    """The alert outbox as the running proxy left it in the records database."""
    db = open_database(load_config(config).database_url())
    try:
        with db.connect() as conn:
            return [dict(r) for r in conn.execute(select(alert_outbox).order_by(alert_outbox.c.id)).mappings()]
    finally:
        db.dispose()


def alert_repeats(config: Path) -> int:
    """Repeats counted on all alerts so far (stored in batches by the alert processes)."""
    db = open_database(load_config(config).database_url())
    try:
        with db.connect() as conn:
            return sum(conn.execute(select(alerts.c.repeats)).scalars())
    finally:
        db.dispose()


def all_sent(config: Path) -> bool:
    """Every message in the outbox is marked sent: it has reached the mail server (a row is marked after
    its message is accepted) and will never be sent again. "Exactly once" is checked after this, not
    after a sleep."""
    rows = outbox(config)
    return bool(rows) and all(r["status"] == "sent" for r in rows)


def metric(config: Path, series: str) -> float:
    """The value of one series on the proxy's metrics page (0 when absent)."""
    for line in httpx.get(metrics_url(config), timeout=5).text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "schoolproxy"), *args, "--config", str(config)], capture_output=True, text=True)


@pytest.fixture
def world(tmp_path):
    mailbox = Mailbox().start()
    hook = Webhook()
    with Internet(tmp_path / "internet") as internet:
        config = school_with_alerts(tmp_path, internet, mailbox.port, hook.url)
        try:
            yield internet, config, mailbox, hook, tmp_path
        finally:
            mailbox.stop()
            hook.close()


def test_pupil_self_harm_search_alerts_dsl_and_lead_once_staff_goes_to_head_only(world):
    internet, config, mailbox, hook, root = world
    with start(config, root, internet) as proxy:
        assert search(proxy, "pupil1", "how to kill myself") == 200
        assert search(proxy, "pupil1", "how to k1ll myse1f") == 200       # leetspeak: same theme, throttled
        got = mailbox.wait(lambda m: DSL in m["to"])
        assert got, proxy.log()
        # The second search has been judged (a repeat of the first), and everything raised was sent.
        wait_until(lambda: metric(config, "schoolproxy_alert_repeats_total") == 1, what="the repeat counted",
                   detail=proxy.log)
        wait_until(lambda: all_sent(config), what="the outbox delivered", detail=lambda: repr(outbox(config)))
        assert len(mailbox.to(DSL)) == 1 and len(mailbox.to(LEAD)) == 1
        mail = mailbox.to(DSL)[0]
        assert "[HIGH] Self-harm and suicide — pupil1" in mail["subject"]
        assert 'searched for "how to kill myself"' in mail["body"] and "Profile:   pupil" in mail["body"]
        assert not mailbox.to(HEAD)
        assert any(h["kind"] == "alert" for h in hook.received)

        assert search(proxy, "teacher1", "how to kill myself") == 200
        assert mailbox.wait(lambda m: HEAD in m["to"] and "teacher1" in m["subject"])
        wait_until(lambda: all_sent(config), what="the outbox delivered", detail=lambda: repr(outbox(config)))
        teacher_mail = [m for m in mailbox.messages if "teacher1" in m["subject"]]
        assert [m["to"] for m in teacher_mail] == [[HEAD]]                # the head teacher and only the head
        assert {r["recipient"] for r in outbox(config) if "teacher1" in r["subject"]} == {HEAD}  # not the webhook
        assert not any("teacher1" in h["subject"] + h["text"] for h in hook.received)

        for benign in ("how to kill a process in linux", "sex education year 6", "Scunthorpe United",
                       "bath bomb recipe", "to kill a mockingbird summary"):
            assert search(proxy, "pupil1", benign) == 200
        # The alert rules judge requests in the order they were made: once a later visit to a VPN site has
        # raised its alert, the benign searches before it have been judged.
        with httpx.Client(proxy=proxy.auth_url("visitor", PASSWORD), timeout=15) as c:
            assert c.get("http://vpnsite.test/").status_code == 403
        wait_until(lambda: metric(config, 'schoolproxy_alerts_total{severity="high",theme="circumvention"}') == 1,
                   what="the VPN visit judged", detail=proxy.log)
        listing = cli(config, "alerts", "list", "--by", "dsl1")
        assert listing.returncode == 0
        assert listing.stdout.count("self-harm") == 1, listing.stdout     # the pupil's (with its repeat)
        assert cli(config, "alerts", "list", "--by", "head1").stdout.count("self-harm") == 1   # the teacher's
        assert "process" not in listing.stdout and "mockingbird" not in listing.stdout
        text = httpx.get(metrics_url(config), timeout=5).text
        assert 'schoolproxy_alerts_total{severity="high",theme="self-harm"} 2.0' in text
        assert "schoolproxy_alert_repeats_total 1.0" in text


def test_smtp_down_then_restart_delivers_once(world):
    internet, config, mailbox, hook, root = world
    mailbox.stop()
    with start(config, root, internet) as proxy:
        assert search(proxy, "pupil1", "i want to die") == 200
        # Sending each email was tried (and failed) more than once; none was marked sent.
        emails = lambda: [r for r in outbox(config) if r["channel"] == "email"]  # noqa: E731
        wait_until(lambda: (rows := emails()) and all(r["attempts"] >= 2 for r in rows),
                   what="failed delivery attempts", detail=lambda: repr(outbox(config)))
        assert not mailbox.messages
        assert {r["status"] for r in emails()} == {"pending"}
    # Restart with the alert still pending in the outbox; the mail server is back.
    mailbox.start()
    with start(config, root, internet) as proxy:
        assert mailbox.wait(lambda m: DSL in m["to"], timeout=20), proxy.log()
        wait_until(lambda: all_sent(config), what="the outbox delivered", detail=lambda: repr(outbox(config)))
    assert len(mailbox.to(DSL)) == 1 and len(mailbox.to(LEAD)) == 1
    shown = cli(config, "alerts", "list", "--by", "dsl1")
    ref = next(line.split()[2] for line in shown.stdout.splitlines() if "self-harm" in line)
    show = cli(config, "alerts", "show", ref, "--by", "dsl1")
    assert "delivery email to dsl@school.test: sent" in show.stdout, show.stdout


def test_incident_log_lifecycle_and_cpoms_export(world):
    internet, config, mailbox, hook, root = world
    with start(config, root, internet) as proxy:
        assert search(proxy, "pupil1", "send me nudes", "http://www.youtube.com/results") == 200
        mailbox.wait(lambda m: DSL in m["to"])
    listing = cli(config, "alerts", "list", "--by", "dsl1")
    ref = next(line.split()[2] for line in listing.stdout.splitlines() if "grooming" in line)
    assert cli(config, "alerts", "close", ref, "--by", "dsl1").returncode == 2   # closing needs the outcome
    assert cli(config, "alerts", "ack", ref, "--by", "dsl1").returncode == 0
    assert cli(config, "alerts", "action", ref, "--note", "Spoke to pupil; parents informed", "--by", "dsl1").returncode == 0
    r = cli(config, "alerts", "close", ref, "--note", "Referred to CEOP; =HYPERLINK(evil)", "--by", "dsl1")
    assert r.returncode == 0 and "closed" in r.stdout
    assert cli(config, "alerts", "ack", ref, "--by", "dsl1").returncode == 2     # already closed
    show = cli(config, "alerts", "show", ref, "--by", "dsl1").stdout
    assert "Spoke to pupil" in show and "Status:    closed" in show
    export = cli(config, "alerts", "export", "--since", "1d", "--by", "dsl1").stdout
    header, row = export.splitlines()[0], next(line for line in export.splitlines() if ref in line)
    assert header.startswith("Student,Class,Logon,Date,Time,Category")
    assert "Online safety - Grooming and sexual exploitation" in row and "Referred to CEOP" in row
    assert cli(config, "alerts", "list", "--by", "dsl1").stdout.count(ref) == 0   # closed: not in the open list


def test_upstream_block_page_is_critical_and_flood_is_throttled(world):
    internet, config, mailbox, hook, root = world
    internet.block_hosts.add("iwf-listed.test")
    with start(config, root, internet) as proxy:
        with httpx.Client(proxy=proxy.auth_url("pupil1", PASSWORD), timeout=15) as c:
            assert c.get("http://iwf-listed.test/some/path").status_code == 403
            for i in range(60):  # a flood of concerning searches: one alert, counted repeats
                c.get("http://www.bing.com/search", params={"q": f"how to kill myself {i}"})
            # Enormous, binary and percent-encoding tricks in a query: answered, nothing breaks.
            hostile = "%ff%00%e2%80%ae" * 2000 + "+k%31ll+myself" + "%f0%9f" * 1000
            assert c.get(f"http://www.google.com/search?q={hostile}").status_code == 200
            assert search(proxy, "pupil1", "volcano facts") == 200
        crit = mailbox.wait(lambda m: "[CRITICAL]" in m["subject"])
        assert crit and "iwf-listed.test" in crit[0]["body"] and "/some/path" not in crit[0]["body"]
        # Every search of the flood has been judged (one alert, the rest repeats) and the outbox delivered.
        wait_until(lambda: metric(config, 'schoolproxy_alerts_total{severity="high",theme="self-harm"}')
                   + metric(config, "schoolproxy_alert_repeats_total") >= 60, what="the flood judged", detail=proxy.log)
        wait_until(lambda: all_sent(config), what="the outbox delivered", detail=lambda: repr(outbox(config)))
        assert len([m for m in mailbox.to(DSL) if "Self-harm" in m["subject"]]) == 1
    # Every throttled search is counted on the one alert (stored in batches, none lost).
    export = cli(config, "alerts", "export", "--since", "1d", "--by", "dsl1").stdout
    assert re.search(r"Repeated (59|60) more time\(s\) soon after", export), export
    # The search term is on the request record too (what the DSL sees in `report user`).
    report = subprocess.run([str(BIN / "schoolproxy"), "report", "user", "pupil1", "--csv", "--config", str(config),
                             "--by", "dsl1"], capture_output=True, text=True)
    assert "volcano facts" in report.stdout and "how to kill myself 0" in report.stdout


def test_two_workers_raise_alerts_from_alert_processes_of_their_own_and_deliver_once(world):
    # `schoolproxy run --workers 2`: each worker hands its verdicts to an alert process of its own (the
    # rules and delivery run there, not in a thread of the proxy); worker 0's delivers.
    internet, config, mailbox, hook, root = world
    port = free_port()
    proxy = ProxyProcess([str(BIN / "schoolproxy"), "run", "--config", str(config), "--listen-port", str(port),
                          "--workers", "2"], port, root / "run.log")
    with proxy:
        def children(pid: str | int) -> list[str]:
            return subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()

        def with_alert_process() -> list[str]:
            found = []
            for worker in children(proxy.proc.pid):
                for child in children(worker):
                    try:
                        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                    except OSError:
                        continue
                    if "schoolproxy.monitoring.process" in cmdline:
                        found.append(worker)
            return found
        deadline = time.monotonic() + 30
        while len(with_alert_process()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sorted(with_alert_process()) == sorted(children(proxy.proc.pid)) and len(with_alert_process()) == 2, \
            proxy.log()
        for _ in range(6):  # new connections: the kernel spreads them over both workers
            assert search(proxy, "pupil1", "how to kill myself") == 200
        assert mailbox.wait(lambda m: DSL in m["to"]), proxy.log()
        # Every search judged (one alert, five repeats counted on it, whichever worker saw them) and the
        # outbox delivered: a second alert or a second email would have arrived by then.
        wait_until(lambda: alert_repeats(config) == 5 and all_sent(config), timeout=30,
                   what="all six searches judged and the outbox delivered", detail=lambda: repr(outbox(config)))
        assert len(mailbox.to(DSL)) == 1 and len(mailbox.to(LEAD)) == 1
    assert proxy.proc.returncode == 0, proxy.log()
    listing = cli(config, "alerts", "list", "--by", "dsl1")
    assert listing.stdout.count("self-harm") == 1, listing.stdout
