"""Signing a device in on the console's /device page (BYOD, guest Wi-Fi, transparent mode): the password
is checked behind the console's throttle, and the proxy's real logon feed attaches the name to the
address the page's request came from — never to one typed into the form."""

from __future__ import annotations

import logging
import time

import pytest
from conftest import PASSWORD
from console_school import World
from mitmproxy.test import taddons
from prometheus_client import CollectorRegistry
from proxyproc import free_port

from schoolproxy.console import create_app
from schoolproxy.proxy.logonfeed import LogonFeed
from schoolproxy.snapshot import SnapshotHolder

SECRET = "feed-secret-0123456789abcdef"
DEVICE = "10.9.5.5"


@pytest.fixture
def world(tmp_path):
    port = free_port()
    (tmp_path / "feed-secret").write_text(SECRET)
    (tmp_path / "feed-secret").chmod(0o600)
    w = World(tmp_path)
    w.config.write_text(w.config.read_text().replace(
        "identity:\n", f'identity:\n  logon_feed: {{listen: "127.0.0.1:{port}", secret_file: feed-secret, '
                       f'sign_in_hours: 3}}\n', 1))
    w.app = create_app(w.config, w.db)
    snapshots = SnapshotHolder()
    snapshots.load(w.config)
    feed = LogonFeed(snapshots, CollectorRegistry())
    with taddons.context(feed):
        feed.configure({"schoolproxy_config"})
        w.feed = feed
        try:
            yield w
        finally:
            feed.done()


def device(world):
    b = world.browser()
    b.client.environ_base["REMOTE_ADDR"] = DEVICE
    return b


def test_a_pupil_signs_their_device_in_and_out(world):
    b = device(world)
    r = b.get("/device")
    assert r.status_code == 200 and "Sign this device in" in b.last and DEVICE in b.last and "3 hours" in b.last
    r = b.post("/device", {"username": "Pupil1", "password": PASSWORD, "ip": "10.9.9.9"})
    assert r.status_code == 200 and "signed in as <strong>pupil1</strong>" in b.last
    entry = world.feed.logons.lookup(DEVICE)
    assert (entry.user, entry.source) == ("pupil1", "sign-in")
    assert entry.expires == pytest.approx(time.time() + 3 * 3600, abs=60)
    assert world.feed.logons.lookup("10.9.9.9") is None        # a typed address is ignored
    r = b.post("/device", {"action": "signout", "username": "pupil1"})
    assert r.status_code == 200 and "signed out" in b.last and world.feed.logons.lookup(DEVICE) is None


def test_a_wrong_password_attaches_nothing_and_guessing_is_slowed(world, caplog):
    caplog.set_level(logging.INFO)
    b = device(world)
    b.get("/device")
    for i in range(5):
        r = b.post("/device", {"username": "pupil1", "password": f"Guess-{i}-secret"})
        assert r.status_code == 401 and "do not match" in b.last
    r = b.post("/device", {"username": "pupil1", "password": PASSWORD})
    assert r.status_code == 429 and "Try again after" in b.last
    assert world.feed.logons.lookup(DEVICE) is None
    assert "Guess-" not in caplog.text and PASSWORD not in caplog.text


def test_a_console_only_account_cannot_sign_a_device_in(world):
    """dsl1 is a local console account: the proxy would not know whose filtering to apply."""
    b = device(world)
    b.get("/device")
    r = b.post("/device", {"username": "dsl1", "password": PASSWORD})
    assert r.status_code == 401 and world.feed.logons.lookup(DEVICE) is None


def test_the_form_needs_its_token(world):
    b = device(world)
    b.get("/device")
    r = b.post("/device", {"username": "pupil1", "password": PASSWORD, "csrf": "forged"})
    assert r.status_code == 403 and world.feed.logons.lookup(DEVICE) is None


def test_a_feed_that_does_not_answer_is_said_and_nothing_is_claimed(world):
    world.feed.done()
    b = device(world)
    b.get("/device")
    r = b.post("/device", {"username": "pupil1", "password": PASSWORD})
    assert r.status_code == 502 and "not signed in" in b.last and "signed in as" not in b.last


def test_without_a_logon_feed_the_page_says_so(tmp_path):
    b = World(tmp_path).browser()
    r = b.get("/device")
    assert r.status_code == 404 and "has not turned on signing devices in" in b.last and "<form" not in b.last
