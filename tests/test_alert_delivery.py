"""Delivery over a real SMTP server with STARTTLS and authentication (aiosmtpd), and the weekly digest."""

from __future__ import annotations

import datetime as dt
import ssl
import subprocess

import pytest
from conftest import make_school, make_verdict, require
from internet import make_test_ca
from proxyproc import BIN, free_port
from sqlalchemy import select

from schoolproxy.config import SmtpSettings, load_config
from schoolproxy.monitoring import store
from schoolproxy.monitoring.delivery import DeliveryError, send_email
from schoolproxy.monitoring.rules import Candidate
from schoolproxy.records import open_database, upgrade
from schoolproxy.records.schema import alert_outbox


@pytest.fixture
def tls_smtp(tmp_path):
    try:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult
    except ImportError:
        require("aiosmtpd is not installed")
    ca = make_test_ca(tmp_path / "ca")
    cert, key = ca.issue(["localhost"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    received = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append((session.authenticated, envelope.rcpt_tos, envelope.content.decode()))
            return "250 OK"

    def auth(server, session, envelope, mechanism, data):
        return AuthResult(success=(data.login, data.password) == (b"alerts", b"mail-pass-1"))

    port = free_port()
    ctl = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
                     authenticator=auth, auth_require_tls=True, server_hostname="localhost")
    ctl.start()
    (tmp_path / "smtp-password").write_text("mail-pass-1\n")
    yield port, ca.path, received, tmp_path
    ctl.stop()


def test_starttls_and_login(tls_smtp):
    port, ca, received, root = tls_smtp
    smtp = SmtpSettings(host="localhost", port=port, security="starttls", username="alerts",
                        password_file=root / "smtp-password", sender="filter@school.test", ca_file=ca)
    send_email(smtp, root, "dsl@school.test", "[HIGH] test", "body text", "REF1")
    assert received and received[0][0] is True and received[0][1] == ["dsl@school.test"]
    assert "X-Schoolproxy-Alert: REF1" in received[0][2]


def test_wrong_password_or_untrusted_certificate_is_a_delivery_error(tls_smtp):
    port, ca, received, root = tls_smtp
    (root / "wrong").write_text("nope\n")
    bad_pw = SmtpSettings(host="localhost", port=port, username="alerts", password_file=root / "wrong",
                          sender="f@school.test", ca_file=ca)
    with pytest.raises(DeliveryError, match="SMTP"):
        send_email(bad_pw, root, "dsl@school.test", "s", "b", "R")
    other_ca = make_test_ca(root / "other").path
    bad_ca = SmtpSettings(host="localhost", port=port, username="alerts", password_file=root / "smtp-password",
                          sender="f@school.test", ca_file=other_ca)
    with pytest.raises(DeliveryError):
        send_email(bad_ca, root, "dsl@school.test", "s", "b", "R")
    assert not received


def test_weekly_digest_lists_the_alerts_not_sent_at_the_time_once(tmp_path):
    config_path = make_school(tmp_path, database=f"sqlite:///{tmp_path / 'r.db'}")
    text = config_path.read_text() + ("alerts:\n  recipients: {dsl: [dsl@s.test], computing_lead: [cl@s.test], "
                                      "head: [h@s.test], slt: [slt@s.test]}\n  smtp: {host: 127.0.0.1, from: f@s.test}\n")
    config_path.write_text(text)
    cfg = load_config(config_path)
    db = open_database(cfg.database_url())
    upgrade(db)
    now = dt.datetime.now(dt.timezone.utc).timestamp()
    store.raise_alert(db, cfg, Candidate("bullying", "medium", "search-phrases", 'searched for "everyone hates me"',
                                         make_verdict(time=now - 3600)), "pupil", None)
    store.raise_alert(db, cfg, Candidate("self-harm", "high", "search-phrases", "x", make_verdict(time=now - 60)),
                      "pupil", None)
    r = subprocess.run([str(BIN / "schoolproxy"), "report", "weekly", "--send", "--config", str(config_path)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "1 alert(s)" in r.stdout and "everyone hates me" not in r.stdout  # counts only
    assert "queued for 2 recipient(s)" in r.stdout                     # the DSL and the computing lead
    with db.connect() as conn:
        [body] = {o.body for o in conn.execute(select(alert_outbox).where(alert_outbox.c.kind == "digest"))}
    assert "Bullying (1)" in body and "Self-harm" not in body             # the high one went at the time
    again = subprocess.run([str(BIN / "schoolproxy"), "report", "weekly", "--send", "--config", str(config_path)],
                           capture_output=True, text=True)
    assert "nothing new to send" in again.stdout
