"""The tests' stand-in "internet": the school's upstream filter *and* every origin server, on loopback.

End-to-end tests run a real ``mitmdump --mode upstream:<proxy_url>``. There is no network besides
127.0.0.1, so the upstream proxy started here (a stand-in for the school's Smoothwall) answers for
every hostname itself:

* **Plain HTTP** arrives as absolute-form requests (``GET http://host/path HTTP/1.1``). Each one is
  recorded and answered with a small echo page::

      <html><body><h1>origin HOST</h1><p>METHOD PATH</p></body></html>

  (HTTP/1.1 keep-alive, ``Content-Length`` and chunked request bodies, ``Expect: 100-continue`` and
  ``HEAD`` are supported.)

* **HTTPS** arrives as ``CONNECT host:port``. The CONNECT is recorded in :attr:`Internet.connects`,
  answered with ``200 Connection established``, and then this server terminates TLS on the tunnel
  itself with a leaf certificate for that host from a throw-away test CA (issued on demand, cached;
  the SNI name wins if the client sends one). So it *is* the origin of every HTTPS site, and serves
  the same echo pages over HTTP/1.1 inside TLS. mitmproxy is told to trust that CA with
  ``--set ssl_verify_upstream_trusted_ca=<ca_path>``; a client that trusts only that CA can tell a
  passed-through connection (it sees the origin certificate) from an intercepted one (it sees
  mitmproxy's certificate and fails verification).

* **Upstream block pages**: hosts in :attr:`Internet.block_hosts` get a 403 Smoothwall-style block
  page instead of the echo, over plain HTTP and inside CONNECT tunnels alike, as the real upstream
  filter would.

Every HTTP request (never the CONNECT itself) is recorded as a :class:`Seen` in :attr:`Internet.seen`,
so tests can assert on what actually left the proxy under test::

    with Internet(tmp_path) as internet:
        # mitmdump --mode upstream:{internet.proxy_url} --set ssl_verify_upstream_trusted_ca={internet.ca_path}
        ...
        seen = internet.wait_for(lambda s: s.host == "learning.test")
        assert seen.query == {"week": ["3"]}

The server runs its own asyncio loop in a background thread, so plain synchronous tests can use it.
Only the standard library and ``cryptography`` are used (deliberately no mitmproxy imports: this is
the thing mitmproxy is tested against).

* **Origin servers at an address of their own** (``origin_ports=True``): the same echo pages also on
  ``host`` port 80 (plain HTTP, the Host header names the site) and port 443 (TLS at once, the
  certificate for the SNI name) — what a proxy in transparent mode with no upstream connects to. With
  ``netns=NAME`` every listener is opened in that network namespace (``ip netns add NAME``), so the
  stand-in internet can sit behind a gateway namespace in tests of the firewall rules.

Limitation: a client must wait for the ``200 Connection established`` before it starts the TLS
handshake (curl, httpx and mitmproxy all do).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import html
import ipaddress
import logging
import re
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Seen", "TestCA", "make_test_ca", "Internet", "BLOCK_PAGE_MARKER"]

log = logging.getLogger(__name__)

# Limits that keep a hostile or broken client from tying the server up.
MAX_HEAD = 64 * 1024          # request line + headers, bytes
MAX_HEADERS = 100             # header fields per request
MAX_BODY = 16 * 1024 * 1024   # request body, bytes (after de-chunking)
TLS_HANDSHAKE_TIMEOUT = 10.0  # seconds
CLOSE_TIMEOUT = 1.0           # seconds to wait for a graceful (TLS) close before aborting

#: The sentence every upstream block page contains (what a "detect upstream block page" feature keys on).
BLOCK_PAGE_MARKER = "This site has been blocked by your upstream filter"

BLOCK_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Smoothwall - Access Denied</title></head>"
    "<body><h1>Smoothwall</h1>"
    f"<p>{BLOCK_PAGE_MARKER}.</p>"
    "<p>Site: {host}</p></body></html>"
)

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")   # RFC 9110 token (methods, header names)
_HEX = re.compile(rb"^[0-9A-Fa-f]+$")
_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 413: "Content Too Large"}


# ---------------------------------------------------------------------------------------------------
# What the tests inspect
# ---------------------------------------------------------------------------------------------------
@dataclass
class Seen:
    """One HTTP request that reached the stand-in internet."""

    method: str
    scheme: str                      # "http", or "https" inside a CONNECT tunnel
    host: str                        # lower-case, no port, no IPv6 brackets
    port: int
    path: str                        # origin-form: path plus "?query" (never the fragment)
    headers: list[tuple[str, str]]   # in arrival order, original case
    body: bytes = b""
    via_connect: bool = False        # True if it arrived inside a CONNECT tunnel (TLS)

    @property
    def query(self) -> dict[str, list[str]]:
        """The path's query string parsed with :func:`urllib.parse.parse_qs` (blank values kept)."""
        return parse_qs(urlsplit(self.path).query, keep_blank_values=True)

    def header(self, name: str) -> str | None:
        """The first header with this name (case-insensitive), or None."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def url(self) -> str:
        default = {"http": 80, "https": 443}.get(self.scheme)
        host = f"[{self.host}]" if ":" in self.host else self.host
        netloc = host if self.port == default else f"{host}:{self.port}"
        return f"{self.scheme}://{netloc}{self.path}"


# ---------------------------------------------------------------------------------------------------
# Test CA
# ---------------------------------------------------------------------------------------------------
class TestCA:
    """A throw-away CA (EC P-256) that issues server certificates for any hostnames.

    ``path`` is the CA certificate (``ca.pem``) to trust; leaf certificates and keys are written
    into the same directory.
    """

    __test__ = False  # keep pytest from collecting this class

    def __init__(self, directory: Path | str):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "schoolproxy tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, "schoolproxy test origin CA"),
        ])
        now = dt.datetime.now(dt.timezone.utc)
        public = self.key.public_key()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=True,
                              crl_sign=True, encipher_only=False, decipher_only=False),
                critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.path = self.dir / "ca.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self._lock = threading.Lock()
        self._contexts: dict[str, ssl.SSLContext] = {}

    def issue(self, hostnames: Iterable[str]) -> tuple[Path, Path]:
        """Issue a leaf certificate for ``hostnames`` (plus IP 127.0.0.1); return (cert_path, key_path).

        Names that are IP addresses become IP SANs, everything else a DNS SAN (IDNs as A-labels).
        """
        names = [h.strip().lower().rstrip(".") for h in hostnames if h and h.strip()]
        if not names:
            raise ValueError("at least one hostname is needed")
        sans: list[x509.GeneralName] = []
        for n in dict.fromkeys(names):  # de-duplicate, keep order
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(_a_label(n)))
        if x509.IPAddress(ipaddress.ip_address("127.0.0.1")) not in sans:
            sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))

        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        common_name = names[0] if 0 < len(names[0]) <= 64 else "schoolproxy test origin"
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))  # well under the 397-day limit
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                              data_encipherment=False, key_agreement=False, key_cert_sign=False,
                              crl_sign=False, encipher_only=False, decipher_only=False),
                critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256())
        )
        # File name: readable prefix plus a digest, so different name lists never collide.
        safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in names[0])[:60]
        digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:10]
        cert_path, key_path = self.dir / f"leaf-{safe}-{digest}.pem", self.dir / f"leaf-{safe}-{digest}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_path, key_path

    def context_for(self, hostname: str) -> ssl.SSLContext:
        """A server-side SSLContext presenting a certificate for ``hostname`` (issued once, cached).

        The context offers ALPN ``http/1.1`` and switches to the SNI name's certificate if a client
        asks for a different name than ``hostname``.
        """
        hostname = hostname.lower().rstrip(".") or "localhost"
        with self._lock:
            ctx = self._contexts.get(hostname)
            if ctx is None:
                cert_path, key_path = self.issue([hostname])
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(cert_path, key_path)
                ctx.set_alpn_protocols(["http/1.1"])
                ctx.sni_callback = self._sni_callback
                self._contexts[hostname] = ctx
            return ctx

    def _sni_callback(self, sslobj: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext) -> None:
        if not server_name:
            return None
        try:
            wanted = self.context_for(server_name)
        except Exception:  # an odd SNI name: keep the CONNECT host's certificate
            log.debug("cannot issue a certificate for SNI %r", server_name, exc_info=True)
            return None
        if wanted is not ctx:
            sslobj.context = wanted
        return None


def make_test_ca(dirpath: Path | str) -> TestCA:
    """Create a throw-away CA in ``dirpath`` (writes ``ca.pem``)."""
    return TestCA(dirpath)


def _a_label(name: str) -> str:
    try:
        name.encode("ascii")
        return name
    except UnicodeEncodeError:
        return name.encode("idna").decode("ascii")


# ---------------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------------
class _BadRequest(Exception):
    """The request is malformed: answer with ``status`` and close the connection."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.status = status


class _ClientGone(Exception):
    """The client went away in the middle of a request."""


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def tokens(self, name: str) -> set[str]:
        return {t.strip().lower() for v in self.get(name) for t in v.split(",") if t.strip()}

    @property
    def keep_alive(self) -> bool:
        conn = self.tokens("connection")
        if "close" in conn:
            return False
        return self.version == "HTTP/1.1" or "keep-alive" in conn


class Internet:
    """The stand-in upstream proxy + origin servers, running in a background thread.

    Use as a context manager (or call :meth:`start` / :meth:`stop`). Attributes for tests:

    ``proxy_url`` / ``proxy_port``
        where the upstream proxy listens (``http://127.0.0.1:PORT``).
    ``ca_path``
        the test CA certificate every origin certificate chains to.
    ``seen``
        every HTTP request answered, as :class:`Seen` (CONNECTs are not in here).
    ``connects``
        every CONNECT target as ``(host, port)``.
    ``block_hosts``
        a mutable set of hostnames that get the upstream block page (403).
    ``connections``
        number of TCP connections accepted.
    """

    def __init__(self, workdir: Path | str | None = None, *, block_hosts: Iterable[str] = (),
                 host: str = "127.0.0.1", proxy_port: int = 0, origin_ports: bool = False,
                 netns: str | None = None):
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix="internet-")
        self.workdir = Path(workdir)
        self.ca = make_test_ca(self.workdir / "internet-ca")
        self.ca_path: Path = self.ca.path
        self.block_hosts: set[str] = set(block_hosts)
        self.seen: list[Seen] = []
        self.connects: list[tuple[str, int]] = []
        #: Every CONNECT request with its headers (method "CONNECT", path "").
        self.connect_requests: list[Seen] = []
        self.host = host
        self.proxy_port: int = proxy_port
        self.proxy_url: str = ""
        self.origin_ports = origin_ports
        self.netns = netns

        self._lock = threading.Lock()
        self._connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._origins: list[asyncio.Server] = []
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._tasks: set[asyncio.Task] = set()             # only touched in the loop thread
        self._writers: set[asyncio.StreamWriter] = set()   # only touched in the loop thread

    # -- lifecycle -----------------------------------------------------------------------------------
    def __enter__(self) -> "Internet":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> "Internet":
        if self._thread is not None:
            raise RuntimeError("Internet already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="test-internet", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("stand-in internet did not start")
        if self._startup_error is not None:
            self._thread.join(5)
            raise RuntimeError("stand-in internet failed to start") from self._startup_error
        return self

    def stop(self) -> None:
        """Close the listener and every connection, stop the loop and join the thread (idempotent)."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None or not thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(5)
        except Exception:  # pragma: no cover - best effort; the loop is stopped below anyway
            log.debug("stand-in internet shutdown", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            if self.netns is not None:  # this thread's sockets are opened in that network namespace
                import os
                with open(f"/run/netns/{self.netns}") as ns:
                    os.setns(ns.fileno(), os.CLONE_NEWNET)
            self._server = loop.run_until_complete(
                asyncio.start_server(self._handle_client, self.host, self.proxy_port, limit=MAX_HEAD))
            self.proxy_port = self._server.sockets[0].getsockname()[1]
            self.proxy_url = f"http://{self.host}:{self.proxy_port}"
            if self.origin_ports:
                origin_tls = self.ca.context_for("localhost")
                self._origins = [
                    loop.run_until_complete(asyncio.start_server(
                        lambda r, w: self._handle_client(r, w, "http"), self.host, 80, limit=MAX_HEAD)),
                    loop.run_until_complete(asyncio.start_server(
                        lambda r, w: self._handle_client(r, w, "https"), self.host, 443, limit=MAX_HEAD,
                        ssl=origin_tls, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)),
                ]
        except BaseException as e:  # e.g. no loopback: report to start()
            self._startup_error = e
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            # Anything still running (stop() timed out?) is cancelled here, in the loop's own thread.
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for server in self._origins:
            server.close()
        for w in list(self._writers):
            w.transport.abort()
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- queries for tests -------------------------------------------------------------------------
    @property
    def connections(self) -> int:
        """TCP connections accepted (since start or the last :meth:`clear`)."""
        with self._lock:
            return self._connections

    def requests_for(self, host: str) -> list[Seen]:
        """All recorded requests for ``host`` (case-insensitive), oldest first."""
        host = host.lower()
        with self._lock:
            return [s for s in self.seen if s.host == host]

    def connects_for(self, host: str) -> list[tuple[str, int]]:
        """All CONNECT targets for ``host`` (case-insensitive)."""
        host = host.lower()
        with self._lock:
            return [c for c in self.connects if c[0] == host]

    def clear(self) -> None:
        """Forget recorded requests and CONNECTs and reset the connection count."""
        with self._lock:
            self.seen.clear()
            self.connects.clear()
            self.connect_requests.clear()
            self._connections = 0

    def wait_for(self, predicate: Callable[[Seen], bool], timeout: float = 5.0) -> Seen:
        """Return the first recorded request matching ``predicate``, polling until ``timeout``.

        Raises AssertionError (listing what was seen) if none arrives in time.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                snapshot = list(self.seen)
            for s in snapshot:
                if predicate(s):
                    return s
            if time.monotonic() >= deadline:
                seen = [f"{s.method} {s.url}" for s in snapshot]
                raise AssertionError(f"no matching request reached the stand-in internet "
                                     f"within {timeout}s; seen: {seen}")
            time.sleep(0.01)

    # -- connection handling (loop thread) ---------------------------------------------------------
    async def _handle_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                             origin: str | None = None) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        with self._lock:
            self._connections += 1
        graceful = True
        try:
            await self._serve(reader, writer, origin)
        except asyncio.CancelledError:
            # Shutdown. Deliberately not re-raised: on Python 3.12.1 the stream server's done-callback
            # calls task.exception() on a cancelled task and logs a spurious CancelledError traceback.
            graceful = False
        except (_ClientGone, ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError):
            graceful = False  # the client went away or TLS broke: nothing to say
        except Exception:
            graceful = False
            log.exception("stand-in internet: unexpected error (connection dropped)")
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            await self._close(writer, graceful)

    @staticmethod
    async def _close(writer: asyncio.StreamWriter, graceful: bool) -> None:
        if not graceful:
            writer.transport.abort()
            return
        try:
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
        except BaseException:  # includes cancellation during shutdown
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     origin: str | None = None) -> None:
        """Serve requests on one connection until it should close; a CONNECT switches to TLS.
        ``origin``: a connection to an origin port ("http" or "https"), not to the proxy."""
        tunnel: tuple[str, int] | None = None
        while True:
            try:
                req = await self._read_head(reader)
                if req is None:
                    return  # clean EOF between requests
                if req.method == "CONNECT":
                    if tunnel is not None or origin is not None:
                        raise _BadRequest("CONNECT inside a tunnel")
                    host, port = _parse_authority(req.target)
                    with self._lock:
                        self.connects.append((host, port))
                        self.connect_requests.append(Seen("CONNECT", "", host, port, "", req.headers))
                    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    await writer.drain()
                    try:
                        await asyncio.wait_for(writer.start_tls(self.ca.context_for(host)),
                                               TLS_HANDSHAKE_TIMEOUT)
                    except (ssl.SSLError, OSError, TimeoutError, ValueError) as e:
                        log.debug("TLS handshake for %s failed: %r", host, e)
                        raise _ClientGone from e
                    tunnel = (host, port)
                    continue
                scheme, host, port, path = _request_target(req, tunnel, origin or "http")
                body = await self._read_body(req, reader, writer)
            except _BadRequest as e:
                log.debug("bad request: %s", e)
                await self._send(writer, e.status, _error_page(e.status, str(e)), keep_alive=False)
                return
            seen = Seen(req.method, scheme, host, port, path, req.headers, body, tunnel is not None)
            with self._lock:
                self.seen.append(seen)
            if self._is_blocked(host):
                status, page = 403, BLOCK_PAGE.replace("{host}", html.escape(host))
            else:
                status = 200
                page = (f"<html><body><h1>origin {html.escape(host)}</h1>"
                        f"<p>{html.escape(req.method)} {html.escape(path)}</p></body></html>")
            await self._send(writer, status, page, keep_alive=req.keep_alive,
                             head_only=req.method == "HEAD", blocked=status == 403)
            if not req.keep_alive:
                return

    def _is_blocked(self, host: str) -> bool:
        return any(host == b.lower().rstrip(".") for b in list(self.block_hosts))

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, status: int, page: str, *, keep_alive: bool,
                    head_only: bool = False, blocked: bool = False) -> None:
        body = page.encode("utf-8")
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            "Content-Type: text/html; charset=utf-8",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            "Server: schoolproxy-test-internet",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
        ]
        if blocked:
            lines.append("X-Upstream-Filter: Smoothwall")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(body)
        await writer.drain()

    # -- parsing -------------------------------------------------------------------------------------
    @staticmethod
    async def _read_head(reader: asyncio.StreamReader) -> _Request | None:
        """Read request line + headers; None on EOF before the first byte of a request."""
        lines: list[str] = []
        total = 0
        while True:
            try:
                raw = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                raise _BadRequest("header line too long")
            if not raw:
                if total == 0:
                    return None
                raise _ClientGone("EOF inside the request head")
            if not raw.endswith(b"\n"):
                raise _ClientGone("EOF inside a header line")
            total += len(raw)
            if total > MAX_HEAD:
                raise _BadRequest("request head too large")
            line = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
            if not line:
                if not lines:
                    continue  # RFC 9112 2.2: ignore empty lines before the request line
                break
            lines.append(line.decode("latin-1"))
            if len(lines) > MAX_HEADERS + 1:
                raise _BadRequest("too many header fields")

        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise _BadRequest("malformed request line")
        method, target, version = parts
        if not _TOKEN.match(method):
            raise _BadRequest("malformed method")
        if version not in ("HTTP/1.0", "HTTP/1.1"):
            raise _BadRequest("unsupported HTTP version")
        if not target or any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in target):
            raise _BadRequest("malformed request target")
        req = _Request(method, target, version)
        for line in lines[1:]:
            if line[0] in " \t":
                raise _BadRequest("obsolete header line folding")
            name, sep, value = line.partition(":")
            if not sep or not _TOKEN.match(name):
                raise _BadRequest("malformed header field")
            req.headers.append((name, value.strip(" \t")))
        return req

    @staticmethod
    async def _read_body(req: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        te = req.tokens("transfer-encoding")
        lengths = {v.strip() for v in req.get("content-length")}
        if te and lengths:
            raise _BadRequest("both Transfer-Encoding and Content-Length")
        if te and req.get("transfer-encoding")[-1].split(",")[-1].strip().lower() != "chunked":
            raise _BadRequest("unsupported transfer coding")
        length = 0
        if lengths:
            if len(lengths) != 1 or not next(iter(lengths)).isdigit():
                raise _BadRequest("invalid Content-Length")
            length = int(next(iter(lengths)))
            if length > MAX_BODY:
                raise _BadRequest("request body too large", 413)
        if (te or length) and req.version == "HTTP/1.1" and "100-continue" in req.tokens("expect"):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        try:
            if te:
                return await _read_chunked(reader)
            return await reader.readexactly(length) if length else b""
        except asyncio.IncompleteReadError as e:
            raise _ClientGone("EOF inside the request body") from e


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    async def line() -> bytes:
        try:
            raw = await reader.readline()
        except (ValueError, asyncio.LimitOverrunError):
            raise _BadRequest("chunk line too long")
        if not raw.endswith(b"\n"):
            raise _ClientGone("EOF inside a chunked body")
        return raw.rstrip(b"\r\n")

    body = bytearray()
    while True:
        size_text = (await line()).split(b";", 1)[0].strip()
        if not _HEX.match(size_text):
            raise _BadRequest("malformed chunk size")
        size = int(size_text, 16)
        if size == 0:
            break
        if len(body) + size > MAX_BODY:
            raise _BadRequest("request body too large", 413)
        body += await reader.readexactly(size)
        if await line():
            raise _BadRequest("chunk data not followed by CRLF")
    for _ in range(MAX_HEADERS + 1):  # trailer section, ignored
        if not await line():
            return bytes(body)
    raise _BadRequest("too many trailer fields")


def _parse_authority(authority: str) -> tuple[str, int]:
    """``host:port`` (CONNECT target) → (lower-case host, port)."""
    try:
        u = urlsplit("//" + authority)
        host, port = u.hostname, u.port
    except ValueError:
        raise _BadRequest("malformed CONNECT target")
    if not host or port is None or port == 0 or u.path or u.query or u.username is not None:
        raise _BadRequest("malformed CONNECT target")
    return host.rstrip("."), port


def _request_target(req: _Request, tunnel: tuple[str, int] | None,
                    scheme: str = "http") -> tuple[str, str, int, str]:
    """(scheme, host, port, path) for a request, from its target, the tunnel or its Host header."""
    target = req.target
    if "://" in target:  # absolute-form, what a client sends to a proxy
        try:
            u = urlsplit(target)
            scheme, host, port = u.scheme.lower(), u.hostname, u.port
        except ValueError:
            raise _BadRequest("malformed URL")
        if scheme not in ("http", "https") or not host:
            raise _BadRequest("malformed URL")
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        return scheme, host.rstrip("."), port or (443 if scheme == "https" else 80), path
    if not (target.startswith("/") or (target == "*" and req.method == "OPTIONS")):
        raise _BadRequest("malformed request target")
    if tunnel is not None:  # origin-form inside a CONNECT tunnel: the tunnel says where
        return "https", tunnel[0], tunnel[1], target
    # Origin-form sent straight to the proxy: be lenient and use the Host header.
    hosts = req.get("host")
    if len(hosts) != 1:
        raise _BadRequest("origin-form request without a single Host header")
    try:
        u = urlsplit("//" + hosts[0])
        host, port = u.hostname, u.port
    except ValueError:
        raise _BadRequest("malformed Host header")
    if not host:
        raise _BadRequest("malformed Host header")
    return scheme, host.rstrip("."), port or (443 if scheme == "https" else 80), target


def _error_page(status: int, reason: str) -> str:
    title = f"{status} {_REASONS.get(status, 'Error')}"
    return f"<html><body><h1>{title}</h1><p>{html.escape(reason)}</p></body></html>"
