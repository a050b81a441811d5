"""No silent alert: high and critical alerts that have reached no one are counted, listed in every digest
and report until someone has them, and nothing claims a delivery that did not happen — on SQLite and
PostgreSQL, with a real SMTP server (aiosmtpd) stopped and started."""

from __future__ import annotations

import datetime as dt
import stat
import time
from zoneinfo import ZoneInfo

import pytest
import yaml
from conftest import make_school, make_verdict, require
from proxyproc import free_port
from sqlalchemy import select, update

from schoolproxy.config import load_config
from schoolproxy.monitoring import message, pending, store
from schoolproxy.monitoring.rules import Candidate
from schoolproxy.monitoring.service import AlertService
from schoolproxy.records import open_database, upgrade
from schoolproxy.records.schema import alert_outbox, alerts
from schoolproxy.snapshot import SnapshotHolder

UTC = dt.timezone.utc
RECIPIENTS = {"dsl": ["dsl@school.test"], "computing_lead": ["cl@school.test"], "head": ["head@school.test"],
              "slt": ["slt@school.test"]}


def school(root, db_url: str, **alerts):
    config = make_school(root, database=db_url)
    data = yaml.safe_load(config.read_text())
    data["alerts"] = {"recipients": RECIPIENTS, **alerts}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = load_config(config)
    db = open_database(cfg.database_url())
    upgrade(db)
    return config, cfg, db


def raise_one(db, cfg, severity="high", theme="self-harm", user="pupil1", ago: float = 0.0, role="pupil") -> dict:
    v = make_verdict(time=time.time() - ago, username=user, action="allow", rule="default", categories=(),
                     profile="staff" if role == "staff" else "pupil")
    return store.raise_alert(db, cfg, Candidate(theme, severity, "search-phrases",
                                                f'searched for "{theme} words"', v), role, None)


def outbox(db) -> list[dict]:
    with db.connect() as conn:
        return [dict(r) for r in conn.execute(select(alert_outbox).order_by(alert_outbox.c.id)).mappings()]


def test_with_nowhere_to_send_a_high_alert_is_undelivered_at_once_until_acknowledged(tmp_path, db_url):
    config, cfg, db = school(tmp_path, db_url)
    assert pending.nowhere_to_go(cfg) and "no email (alerts.smtp) or webhook" in pending.nowhere_to_go(cfg)[0]
    high = raise_one(db, cfg)
    raise_one(db, cfg, severity="medium", theme="bullying")             # waits for the digest anyway
    # The emails it should have been wait in the outbox (sent once smtp is set up), counted as pending.
    assert sorted((o["channel"], o["recipient"], o["status"]) for o in outbox(db)) == [
        ("email", "cl@school.test", "pending"), ("email", "dsl@school.test", "pending")]
    assert store.pending_count(db) == 2
    [unseen] = pending.undelivered(db, cfg)
    assert unseen["ref"] == high["ref"] and unseen["why"] == "no email or webhook is set up"
    assert pending.count_undelivered(db, cfg) == 1
    store.transition(db, high["ref"], "ack", "Mrs D Lawrence (dsl1)", "")
    assert pending.undelivered(db, cfg) == [] and pending.count_undelivered(db, cfg) == 0


def test_with_a_mail_server_a_new_alert_has_a_moment_then_a_failure_counts_and_a_send_clears_it(tmp_path, db_url):
    config, cfg, db = school(tmp_path, db_url, smtp={"host": "127.0.0.1", "port": 9, "security": "none",
                                                     "from": "f@school.test"})
    assert pending.nowhere_to_go(cfg) == []
    high = raise_one(db, cfg)
    assert pending.count_undelivered(db, cfg) == 0                     # on its way
    later = dt.datetime.now(UTC) + pending.DELIVERY_GRACE + dt.timedelta(seconds=1)
    assert pending.count_undelivered(db, cfg, later) == 1              # still not sent after the grace
    first, second = outbox(db)
    store.mark_failed(db, first["id"], 1, "SMTP 127.0.0.1:9: ConnectionRefusedError", 30)
    assert pending.count_undelivered(db, cfg) == 0                     # the other email is still on its way
    store.mark_failed(db, second["id"], 1, "SMTP 127.0.0.1:9: ConnectionRefusedError", 30)
    [unseen] = pending.undelivered(db, cfg)                             # both failed: it counts at once
    assert unseen["why"] == "sending failed: SMTP 127.0.0.1:9: ConnectionRefusedError"
    store.mark_sent(db, second["id"])
    assert pending.count_undelivered(db, cfg, later) == 0              # it reached the computing lead
    assert high["ref"]


def test_a_route_with_no_address_reaches_no_one_at_once(tmp_path, db_url):
    config, cfg, db = school(tmp_path, db_url, smtp={"host": "127.0.0.1", "from": "f@school.test"})
    data = yaml.safe_load(config.read_text())
    data["alerts"]["recipients"] = {**RECIPIENTS, "dsl": [], "computing_lead": []}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = load_config(config)
    assert any("about pupil users reach no one" in w for w in pending.nowhere_to_go(cfg))
    raise_one(db, cfg)
    [unseen] = pending.undelivered(db, cfg)
    assert unseen["why"].startswith("no one to send it to")


def test_every_digest_lists_the_unseen_high_alerts_until_acknowledged(tmp_path, db_url):
    config, cfg, db = school(tmp_path, db_url)
    now = dt.datetime.now(UTC)
    week = now - dt.timedelta(days=7)
    high = raise_one(db, cfg, ago=3 * 86400)
    raise_one(db, cfg, severity="low", theme="gambling", user="pupil2", ago=3600)
    for _ in range(2):  # in every digest, not once
        subject, text, queued = store.queue_digest(db, cfg, week, now)
        assert "NOT SEEN BY ANYONE" in subject and high["ref"] in text
        assert "not sent: no email or webhook is set up" in text
        assert "were sent at the time" not in text
        assert queued == 2                                             # emails waiting for a mail server
    store.transition(db, high["ref"], "ack", "Mrs D Lawrence (dsl1)", "")
    subject, text, queued = store.queue_digest(db, cfg, week, now)
    assert queued is None and "NOT SEEN" not in text                   # nothing new: the low one went once


def test_each_address_gets_the_unseen_alerts_routed_to_it_and_a_staff_concern_stays_with_the_head(tmp_path, db_url):
    config, cfg, db = school(tmp_path, db_url)
    now = dt.datetime.now(UTC)
    pupil = raise_one(db, cfg, ago=60)
    teacher = raise_one(db, cfg, user="teacher1", role="staff", ago=60)
    store.queue_digest(db, cfg, now - dt.timedelta(days=7), now)
    digests = {o["recipient"]: o["body"] for o in outbox(db) if o["kind"] == "digest"}
    assert sorted(digests) == ["cl@school.test", "dsl@school.test", "head@school.test"]
    assert pupil["ref"] in digests["dsl@school.test"] and teacher["ref"] not in digests["dsl@school.test"]
    assert teacher["ref"] not in digests["cl@school.test"]
    assert teacher["ref"] in digests["head@school.test"] and pupil["ref"] not in digests["head@school.test"]


def test_failing_messages_about_an_acknowledged_alert_are_withdrawn_not_sent_late(tmp_path, db_url):
    config, cfg, db = school(tmp_path, db_url)
    acked, other = raise_one(db, cfg), raise_one(db, cfg, user="pupil2")
    for o in outbox(db):
        store.mark_failed(db, o["id"], 1, "no email server is set up (alerts.smtp)", 30)
    store.transition(db, acked["ref"], "ack", "Mrs D Lawrence (dsl1)", "")
    assert pending.withdraw_acknowledged(db) == 2
    by_alert = {(o["alert_id"], o["status"]) for o in outbox(db)}
    assert by_alert == {(acked["id"], "withdrawn"), (other["id"], "pending")}
    assert store.pending_count(db) == 2
    _, _, sent = store.get_alert(db, acked["ref"])
    assert {s["status"] for s in sent} == {"withdrawn"}                # never shown as sent


def test_the_mailbox_keeps_a_private_copy_and_tells_no_one(tmp_path):
    config, cfg, db = school(tmp_path, f"sqlite:///{tmp_path / 'r.db'}", mailbox="state/alert-mailbox")
    high = raise_one(db, cfg)
    service = AlertService(holder(config), db, retry_seconds=60, deliver=True)
    service.deliver()
    folder = tmp_path / "state" / "alert-mailbox"
    [copy] = list((folder / "new").iterdir())
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600 and stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert high["ref"] in copy.read_text() and "Subject: [HIGH] Self-harm" in copy.read_text()
    assert {(o["channel"], o["status"]) for o in outbox(db)} == {("mailbox", "sent"), ("email", "pending")}
    assert service.undelivered == 1 and pending.undelivered(db, cfg)[0]["ref"] == high["ref"]


def test_the_mailbox_on_the_gateway_never_holds_a_concern_about_staff(tmp_path):
    """The folder is readable by whoever is root on the gateway (the network manager): a concern about a
    member of staff is the head's alone, so neither its alert nor its lines of the digest are copied there."""
    config, cfg, db = school(tmp_path, f"sqlite:///{tmp_path / 'r.db'}", mailbox="state/alert-mailbox")
    raise_one(db, cfg, user="teacher1", role="staff")                   # high: an alert of its own
    raise_one(db, cfg, severity="medium", theme="bullying", user="teacher1", role="staff")
    raise_one(db, cfg, severity="medium", theme="gambling", user="pupil1")
    now = dt.datetime.now(UTC)
    store.queue_digest(db, cfg, now - dt.timedelta(days=7), now + dt.timedelta(minutes=1))
    AlertService(holder(config), db, retry_seconds=60, deliver=True).deliver()
    copies = [p.read_text() for p in (tmp_path / "state" / "alert-mailbox" / "new").iterdir()]
    assert len(copies) == 1 and "gambling words" in copies[0] and "Weekly online-safety digest" in copies[0]
    assert not any("teacher1" in c for c in copies)
    # The head has all of it, by email: the alert, and the digest with both of theirs.
    [digest] = [o for o in outbox(db) if o["kind"] == "digest" and o["recipient"] == "head@school.test"]
    assert "bullying words" in digest["body"] and "self-harm words" in digest["body"]
    assert "gambling words" not in digest["body"]
    assert any(o["kind"] == "alert" and o["recipient"] == "head@school.test" for o in outbox(db))


def test_the_webhook_never_carries_a_concern_about_staff_unless_it_reaches_the_head_alone(tmp_path):
    """A webhook usually feeds what the DSL team reads (CPOMS, a Teams channel): a concern about a member of
    staff is the head's alone, so it goes to the head by email — which, with only a webhook set up, waits in
    the outbox and is counted as reaching no one, and check says so — never to the webhook."""
    hook = {"url": "http://127.0.0.1:1/hook"}
    config, cfg, db = school(tmp_path, f"sqlite:///{tmp_path / 'r.db'}", webhook=hook)
    [warning] = pending.nowhere_to_go(cfg)
    assert "about staff users reach no one at once" in warning and "alerts.smtp" in warning
    pupil = raise_one(db, cfg)
    teacher = raise_one(db, cfg, user="teacher1", role="staff")
    rows = outbox(db)
    assert {(o["channel"], o["recipient"]) for o in rows if o["alert_id"] == pupil["id"]} == {
        ("webhook", hook["url"])}
    assert {(o["channel"], o["recipient"]) for o in rows if o["alert_id"] == teacher["id"]} == {
        ("email", "head@school.test")}
    raise_one(db, cfg, severity="medium", theme="bullying", user="teacher2", role="staff")
    raise_one(db, cfg, severity="medium", theme="gambling", user="pupil2")
    now = dt.datetime.now(UTC)
    store.queue_digest(db, cfg, now - dt.timedelta(days=7), now + dt.timedelta(minutes=1))
    [hooked] = [o for o in outbox(db) if o["kind"] == "digest" and o["channel"] == "webhook"]
    assert "gambling words" in hooked["body"] and "teacher" not in hooked["body"]
    [head] = [o for o in outbox(db) if o["kind"] == "digest" and o["channel"] == "email"]
    assert head["recipient"] == "head@school.test" and "bullying words" in head["body"]
    # The school says its webhook reaches the head alone: then it carries them too, and nothing is warned.
    config, cfg, db = school(tmp_path / "head-only", f"sqlite:///{tmp_path / 'h.db'}",
                             webhook={**hook, "staff_concerns": True})
    assert pending.nowhere_to_go(cfg) == []
    teacher = raise_one(db, cfg, user="teacher1", role="staff")
    assert [o["channel"] for o in outbox(db) if o["alert_id"] == teacher["id"]] == ["webhook"]


def holder(config) -> SnapshotHolder:
    h = SnapshotHolder()
    h.load(config)
    return h


class Mailbox:
    """A real SMTP server (aiosmtpd), stopped and started at will."""

    def __init__(self):
        try:
            from aiosmtpd.controller import Controller
        except ImportError:
            require("aiosmtpd is not installed")
        self.received: list[tuple[list[str], str]] = []
        box = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                box.received.append((list(envelope.rcpt_tos), envelope.content.decode()))
                return "250 OK"
        self.port, self._cls, self._handler, self._ctl = free_port(), Controller, Handler(), None

    def start(self):
        self._ctl = self._cls(self._handler, hostname="127.0.0.1", port=self.port)
        self._ctl.start()

    def stop(self):
        if self._ctl is not None:
            self._ctl.stop()
            self._ctl = None


def wait_until(condition, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = condition()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_a_stopped_mail_server_leaves_the_alert_pending_and_shown_then_it_is_delivered_once(tmp_path, db_url):
    mail = Mailbox()
    config, cfg, db = school(tmp_path, db_url, smtp={"host": "127.0.0.1", "port": mail.port, "security": "none",
                                                     "from": "filter@school.test"})
    high = raise_one(db, cfg)
    service = AlertService(holder(config), db, retry_seconds=0.2, poll_seconds=0.05).start()
    try:
        # Both emails tried and failed (the server is down): the alert is pending, counted and shown.
        wait_until(lambda: all(o["attempts"] >= 1 for o in outbox(db)))
        wait_until(lambda: service.undelivered == 1)
        assert not mail.received
        assert [o["status"] for o in outbox(db) if o["kind"] == "alert"] == ["pending", "pending"]
        _, text, _ = store.queue_digest(db, cfg, dt.datetime.now(UTC) - dt.timedelta(days=7), dt.datetime.now(UTC))
        assert high["ref"] in text and "sending failed: SMTP 127.0.0.1" in text
        mail.start()
        # Delivered, and marked sent: once every row is sent, nothing can send it again.
        wait_until(lambda: all(o["status"] == "sent" for o in outbox(db) if o["kind"] == "alert"), 60)
        wait_until(lambda: service.undelivered == 0)
        alert_mail = [r for r in mail.received if f"X-Schoolproxy-Alert: {high['ref']}-" in r[1]]  # not digests
        assert sorted(r[0][0] for r in alert_mail) == ["cl@school.test", "dsl@school.test"]
        assert pending.undelivered(db, cfg) == []
    finally:
        service.stop()
        mail.stop()


def test_a_restart_does_not_send_the_weeks_digest_again(tmp_path, db_url):
    today = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[dt.datetime.now(ZoneInfo("Europe/London")).weekday()]
    config, cfg, db = school(tmp_path, db_url, digest={"day": today, "at": "00:00"})   # due now
    high = raise_one(db, cfg, ago=3600)
    for _ in range(2):  # the proxy started, then restarted: each service sees the digest is due
        AlertService(holder(config), db, deliver=True)._maybe_digest()
    digests = [o for o in outbox(db) if o["kind"] == "digest"]
    assert sorted(o["recipient"] for o in digests) == ["cl@school.test", "dsl@school.test"]
    assert all(high["ref"] in o["body"] for o in digests)
