"""Enforce addon: turns a flow into request facts, asks :func:`~schoolproxy.filtering.decide.decide`, and
applies the ruling.

- CONNECT (``http_connect``): refused at once when the ruling says so (a blocked host this profile would
  not decrypt, a bad port or name); otherwise the tunnel opens.
- TLS (``tls_clienthello``): passed through undecrypted, or intercepted. See :meth:`Enforce.tls_start_client`
  for how an allowed, intercepted tunnel keeps one upstream connection for its requests. A client that
  refuses the school's certificate (``tls_failed_client``) is published as such: that, and never an
  upstream site's certificate failing, is what the circumvention alert counts.
- Requests (``requestheaders``, before any body is read or any upstream connection is made): the block
  page, or forwarded with SafeSearch.

Each request ends as one :class:`Verdict`, published when its response or error is known (so it carries
status, size and duration); passed-through and refused connections publish at once. A verdict is not
changed once published: the one kept on the flow meanwhile is a draft, replaced by the published one.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import weakref
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from mitmproxy import connection, http, tls

from schoolproxy.filtering import blockpage, safesearch
from schoolproxy.filtering.decide import Handling, RequestFacts, Ruling, Stage, decide
from schoolproxy.identity.profiles import Identity
from schoolproxy.proxy.identify import EXPLICIT_MODES, IDENTITY, Logons
from schoolproxy.proxy.internals import local_response
from schoolproxy.proxy.localguard import RESOLVED
from schoolproxy.proxy.pages import PAGE
from schoolproxy.snapshot import Snapshot, SnapshotHolder
from schoolproxy.standards.live import LiveState, outcome_text
from schoolproxy.standards.pages import Blocked, shown_url
from schoolproxy.verdict import Verdict, new_reference

log = logging.getLogger(__name__)

#: The draft verdict of a request in flight (published, as a new value, at ``response`` or ``error``).
VERDICT = "schoolproxy.verdict"
_BLOCK_HEADERS = ((b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-store"))
_TEXT = {"Content-Type": "text/plain; charset=utf-8"}
MAX_UPSTREAM_PAGE = 256 * 1024  # an upstream block page is small; larger responses are not read for markers
#: Blocks no one can ask to have lifted: illegal content, and names that cannot be valid.
_NEVER_ASK = ("locked:", "invalid-host", "error")


@dataclass(slots=True)
class _Tunnel:
    """What a client connection's CONNECT and TLS handshake said, for the requests inside it."""
    identity: Identity
    host: str | None       # the CONNECT target as sent (None in transparent mode)
    port: int
    sni: str | None = None
    #: Allowed and intercepted: its requests will go upstream (a blocked tunnel never connects).
    allowed: bool = False
    #: Intercepted: the handshake's facts and ruling, published if the client refuses the handshake.
    handshake: tuple[RequestFacts, Ruling] | None = None


def page_text(raw: bytes, encoding: str, most: int) -> str:
    """At most ``most`` characters of a response body, decoded. Any site can send a 403 page, and a few
    hundred bytes of brotli unpack to gigabytes (``Response.get_text`` unpacks it all): only identity,
    gzip and deflate are unpacked, and never beyond ``most`` bytes."""
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        try:
            wbits = 31 if "gzip" in encoding else 15
            raw = zlib.decompressobj(wbits).decompress(raw, most)
        except zlib.error:
            if encoding != "deflate":
                return ""
            try:
                raw = zlib.decompressobj(-15).decompress(raw, most)  # deflate sent without its zlib header
            except zlib.error:
                return ""
    elif encoding not in ("", "identity"):
        return ""  # not looked into
    return raw[:most].decode("utf-8", "replace")


#: What a TLS client says when it does not trust the certificate it was shown (OpenSSL's names of the
#: TLS alerts unknown_ca, bad_certificate and certificate_unknown, as mitmproxy reports them).
_UNTRUSTED = ("unknown ca", "bad certificate", "certificate unknown")


def refused_certificate(error: str) -> bool:
    """Whether a client's failed handshake with the proxy was the client refusing the school's certificate.

    Only the client's own verdict on the certificate counts: a client that merely hung up during the
    handshake (a closed tab, a browser racing two connections) or could not agree a TLS version did not
    refuse anything."""
    error = error.lower()
    return any(alert in error for alert in _UNTRUSTED)


def _names_carried(req: http.Request, host_header: str | None) -> tuple[str, ...]:
    """Names beside the target and ``host_header`` (``req.host_header``, read once by the caller): the
    request line's authority (an absolute URL inside a tunnel, or HTTP/2's ``:authority``) and every Host
    header (several, or one beside ``:authority``)."""
    found = [v for k, v in req.headers.fields if len(k) == 4 and k.lower() == b"host"]
    authority = req.data.authority
    if authority:
        found.append(authority)
    if len(found) <= 1 and (not found or found[0].decode("latin-1") == host_header):
        return ()  # the usual single Host header, already in the facts as host_header
    return tuple(v.decode("latin-1") for v in found)


class Enforce:
    def __init__(self, snapshots: SnapshotHolder, publish: Callable[[Verdict], None], logons: Logons | None = None,
                 live: LiveState | None = None):
        self.snapshots = snapshots
        #: Where finished verdicts go (the verdict bus: records, alerts, metrics).
        self.publish = publish
        #: Who is logged on where (the logon feed, a sign-in page): transparent connections sign in to nothing.
        self.logons = logons
        #: Unblock outcomes to tell, and the blocks people may ask about (kept by the pages addon).
        self.live = live or LiveState()
        self.tunnels: weakref.WeakKeyDictionary[connection.Client, _Tunnel] = weakref.WeakKeyDictionary()

    # -- CONNECT ----------------------------------------------------------------------------------
    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        snap = self._snapshot()
        req = flow.request
        facts = RequestFacts(Stage.CONNECT, flow.client_conn.peername[0], req.host, req.port, req.method, req.scheme,
                             resolved=flow.metadata.get(RESOLVED, ()))
        ruling = decide(snap, flow.metadata.get(IDENTITY), facts)
        self.tunnels[flow.client_conn] = _Tunnel(ruling.identity, req.host, req.port)
        if ruling.handling is Handling.REFUSE:
            verdict = self._verdict(facts, ruling, snap, req.timestamp_start, layer="connect", status=403)
            flow.response = http.Response.make(
                403, f"Blocked by the school's internet filter (reference {verdict.ref}).\n", _TEXT)
            self.publish(verdict)

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        if data.ignore_connection:
            return
        client = data.context.client
        snap = self._snapshot()
        tunnel = self.tunnels.get(client)
        sni = data.client_hello.sni
        if tunnel is None:  # transparent mode: no CONNECT came first
            address = data.context.server.address
            facts = RequestFacts(Stage.TLS, client.peername[0], address[0] if address else "",
                                 address[1] if address else 443, "TLS", "https", sni=sni, transparent=True)
            ruling = decide(snap, self._logon_identity(snap, client.peername[0]), facts)
            self.tunnels[client] = _Tunnel(ruling.identity, None, facts.port, sni)
        else:
            tunnel.sni = sni
            facts = RequestFacts(Stage.TLS, client.peername[0], tunnel.host or "", tunnel.port, "TLS", "https",
                                 connect_host=tunnel.host, sni=sni)
            ruling = decide(snap, tunnel.identity, facts)
        if ruling.handling is Handling.PASSTHROUGH:
            data.ignore_connection = True
            self.publish(self._verdict(facts, ruling, snap, time.time(), layer="tls-passthrough"))
            return
        # Intercepted: each request inside gets its own decision.
        self.tunnels[client].handshake = (facts, ruling)
        if not ruling.blocked:
            self.tunnels[client].allowed = True
            # Not in transparent mode through an upstream filter: mitmproxy puts the upstream proxy in
            # front of a connection it opens for a request, not of one opened during the handshake.
            if tunnel is not None or data.context.server.via is None:
                data.establish_server_tls_first = True

    def tls_start_client(self, data: tls.TlsData) -> None:
        """Keep one upstream connection per tunnel for HTTP/2 clients too.

        With lazy upstream connections (so that a blocked site is never contacted) mitmproxy offers the
        client HTTP/2 before it knows what the server speaks; when the server then speaks HTTP/1.1,
        mitmproxy opens a new upstream connection, with a full TLS handshake, for every request. So an
        allowed tunnel connects upstream before answering the client's handshake (``tls_clienthello``
        above, as mitmproxy's eager strategy does), and the client is offered what the server speaks.
        Where that did not happen — under ``mitmdump -s`` mitmproxy's own TLS addon runs after ours and
        turns it off again; in transparent mode through an upstream filter it is not done — an allowed
        tunnel's client is offered HTTP/1.1, over which requests reuse one upstream connection. A
        blocked tunnel connects nowhere, whatever the client speaks.
        """
        tunnel = self.tunnels.get(data.context.client)
        if tunnel is None or not tunnel.allowed or data.ssl_conn is not None or data.context.server.tls_established:
            return
        client = data.context.client
        if client.alpn is None and b"http/1.1" in (client.alpn_offers or ()):
            client.alpn = b"http/1.1"

    def tls_failed_client(self, data: tls.TlsData) -> None:
        """The client refused the school's certificate on an intercepted connection: published (one record)
        as such. Other broken-off handshakes (a closed tab, a browser racing two connections) are not a
        request and are not published; a failure on the upstream side never comes here (mitmproxy calls
        ``tls_failed_server``, and the requests end in ``error``)."""
        tunnel = self.tunnels.get(data.context.client)
        error = data.conn.error or ""
        if tunnel is None or tunnel.handshake is None or not refused_certificate(error):
            return
        facts, ruling = tunnel.handshake
        tunnel.handshake = None  # published once
        self.publish(self._verdict(facts, ruling, self._snapshot(), time.time(), layer="tls")._replace(
            error=error[:200], client_refused_certificate=True))

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
        req = flow.request
        client = flow.client_conn
        tunnel = self.tunnels.get(client)
        host_header = req.host_header  # (decodes every header field: read once)
        facts = RequestFacts(
            Stage.REQUEST, client.peername[0], req.host, req.port, req.method, req.scheme, req.path or "/",
            authority=host_header, connect_host=tunnel.host if tunnel else None,
            sni=tunnel.sni if tunnel else None, transparent=not isinstance(client.proxy_mode, EXPLICIT_MODES),
            names=_names_carried(req, host_header), resolved=flow.metadata.get(RESOLVED, ()))
        identity = flow.metadata.get(IDENTITY) or (tunnel.identity if tunnel else None)
        ruling = decide(snap, identity, facts)
        decided = time.perf_counter() - started
        if ruling.handling is Handling.BLOCK_PAGE:
            verdict = self._verdict(facts, ruling, snap, req.timestamp_start, decision_seconds=decided)
            flow.response = self._block_page(flow, verdict, snap)
        else:
            applied = self._safesearch(flow, ruling)
            verdict = self._verdict(facts, ruling, snap, req.timestamp_start, decision_seconds=decided,
                                    safesearch=applied)
        flow.metadata[VERDICT] = verdict

    def response(self, flow: http.HTTPFlow) -> None:
        draft = flow.metadata.pop(VERDICT, None)  # published once
        resp = flow.response
        if draft is None or resp is None:
            return
        size = len(resp.raw_content or b"")
        if draft.safesearch:  # so a network manager (and `schoolproxy checks run`) can see it is on
            resp.headers["X-Schoolproxy-SafeSearch"] = "enforced"
        end = resp.timestamp_end or time.time()
        duration = max(0.0, end - flow.request.timestamp_start)
        if draft.action == "allow" and resp.status_code in (403, 451) and self._upstream_block(resp, size):
            # The upstream filter's own block page: recorded as blocked upstream (a critical alert).
            verdict = draft._replace(status=resp.status_code, bytes=size, duration=duration, action="block",
                                     rule="upstream-block", reason="blocked by the upstream filter")
        else:
            verdict = draft._replace(status=resp.status_code, bytes=size, duration=duration)
        self.publish(verdict)

    def error(self, flow: http.HTTPFlow) -> None:
        draft = flow.metadata.pop(VERDICT, None)
        if draft is None:
            return
        self.publish(draft._replace(
            error=str(flow.error)[:200] if flow.error else "error",
            duration=max(0.0, time.time() - flow.request.timestamp_start)))

    def _upstream_block(self, resp: http.Response, size: int) -> bool:
        if "html" not in resp.headers.get("content-type", "") or size > MAX_UPSTREAM_PAGE:
            return False
        text = page_text(resp.raw_content or b"", resp.headers.get("content-encoding", ""), MAX_UPSTREAM_PAGE)
        return any(m in text for m in self._snapshot().config.proxy.upstream_block_markers)

    # -- helpers ----------------------------------------------------------------------------------
    def _snapshot(self) -> Snapshot:
        snap = self.snapshots.snapshot
        assert snap is not None, "schoolproxy configuration not loaded"
        return snap

    def _logon_identity(self, snap: Snapshot, ip: str) -> Identity | None:
        """The user the logon feed or a sign-in page puts at this address, if any (else the subnet map
        or the default decide)."""
        logon = self.logons.lookup(ip) if self.logons is not None else None
        if logon is None:
            return None
        groups = frozenset(logon.groups) if logon.groups is not None else None
        return snap.resolver.identify(logon.user, logon.source, groups, logon.device)

    @staticmethod
    def _verdict(facts: RequestFacts, ruling: Ruling, snap: Snapshot, at: float | None, layer: str = "http",
                 status: int | None = None, decision_seconds: float = 0.0, safesearch: bool = False) -> Verdict:
        ident, decision = ruling.identity, ruling.decision
        reason = decision.reason + " (passed through, not decrypted)" if layer == "tls-passthrough" else decision.reason
        return Verdict(
            ref=new_reference(), time=at or time.time(), client_ip=facts.client_ip, username=ident.username,
            profile=ident.profile, identity_source=ident.source, identity_rule=ident.rule, method=facts.method,
            scheme=facts.scheme, host=ruling.host, port=facts.port, path=facts.path if layer == "http" else "",
            action=decision.action, rule=decision.rule, reason=reason,
            categories=snap.policy.category_names(decision.mask), layer=layer, device=ident.device,
            safesearch=safesearch, status=status, decision_seconds=decision_seconds)

    def _block_page(self, flow: http.HTTPFlow, verdict: Verdict, snap: Snapshot) -> http.Response:
        body = b""
        if flow.request.method != "HEAD":
            config = snap.config
            bp = config.block_page
            url = flow.request.url
            ask, outcome = "", ""
            # Asking needs the records database (the request is kept there): with records off, no link
            # to a form that could never take the request.
            if (verdict.username and config.unblock.enabled and config.records.enabled
                    and not verdict.rule.startswith(_NEVER_ASK)):
                # The person may ask for it to be checked: the form finds this block by its reference.
                self.live.remember_block(Blocked(verdict.ref, verdict.username, verdict.profile, verdict.host,
                                                 shown_url(url), verdict.rule,
                                                 ",".join(verdict.categories), verdict.device))
                ask = f"http://{bp.pages_host}/unblock?ref={verdict.ref}"
                told = self.live.outcome_for(verdict.username, verdict.host)
                if told is not None:
                    outcome = outcome_text(told, snap.policy.tz, dt.datetime.now(dt.timezone.utc))
            body = blockpage.render(verdict, url, config.school, bp.report_to, bp.report_email,
                                    ask, outcome)
        return local_response(403, body, _BLOCK_HEADERS + ((b"x-schoolproxy-reference", verdict.ref.encode()),))

    @staticmethod
    def _safesearch(flow: http.HTTPFlow, ruling: Ruling) -> bool:
        """Apply the ruling's SafeSearch; whether anything was enforced."""
        if ruling.safesearch_param is not None:
            param, value = ruling.safesearch_param
            path = safesearch.with_param(flow.request.path, param, value)
            if path is not None:
                flow.request.path = path
            else:
                query = flow.request.query
                if query.get_all(param) != [value]:
                    query[param] = value
        if ruling.youtube_header is not None:
            name, value = ruling.youtube_header
            flow.request.headers[name] = value
        return ruling.safesearch_param is not None or ruling.youtube_header is not None
