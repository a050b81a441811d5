"""The tests' own "internet": a stand-in for the school's upstream filter (Smoothwall) on 127.0.0.1.

There is no network beyond loopback, so this one HTTP proxy answers for every hostname itself:

- absolute-form plain HTTP (``GET http://host/path``): answered with an echo page ``origin HOST``;
- ``CONNECT host:443``: it terminates TLS with a certificate for that host from its own test CA
  (issued on demand) and answers the requests inside the same way — so it is "the origin" of every
  HTTPS site. The proxy under test trusts that CA (``ssl_verify_upstream_trusted_ca``); a client that
  trusts only that CA can tell a passed-through connection (origin certificate) from an intercepted one.
- hosts in ``block_hosts`` get a Smoothwall-style block page (403), as the real upstream would.

Every request is recorded as a :class:`Seen`, so tests assert what actually left the proxy.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MAX_HEAD = 64 * 1024


@dataclass
class Seen:
    method: str
    scheme: str
    host: str
    port: int
    path: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    via_connect: bool = False

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query, keep_blank_values=True)

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


class TestCA:
    """A throw-away CA that issues a leaf certificate per hostname."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path):
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "schoolproxy test origin CA")])
        now = dt.datetime.now(dt.timezone.utc)
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / "ca.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def context_for(self, hostname: str) -> ssl.SSLContext:
        with self._lock:
            ctx = self._contexts.get(hostname)
            if ctx is None:
                cert, key = self._issue(hostname)
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(cert, key)
                ctx.set_alpn_protocols(["http/1.1"])
                self._contexts[hostname] = ctx
            return ctx

    def _issue(self, hostname: str) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in hostname)[:100]
        cert_path, key_path = self.dir / f"{safe}.crt", self.dir / f"{safe}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_path, key_path


@dataclass
class Internet:
    """Context manager running the stand-in upstream proxy in a background thread."""

    workdir: Path
    seen: list[Seen] = field(default_factory=list)
    connects: list[tuple[str, int]] = field(default_factory=list)
    block_hosts: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.ca = TestCA(Path(self.workdir))
        self.ca_path = self.ca.path
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="standin-internet", daemon=True)
        self._writers: set[asyncio.StreamWriter] = set()
        # The SNI callback picks the certificate for the name the client asks for.
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(*self.ca._issue("default.test"))
        self._tls.sni_callback = self._pick_certificate

    # -- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> "Internet":
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("stand-in internet did not start")
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.proxy_port = self._server.sockets[0].getsockname()[1]
        self.proxy_url = f"http://127.0.0.1:{self.proxy_port}"
        self._ready.set()
        self._loop.run_forever()
        # Shut down in this thread: close the listener and every open connection, then the loop.
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        tasks = asyncio.all_tasks(self._loop)
        for t in tasks:
            t.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    # -- queries for tests --------------------------------------------------------------------------
    def requests_for(self, host: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.host == host]

    def clear(self) -> None:
        with self._lock:
            self.seen.clear()
            self.connects.clear()

    def wait_for(self, predicate, timeout: float = 5.0) -> Seen:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for s in self.seen:
                    if predicate(s):
                        return s
            time.sleep(0.02)
        raise AssertionError(f"no matching request reached the upstream; seen: {[(s.host, s.path) for s in self.seen]}")

    # -- serving ----------------------------------------------------------------------------------
    def _pick_certificate(self, sslobj: ssl.SSLObject, name: str | None, _ctx) -> None:
        if name:
            sslobj.context = self.ca.context_for(name)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._serve(reader, writer, tunnel=None)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, asyncio.LimitOverrunError,
                ValueError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _serve(self, reader, writer, tunnel: tuple[str, int] | None) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            if len(head) > MAX_HEAD:
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            method, target, _ = parts
            headers = [tuple(p.strip() for p in l.split(":", 1)) for l in lines[1:] if ":" in l]
            if method == "CONNECT" and tunnel is None:
                host, _, port = target.rpartition(":")
                with self._lock:
                    self.connects.append((host, int(port)))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
                await writer.start_tls(self._tls)
                return await self._serve(reader, writer, tunnel=(host, int(port)))
            body = await self._read_body(reader, headers)
            if tunnel is None:
                url = urlsplit(target)
                scheme, host, port = url.scheme or "http", url.hostname or "", url.port or 80
                path = (url.path or "/") + (f"?{url.query}" if url.query else "")
            else:
                scheme, (host, port), path = "https", tunnel, target
            seen = Seen(method, scheme, host, port, path, headers, body, tunnel is not None)
            with self._lock:
                self.seen.append(seen)
            self._respond(writer, seen)
            await writer.drain()
            if (seen.header("Connection") or "").lower() == "close":
                return

    @staticmethod
    async def _read_body(reader, headers) -> bytes:
        h = {k.lower(): v for k, v in headers}
        if "chunked" in h.get("transfer-encoding", "").lower():
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                body += chunk[:-2]
                if size == 0:
                    await reader.readuntil(b"\r\n") if not chunk.endswith(b"\r\n") else None
                    return body
        length = int(h.get("content-length", "0") or 0)
        return await reader.readexactly(length) if length else b""

    def _respond(self, writer, seen: Seen) -> None:
        if seen.host in self.block_hosts:
            status = "403 Forbidden"
            body = ("<html><head><title>Smoothwall</title></head><body><h1>Access denied</h1>"
                    "<p>This site has been blocked by your upstream filter (Smoothwall).</p></body></html>")
        else:
            status = "200 OK"
            body = (f"<html><body><h1>origin {html.escape(seen.host)}</h1>"
                    f"<p>{html.escape(seen.method)} {html.escape(seen.path)}</p></body></html>")
        data = body.encode()
        writer.write(f"HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n"
                     f"Content-Length: {len(data)}\r\n\r\n".encode())
        if seen.method != "HEAD":
            writer.write(data)


class TcpRelay:
    """A TCP forwarder on 127.0.0.1 that a test can cut and restore — "the database went away" without
    stopping the machine's real server. ``down()`` closes the listener and every relayed connection."""

    def __init__(self, target_port: int):
        import socket
        self.target = target_port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.up()

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def up(self) -> None:
        async def start():
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        self._call(start())

    def down(self) -> None:
        async def stop():
            self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            self._writers.clear()
        self._call(stop())

    async def _handle(self, reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                w.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def close(self) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
