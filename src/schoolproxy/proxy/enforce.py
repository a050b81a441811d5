"""Enforce addon: turns a flow into request facts, asks the policy, and applies the verdict.

- Plain HTTP and intercepted HTTPS: decided at ``requestheaders`` (before any body is read or any
  upstream connection is made); a block is answered with the 403 block page, an allow gets SafeSearch.
- CONNECT: decided on the host; if the profile would not intercept that host (passthrough) or the port
  is not allowed, a block is answered at CONNECT — the only place it can be without decryption.
- ``tls_clienthello``: passthrough hosts are relayed undecrypted; the SNI is checked too, so a tunnel
  opened to an allowed name cannot be used to reach a blocked one.

Each request ends as one :class:`Verdict` published on the engine's bus (at ``response``/``error``,
so it carries status, size and duration); passthrough and CONNECT-blocked connections publish at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import weakref
from dataclasses import dataclass

from mitmproxy import connection, http, tls
from mitmproxy.net.http import status_codes

from schoolproxy.filtering import blockpage, safesearch
from schoolproxy.filtering.expiring import NONE as NO_EXPIRING
from schoolproxy.filtering.hostnames import InvalidHost, normalise_host
from schoolproxy.filtering.policy import INVALID_HOST, Decision
from schoolproxy.identity.profiles import Identity
from schoolproxy.proxy.identify import IDENTITY
from schoolproxy.proxy.pages import PAGE
from schoolproxy.snapshot import Engine, Snapshot
from schoolproxy.standards.live import LiveState, outcome_text
from schoolproxy.standards.pages import Blocked, shown_url
from schoolproxy.verdict import Verdict, new_reference

log = logging.getLogger(__name__)

VERDICT = "schoolproxy.verdict"
#: Blocks no one can ask to have lifted: illegal content, and names that cannot be valid.
_NEVER_ASK = ("locked:", "invalid-host", "error")
_BLOCK_HEADERS = ((b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-store"))
_TEXT = {"Content-Type": "text/plain; charset=utf-8"}


@dataclass(slots=True)
class _Tunnel:
    """What CONNECT established, for the TLS handshake and the requests inside the tunnel."""
    identity: Identity
    host: str
    port: int
    decision: Decision
    sni: str | None = None


class Enforce:
    def __init__(self, engine: Engine, state: LiveState | None = None):
        self.engine = engine
        #: Expiring allows and unblock outcomes from the records (refreshed by the pages addon).
        self.state = state or LiveState()
        self.tunnels: weakref.WeakKeyDictionary[connection.Client, _Tunnel] = weakref.WeakKeyDictionary()

    # -- CONNECT ----------------------------------------------------------------------------------
    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        snap = self._snapshot()
        ident = self._identity(flow, snap)
        policy = snap.policy
        port = flow.request.port
        host, decision = self._decide_host(snap, ident, flow.request.host, "")
        if decision.action == "allow" and not policy.connect_port_allowed(ident.profile, port):
            decision = Decision("block", "connect-port", f"tunnels to port {port} are not allowed", decision.mask)
        self.tunnels[flow.client_conn] = _Tunnel(ident, host, port, decision)
        if decision.action == "block" and (decision.rule in ("connect-port", "invalid-host")
                                           or policy.passthrough(ident.profile, host, decision.mask)):
            verdict = self._verdict(flow, ident, decision, host, port, snap, layer="connect")
            flow.response = http.Response.make(
                403, f"Blocked by the school's internet filter (reference {verdict.ref}).\n", _TEXT)
            verdict.status = 403
            self.engine.bus.publish(verdict)

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        if data.ignore_connection:
            return
        client = data.context.client
        snap = self._snapshot()
        tunnel = self.tunnels.get(client)
        sni = data.client_hello.sni
        if tunnel is None:  # transparent mode: no CONNECT came first
            ident = snap.subnets.lookup(client.peername[0]) or snap.resolver.unidentified()
            address = data.context.server.address
            raw_host, port = (sni or (address[0] if address else "")), (address[1] if address else 443)
            host, decision = self._decide_host(snap, ident, raw_host, "")
            tunnel = self.tunnels[client] = _Tunnel(ident, host, port, decision)
        else:
            ident, host, port, decision = tunnel.identity, tunnel.host, tunnel.port, tunnel.decision
            if sni:
                sni_host, sni_decision = self._decide_host(snap, ident, sni, "")
                if sni_host != host:
                    # Another name in the handshake than in CONNECT: requests inside must pass both.
                    tunnel.sni = sni_host
                    if sni_decision.action == "block":
                        host, decision = sni_host, sni_decision
        if decision.action == "allow" and snap.policy.passthrough(ident.profile, host, decision.mask):
            data.ignore_connection = True
            verdict = Verdict(
                new_reference(), time.time(), client.peername[0], ident.username, ident.profile,
                ident.source, ident.rule, "TLS", "https", host, port, "", "allow", decision.rule,
                decision.reason + " (passed through, not decrypted)",
                snap.policy.category_names(decision.mask), layer="tls-passthrough",
                device=ident.device)
            self.engine.bus.publish(verdict)
        # Otherwise the connection is intercepted and each request inside gets its own decision.

    # -- requests ---------------------------------------------------------------------------------
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or PAGE in flow.metadata:
            return
        try:
            self._enforce(flow)
        except Exception:  # fail closed: a bug here must never let a request through unfiltered
            log.exception("schoolproxy: enforcing %s failed; blocked to be safe", flow.request.host[:253])
            flow.metadata.pop(VERDICT, None)
            flow.response = http.Response.make(
                403, "Blocked by the school's internet filter (internal error, blocked to be safe).\n", _TEXT)

    def _enforce(self, flow: http.HTTPFlow) -> None:
        started = time.perf_counter()
        snap = self._snapshot()
        ident = self._identity(flow, snap)
        req = flow.request
        path = req.path or "/"
        host, decision = self._decide_host(snap, ident, req.host, path)
        if decision.action == "allow":
            # Domain fronting: the Host header (or the tunnel's SNI) may name another site.
            for other in self._other_names(flow, req.host):
                other_host, other_decision = self._decide_host(snap, ident, other, path)
                if other_decision.action == "block":
                    host, decision = other_host, other_decision
                    break
        verdict = self._verdict(flow, ident, decision, host, req.port, snap)
        verdict.decision_seconds = time.perf_counter() - started
        flow.metadata[VERDICT] = verdict
        if decision.action == "block":
            flow.response = self._block_page(flow, verdict, snap, ident)
            return
        self._safesearch(flow, host, ident, snap, verdict)

    def response(self, flow: http.HTTPFlow) -> None:
        verdict = flow.metadata.get(VERDICT)
        if verdict is None or flow.response is None:
            return
        verdict.status = flow.response.status_code
        verdict.bytes = len(flow.response.raw_content or b"")
        if verdict.safesearch:  # so a network manager (and `schoolproxy checks run`) can see it is on
            flow.response.headers["X-Schoolproxy-SafeSearch"] = "enforced"
        if verdict.status in (403, 451) and verdict.action == "allow":
            self._upstream_block(flow, verdict)
        end = flow.response.timestamp_end or time.time()
        verdict.duration = max(0.0, end - flow.request.timestamp_start)
        self.engine.bus.publish(verdict)
        del flow.metadata[VERDICT]  # published once

    def error(self, flow: http.HTTPFlow) -> None:
        verdict = flow.metadata.pop(VERDICT, None)
        if verdict is None:
            return
        verdict.error = str(flow.error)[:200] if flow.error else "error"
        verdict.duration = max(0.0, time.time() - flow.request.timestamp_start)
        self.engine.bus.publish(verdict)

    def _upstream_block(self, flow: http.HTTPFlow, verdict: Verdict) -> None:
        """The upstream filter's own block page: recorded as blocked upstream (a critical alert)."""
        resp = flow.response
        if resp is None or "html" not in resp.headers.get("content-type", "") or verdict.bytes > 256 * 1024:
            return
        text = resp.get_text(strict=False) or ""
        markers = self._snapshot().config.proxy.upstream_block_markers
        if any(m in text for m in markers):
            verdict.action = "block"
            verdict.rule = "upstream-block"
            verdict.reason = "blocked by the upstream filter"

    # -- helpers ----------------------------------------------------------------------------------
    def _snapshot(self) -> Snapshot:
        snap = self.engine.snapshot
        assert snap is not None, "schoolproxy configuration not loaded"
        return snap

    def _identity(self, flow: http.HTTPFlow, snap: Snapshot) -> Identity:
        ident = flow.metadata.get(IDENTITY)
        if ident is None:
            tunnel = self.tunnels.get(flow.client_conn)
            ident = tunnel.identity if tunnel else (
                snap.subnets.lookup(flow.client_conn.peername[0]) or snap.resolver.unidentified())
        return ident

    def _decide_host(self, snap: Snapshot, ident: Identity, raw_host: str, path: str) -> tuple[str, Decision]:
        try:
            host, is_ip = normalise_host(raw_host)
        except InvalidHost:
            return raw_host[:253], INVALID_HOST
        try:
            decision = snap.policy.decide(ident.profile, host, path, is_ip)
            overrides = self.state.overrides
            if overrides is not NO_EXPIRING and decision.action == "block":
                decision = overrides.apply(decision, ident, host, path or "/", time.time())
            return host, decision
        except Exception:  # fail closed: an internal error never lets a request through
            log.exception("policy decision failed for %r", host)
            return host, Decision("block", "error", "internal error — blocked to be safe")

    def _other_names(self, flow: http.HTTPFlow, primary: str) -> list[str]:
        names = []
        header = flow.request.host_header
        if header and header.lower() not in (primary, f"{primary}:{flow.request.port}"):
            names.append(header)
        tunnel = self.tunnels.get(flow.client_conn)
        if tunnel is not None:
            names.extend(n for n in (tunnel.host, tunnel.sni) if n and n != primary)
        return names

    @staticmethod
    def _verdict(flow: http.HTTPFlow, ident: Identity, decision: Decision, host: str, port: int,
                 snap: Snapshot, layer: str = "http") -> Verdict:
        req = flow.request
        return Verdict(
            new_reference(), req.timestamp_start or time.time(), flow.client_conn.peername[0],
            ident.username, ident.profile, ident.source, ident.rule, req.method, req.scheme, host, port,
            req.path if layer == "http" else "", decision.action, decision.rule, decision.reason,
            snap.policy.category_names(decision.mask), layer=layer, device=ident.device)

    def _block_page(self, flow: http.HTTPFlow, verdict: Verdict, snap: Snapshot, ident: Identity) -> http.Response:
        body = b""
        if flow.request.method != "HEAD":
            config = snap.config
            bp = config.block_page
            ask, outcome = "", ""
            if verdict.username and config.unblock.enabled and not verdict.rule.startswith(_NEVER_ASK):
                url = flow.request.url
                self.state.remember_block(Blocked(verdict.ref, verdict.username, verdict.profile, verdict.host,
                                                  shown_url(url), verdict.rule, ",".join(verdict.categories),
                                                  ident.device))
                ask = f"http://{bp.pages_host}/unblock?ref={verdict.ref}"
                told = self.state.outcome_for(verdict.username, verdict.host)
                if told is not None:
                    outcome = outcome_text(told, snap.policy.tz, dt.datetime.now(dt.timezone.utc))
            body = blockpage.render(verdict, flow.request.url, config.school, bp.report_to, bp.report_email,
                                    ask, outcome).encode()
        return _response(403, body, _BLOCK_HEADERS + ((b"x-schoolproxy-reference", verdict.ref.encode()),))

    @staticmethod
    def _safesearch(flow: http.HTTPFlow, host: str, ident: Identity, snap: Snapshot, verdict: Verdict) -> None:
        settings = snap.policy.profiles[ident.profile].settings.safesearch
        if settings.search_engines:
            engine = safesearch.search_engine(host)
            if engine is not None:
                param, value = safesearch.PARAMS[engine]
                path = safesearch.with_param(flow.request.path, param, value)
                if path is not None:
                    flow.request.path = path
                else:
                    query = flow.request.query
                    if query.get_all(param) != [value]:
                        query[param] = value
                verdict.safesearch = True
        header = safesearch.youtube_header(host, settings.youtube)
        if header is not None:
            flow.request.headers[header[0]] = header[1]
            verdict.safesearch = True


class _LocalResponseData(http.ResponseData):
    """ResponseData for responses this addon builds itself. mitmproxy type-checks every field of every
    message in ``__debug__`` mode (the default), ~16 µs a response; ours are built from values of the
    declared types (bytes, int, Headers, float), which tests check against that same type check."""

    def __post_init__(self) -> None:
        pass


def _response(status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...]) -> http.Response:
    """A response from bytes and ready-encoded headers, ~8× cheaper than ``Response.make`` (no text
    encoding, header conversion or debug type check), which matters for a block page served at full
    request rate. The same object ``Response.__init__`` builds, minus the check."""
    now = time.time()
    resp = http.Response.__new__(http.Response)
    resp.data = _LocalResponseData(
        http_version=b"HTTP/1.1", headers=http.Headers(headers + ((b"content-length", str(len(body)).encode()),)),
        content=body, trailers=None, timestamp_start=now, timestamp_end=now, status_code=status,
        reason=status_codes.RESPONSES.get(status, "").encode())
    return resp
