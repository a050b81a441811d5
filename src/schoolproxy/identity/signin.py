"""Signing a device in: for devices with no school logon behind them (a pupil's own phone on the Wi-Fi,
an iPad, a visitor's laptop in transparent mode), a person signs in on a page and their device's address
is attached to them for a few hours — a logon-table entry with source ``sign-in`` and its own expiry,
which the proxy then reads exactly like a logon from the logon feed.

The page belongs to the console; this module is its core:

- :func:`check_password` checks the password with the same authenticator as proxy sign-in (local users
  file or the directory) and slows guessing with a :class:`SigninGuard`; :func:`attach` writes the entry
  through a :class:`LogonTable`. The address must be the one the page's request came from — never one
  typed into a form, or anyone could attach their name to someone else's device.
- The proxy holds the live table and is its only writer, so a process of its own (the console) signs in
  through the logon feed's endpoint: :func:`post_sign_in` (``POST /logon`` with ``"source": "sign-in"``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from schoolproxy.identity.logons import Logon, LogonError, LogonTable
from schoolproxy.identity.profiles import Authenticator
from schoolproxy.identity.signin_guard import SigninGuard

DEFAULT_HOURS = 8.0
_KEY = os.urandom(32)  # for counting different wrong passwords, never storing them


class SignInError(Exception):
    """Signing in did not happen; the message can be shown to the person."""


@dataclass(frozen=True, slots=True)
class SignedIn:
    user: str
    ip: str
    expires: float


def check_password(authenticator: Authenticator, guard: SigninGuard, username: str, password: str, ip: str,
                   now: float | None = None) -> frozenset[str] | None:
    """Check a sign-in from the device at ``ip``; its directory groups if it passed, SignInError if not.
    Different wrong passwords from one device slow its sign-ins (the guard). Blocking (bcrypt or the
    directory): call it off any event loop."""
    now = time.time() if now is None else now
    wait = guard.delay(ip, now)
    if wait:
        raise SignInError(f"Too many wrong passwords from this device. Try again in {int(wait)} seconds.")
    username = username.strip()
    ok = authenticator.check(username, password) if username and password else False
    if ok is None:
        raise SignInError("The school's sign-in service is not answering. Try again in a minute.")
    if not ok:
        key = hmac.digest(_KEY, username.lower().encode() + b"\0" + password.encode("utf-8", "surrogatepass"),
                          hashlib.sha256)
        guard.failed(ip, key, now)
        raise SignInError("That username and password did not work.")
    return authenticator.groups(username)


def attach(table: LogonTable, username: str, ip: str, hours: float = DEFAULT_HOURS,
           groups: frozenset[str] | None = None, now: float | None = None) -> Logon:
    """Attach ``username`` to the device at ``ip`` for ``hours`` (after :func:`check_password`). ``ip`` is
    the address the sign-in request came from."""
    try:
        return table.logon(username, ip, None, now=now, groups=groups, source="sign-in", ttl_seconds=hours * 3600)
    except LogonError as e:
        raise SignInError(str(e)) from None


def sign_out(table: LogonTable, username: str, ip: str) -> bool:
    """End a sign-in early (only the person signed in on that address can be signed out)."""
    return table.logoff(username, ip)


def post_sign_in(feed_url: str, secret: str, user: str, ip: str, hours: float = DEFAULT_HOURS,
                 timeout: float = 5.0) -> SignedIn:
    """:func:`attach` from another process (the console): the proxy's logon feed attaches ``user`` to
    ``ip`` as a sign-in, once :func:`check_password` has passed."""
    body = json.dumps({"user": user, "ip": ip, "source": "sign-in", "hours": str(hours)}).encode()
    req = urllib.request.Request(feed_url.rstrip("/") + "/logon", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"})
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            answer = json.loads(resp.read(4096))
    except urllib.error.HTTPError as e:
        try:
            reason = json.loads(e.read(4096)).get("error", "")
        except ValueError:
            reason = ""
        raise SignInError(f"the proxy refused the sign-in ({e.code}{': ' + reason if reason else ''})") from None
    except (OSError, ValueError) as e:
        raise SignInError(f"the proxy's logon feed is not answering at {feed_url}: {e}") from None
    return SignedIn(answer["user"], answer["ip"], float(answer["expires"]))


def sign_out_remote(feed_url: str, secret: str, user: str, ip: str, timeout: float = 5.0) -> bool:
    """:func:`sign_out` from another process (the console): True if ``user`` was signed in on ``ip``."""
    body = json.dumps({"user": user, "ip": ip}).encode()
    req = urllib.request.Request(feed_url.rstrip("/") + "/logoff", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"})
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return bool(json.loads(resp.read(4096)).get("cleared"))
    except urllib.error.HTTPError as e:
        raise SignInError(f"the proxy refused the sign-out ({e.code})") from None
    except (OSError, ValueError) as e:
        raise SignInError(f"the proxy's logon feed is not answering at {feed_url}: {e}") from None


# Straight to the gateway's own feed, never through a proxy named in the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
