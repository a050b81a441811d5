"""Console sign-in: whose password is checked where, and the throttle on guessing (real SQLite and
PostgreSQL, a real slapd)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from conftest import PASSWORD
from console_school import add_directory, make_console_school
from directory_server import PASSWORD as DIR_PASSWORD

from schoolproxy.config import ConsoleSigninSettings, load_config
from schoolproxy.console.signin import FIRST_WAIT, Accounts, Throttle
from schoolproxy.records import open_database, upgrade

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def accounts(tmp_path) -> Accounts:
    return Accounts(load_config(make_console_school(tmp_path)))


def test_local_console_account_then_the_proxy_users_file(tmp_path):
    a = accounts(tmp_path)
    assert a.check("dsl1", PASSWORD).outcome == "ok"
    assert a.check("DSL1", PASSWORD).username == "dsl1"
    assert a.check("SCHOOL\\dsl1", PASSWORD).outcome == "ok"          # as Windows users type it
    assert a.check("teacher1", PASSWORD).outcome == "ok"              # the school account (proxy users file)
    for user, password in (("dsl1", "wrong"), ("nobody", PASSWORD), ("dsl1", ""), ("", PASSWORD),
                           ("dsl1", "x" * 5000), ("dsl1)(uid=*", PASSWORD), ("d" * 300, PASSWORD)):
        assert a.check(user, password).outcome == "wrong", user


def test_school_account_in_the_directory_brings_its_groups(slapd, tmp_path):
    a = Accounts(load_config(add_directory(make_console_school(tmp_path), slapd)))
    checked = a.check("amiller", DIR_PASSWORD)
    assert checked.outcome == "ok" and checked.groups == {"teaching-staff", "staff"}
    assert a.check("amiller", "wrong").outcome == "wrong"
    assert a.check("oldpupil", DIR_PASSWORD).outcome == "wrong"        # disabled in the directory
    assert a.check("dsl1", PASSWORD).outcome == "ok"                  # local console accounts still work


def test_directory_down_is_not_a_wrong_password(own_slapd, tmp_path):
    a = Accounts(load_config(add_directory(make_console_school(tmp_path), own_slapd)))
    own_slapd.stop()
    assert a.check("amiller", DIR_PASSWORD).outcome == "unavailable"


@pytest.fixture
def throttle(db_url):
    db = open_database(db_url)
    upgrade(db)
    yield Throttle(db, ConsoleSigninSettings(max_failures=5, max_failures_per_address=20, window_minutes=15))
    db.dispose()


def fail(t: Throttle, address: str, account: str, now: dt.datetime) -> bool:
    attempt = t.begin(address, account, now)
    if attempt.allowed:
        t.failed(attempt, address, account)
    return attempt.allowed


def test_an_account_waits_after_five_failures_even_with_the_right_password(throttle):
    for i in range(5):
        assert fail(throttle, f"10.0.0.{i}", "dsl1", T0 + dt.timedelta(seconds=i))   # from five computers
    refused = throttle.begin("10.0.0.99", "DSL1", T0 + dt.timedelta(seconds=10))
    assert not refused.allowed and refused.retry_at == T0 + dt.timedelta(seconds=4 + FIRST_WAIT)
    assert throttle.begin("10.0.0.99", "dsl1", T0 + dt.timedelta(seconds=4 + FIRST_WAIT)).allowed


def test_the_wait_doubles_and_is_capped_by_the_window(throttle):
    assert [throttle.wait(n, 5) for n in (4, 5, 6, 7)] == [0, 30, 60, 120]
    assert throttle.wait(50, 5) == 15 * 60


def test_an_address_trying_many_accounts_waits(throttle):
    for i in range(20):
        assert fail(throttle, "10.0.0.66", f"guess{i}", T0)
    assert not throttle.begin("10.0.0.66", "someone-else", T0).allowed
    assert throttle.begin("10.0.0.67", "someone-else", T0).allowed       # other computers are not held up


def test_attempts_sent_all_at_once_are_counted_before_they_are_checked(throttle):
    allowed = []
    barrier = threading.Barrier(20)

    def attempt():
        barrier.wait()
        allowed.append(throttle.begin("10.0.0.5", "head1", T0).allowed)
    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert allowed.count(True) == 5


def test_success_forgets_the_accounts_failures_not_the_addresses(throttle):
    for i in range(4):
        fail(throttle, "10.0.0.8", "dsl1", T0)
    for i in range(10):
        fail(throttle, "10.0.0.8", f"other{i}", T0)
    ok = throttle.begin("10.0.0.8", "dsl1", T0)
    throttle.succeeded(ok, "dsl1")
    for i in range(5):
        assert fail(throttle, "10.0.0.9", "dsl1", T0)                    # a fresh five for the account
    for i in range(10):
        assert fail(throttle, "10.0.0.8", f"more{i}", T0)                 # the address: 10 + 10 = 20
    assert not throttle.begin("10.0.0.8", "fresh", T0).allowed


def test_a_directory_that_cannot_answer_is_not_a_failure(throttle):
    for _ in range(10):
        a = throttle.begin("10.0.0.3", "amiller", T0)
        assert a.allowed
        throttle.unanswered(a)


def test_failures_older_than_the_window_are_forgotten(throttle):
    for _ in range(5):
        fail(throttle, "10.0.0.4", "lead1", T0)
    assert throttle.begin("10.0.0.4", "lead1", T0 + dt.timedelta(minutes=16)).allowed
