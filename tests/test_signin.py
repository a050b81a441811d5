"""Signing a device in (BYOD, guest Wi-Fi): the password check, the logon-table entry, and the call the
console makes to the proxy's logon feed."""

import time

import pytest
from conftest import PASSWORD, free_port
from mitmproxy.test import taddons
from prometheus_client import CollectorRegistry

from schoolproxy.identity.logons import LogonTable
from schoolproxy.identity.signin import SignInError, attach, check_password, post_sign_in, sign_out
from schoolproxy.identity.signin_guard import SigninGuard
from schoolproxy.identity.userfile import UsersFile
from schoolproxy.proxy.logonfeed import LogonFeed
from schoolproxy.snapshot import SnapshotHolder

SECRET = "a-feed-secret-of-some-length"


@pytest.fixture
def users(school):
    return UsersFile(school.parent / "users.htpasswd")


def test_a_checked_sign_in_attaches_the_user_to_the_device_until_it_expires(users):
    table = LogonTable(10 * 3600)
    groups = check_password(users, SigninGuard(), "pupil1", PASSWORD, "10.9.5.5")
    entry = attach(table, "pupil1", "10.9.5.5", hours=2, groups=groups, now=1000)
    assert (entry.source, entry.expires) == ("sign-in", 1000 + 2 * 3600)
    assert table.lookup("10.9.5.5", now=1000 + 2 * 3600 - 1).user == "pupil1"
    assert table.lookup("10.9.5.5", now=1000 + 2 * 3600) is None  # expired: the default profile again


def test_wrong_passwords_are_refused_then_slowed(users):
    guard = SigninGuard(max_failures=3, window_seconds=300)
    for i in range(3):
        with pytest.raises(SignInError, match="did not work"):
            check_password(users, guard, "pupil1", f"guess{i}", "10.9.5.5", now=100)
    with pytest.raises(SignInError, match="Too many wrong passwords from this device"):
        check_password(users, guard, "pupil1", PASSWORD, "10.9.5.5", now=101)
    assert check_password(users, guard, "pupil1", PASSWORD, "10.9.5.6", now=101) is not None  # another device
    with pytest.raises(SignInError, match="did not work"):
        check_password(users, guard, "", "", "10.9.5.7", now=101)


def test_directory_down_is_said_plainly():
    class Down:
        def check(self, u, p):
            return None

        def groups(self, u):
            return None
    with pytest.raises(SignInError, match="not answering"):
        check_password(Down(), SigninGuard(), "pupil1", "x", "10.9.5.5")


def test_only_the_signed_in_person_signs_out():
    table = LogonTable(3600)
    attach(table, "pupil1", "10.9.5.5", hours=1)
    assert sign_out(table, "teacher1", "10.9.5.5") is False
    assert sign_out(table, "pupil1", "10.9.5.5") is True and table.lookup("10.9.5.5") is None


def test_the_console_signs_a_device_in_through_the_proxys_logon_feed(school):
    port = free_port()
    (school.parent / "feed-secret").write_text(SECRET)
    school.write_text(school.read_text().replace(
        "identity:\n", f'identity:\n  logon_feed: {{listen: "127.0.0.1:{port}", secret_file: feed-secret, '
        "state_file: logons.json}\n", 1))  # its own, not the default shared by every test (../var)
    snapshots = SnapshotHolder()
    snapshots.load(school)
    feed = LogonFeed(snapshots, CollectorRegistry())
    with taddons.context(feed):
        feed.configure({"schoolproxy_config"})
        try:
            done = post_sign_in(f"http://127.0.0.1:{port}", SECRET, "pupil1", "10.9.5.5", hours=3)
            assert done.user == "pupil1" and done.expires == pytest.approx(time.time() + 3 * 3600, abs=60)
            entry = feed.logons.lookup("10.9.5.5")
            assert (entry.user, entry.source) == ("pupil1", "sign-in")
            with pytest.raises(SignInError, match="refused the sign-in \\(401"):
                post_sign_in(f"http://127.0.0.1:{port}", "wrong-secret-xxxxxxxx", "teacher1", "10.9.5.5")
            with pytest.raises(SignInError, match="'hours' must be a number"):
                post_sign_in(f"http://127.0.0.1:{port}", SECRET, "teacher1", "10.9.5.5", hours="soon")
            with pytest.raises(SignInError, match="between 1 second and 168 hours"):
                post_sign_in(f"http://127.0.0.1:{port}", SECRET, "teacher1", "10.9.5.5", hours=1000)
            assert feed.logons.lookup("10.9.5.5").user == "pupil1"  # refused calls changed nothing
        finally:
            feed.done()
