"""Identify addon: who is behind this flow? Sets ``flow.metadata[IDENTITY]`` or answers 407.

Proxy authentication (HTTP Basic, explicit-proxy mode) is checked once per connection for HTTPS
(at CONNECT) and once per distinct credential for plain HTTP, through a cache keyed by an HMAC of the
credentials (the password itself is never kept, logged or forwarded). bcrypt and the directory run in a
worker thread so the event loop never blocks; concurrent checks of the same credentials share one call.
Without credentials, a live logon-feed entry for the client address identifies the user; the device name
from the feed is carried on every identity from that address.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import hmac
import logging
import os
import time
import weakref
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Protocol

from mitmproxy import connection, http
from mitmproxy.proxy import mode_specs
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric

from schoolproxy.identity.logons import Logon
from schoolproxy.identity.profiles import Authenticator, Identity
from schoolproxy.identity.signin_guard import SigninGuard, Turns, account
from schoolproxy.metrics import Scraped
from schoolproxy.snapshot import Snapshot, SnapshotHolder

log = logging.getLogger(__name__)

IDENTITY = "schoolproxy.identity.profiles"
#: Modes in which the client addresses the proxy, and so can sign in to it.
EXPLICIT_MODES = (mode_specs.RegularMode, mode_specs.UpstreamMode)
MAX_AUTH_HEADER = 4096
NEGATIVE_TTL = 30.0


@dataclass(slots=True)
class _Checked:
    """A checked credential: the answer, kept by an HMAC of username and password."""

    expires: float
    username: str
    ok: bool
    groups: frozenset[str] | None = None
    unverified: bool = False    # the directory was down: default profile, checked again soon
    # The Identity for the snapshot and device it was last built for (rebuilt after a reload).
    snap: Snapshot | None = None
    device: str | None = None
    ident: Identity | None = None
    #: What the answer depended on (the users file's hash): changed at a reload, it is checked again.
    version: object = None


def _version(snap: Snapshot, username: str) -> object:
    version = getattr(snap.authenticator, "version", None)
    return version(username) if version is not None else None


class Logons(Protocol):
    """Who is logged on where (the logon feed addon)."""

    def lookup(self, ip: str) -> Logon | None: ...


class Identify:
    def __init__(self, snapshots: SnapshotHolder, registry: CollectorRegistry, logons: Logons | None = None):
        self.snapshots = snapshots
        self.logons = logons
        #: Sign-in outcomes beyond success, for the metrics.
        self.signin_problems = {"failed": 0, "unverified": 0, "slowed": 0, "guessing_reports": 0}
        #: Identity fixed by CONNECT for every request inside that tunnel.
        self.by_conn: weakref.WeakKeyDictionary[connection.Client, Identity] = weakref.WeakKeyDictionary()
        #: The sign-in behind a tunnel's identity, so a reload that removes the user ends the tunnel's use.
        self._signed_in: weakref.WeakKeyDictionary[connection.Client, _Checked] = weakref.WeakKeyDictionary()
        self._key = os.urandom(32)
        self._cache: dict[bytes, _Checked] = {}
        #: The same answers by an HMAC of the whole Proxy-Authorization header (its spelling as sent).
        self._by_header: dict[bytes, _Checked] = {}
        self._pending: dict[bytes, asyncio.Future[_Checked]] = {}
        self._feed: dict[str, tuple[Logon, Snapshot, Identity]] = {}
        self.guard = SigninGuard()
        self._turns = Turns()
        self._guard_settings: tuple[int, int] | None = None
        registry.register(Scraped(self._metrics))

    # Hooks are synchronous on the common path (connection or credential already known) and return a
    # coroutine — which mitmproxy awaits — only when a password has to be checked: no coroutine per request.
    def http_connect(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if flow.response or flow.error:
            return None
        return self.identify(flow, remember_connection=True)

    def requestheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if flow.response or flow.error or not flow.live:
            return None
        ident = self.by_conn.get(flow.client_conn)
        if ident is not None:
            entry = self._signed_in.get(flow.client_conn)
            if entry is not None and entry.snap is not self.snapshots.snapshot and not self._still_valid(entry):
                log.info("sign-in of %s withdrawn by a reload: its open connection is closed", entry.username)
                del self.by_conn[flow.client_conn]
                flow.kill()
                return None
            flow.metadata[IDENTITY] = ident
            return None
        return self.identify(flow)

    def identify(self, flow: http.HTTPFlow, remember_connection: bool = False) -> Awaitable[None] | None:
        """Set ``flow.metadata[IDENTITY]`` or answer 407; returns a coroutine if a password must be checked.

        Precedence (SPEC 5.1): proxy authentication > logon feed > subnet map > fail-closed default."""
        snap = self.snapshots.snapshot
        assert snap is not None
        ip = flow.client_conn.peername[0]
        explicit = isinstance(flow.client_conn.proxy_mode, EXPLICIT_MODES)
        header = take_proxy_authorization(flow.request.headers) if explicit else None
        logon = self.logons.lookup(ip) if self.logons is not None else None
        if header is not None and snap.authenticator is not None:
            # A browser repeats the same header on every request: its answer is found by the header
            # itself (an HMAC of it), without decoding it again.
            header_key = hmac.digest(self._key, header.encode("utf-8", "surrogateescape"), hashlib.sha256)
            entry = self._by_header.get(header_key)
            if entry is None or not self._usable(entry, snap):
                creds = parse_basic(header)
                if creds is None:
                    return self._refuse(flow, snap)
                key = self._credential_key(*creds)
                entry = self._cache.get(key)
                if entry is None or not self._usable(entry, snap):
                    return self._check_and_apply(flow, snap, key, creds, logon, remember_connection)
                if len(self._by_header) > 50_000:  # bounded, like the cache itself
                    self._by_header.clear()
                self._by_header[header_key] = entry
            return self._apply(flow, snap, self._identity(snap, entry, logon), remember_connection, entry)
        if logon is not None:
            return self._apply(flow, snap, self._feed_identity(snap, logon), remember_connection)
        pa = snap.config.identity.proxy_auth
        if explicit and snap.authenticator is not None and pa is not None and pa.required \
                and snap.subnets.lookup(ip) is None:
            return self._challenge(flow, snap)
        return self._apply(flow, snap, snap.subnets.identity_of(ip), remember_connection)

    @staticmethod
    def _usable(entry: _Checked, snap: Snapshot) -> bool:
        """Not expired, and (after a reload) the users file still says what it said when it was checked:
        a user removed from it, or whose password changed, is checked again at once."""
        if entry.expires <= time.monotonic():
            return False
        return entry.snap is snap or _version(snap, entry.username) == entry.version

    def _still_valid(self, entry: _Checked) -> bool:
        snap = self.snapshots.snapshot
        return snap is not None and _version(snap, entry.username) == entry.version

    def _apply(self, flow: http.HTTPFlow, snap: Snapshot, ident: Identity | None, remember: bool,
               entry: _Checked | None = None) -> None:
        if ident is None:
            return self._refuse(flow, snap)
        flow.metadata[IDENTITY] = ident
        if remember:
            self.by_conn[flow.client_conn] = ident
            if entry is not None:
                self._signed_in[flow.client_conn] = entry
        return None

    def _refuse(self, flow: http.HTTPFlow, snap: Snapshot) -> None:
        log.info("proxy authentication failed from %s", flow.client_conn.peername[0])
        return self._challenge(flow, snap)

    def _credential_key(self, username: str, password: str) -> bytes:
        return hmac.digest(self._key, username.encode("utf-8", "surrogatepass") + b"\0"
                           + password.encode("utf-8", "surrogatepass"), hashlib.sha256)

    @staticmethod
    def _identity(snap: Snapshot, entry: _Checked, logon: Logon | None) -> Identity | None:
        """The Identity of a checked credential (None: refused), built once per snapshot and device."""
        if not entry.ok:
            return None
        device = logon.device if logon is not None else None
        if entry.snap is not snap or entry.device != device or entry.ident is None:
            if entry.unverified:
                ident = snap.resolver.unverified(entry.username, "directory unreachable", device)
            else:
                ident = snap.resolver.identify(entry.username, "proxy-auth", entry.groups, device)
            entry.snap, entry.device, entry.ident = snap, device, ident
        return entry.ident

    def _feed_identity(self, snap: Snapshot, logon: Logon) -> Identity:
        hit = self._feed.get(logon.ip)
        if hit is not None and hit[0] is logon and hit[1] is snap:
            return hit[2]
        groups = frozenset(logon.groups) if logon.groups is not None else None
        ident = snap.resolver.identify(logon.user, logon.source, groups, logon.device)
        if len(self._feed) > 100_000:
            self._feed.clear()
        self._feed[logon.ip] = (logon, snap, ident)
        return ident

    async def _check_and_apply(self, flow: http.HTTPFlow, snap: Snapshot, key: bytes, creds: tuple[str, str],
                               logon: Logon | None, remember: bool) -> None:
        ip, who = flow.client_conn.peername[0], account(creds[0])
        guard = self._guard(snap)
        if self._turns.full(ip, who):  # more attempts waiting than anyone types: refused, not checked
            self.signin_problems["slowed"] += 1
            return self._refuse(flow, snap)
        # Checks from one address, and against one account, take turns: each waits for the failures of
        # the ones before it to count, however many arrive at once.
        async with self._turns.turn(ip, who):
            entry = self._cache.get(key)
            if entry is None or not self._usable(entry, snap):  # else: answered while this one waited
                now = time.monotonic()
                delay = max(guard.delay(ip, now), guard.delay(who, now))
                if delay:
                    self.signin_problems["slowed"] += 1
                    await asyncio.sleep(delay)
                if not flow.client_conn.connected:
                    return self._challenge(flow, snap)  # the client gave up waiting: its guess is not checked
                entry = await self._check(snap, key, *creds)
                if not entry.ok:
                    self._failed(guard, ip, who, key)
        if flow.response is None:  # the client may have gone while we waited
            self._apply(flow, snap, self._identity(snap, entry, logon), remember, entry)

    def _failed(self, guard: SigninGuard, ip: str, who: str, key: bytes) -> None:
        self.signin_problems["failed"] += 1
        now = time.monotonic()
        if guard.failed(ip, key, now):
            self.signin_problems["guessing_reports"] += 1
            log.warning("possible password guessing from %s: %d different wrong sign-ins in %d s; "
                        "its sign-ins are slowed", ip, guard.failures(ip, now), int(guard.window))
        if guard.failed(who, key, now):
            self.signin_problems["guessing_reports"] += 1
            log.warning("possible password guessing against account %s: %d different wrong passwords in %d s; "
                        "its sign-ins are slowed", who.removeprefix("account:"), guard.failures(who, now),
                        int(guard.window))

    def _guard(self, snap: Snapshot) -> SigninGuard:
        pa = snap.config.identity.proxy_auth
        settings = (pa.max_failures, pa.failure_window_seconds) if pa is not None else (10, 300)
        if settings != self._guard_settings:
            self.guard.max_failures, self.guard.window = settings
            self._guard_settings = settings
        return self.guard

    async def _check(self, snap: Snapshot, key: bytes, username: str, password: str) -> _Checked:
        pending = self._pending.get(key)
        if pending is not None:  # the same credentials are being checked already: share the answer
            try:
                return await asyncio.shield(pending)
            except Exception:
                return _Checked(0.0, username, False)
        fut: asyncio.Future[_Checked] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        try:
            authenticator = snap.authenticator
            assert authenticator is not None
            ok, groups = await asyncio.to_thread(_verify, authenticator, username, password)
            pa = snap.config.identity.proxy_auth
            now = time.monotonic()
            if ok is None:
                retry = min(NEGATIVE_TTL, pa.cache_seconds) if pa is not None else NEGATIVE_TTL
                entry = self._when_directory_down(key, username, now + max(1.0, retry))
            elif ok:
                entry = _Checked(now + (pa.cache_seconds if pa is not None else 300), username, True, groups)
            else:
                entry = _Checked(now + NEGATIVE_TTL, username, False)
            entry.version = _version(snap, username)
            if len(self._cache) > 50_000:  # bounded: expire everything rather than grow without limit
                self._cache.clear()
            self._cache[key] = entry
            fut.set_result(entry)
            return entry
        except Exception as e:
            log.exception("proxy authentication check failed")
            fut.set_exception(e)
            fut.exception()  # retrieved: waiters handle it themselves
            return _Checked(0.0, username, False)
        finally:
            del self._pending[key]

    def _when_directory_down(self, key: bytes, username: str, retry_at: float) -> _Checked:
        """Users already checked keep their profile; anyone new gets the fail-closed default profile.
        Either way the directory is asked again at ``retry_at``."""
        stale = self._cache.get(key)
        if stale is not None and stale.ok and not stale.unverified:
            stale.expires = retry_at
            return stale
        self.signin_problems["unverified"] += 1
        return _Checked(retry_at, username, True, None, unverified=True)

    @staticmethod
    def _challenge(flow: http.HTTPFlow, snap: Snapshot) -> None:
        pa = snap.config.identity.proxy_auth
        realm = (pa.realm if pa else "School internet").replace('"', "'")
        flow.response = http.Response.make(
            407,
            "<html><head><title>Sign in to use the school internet</title></head><body>"
            "<h1>Please sign in</h1><p>Use your school username and password to use the internet.</p>"
            "</body></html>",
            {"Proxy-Authenticate": f'Basic realm="{realm}"', "Content-Type": "text/html; charset=utf-8",
             "Cache-Control": "no-store"},
        )
        return None


    def _metrics(self) -> Iterable[Metric]:
        signins = CounterMetricFamily("schoolproxy_signin_problems", "Proxy sign-ins that did not simply "
                                      "succeed: failed (wrong password), unverified (directory down: default "
                                      "profile), slowed (password guessing), guessing_reports.",
                                      labels=["result"])
        for result, n in self.signin_problems.items():
            signins.add_metric([result], n)
        yield signins


def _verify(authenticator: Authenticator, username: str, password: str) -> tuple[bool | None, frozenset[str] | None]:
    """Runs in a worker thread: the password check and, if it passed, the user's directory groups."""
    ok = authenticator.check(username, password)
    return ok, (authenticator.groups(username) if ok else None)


_PROXY_AUTHORIZATION = b"proxy-authorization"


def take_proxy_authorization(headers: http.Headers) -> str | None:
    """Remove every Proxy-Authorization header and return its value (several joined with ", ", as
    ``Headers.get`` would, which no credential parses as). The school's credentials are never passed on
    to the upstream filter or the site. One pass over the raw fields, as this runs on every request
    (``get`` then ``del`` would decode and re-encode every header twice)."""
    fields = headers.fields
    found = [v for k, v in fields if len(k) == len(_PROXY_AUTHORIZATION) and k.lower() == _PROXY_AUTHORIZATION]
    if not found:
        return None
    headers.fields = tuple(f for f in fields if f[0].lower() != _PROXY_AUTHORIZATION)
    return ", ".join(v.decode("utf-8", "surrogateescape") for v in found)


def parse_basic(header: str) -> tuple[str, str] | None:
    """``Basic base64(user:password)`` → (user, password); None for anything malformed."""
    if len(header) > MAX_AUTH_HEADER:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        raw = binascii.a2b_base64(value.strip().encode("ascii"))
        text = raw.decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or any(ord(c) < 32 for c in user):
        return None
    return user, password
