"""Limits addon: what one client can make the proxy hold, and for how long (``proxy.limits`` in the config).

A pupil with curl, or a script on a guest laptop, must not be able to take the proxy's memory or its
connections away from everyone else:

- **Memory.** Request heads are bounded (tighter before the client has signed in), bodies above a few
  hundred KB go through as they arrive instead of being held (mitmproxy's ``stream_large_bodies``, and
  request bodies declared larger than ``request_buffer_bytes``), bodies of requests answered here (407,
  block page) are thrown away unread, and a WebSocket or other upgraded connection is relayed without
  keeping every message it ever carried (mitmproxy keeps them all on the flow). :func:`.internals.install_http1_limits` holds
  the bounds mitmproxy's HTTP/1 layers need.
- **Connections.** At most ``connections_per_client`` open per client address, and at most
  ``unidentified_connections_per_client`` of them that have not yet carried a signed-in request; a head
  must arrive within ``header_timeout_seconds`` of its first byte; an idle connection is closed after
  ``idle_timeout_seconds`` (mitmproxy's ``tcp_timeout``).
- **File descriptors.** The soft limit is raised to the hard limit at start. If they run out anyway the
  proxy says so once (no traceback per refused accept), keeps serving the connections it has, and says
  when it accepts again.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import time
from collections.abc import Iterable
from dataclasses import dataclass

from mitmproxy import connection, ctx, http, tcp, websocket
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from schoolproxy.metrics import Scraped
from schoolproxy.proxy import internals
from schoolproxy.proxy.content import CONTENT
from schoolproxy.proxy.identify import IDENTITY
from schoolproxy.snapshot import Snapshot, SnapshotHolder

log = logging.getLogger(__name__)

_CLOSE = {"Content-Type": "text/plain; charset=utf-8", "Connection": "close", "Retry-After": "1"}

LOG_EVERY = 60.0        # seconds between log lines about one client address
RECOVERED_AFTER = 5.0   # seconds without a refused accept before a descriptor shortage is over
SIGNED_IN_FOR = 600.0   # an address that signed in this recently gets the signed-in head limit


@dataclass(slots=True)
class _Client:
    address: str
    signed_in: bool = False


class _PerAddress:
    """Flows of each client address holding something (in flight, or a body in memory), capped. A flow
    leaves at its response or error; should one ever be missed, entries older than an hour give way."""

    STALE = 3600.0

    def __init__(self) -> None:
        self._flows: dict[str, dict[str, float]] = {}

    def add(self, address: str, flow_id: str, most: int) -> bool:
        flows = self._flows.setdefault(address, {})
        if flow_id in flows:
            return True
        if len(flows) >= most:
            cutoff = time.monotonic() - self.STALE
            for fid in [f for f, t in flows.items() if t < cutoff]:
                del flows[fid]
            if len(flows) >= most:
                return False
        flows[flow_id] = time.monotonic()
        return True

    def discard(self, address: str, flow_id: str) -> None:
        flows = self._flows.get(address)
        if flows is not None and flows.pop(flow_id, None) is not None and not flows:
            del self._flows[address]

    def count(self) -> int:
        return sum(len(f) for f in self._flows.values())


class Limits:
    def __init__(self, snapshots: SnapshotHolder, registry: CollectorRegistry):
        self.snapshots = snapshots
        self._snap: Snapshot | None = None
        self._clients: dict[str, _Client] = {}      # client connection id → its address and state
        self._open: dict[str, int] = {}             # address → connections open
        self._unidentified: dict[str, int] = {}     # address → of those, not yet signed in
        self._signed_in_at: dict[str, float] = {}   # address → when it last carried a signed-in request
        self._in_flight = _PerAddress()              # requests not yet answered
        self._buffered = _PerAddress()               # bodies held whole in memory (the rest stream)
        self._logged: dict[tuple[str, str], float] = {}
        #: Refusals by the limit that caused them (bounded label values, never an address).
        self.refusals = {"connections": 0, "header-bytes": 0, "header-time": 0, "requests": 0}
        self._out_of_descriptors = 0                # accepts refused in the current shortage
        self._last_refused_accept = 0.0
        self.descriptor_shortages = 0
        registry.register(Scraped(self._metrics))
        internals.http1_limits.signed_in = self._signed_in
        internals.http1_limits.refused = self._refused

    def load(self, loader) -> None:
        internals.install_http1_limits()

    def configure(self, updated: set[str]) -> None:
        if "schoolproxy_config" in updated:
            self._apply()

    def running(self) -> None:
        _raise_open_files_limit()
        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()

        def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
            exc = context.get("exception")
            if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
                self._descriptor_shortage(exc)
            elif previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handler)

    # -- connections ----------------------------------------------------------------------------------
    def client_connected(self, client: connection.Client) -> None:
        if self._snap is not self.snapshots.snapshot:
            self._apply()  # a reload may have changed the limits
        address = client.peername[0]
        settings = self._settings()
        if self._open.get(address, 0) >= settings.connections_per_client:
            return self._refuse(client, f"{settings.connections_per_client} connections open already")
        if self._unidentified.get(address, 0) >= settings.unidentified_connections_per_client:
            return self._refuse(client, f"{settings.unidentified_connections_per_client} connections open "
                                        f"without a signed-in request")
        self._clients[client.id] = _Client(address)
        self._open[address] = self._open.get(address, 0) + 1
        self._unidentified[address] = self._unidentified.get(address, 0) + 1

    def client_disconnected(self, client: connection.Client) -> None:
        state = self._clients.pop(client.id, None)
        if state is None:
            return
        _decrement(self._open, state.address)
        if not state.signed_in:
            _decrement(self._unidentified, state.address)

    def _refuse(self, client: connection.Client, why: str) -> None:
        client.error = f"too many connections from {client.peername[0]}: {why}"
        self._refused(client.peername[0], "connections", f"new connection refused: {why}")

    def _signed_in(self, client: connection.Client) -> bool:
        state = self._clients.get(client.id)
        if state is not None and state.signed_in:
            return True
        since = self._signed_in_at.get(client.peername[0])
        return since is not None and time.monotonic() - since < SIGNED_IN_FOR

    def _mark_signed_in(self, flow: http.HTTPFlow) -> None:
        state = self._clients.get(flow.client_conn.id)
        if state is None or IDENTITY not in flow.metadata:
            return
        if len(self._signed_in_at) > 100_000:
            self._signed_in_at.clear()
        self._signed_in_at[state.address] = time.monotonic()
        if not state.signed_in:
            state.signed_in = True
            _decrement(self._unidentified, state.address)

    # -- requests -------------------------------------------------------------------------------------
    def http_connect(self, flow: http.HTTPFlow) -> None:
        self._mark_signed_in(flow)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._mark_signed_in(flow)
        if flow.response is not None:
            flow.request.stream = False  # answered here: the body is read and dropped (internals.install_http1_limits)
            return
        address, settings = flow.client_conn.peername[0], self._settings()
        if not self._in_flight.add(address, flow.id, settings.requests_in_flight_per_client):
            self._refused(address, "requests", f"over {settings.requests_in_flight_per_client} requests at once")
            flow.response = http.Response.make(503, "Too many requests at once from this device.\n", _CLOSE)
            return
        declared = flow.request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) <= settings.request_buffer_bytes \
                and self._buffered.add(address, flow.id, settings.buffered_bodies_per_client):
            return  # a small body, held until complete (addons may read it)
        # Declared large, not declared (chunked, HTTP/2), or this device holds enough bodies already: on its
        # way out as it arrives (ignored by mitmproxy for a request without a body).
        flow.request.stream = True

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        if resp is None or resp.stream or CONTENT in flow.metadata:
            return  # streaming already, or a page the content addon reads whole (bounded by it) to score
        settings = self._settings()
        if not self._buffered.add(flow.client_conn.peername[0], flow.id, settings.buffered_bodies_per_client):
            resp.stream = True  # this device holds enough bodies in memory already

    def response(self, flow: http.HTTPFlow) -> None:
        self._done(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._done(flow)

    def _done(self, flow: http.HTTPFlow) -> None:
        address = flow.client_conn.peername[0]
        self._in_flight.discard(address, flow.id)
        self._buffered.discard(address, flow.id)

    def tcp_message(self, flow: tcp.TCPFlow) -> None:
        if len(flow.messages) > 1:
            del flow.messages[:-1]  # relayed already; mitmproxy would keep every one for the connection's life

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        ws: websocket.WebSocketData | None = flow.websocket
        if ws is not None and len(ws.messages) > 1:
            del ws.messages[:-1]

    # -- settings and logging -------------------------------------------------------------------------
    def _settings(self):
        snap = self.snapshots.snapshot
        assert snap is not None, "schoolproxy configuration not loaded"
        return snap.config.proxy.limits

    def _apply(self) -> None:
        snap = self.snapshots.snapshot
        if snap is None:
            return
        self._snap = snap
        s = snap.config.proxy.limits
        internals.http1_limits.head_bytes = s.header_bytes
        internals.http1_limits.head_bytes_before_signin = s.header_bytes_before_signin
        internals.http1_limits.header_timeout = s.header_timeout_seconds
        # WebSockets are relayed as plain TCP after the upgrade was allowed: mitmproxy's WebSocket layer
        # holds each message whole, however large, before passing it on.
        wanted = {"stream_large_bodies": str(s.stream_bytes), "tcp_timeout": s.idle_timeout_seconds,
                  "websocket": False}
        changed = {k: v for k, v in wanted.items() if getattr(ctx.options, k) != v}
        if changed:
            ctx.options.update(**changed)

    def _refused(self, address: str, limit: str, why: str) -> None:
        self.refusals[limit] = self.refusals.get(limit, 0) + 1
        now = time.monotonic()
        if now - self._logged.get((address, why), -LOG_EVERY) < LOG_EVERY:
            return
        if len(self._logged) > 10_000:
            self._logged.clear()
        self._logged[(address, why)] = now
        log.warning("schoolproxy: client %s: %s (said once a minute)", address, why)

    def _metrics(self) -> Iterable[Metric]:
        refused = CounterMetricFamily("schoolproxy_client_limit_refusals", "Connections and requests refused "
                                      "by proxy.limits, by limit.", labels=["limit"])
        for limit, n in self.refusals.items():
            refused.add_metric([limit], n)
        yield refused
        yield GaugeMetricFamily("schoolproxy_client_connections", "Client connections open.", len(self._clients))
        yield GaugeMetricFamily("schoolproxy_buffered_bodies", "Request and response bodies held whole in "
                                "memory (the rest stream through).", self._buffered.count())
        yield CounterMetricFamily("schoolproxy_descriptor_shortages", "Times the proxy ran out of file "
                                  "descriptors and new connections had to wait.", self.descriptor_shortages)

    def _descriptor_shortage(self, exc: OSError) -> None:
        """asyncio refused an accept (it tries again a second later): say so once per shortage."""
        self._last_refused_accept = time.monotonic()
        if not self._out_of_descriptors:
            self.descriptor_shortages += 1
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            log.error("schoolproxy: out of file descriptors (%s; limit %d): new connections wait until some "
                      "close; connections already open are served. Raise LimitNOFILE in the service unit, "
                      "or lower proxy.limits.connections_per_client", exc.strerror, soft)
            asyncio.get_running_loop().call_later(RECOVERED_AFTER, self._shortage_over)
        self._out_of_descriptors += 1

    def _shortage_over(self) -> None:
        waited = time.monotonic() - self._last_refused_accept
        if waited < RECOVERED_AFTER:  # still refusing now and then: look again later
            asyncio.get_running_loop().call_later(RECOVERED_AFTER - waited, self._shortage_over)
            return
        log.warning("schoolproxy: accepting connections again (%d attempts waited while file descriptors were "
                    "exhausted)", self._out_of_descriptors)
        self._out_of_descriptors = 0


def _decrement(counts: dict[str, int], key: str) -> None:
    n = counts.get(key, 0) - 1
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)


def _raise_open_files_limit() -> None:
    """Every connection is a descriptor (two when forwarded): use what the system allows us."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as e:
        log.debug("open files limit not raised: %s", e)
