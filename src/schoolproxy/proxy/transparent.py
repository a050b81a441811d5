"""Transparent addon: connections the gateway's firewall redirected to the proxy (``proxy.mode: transparent``).

mitmproxy knows such a connection only by the address the device was going to. The school's filter
decides on names, as an explicit proxy sees them, so before identity and enforcement run this addon:

- **names the destination**: the server name of the TLS handshake (SNI), or the Host header of plain
  HTTP. The proxy then connects to that name itself, as an explicit proxy does: a device cannot send its
  bytes to one address while naming an allowed site in the Host header or the SNI.
- **chains to the upstream filter** (``proxy.upstream``), which mitmproxy's transparent mode does not do:
  HTTPS through a CONNECT to the upstream, plain HTTP as an absolute-form request to it (as mitmproxy's
  upstream mode sends it; many filters refuse a CONNECT to port 80). Connections passed through
  undecrypted are relayed through a CONNECT as well (:class:`PassthroughViaUpstream`).

Who is browsing comes from the logon feed, a sign-in page or the subnet map (the identify addon): a
transparent connection carries no proxy sign-in.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import weakref

from mitmproxy import connection, ctx, http, tls
from mitmproxy.net import server_spec
from mitmproxy.proxy import mode_specs

from schoolproxy.filtering.hostnames import InvalidHost, normalise_host
from schoolproxy.identity.profiles import Identity
from schoolproxy.proxy.identify import Logons
from schoolproxy.proxy.internals import parse_client_hello, send_in_absolute_form
from schoolproxy.snapshot import SnapshotHolder

log = logging.getLogger(__name__)

#: How long the relay waits for a device's TLS handshake and for the upstream's answer to CONNECT.
RELAY_TIMEOUT = 15.0
MAX_CLIENT_HELLO = 64 * 1024


def is_transparent(client: connection.Client) -> bool:
    return type(client.proxy_mode) is _TRANSPARENT


_TRANSPARENT = mode_specs.TransparentMode


def listening_transparently() -> bool:
    """Does this proxy have a transparent listener (mitmproxy's ``mode`` option)? Without one, no
    connection is ever transparent and the addons here have nothing to do."""
    return any(type(mode_specs.ProxyMode.parse(m)) is _TRANSPARENT for m in ctx.options.mode)


def upstream_address(upstream: str | None) -> tuple[str, tuple[str, int]] | None:
    """``http://10.0.0.2:800`` → ("http", ("10.0.0.2", 800)); None without an upstream."""
    if not upstream:
        return None
    scheme, address = server_spec.parse(upstream, default_scheme="http")
    return scheme, address


def _name(raw: str | None) -> str | None:
    """A host name fit to connect to (lower case, punycode), or None for anything else."""
    if not raw:
        return None
    try:
        host, _ = normalise_host(raw)
    except InvalidHost:
        return None
    return host


class Transparent:
    def __init__(self, snapshots: SnapshotHolder):
        self.snapshots = snapshots

    def wants(self, event: str) -> bool:
        return listening_transparently()

    def _upstream(self) -> tuple[str, tuple[str, int]] | None:
        snap = self.snapshots.snapshot
        return upstream_address(snap.config.proxy.upstream) if snap is not None else None

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        context = data.context
        if data.ignore_connection or not is_transparent(context.client) or context.server.address is None:
            return
        name = _name(data.client_hello.sni)
        if name is not None:
            context.server.address = (name, context.server.address[1])
        upstream = self._upstream()
        if upstream is not None:
            context.server.via = upstream

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if type(flow.client_conn.proxy_mode) is not _TRANSPARENT or flow.response or flow.error or not flow.live:
            return
        req = flow.request
        if req.scheme == "http":
            name = _name(req.host_header)
            if name is not None and name != req.host:
                req.host = name  # also sets the Host header to the name and the destination port
        elif req.scheme == "https" and flow.server_conn.via is None:
            upstream = self._upstream()
            if upstream is not None:  # e.g. a TLS connection without SNI: still through the upstream
                flow.server_conn.via = upstream

    def request(self, flow: http.HTTPFlow) -> None:
        if type(flow.client_conn.proxy_mode) is not _TRANSPARENT or flow.response or flow.error or not flow.live:
            return
        req = flow.request
        upstream = self._upstream()
        if upstream is None or req.scheme != "http":
            return
        scheme, address = upstream
        if scheme == "https":  # a TLS upstream proxy: through a CONNECT tunnel to it
            flow.server_conn.via = upstream
            return
        send_in_absolute_form(req, address)  # "GET http://site/path", as an explicit proxy sends it


class PassthroughViaUpstream:
    """Relays transparent connections that are passed through undecrypted (a profile's passthrough
    categories) through a CONNECT to the upstream filter, instead of straight to the site.

    mitmproxy relays a passed-through connection byte for byte to its server address, with no way to
    put a CONNECT first. So that address becomes a relay of our own on loopback, which reads the server
    name from the device's TLS handshake, opens a CONNECT to the upstream, and splices the two. Each such
    connection comes to the relay from a loopback address of its own (all of 127/8 is local), by which
    the relay knows the device behind it — for the upstream identity headers on the CONNECT. Placed after
    the enforce addon, which decides what is passed through."""

    def __init__(self, snapshots: SnapshotHolder, logons: Logons | None = None):
        self.snapshots = snapshots
        #: Who is logged on where (the logon feed, a sign-in page), for the upstream identity headers.
        self.logons = logons
        self.server: asyncio.Server | None = None
        self.address: tuple[str, int] | None = None
        self.relayed = 0
        self._tasks: weakref.WeakSet[asyncio.Task] = weakref.WeakSet()
        #: The loopback address a connection comes to the relay from → (device address, identity).
        self._pending: dict[str, tuple[str, Identity | None]] = {}
        self._next = 0

    def wants(self, event: str) -> bool:
        return listening_transparently()

    def running(self) -> None:
        snap = self.snapshots.snapshot
        if snap is None or snap.config.proxy.transparent_port() is None or not snap.config.proxy.upstream:
            return
        if self.server is None and self.address is None:
            # Bound now, so the address is known at once; connections wait in the backlog until served.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            self.address = sock.getsockname()[:2]
            asyncio.get_running_loop().create_task(self._serve(sock))

    async def _serve(self, sock: socket.socket) -> None:
        self.server = await asyncio.start_server(self._relay, sock=sock)

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        if not data.ignore_connection or not is_transparent(data.context.client):
            return
        snap = self.snapshots.snapshot
        upstream = upstream_address(snap.config.proxy.upstream) if snap is not None else None
        if upstream is None:
            return
        if self.address is None:  # no relay (it failed to start): never straight to the site
            log.error("schoolproxy: no relay to the upstream filter for a passed-through connection; closed")
            data.context.server.error = "no relay to the upstream filter"
            return
        data.context.server.address = self.address
        data.context.server.sockname = (self._source_for(data.context.client.peername[0]), 0)

    def _source_for(self, ip: str) -> str:
        """A loopback address (127.64.0.0/10) the connection to the relay comes from, remembered with the
        device behind it: the logon feed or a sign-in names the user, as the identify addon would."""
        self._next = self._next % ((1 << 22) - 2) + 1
        n = self._next
        source = f"127.{64 | n >> 16}.{n >> 8 & 255}.{n & 255}"
        logon = self.logons.lookup(ip) if self.logons is not None else None
        ident = Identity(logon.user, "", logon.source, "", logon.device) if logon is not None else None
        if len(self._pending) >= 10_000:  # connections that never reached the relay: forget them
            self._pending.clear()
        self._pending[source] = (ip, ident)
        return source

    def done(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for task in list(self._tasks):
            task.cancel()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        up_writer = None
        device = self._pending.pop(writer.get_extra_info("peername")[0], None)
        try:
            hello, sni = await asyncio.wait_for(_read_client_hello(reader), RELAY_TIMEOUT)
            snap = self.snapshots.snapshot
            upstream = upstream_address(snap.config.proxy.upstream) if snap is not None else None
            if sni is None or upstream is None or upstream[0] != "http":
                return
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*upstream[1]), RELAY_TIMEOUT)
            target = f"{sni}:443".encode("idna")
            head = b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n" % (target, target)
            settings = snap.config.proxy.upstream_identity
            if settings is not None and device is not None:
                from schoolproxy.proxy.upstreamidentity import identity_headers
                for name, value in identity_headers(settings, *device):
                    head += f"{name}: {value}\r\n".encode("utf-8", "replace")
            up_writer.write(head + b"\r\n")
            head = await asyncio.wait_for(up_reader.readuntil(b"\r\n\r\n"), RELAY_TIMEOUT)
            if not head.split(b"\r\n", 1)[0].split(b" ")[1:2] == [b"200"]:
                log.warning("schoolproxy: the upstream filter refused a passed-through connection to %s: %r",
                            sni, head.split(b"\r\n", 1)[0][:100])
                return
            up_writer.write(hello)
            self.relayed += 1
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError, IndexError):
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()


async def _read_client_hello(reader: asyncio.StreamReader) -> tuple[bytes, str | None]:
    """The device's first bytes (a TLS ClientHello) and the server name it asks for."""
    data = b""
    while len(data) < MAX_CLIENT_HELLO:
        chunk = await reader.read(4096)
        if not chunk:
            break
        data += chunk
        try:
            hello = parse_client_hello(data)
        except ValueError:
            break
        if hello is not None:
            return data, _name(hello.sni)
    return data, None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    finally:
        if writer.can_write_eof():
            try:
                writer.write_eof()
            except OSError:
                pass
