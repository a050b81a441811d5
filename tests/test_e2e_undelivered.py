"""No silent alert on a fresh install: the example config (no email, no webhook), a real proxy, and a pupil's
high self-harm search. Every place a network manager or DSL looks says the alert has reached no one — start-up,
`schoolproxy check`, the metrics, `report weekly` (and `--send`) — until someone acknowledges it; a copy
waits in the private mailbox folder."""

from __future__ import annotations

import re
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from conftest import PASSWORD, hash_pw
from internet import Internet
from proxyproc import BIN, ROOT, ProxyProcess, free_port
from sqlalchemy import select

from schoolproxy.config import load_config
from schoolproxy.records import open_database
from schoolproxy.records.schema import alerts

pytestmark = pytest.mark.e2e

NOWHERE = "high and critical alerts have nowhere to go — no email (alerts.smtp) or webhook (alerts.webhook) is set up"


def example_school(root: Path, internet: Internet) -> Path:
    """The shipped example config as a new school has it, beside the shipped lists; only the upstream filter
    (the stand-in internet) and the metrics port (tests run side by side) differ."""
    (root / "config").mkdir()
    (root / "filterlists").symlink_to(ROOT / "filterlists")
    text = (ROOT / "config" / "schoolproxy.yaml").read_text()
    assert "\n  upstream:\n" in text and "listen: 127.0.0.1:9464" in text and "mailbox: ../var/alert-mailbox" in text
    text = text.replace("\n  upstream:\n", f"\n  upstream: {internet.proxy_url}\n", 1)
    text = text.replace("listen: 127.0.0.1:9464", f"listen: 127.0.0.1:{free_port()}", 1)
    config = root / "config" / "schoolproxy.yaml"
    config.write_text(text)
    users = root / "config" / "users.htpasswd"
    users.write_text(f"jsmith:{hash_pw(PASSWORD)}\n")
    users.chmod(0o600)
    return config


def cli(config: Path, *args: str) -> str:
    r = subprocess.run([str(BIN / "schoolproxy"), *args, "--config", str(config)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def metric(config: Path, name: str) -> float | None:
    listen = re.search(r"^  listen: (\S+)", config.read_text().split("\nmetrics:", 1)[1], re.M)[1]
    try:
        text = httpx.get(f"http://{listen}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found[1]) if found else None


def wait_until(condition, timeout: float = 30.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = condition()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"not met within {timeout}s: {what}")


def alert_refs(config: Path) -> list[str]:
    db = open_database(load_config(config).database_url())
    try:
        with db.connect() as conn:
            return list(conn.execute(select(alerts.c.ref).where(alerts.c.theme == "self-harm")).scalars())
    except Exception:  # the proxy creates the tables as it starts
        return []
    finally:
        db.dispose()


def test_a_fresh_install_shouts_that_a_pupils_high_alert_reached_no_one(tmp_path):
    with Internet(tmp_path / "internet") as internet:
        config = example_school(tmp_path, internet)
        assert NOWHERE in cli(config, "check")                               # before anything runs

        with ProxyProcess.schoolproxy_run(config, tmp_path) as run:           # start-up says it too
            wait_until(lambda: NOWHERE in run.log(), what="schoolproxy run's start-up warning")

        with ProxyProcess.mitmdump(config, tmp_path, "--mode", f"upstream:{internet.proxy_url}", quiet=False) as proxy:
            wait_until(lambda: NOWHERE in proxy.log(), what="the mitmdump addon's start-up warning")
            with httpx.Client(proxy=proxy.auth_url("jsmith", PASSWORD), timeout=15) as c:
                assert c.get("http://www.google.com/search", params={"q": "how to kill myself"}).status_code == 200
            [ref] = wait_until(lambda: alert_refs(config), what="the self-harm alert")

            # The metrics: counted as reaching no one, its emails waiting in the outbox.
            wait_until(lambda: metric(config, "schoolproxy_alerts_undelivered") == 1.0, what="undelivered gauge")
            # Emails to the DSL and the computing lead (and the week's digest, if it fell due meanwhile).
            assert metric(config, "schoolproxy_alert_outbox_pending") >= 2.0
            assert "high or critical alert(s) have reached no one (no email or webhook is set up)" in proxy.log()

            # A copy in the mailbox folder, private to the service.
            folder = tmp_path / "var" / "alert-mailbox"
            [copy] = wait_until(lambda: [p for p in (folder / "new").glob("*") if ref in p.read_text()]
                                if (folder / "new").is_dir() else [], what="the mailbox copy")
            assert stat.S_IMODE(copy.stat().st_mode) == 0o600 and stat.S_IMODE(folder.stat().st_mode) == 0o700

            # The weekly report, and the digest sent by hand: listed, never claimed as sent.
            weekly = cli(config, "report", "weekly", "--by", "clawrence")
            assert "NOT SEEN BY ANYONE YET: 1 high or critical alert(s)" in weekly and ref in weekly
            assert 'searched for "how to kill myself"' in weekly and "not sent: no email or webhook is set up" in weekly
            assert "were sent at the time" not in weekly and "sent automatically" not in weekly
            sent = cli(config, "report", "weekly", "--send")
            assert "1 HIGH ALERT(S) NOT SEEN BY ANYONE" in sent and "nothing new to send" not in sent
            assert "jsmith" not in sent and "kill" not in sent                 # counts only: no --by
            assert "NOT SENT: no email or webhook is set up (alerts.smtp, alerts.webhook)" in sent

            check = cli(config, "check")
            assert NOWHERE in check and "alerts: 1 high or critical alert has reached no one" in check

            # Acknowledged: someone has it in hand, and it stops shouting.
            cli(config, "alerts", "ack", ref, "--by", "clawrence")
            wait_until(lambda: metric(config, "schoolproxy_alerts_undelivered") == 0.0, what="gauge back to 0")
            assert "NOT SEEN" not in cli(config, "report", "weekly", "--by", "clawrence")
            assert "reached no one" not in cli(config, "check")
