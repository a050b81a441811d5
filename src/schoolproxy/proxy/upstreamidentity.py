"""UpstreamIdentity addon: tells the upstream filter (Smoothwall) who is browsing (``proxy.upstream_identity``).

Every request reaches the upstream from the gateway's address, so without this it sees one user. With
it, the requests the upstream itself reads carry the device's address (``X-Forwarded-For``) and the
logon name (``X-Authenticated-User``), header names as the config says:

- plain HTTP, which goes to the upstream as an absolute-form request (explicit upstream mode, and
  transparent mode through the transparent addon);
- the CONNECT that opens an HTTPS tunnel through the upstream (``http_connect_upstream``).

Never inside a TLS tunnel, whose requests go on to the site itself, and never without an upstream.
Copies of these headers sent by a device are removed, so a pupil cannot name someone else to the upstream.
Only a name the school checked is sent (a proxy sign-in, the logon feed, a sign-in page); unidentified
and unverified users are not named.
"""

from __future__ import annotations

import weakref

from mitmproxy import connection, http

from schoolproxy.config import UpstreamIdentitySettings
from schoolproxy.identity.profiles import Identity
from schoolproxy.proxy.identify import IDENTITY
from schoolproxy.proxy.transparent import is_transparent, upstream_address
from schoolproxy.snapshot import SnapshotHolder

#: Identity sources whose name the school has checked.
CHECKED = frozenset({"proxy-auth", "logon-feed", "sign-in"})


def identity_headers(settings: UpstreamIdentitySettings, client_ip: str, ident: Identity | None) -> list[tuple[str, str]]:
    """The headers that tell the upstream who is behind a request (pure; see the module docstring)."""
    headers = []
    if settings.client_address_header:
        headers.append((settings.client_address_header, client_ip))
    if settings.username_header and ident is not None and ident.username and ident.source in CHECKED:
        headers.append((settings.username_header, settings.username_format.replace("{username}", ident.username)))
    return headers


class UpstreamIdentity:
    def __init__(self, snapshots: SnapshotHolder):
        self.snapshots = snapshots
        #: Who is behind each client connection (a CONNECT to the upstream is a flow of its own).
        self.by_conn: weakref.WeakKeyDictionary[connection.Client, Identity] = weakref.WeakKeyDictionary()
        #: Connections that opened a CONNECT tunnel: their requests go on to the site, not to the upstream.
        self.tunnelled: weakref.WeakSet[connection.Client] = weakref.WeakSet()

    def wants(self, event: str) -> bool:
        return self._settings() is not None

    def _settings(self) -> UpstreamIdentitySettings | None:
        snap = self.snapshots.snapshot
        if snap is None or not snap.config.proxy.upstream:
            return None
        return snap.config.proxy.upstream_identity

    def _remember(self, flow: http.HTTPFlow) -> None:
        ident = flow.metadata.get(IDENTITY)
        if ident is not None:
            self.by_conn[flow.client_conn] = ident

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if self._settings() is None:
            return
        self.tunnelled.add(flow.client_conn)
        self._strip(flow)
        self._remember(flow)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        settings = self._settings()
        if settings is None or flow.response or flow.error:
            return
        self._strip(flow, settings)
        self._remember(flow)

    def request(self, flow: http.HTTPFlow) -> None:
        settings = self._settings()
        if settings is None or flow.response or flow.error or not flow.live:
            return
        if flow.request.scheme != "http" or flow.client_conn in self.tunnelled:
            return
        if is_transparent(flow.client_conn):
            upstream = upstream_address(self.snapshots.snapshot.config.proxy.upstream)
            if upstream is None or upstream[0] != "http":  # a TLS upstream: the request goes in a tunnel
                return
        self._add(flow, settings)

    def http_connect_upstream(self, flow: http.HTTPFlow) -> None:
        settings = self._settings()
        if settings is not None:
            self._add(flow, settings)

    def _add(self, flow: http.HTTPFlow, settings: UpstreamIdentitySettings) -> None:
        ident = flow.metadata.get(IDENTITY) or self.by_conn.get(flow.client_conn)
        for name, value in identity_headers(settings, flow.client_conn.peername[0], ident):
            flow.request.headers[name] = value

    def _strip(self, flow: http.HTTPFlow, settings: UpstreamIdentitySettings | None = None) -> None:
        settings = settings or self._settings()
        for name in (settings.client_address_header, settings.username_header):
            if name and name in flow.request.headers:
                del flow.request.headers[name]
