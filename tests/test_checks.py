"""The checks log: `schoolproxy checks run` against a real mitmdump chained to the stand-in upstream
filter, with a real SMTP server and webhook receiver for the alert a failure raises."""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import PASSWORD, make_school
from internet import Internet
from proxyproc import BIN, ProxyProcess
from sqlalchemy import insert, select
from test_e2e_alerts import Mailbox, Webhook

from schoolproxy.cli.common import actor
from schoolproxy.config import ConfigError, parse_config
from schoolproxy.records import open_database, upgrade
from schoolproxy.records.database import current_revision, head_revision
from schoolproxy.records.checks import list_runs, results_of
from schoolproxy.records.schema import alert_outbox, alerts
from schoolproxy.snapshot import build_snapshot
from schoolproxy.standards import checks

DSL, NETWORK = "dsl@school.test", "network@school.test"
UPSTREAM_TEST = "blocked-upstream.test"


def school_with_checks(root: Path, internet: Internet | None, smtp_port: int | None = None,
                       webhook_url: str | None = None) -> Path:
    config = make_school(root, upstream=internet.proxy_url if internet else None,
                         database=f"sqlite:///{root / 'records.db'}")
    (root / "checks-password").write_text(PASSWORD + "\n")
    data = yaml.safe_load(config.read_text())
    data["alerts"] = {"recipients": {"dsl": [DSL], "computing_lead": ["lead@school.test"], "head": ["head@school.test"],
                                     "slt": ["slt@school.test"]},
                      "phrases": str(Path(__file__).resolve().parent.parent / "filterlists" / "phrases")}
    if smtp_port:
        data["alerts"]["smtp"] = {"host": "127.0.0.1", "port": smtp_port, "security": "none", "from": "filter@school.test"}
    if webhook_url:
        data["alerts"]["webhook"] = {"url": webhook_url}
    data["people"] = {"clawrence": {"name": "Mrs C Lawrence", "roles": ["dsl", "computing_lead"]},
                      "tevans": {"name": "Mr T Evans", "roles": ["network_manager"], "email": NETWORK}}
    data["checks"] = {"user": "pupil1", "password_file": "checks-password", "blocked_url": "http://socialsite.test/",
                      "safesearch_url": "https://www.google.com/search?q=homework", "help_url": "https://www.childline.org.uk/",
                      "allowed_url": "https://learning.test/", "upstream_test_url": f"http://{UPSTREAM_TEST}/",
                      "timeout_seconds": 10}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


def set_proxy_port(config: Path, port: int) -> None:
    data = yaml.safe_load(config.read_text())
    data["checks"]["proxy"] = f"http://127.0.0.1:{port}"
    config.write_text(yaml.safe_dump(data, sort_keys=False))


def migrated(path: Path, timeout: float = 20.0) -> None:
    """Wait until the running proxy has created the records database (two processes migrating a fresh
    database at once collide)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if path.exists() and current_revision(open_database(f"sqlite:///{path}")) == head_revision():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise AssertionError("the proxy did not create its records database")


def cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "schoolproxy"), *args, "--config", str(config)], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def world(tmp_path):
    mailbox = Mailbox().start()
    hook = Webhook()
    internet = Internet(tmp_path / "internet", block_hosts=[UPSTREAM_TEST]).start()
    config = school_with_checks(tmp_path, internet, mailbox.port, hook.url)
    proxy = ProxyProcess.mitmdump(config, tmp_path, "--mode", f"upstream:{internet.proxy_url}",
                                  "--set", f"ssl_verify_upstream_trusted_ca={internet.ca_path}",
                                  "--set", "schoolproxy_alert_retry_seconds=1")
    set_proxy_port(config, proxy.port)
    migrated(tmp_path / "records.db")
    try:
        yield internet, proxy, config, mailbox, hook
    finally:
        proxy.stop()
        internet.stop()
        mailbox.stop()
        hook.close()


def outbox(config: Path) -> list[dict]:
    db = open_database(f"sqlite:///{config.parent / 'records.db'}")
    with db.connect() as conn:
        return [dict(r) for r in conn.execute(select(alert_outbox)).mappings()]


def outcomes(config: Path) -> tuple[dict, dict[str, str]]:
    db = open_database(f"sqlite:///{config.parent / 'records.db'}")
    run = list_runs(db, dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))[0]
    return run, {r["name"]: r["outcome"] for r in results_of(db, [run["id"]])[run["id"]]}


@pytest.mark.e2e
def test_checks_pass_on_a_working_school_and_are_recorded(world):
    internet, proxy, config, mailbox, hook = world
    r = cli(config, "checks", "run", "--by", "clawrence")
    assert r.returncode == 0, r.stdout + r.stderr + proxy.log()
    assert "checks run 1 by Mrs C Lawrence (clawrence): " in r.stdout and "FAIL" not in r.stdout
    run, results = outcomes(config)
    assert run["passed"] and run["run_by"] == "Mrs C Lawrence (clawrence)" and run["alert_ref"] is None
    assert {"policy-test[0]", "policy-test[1]", "proxy-blocks", "records", "safesearch", "help-site", "upstream",
            "upstream-filtering", "alert-delivery"} <= set(results)
    assert set(results.values()) == {"pass"}
    # What the checks did really went through the proxy and the upstream filter.
    search = internet.wait_for(lambda s: s.host == "www.google.com")
    assert search.query["safe"] == ["active"]
    assert internet.requests_for("learning.test") and internet.requests_for("www.childline.org.uk")
    assert not internet.requests_for("socialsite.test")      # the block page came from the proxy
    assert internet.requests_for(UPSTREAM_TEST)               # asked of the upstream filter directly
    assert not outbox(config)                                  # nothing to report: nothing queued to send
    assert not mailbox.messages and not hook.received

    listed = cli(config, "checks", "list", "--all")
    assert "passed" in listed.stdout and "by Mrs C Lawrence (clawrence)" in listed.stdout
    assert "PASS  SafeSearch is enforced on https://www.google.com/search?q=homework as pupil1 (profile pupil)" \
        in listed.stdout


@pytest.mark.e2e
def test_upstream_down_is_a_recorded_failure_and_a_high_alert_to_network_manager_and_dsl(world):
    internet, proxy, config, mailbox, hook = world
    internet.stop()  # the Smoothwall stand-in goes away; the proxy keeps running
    r = cli(config, "checks", "run", "--by", "tevans")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL  https://learning.test/ comes back as pupil1 (profile pupil)" in r.stdout
    assert "the proxy could not reach the upstream filter" in r.stdout
    run, results = outcomes(config)
    assert not run["passed"] and run["run_by"] == "Mr T Evans (tevans)" and run["alert_ref"]
    assert results["upstream"] == results["upstream-filtering"] == results["help-site"] == "fail"
    assert results["proxy-blocks"] == results["records"] == results["policy-test[0]"] == "pass"

    # The alert: in the incident log, and sent at once by email (DSL and network manager) and webhook.
    mails = mailbox.wait(lambda m: run["alert_ref"] in m["body"])
    assert {a for m in mails for a in m["to"]} == {DSL, NETWORK}
    assert "failed 4 of its checks" in mails[0]["body"] and "upstream" in mails[0]["body"]
    assert hook.received and hook.received[0]["alert"] == run["alert_ref"]
    shown = cli(config, "alerts", "show", run["alert_ref"], "--viewer", "clawrence")
    assert "the web filter itself (schoolproxy checks)" in shown.stdout and "Severity:  high" in shown.stdout
    assert "delivery email to network@school.test: sent" in shown.stdout

    # Failing the same way again within the day: counted on the open alert, not sent again.
    again = cli(config, "checks", "run", "--by", "tevans")
    assert again.returncode == 1 and f"alert {run['alert_ref']} already open" in again.stdout
    rows = outbox(config)                                     # nothing new queued, and what was is sent
    assert sorted(r["recipient"] for r in rows if r["channel"] == "email") == [DSL, NETWORK]
    assert {r["status"] for r in rows} == {"sent"}
    assert len(mailbox.messages) == 2


def test_failure_alert_waits_in_the_outbox_when_mail_is_down(tmp_path):
    config = school_with_checks(tmp_path, None, smtp_port=1)   # nothing listens on port 1
    snap = build_snapshot(config, run_tests=False)
    db = open_database(snap.config.database_url())
    upgrade(db)
    results = [checks.CheckResult("upstream", "the upstream answers", "fail", "status 502")]
    ref, new = checks.raise_failure_alert(db, snap.config, 7, "Mr T Evans (tevans)", results)
    assert new
    with db.connect() as c:
        rows = c.execute(select(alert_outbox.c.recipient, alert_outbox.c.status, alert_outbox.c.attempts,
                                alert_outbox.c.last_error)).all()
        alert = c.execute(select(alerts).where(alerts.c.ref == ref)).mappings().one()
    assert {r.recipient for r in rows} == {DSL, NETWORK}
    assert all(r.status == "pending" and r.attempts == 1 and r.last_error for r in rows)  # the proxy retries
    assert alert["route"] == "network_manager,dsl" and alert["severity"] == "high"
    assert "checks run 7 by Mr T Evans (tevans): 1 of 1 checks failed — upstream: status 502" == alert["evidence"]


def test_no_delivery_channel_fails_the_delivery_check(tmp_path):
    config = school_with_checks(tmp_path, None)
    snap = build_snapshot(config, run_tests=False)
    result = checks.delivery_check(snap.config, None)
    assert result.outcome == "fail" and "reach nobody at once" in result.detail


def test_stuck_outbox_fails_the_delivery_check(tmp_path):
    config = school_with_checks(tmp_path, None, webhook_url="http://127.0.0.1:1/x")
    snap = build_snapshot(config, run_tests=False)
    db = open_database(snap.config.database_url())
    upgrade(db)
    assert checks.delivery_check(snap.config, db).outcome == "pass"
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)
    with db.begin() as c:
        c.execute(insert(alert_outbox).values(kind="alert", channel="webhook", recipient="http://127.0.0.1:1/x",
                                              subject="s", body="b", status="pending", attempts=9, next_attempt=old,
                                              last_error="webhook URLError: refused", created_at=old))
    result = checks.delivery_check(snap.config, db)
    assert result.outcome == "fail"
    assert "1 alert message(s) undelivered for more than 30 minutes" in result.detail
    assert "last error: webhook URLError: refused" in result.detail


def test_policy_and_locked_checks_come_from_the_config(tmp_path):
    config = school_with_checks(tmp_path, None)
    text = config.read_text().replace("expect: allow", "expect: block", 1)
    config.write_text(text)
    snap = build_snapshot(config, run_tests=False)
    results = {r.name: r for r in checks.policy_tests(snap)}
    assert results["policy-test[0]"].outcome == "pass"
    assert results["policy-test[1]"].outcome == "fail" and results["policy-test[1]"].detail == "allow (default:staff)"
    assert checks.locked_checks(snap) == []  # the test school has no locked lists


def test_checks_without_a_running_proxy_say_so(tmp_path):
    config = school_with_checks(tmp_path, None)
    r = cli(config, "checks", "run", "--by", "clawrence")
    assert r.returncode == 1
    assert "FAIL  http://socialsite.test/ as pupil1 (profile pupil) through the proxy at 127.0.0.1:8080" in r.stdout
    assert "nothing is listening at 127.0.0.1:8080" in r.stdout


def test_who_ran_it_is_a_person_never_root(tmp_path, monkeypatch):
    cfg = build_snapshot(school_with_checks(tmp_path, None), run_tests=False).config
    assert actor(cfg, "TEvans") == "Mr T Evans (tevans)"
    assert actor(cfg, "weekly timer") == "weekly timer"
    monkeypatch.setattr("getpass.getuser", lambda: "root")
    with pytest.raises(ConfigError, match="say who you are with --by NAME"):
        actor(cfg, None)


def test_checks_user_needs_its_password_file():
    with pytest.raises(ConfigError, match="checks: give both user and password_file"):
        parse_config("school: S\nidentity: {default_profile: p}\nprofiles: {p: {role: pupil}}\n"
                     "checks: {user: probe}\n")
