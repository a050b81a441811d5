"""Checking who is signing in, and slowing anyone guessing passwords.

:class:`Accounts` checks a username and password the way the school's staff already sign in: a local
console account (``console.users_file``), else the school account — the directory (AD/LDAP) or the
proxy's own users file, exactly as the proxy checks it. :class:`Throttle` counts failed sign-ins per
account and per computer in the records database (so a restart does not reset it) and refuses, without
checking the password at all, any attempt that comes before the wait is over. Every attempt is counted
*before* its password is checked, so sending many at once gains nothing.

Both are independent of the console's pages: a Wi-Fi / BYOD sign-in page that ties a person to a device's
address checks the password with the same two objects, then hands the result to the logon table.
Passwords are never logged or stored; the log names the account and the address.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Engine, and_, delete, func, insert, select, update

from schoolproxy.config import Config, ConsoleSigninSettings
from schoolproxy.identity.directory import MAX_PASSWORD, Directory, valid_username
from schoolproxy.identity.userfile import UsersFile
from schoolproxy.records.schema import console_signin_attempts

log = logging.getLogger(__name__)
UTC = dt.timezone.utc
FIRST_WAIT = 30.0          # seconds, after the allowed failures; doubled each further failure
MAX_ACCOUNT = 128
_UNPRINTABLE = re.compile(r"[^\w.@\\ -]", re.UNICODE)


def account_key(username: str) -> str:
    """How an account is counted and named: DOMAIN\\ dropped, lower-case, bounded."""
    name = username.strip().rpartition("\\")[2]
    return name.lower()[:MAX_ACCOUNT]


def printable(username: str) -> str:
    """A typed username as it may appear in a log line (attacker-controlled: no control characters)."""
    return _UNPRINTABLE.sub("?", username[:64])


@dataclass(frozen=True, slots=True)
class Checked:
    outcome: Literal["ok", "wrong", "unavailable"]
    username: str = ""
    groups: frozenset[str] = frozenset()


class Accounts:
    """Console passwords: a local console account, else the school account (directory or users file)."""

    def __init__(self, config: Config):
        c = config.console
        self.console_users = UsersFile(config.path(c.users_file)) if c.users_file is not None else None
        pa = config.identity.proxy_auth
        self.proxy_users = UsersFile(config.path(pa.users_file)) \
            if pa is not None and pa.enabled and pa.users_file is not None else None
        d = config.identity.directory
        self.directory = Directory(d, config.base_dir) if d is not None else None

    def check(self, username: str, password: str, school_only: bool = False) -> Checked:
        """``school_only``: a school account only (the device sign-in page), never a local console account,
        which the proxy would not know."""
        name = account_key(username)
        if not valid_username(name) or not password or len(password) > MAX_PASSWORD:
            return Checked("wrong")
        for users in ((self.proxy_users,) if school_only else (self.console_users, self.proxy_users)):
            if users is not None and name in users:
                return Checked("ok", name) if users.check(name, password) else Checked("wrong")
        if self.directory is not None:
            ok = self.directory.check(name, password)
            if ok is None:
                return Checked("unavailable")
            if not ok:
                return Checked("wrong")
            return Checked("ok", name, self.directory.groups(name) or frozenset())
        (self.console_users or self.proxy_users or _NOBODY).check(name, password)  # the same time for anyone
        return Checked("wrong")


class _Nobody:
    def check(self, username: str, password: str) -> bool:
        return False


_NOBODY = _Nobody()


@dataclass(frozen=True, slots=True)
class Attempt:
    id: int | None                  # None: refused before checking
    retry_at: dt.datetime | None = None

    @property
    def allowed(self) -> bool:
        return self.id is not None


class Throttle:
    """Failed sign-ins per account and per address in the records database, and the wait they impose."""

    def __init__(self, db: Engine, settings: ConsoleSigninSettings):
        self.db = db
        self.s = settings
        self._lock = threading.Lock()

    def wait(self, failures: int, allowed: int) -> float:
        """Seconds a further attempt must wait after the latest failure."""
        if failures < allowed:
            return 0.0
        return min(self.s.window_minutes * 60.0, FIRST_WAIT * 2 ** (failures - allowed))

    def begin(self, address: str, account: str, now: dt.datetime | None = None) -> Attempt:
        """Count this attempt before its password is checked; refused (id None) while a wait is running."""
        now = now or dt.datetime.now(UTC)
        account = account_key(account)
        since = now - dt.timedelta(minutes=self.s.window_minutes)
        t = console_signin_attempts.c
        with self._lock, self.db.begin() as conn:
            conn.execute(delete(console_signin_attempts).where(t.time < since))
            retry_at = None
            for column, value, allowed in ((t.account, account, self.s.max_failures),
                                           (t.address, address, self.s.max_failures_per_address)):
                n, latest = conn.execute(select(func.count(), func.max(t.time))
                                         .where(column == value, t.time >= since)).one()
                pause = self.wait(n, allowed)
                if pause and latest is not None:
                    until = _aware(latest) + dt.timedelta(seconds=pause)
                    if until > now:
                        retry_at = max(retry_at or until, until)
            if retry_at is not None:
                log.warning("console: sign-in as %s from %s refused without checking: too many failures "
                            "(next try after %s UTC)", printable(account), address, f"{retry_at:%H:%M:%S}")
                return Attempt(None, retry_at)
            new = conn.execute(insert(console_signin_attempts).values(
                time=now, address=address[:64], account=account, outcome="checking")
                .returning(t.id)).scalar_one()
        return Attempt(new)

    def failed(self, attempt: Attempt, address: str, account: str) -> None:
        t = console_signin_attempts.c
        with self.db.begin() as conn:
            conn.execute(update(console_signin_attempts).where(t.id == attempt.id).values(outcome="failed"))
            n = conn.execute(select(func.count()).where(t.account == account_key(account))).scalar_one()
        log.warning("console: sign-in failed for %s from %s (%d failure(s) for this account in %d minutes)",
                    printable(account), address, n, self.s.window_minutes)

    def succeeded(self, attempt: Attempt, account: str) -> None:
        """The account's own failures are forgotten; the address's other accounts' are not."""
        t = console_signin_attempts.c
        with self.db.begin() as conn:
            conn.execute(delete(console_signin_attempts).where(
                (t.id == attempt.id) | and_(t.account == account_key(account), t.outcome == "failed")))

    def unanswered(self, attempt: Attempt) -> None:
        """The password could not be checked (directory down): not a failure."""
        with self.db.begin() as conn:
            conn.execute(delete(console_signin_attempts).where(console_signin_attempts.c.id == attempt.id))


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
