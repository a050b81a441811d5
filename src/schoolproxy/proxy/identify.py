"""Identify addon: who is behind this flow? Sets ``flow.metadata[IDENTITY]`` or answers 407.

Proxy authentication (HTTP Basic, explicit-proxy mode) is checked once per connection for HTTPS
(at CONNECT) and once per distinct credential for plain HTTP, through a cache keyed by an HMAC of the
credentials (the password itself is never kept, logged or forwarded). bcrypt runs in a worker thread
so the event loop never blocks; concurrent checks of the same credentials share one bcrypt call.
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
from collections.abc import Awaitable

from mitmproxy import connection, http
from mitmproxy.proxy import mode_specs

from ..engine import Engine, Snapshot
from ..identity import Identity

log = logging.getLogger(__name__)

IDENTITY = "schoolproxy.identity"
MAX_AUTH_HEADER = 4096
NEGATIVE_TTL = 30.0


class Identify:
    def __init__(self, engine: Engine):
        self.engine = engine
        #: Identity fixed by CONNECT for every request inside that tunnel.
        self.by_conn: weakref.WeakKeyDictionary[connection.Client, Identity] = weakref.WeakKeyDictionary()
        self._key = os.urandom(32)
        self._cache: dict[bytes, tuple[float, Identity | None]] = {}
        self._cache_snapshot: Snapshot | None = None
        self._pending: dict[bytes, asyncio.Future[Identity | None]] = {}

    # Hooks are synchronous on the common path (connection or credential already known) and return a
    # coroutine — which mitmproxy awaits — only when bcrypt has to run: no coroutine per request.
    def http_connect(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if flow.response or flow.error:
            return None
        return self.identify(flow, remember_connection=True)

    def requestheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if flow.response or flow.error or not flow.live:
            return None
        ident = self.by_conn.get(flow.client_conn)
        if ident is not None:
            flow.metadata[IDENTITY] = ident
            return None
        return self.identify(flow)

    def identify(self, flow: http.HTTPFlow, remember_connection: bool = False) -> Awaitable[None] | None:
        """Set ``flow.metadata[IDENTITY]`` or answer 407; returns a coroutine if a password must be checked."""
        snap = self.engine.snapshot
        assert snap is not None
        explicit = isinstance(flow.client_conn.proxy_mode, (mode_specs.RegularMode, mode_specs.UpstreamMode))
        header = flow.request.headers.get("Proxy-Authorization") if explicit else None
        if header is not None:
            # Never pass the school's credentials on to the upstream filter or the site.
            del flow.request.headers["Proxy-Authorization"]
        if header is not None and snap.authenticator is not None:
            creds = parse_basic(header)
            if creds is None:
                return self._refuse(flow, snap)
            key, hit = self._cached(snap, *creds)
            if hit is None:
                return self._check_and_apply(flow, snap, key, creds, remember_connection)
            return self._apply(flow, snap, hit[1], remember_connection)
        ident = snap.subnets.lookup(flow.client_conn.peername[0])
        if ident is None:
            pa = snap.config.identity.proxy_auth
            if explicit and snap.authenticator is not None and pa is not None and pa.required:
                return self._challenge(flow, snap)
            ident = snap.resolver.unidentified()
        return self._apply(flow, snap, ident, remember_connection)

    def _apply(self, flow: http.HTTPFlow, snap: Snapshot, ident: Identity | None, remember: bool) -> None:
        if ident is None:
            return self._refuse(flow, snap)
        flow.metadata[IDENTITY] = ident
        if remember:
            self.by_conn[flow.client_conn] = ident
        return None

    def _refuse(self, flow: http.HTTPFlow, snap: Snapshot) -> None:
        log.info("proxy authentication failed from %s", flow.client_conn.peername[0])
        return self._challenge(flow, snap)

    def _cached(self, snap: Snapshot, username: str, password: str) -> tuple[bytes, tuple[float, Identity | None] | None]:
        if self._cache_snapshot is not snap:  # new users file or profile map: start afresh
            self._cache.clear()
            self._cache_snapshot = snap
        key = hmac.digest(self._key, username.encode("utf-8", "surrogatepass") + b"\0"
                          + password.encode("utf-8", "surrogatepass"), hashlib.sha256)
        hit = self._cache.get(key)
        return key, (hit if hit is not None and hit[0] > time.monotonic() else None)

    async def _check_and_apply(self, flow: http.HTTPFlow, snap: Snapshot, key: bytes, creds: tuple[str, str],
                               remember: bool) -> None:
        self._apply(flow, snap, await self._check(snap, key, *creds), remember)

    async def _check(self, snap: Snapshot, key: bytes, username: str, password: str) -> Identity | None:
        pending = self._pending.get(key)
        if pending is not None:  # the same credentials are being checked already: share the answer
            try:
                return await asyncio.shield(pending)
            except Exception:
                return None
        fut: asyncio.Future[Identity | None] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        try:
            authenticator = snap.authenticator
            assert authenticator is not None
            ok = await asyncio.to_thread(authenticator.check, username, password)
            ident = snap.resolver.identify(username, "proxy-auth", authenticator.groups(username)) if ok else None
            pa = snap.config.identity.proxy_auth
            ttl = pa.cache_seconds if ok and pa is not None else NEGATIVE_TTL
            if len(self._cache) > 50_000:  # bounded: expire everything rather than grow without limit
                self._cache.clear()
            self._cache[key] = (time.monotonic() + ttl, ident)
            fut.set_result(ident)
            return ident
        except Exception as e:
            log.exception("proxy authentication check failed")
            fut.set_exception(e)
            fut.exception()  # retrieved: waiters handle it themselves
            return None
        finally:
            del self._pending[key]

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
