"""LocalGuard addon: a name that DNS points at the gateway itself is blocked like the gateway's address.

The decision (filtering/decide.py, filtering/local.py) blocks the gateway's addresses in any spelling and
its names. A pupil's own DNS name for ``127.0.0.1`` or for the gateway's LAN address (``x.nip.io``
style) is only known to be local once resolved. Without an upstream filter the proxy connects to sites
itself, so here the request's host is resolved first (off the event loop, cached for a minute) and the
addresses go into the request facts (``flow.metadata[RESOLVED]``): the decision then blocks with the
block page and the record names the rule. As a second line, a response that came from a local address
anyway (DNS answering differently when mitmproxy connected: rebinding) is dropped before the client
sees it.

With an upstream filter, names are resolved there, not here; the gateway's services then face the
upstream filter's connections, which the firewall should not let in (README, "Limits").
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable

from mitmproxy import http

from schoolproxy.filtering.hostnames import InvalidHost, normalise_host
from schoolproxy.snapshot import SnapshotHolder

log = logging.getLogger(__name__)

RESOLVED = "schoolproxy.resolved"
CACHE_SECONDS = 60.0
MAX_CACHED = 10_000
RESOLVE_TIMEOUT = 5.0


class LocalGuard:
    def __init__(self, snapshots: SnapshotHolder):
        self.snapshots = snapshots
        self._cache: dict[str, tuple[float, tuple[str, ...]]] = {}

    def wants(self, event: str) -> bool:
        return not self._upstream()

    def _upstream(self) -> bool:
        """Chained to an upstream filter (explicit or transparent mode): it resolves names and connects,
        and the connection here goes to it, wherever it runs."""
        snap = self.snapshots.snapshot
        return snap is not None and snap.config.proxy.upstream is not None

    # Synchronous when the answer is cached (almost always): a coroutine only for a lookup.
    def http_connect(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        return self.requestheaders(flow)

    def requestheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if flow.response or flow.error or flow.server_conn.via is not None or self._upstream():
            return None  # answered already, or the upstream filter resolves and connects
        host = flow.request.host
        hit = self._cache.get(host)
        if hit is not None and hit[0] > time.monotonic():
            if hit[1]:
                flow.metadata[RESOLVED] = hit[1]
            return None
        try:
            if normalise_host(host)[1]:
                return None  # an address: decided as it is
        except InvalidHost:
            return None  # blocked by the decision anyway
        return self._resolve(flow, host)

    async def _resolve(self, flow: http.HTTPFlow, host: str) -> None:
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT)
            addresses = tuple(dict.fromkeys(info[4][0] for info in infos))
        except (OSError, asyncio.TimeoutError, UnicodeError):
            addresses = ()  # connecting will fail and say so; nothing local was found
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[host] = (time.monotonic() + CACHE_SECONDS, addresses)
        if addresses:
            flow.metadata[RESOLVED] = addresses

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        server = flow.server_conn
        if server.via is not None or server.peername is None or flow.response is None or self._upstream():
            return
        snap = self.snapshots.snapshot
        local = snap.local if snap is not None else None
        if local is None or not local.forbidden_address(server.peername[0]):
            return
        try:
            host = normalise_host(flow.request.host)[0]
        except InvalidHost:
            host = ""
        if host in local.allowed:
            return
        log.warning("schoolproxy: %s answered from the gateway's own address %s; the response was dropped",
                    flow.request.host[:253], server.peername[0])
        flow.kill()
