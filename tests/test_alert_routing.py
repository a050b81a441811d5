"""Who a concern is sent to, directly: pupils and guests → the DSL and the computing lead; staff → the
head teacher only; the head → the chair of governors; supply → SLT; never the subject. Through the
alert service as the proxy runs it (rules, store and outbox, delivery) to a real SMTP server, on SQLite
and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path

import pytest
import yaml
from conftest import make_school, make_verdict, require
from proxyproc import free_port

from schoolproxy.monitoring import service as service_module
from schoolproxy.monitoring.access import may_see_alert, viewer_for
from schoolproxy.monitoring.service import AlertService
from schoolproxy.monitoring.store import list_alerts
from schoolproxy.records import open_database, upgrade
from schoolproxy.snapshot import SnapshotHolder

PHRASES = Path(__file__).resolve().parent.parent / "filterlists" / "phrases"
ADDRESS = {"dsl": "dsl@school.test", "computing_lead": "lead@school.test", "head": "head@school.test",
           "slt": "slt@school.test", "chair_of_governors": "chair@school.test"}
PEOPLE = {"hteacher": {"name": "Mr H Teacher", "roles": ["head"]},
          "dlead": {"name": "Mrs D Lead", "roles": ["dsl"]},
          "clead": {"name": "Mr C Lead", "roles": ["computing_lead"]},
          "chair": {"name": "Mrs C Chair", "roles": ["chair_of_governors"]},
          "sltone": {"name": "Ms S One", "roles": ["slt"]}}


class Mailbox:
    """A real SMTP server (aiosmtpd) keeping who each message was sent to."""

    def __init__(self):
        try:
            from aiosmtpd.controller import Controller
        except ImportError:
            require("aiosmtpd is not installed")
        self.received: list[tuple[tuple[str, ...], str]] = []
        box = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                subject = next((line for line in envelope.content.decode(errors="replace").splitlines()
                                if line.startswith("Subject:")), "")
                box.received.append((tuple(envelope.rcpt_tos), subject))
                return "250 OK"
        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()


#: The real phrase lists, compiled once for this module (they are never changed after loading).
phrase_lists = functools.lru_cache(service_module.load_phrase_lists)


@pytest.fixture
def routed(tmp_path, db_url, monkeypatch):
    """The test school with the school's people, an address for every role, and a real mail server."""
    monkeypatch.setattr(service_module, "load_phrase_lists", phrase_lists)
    mailbox = Mailbox()
    config = make_school(tmp_path, database=db_url)
    data = yaml.safe_load(config.read_text())
    data["identity"]["users"].update({u: "staff" for u in ("hteacher", "dlead", "clead", "sltone")})
    data["people"] = PEOPLE
    data["alerts"] = {"phrases": str(PHRASES), "recipients": {role: [a] for role, a in ADDRESS.items()},
                      "smtp": {"host": "127.0.0.1", "port": mailbox.port, "security": "none", "from": "filter@school.test"}}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    snapshots = SnapshotHolder()
    snapshots.load(config)
    db = open_database(db_url)
    upgrade(db)
    service = AlertService(snapshots, db, retry_seconds=1)   # driven by hand: no threads, no waiting
    try:
        yield service, mailbox, snapshots.snapshot.config
    finally:
        mailbox.close()
        db.dispose()


def searched(username: str, profile: str, term: str = "how to kill myself"):
    return make_verdict(username=username, profile=profile, host="www.google.com", action="allow",
                        path="/search?q=" + term.replace(" ", "+"), search_term=term, rule=f"default:{profile}",
                        categories=(), identity_rule="pattern Supply*" if profile == "supply" else "user")


@pytest.mark.parametrize("username, profile, to", [
    ("pupil1", "pupil", {"dsl", "computing_lead"}),
    ("visitor", "guest", {"dsl", "computing_lead"}),
    ("teacher1", "staff", {"head"}),
    ("dlead", "staff", {"head"}),                       # the DSL's own concern is not sent to the DSL
    ("clead", "staff", {"head"}),
    ("hteacher", "staff", {"chair_of_governors"}),      # the head's goes to the chair, never to the head
    ("Supply3", "supply", {"slt"}),
])
def test_a_concern_is_sent_to_its_audience_and_no_one_else(routed, username, profile, to):
    service, mailbox, config = routed
    service.submit(searched(username, profile))
    assert service.process() == 1
    assert service.deliver() == len(to)
    assert sorted(rcpt for rcpts, _ in mailbox.received for rcpt in rcpts) == sorted(ADDRESS[r] for r in to)
    assert all("Self-harm" in subject for _, subject in mailbox.received)
    [alert] = list_alerts(service.db, since=dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))
    assert set(alert["route"].split(",")) == to
    # The console and the CLI show it to the same people, and never to its subject.
    seen_by = {u for u in PEOPLE if may_see_alert(viewer_for(config, u), alert)}
    assert seen_by == {u for u, p in PEOPLE.items() if set(p["roles"]) & to} - {username}


def test_a_second_concern_in_the_throttle_window_is_counted_not_sent_again(routed):
    service, mailbox, _ = routed
    service.submit(searched("pupil1", "pupil"))
    service.submit(searched("pupil1", "pupil", "how to k1ll myse1f"))
    assert service.process() == 1 and service.repeats == 1
    assert service.deliver() == 2 and service.deliver() == 0          # DSL and computing lead, once each
    assert len(mailbox.received) == 2
