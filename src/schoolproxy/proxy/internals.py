"""Everything that relies on mitmproxy's private API, in one place. Each has a test in
tests/test_internals.py that fails if the pinned mitmproxy (>=12.2,<13) changes underneath it.

- :class:`HookIndex` and :func:`master_with_hook_index`: the lean master's event dispatch. mitmproxy's stock manager walks every addon for
  every event (a generator, a ``getattr``, a context manager and a coroutine each), including the
  ``update`` event that follows each flow event and that no gateway addon handles; this resolves each
  event's handlers once, leaving out those of an addon whose ``wants(event)`` says the running
  configuration has nothing for it to do (its feature is off), until :meth:`HookIndex.reindex` or an
  option change. Relies on ``AddonManager``'s ``chain``, ``register``/``add``/``remove``/``clear``,
  ``trigger_event``/``handle_lifecycle``, ``addonmanager.traverse``/``safecall``, and on the master
  wiring its manager to option changes (``_configure_all``) and uninstalling ``_termlog_addon``.
- :func:`local_response`: a response built from bytes without ``Response.__init__``, whose debug-mode
  type check of every field costs more than the rest of a block page. Relies on the fields of
  ``ResponseData`` and on ``Response`` keeping its state in ``.data``.
- :func:`skip_message_type_checks`: the same debug-mode check left out of every request and response
  mitmproxy parses (in ``schoolproxy run`` only). Relies on ``MessageData.__post_init__`` being that
  check alone.
- :func:`listen_with_reuse_port`: ``--workers N`` processes binding one port (SO_REUSEPORT). Relies on
  ``AsyncioServerInstance.listen(host, port)`` returning its asyncio servers and on ``handle_stream``.
- :func:`create_ca`: the CA's files, as mitmproxy's ``CertStore.create_store`` writes them, with an ECDSA
  key. Relies on their names and formats (``mitmproxy-ca.pem`` key and certificate, ...).
- :func:`send_in_absolute_form`: a transparent-mode request sent to the upstream filter as an explicit
  proxy sends it (mitmproxy has no transparent-and-upstream mode). Relies on ``RequestData``'s ``host``,
  ``port`` and ``authority`` (where the connection goes; the HTTP/1 request line is absolute-form when
  ``authority`` is set) and on the HTTP layer connecting to ``(request.host, request.port)`` after the
  ``request`` hook.
- :func:`parse_client_hello`: the server name of a TLS handshake read off a raw connection (the relay of
  passed-through connections). Relies on ``mitmproxy.proxy.layers.tls.parse_client_hello``. The relay
  also relies on mitmproxy opening a server connection from ``Server.sockname`` when it is set.

- :func:`install_http1_limits`: bounds mitmproxy's HTTP/1 layers leave to us, by replacing private
  methods of ``Http1Connection``/``Http1Server``/``HttpStream`` (see the section's comment):
  what a peer can make a connection hold, slow request heads, bodies of requests answered here, and
  chunked bodies with trailers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import h11._readers
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from mitmproxy import (
    addonmanager,
    certs,
    connection,
    exceptions,
    flow,
    hooks,
    http,
    master,
    options,
)
from mitmproxy.addons import termlog
from mitmproxy.net.http import status_codes
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http._events import RequestData


class HookIndex(addonmanager.AddonManager):
    """mitmproxy's addon manager with each event's handlers resolved once, not on every event.

    Same semantics as the stock manager: chain order, children after their parent, sync and async
    handlers, ``AddonHalt`` stopping the rest, an exception in one top-level addon logged and the next
    one still called. The index is rebuilt whenever the chain changes (add, register, remove, clear);
    an addon that swaps its own ``addons`` list later must not be used with it (the lean master has none).

    One addition: an addon may define ``wants(event_name) -> bool``. Its handler of a flow or connection
    event is left out of the index while that says False — a feature the running configuration turns
    off costs no call at all. Its handler must still be correct when called anyway (mitmdump's stock
    manager calls every handler), so ``wants`` only saves the call. Lifecycle events always reach it.
    Whoever changes what ``wants`` answers (a reload) calls :meth:`reindex`.
    """

    def __init__(self, master):
        super().__init__(master)
        self._index: dict[str, list[list[Callable[..., Any]]]] = {}

    def register(self, addon):
        try:
            return super().register(addon)
        finally:
            self._index.clear()

    def add(self, *addons):
        super().add(*addons)
        self._index.clear()

    def remove(self, addon):
        super().remove(addon)
        self._index.clear()

    def clear(self):
        super().clear()
        self._index.clear()

    def _configure_all(self, updated):
        self._index.clear()  # an addon's ``wants`` may read options (the listening modes)
        return super()._configure_all(updated)

    def reindex(self) -> None:
        """Ask every addon's ``wants`` again at the next event (the configuration changed)."""
        self._index.clear()

    def handlers(self, name: str) -> list[list[Callable[..., Any]]]:
        """Per top-level addon, the callables handling event ``name`` (addons without one, or not
        wanting it, left out)."""
        groups = self._index.get(name)
        if groups is None:
            groups = []
            for top in self.chain:
                funcs = [f for a in addonmanager.traverse([top])
                         if callable(f := getattr(a, name, None)) and _wanted(a, name)]
                if funcs:
                    groups.append(funcs)
            self._index[name] = groups
        return groups

    async def trigger_event(self, event: hooks.Hook) -> None:
        groups = self.handlers(event.name)
        if not groups:
            return
        args = event.args()
        for funcs in groups:
            # safecall()'s semantics without entering it for every addon on every event: only an error
            # goes through it, to be reported the same way.
            try:
                for func in funcs:
                    res = func(*args)
                    if res is not None and inspect.isawaitable(res):
                        await res
            except exceptions.AddonHalt:
                return
            except exceptions.OptionsError:
                raise
            except Exception as e:
                _report(e)

    async def handle_lifecycle(self, event: hooks.Hook) -> None:
        await self.trigger_event(event)
        if self.handlers("update"):
            args = event.args()
            if args and isinstance(args[0], flow.Flow):
                await self.trigger_event(hooks.UpdateHook([args[0]]))


#: Events every addon that handles them receives, whatever its ``wants`` says.
LIFECYCLE_EVENTS = frozenset({"load", "configure", "running", "done"})


def _wanted(addon: object, name: str) -> bool:
    wants = getattr(addon, "wants", None)
    return wants is None or name in LIFECYCLE_EVENTS or bool(wants(name))


def master_with_hook_index(opts: options.Options) -> master.Master:
    """A master whose addons are dispatched by :class:`HookIndex`, with mitmproxy's terminal log
    installed as ``Master(with_termlog=True)`` would (and uninstalled by its ``done``)."""
    m = master.Master(opts, with_termlog=False)
    opts.changed.disconnect(m.addons._configure_all)  # the stock manager it replaces (still empty)
    m.addons = HookIndex(m)
    m._termlog_addon = termlog.TermLog()
    m.addons.add(m._termlog_addon)
    return m


def _report(error: Exception) -> None:
    """Log an addon's error exactly as mitmproxy's safecall() does (message, cut traceback)."""
    with addonmanager.safecall():
        raise error


class LocalResponseData(http.ResponseData):
    """ResponseData for responses built here, without the debug-mode type check of every field: they
    are built from values of the declared types (bytes, int, Headers, float)."""

    def __post_init__(self) -> None:
        pass


#: mitmproxy's own check, as it was before :func:`skip_message_type_checks`.
MESSAGE_TYPE_CHECK = getattr(http.MessageData, "__post_init__", None)  # None under python -O


def _no_type_check(self: http.MessageData) -> None:
    pass


def skip_message_type_checks() -> None:
    """Leave out the type check of every field of every request and response mitmproxy builds.

    mitmproxy checks each field of a new ``Request``/``Response`` against its annotation (``__post_init__``
    under ``if __debug__``, so ``python -O`` leaves it out too), a visible share of the proxy's time per
    HTTPS request in the profile. What mitmproxy builds from parsed bytes has the declared types by construction; the check
    exists to catch an addon's mistake, which mitmdump (``addons/schoolproxy_addons.py``) and the tests
    still catch: it is called by ``schoolproxy run`` alone, not by :func:`lean_master`."""
    http.MessageData.__post_init__ = _no_type_check  # type: ignore[method-assign]


def local_response(status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...]) -> http.Response:
    """The object ``Response.make`` would build, from bytes and ready-encoded headers, without its text
    encoding, header conversion and type check: a block page may be served at the full request rate."""
    now = time.time()
    resp = http.Response.__new__(http.Response)
    resp.data = LocalResponseData(
        http_version=b"HTTP/1.1", headers=http.Headers(headers + ((b"content-length", str(len(body)).encode()),)),
        content=body, trailers=None, timestamp_start=now, timestamp_end=now, status_code=status,
        reason=status_codes.RESPONSES.get(status, "").encode())
    return resp


def listen_with_reuse_port() -> None:
    """Make mitmproxy's TCP proxy servers bind with SO_REUSEPORT (in a ``--workers`` process only)."""
    from mitmproxy.proxy import mode_servers

    original = mode_servers.AsyncioServerInstance.listen
    if getattr(original, "reuse_port", False):
        return

    async def listen(self, host, port):
        if self.mode.transport_protocol != "tcp" or not port:
            return await original(self, host, port)
        return [await asyncio.start_server(self.handle_stream, host or None, port, reuse_port=True)]

    listen.reuse_port = True  # type: ignore[attr-defined]
    mode_servers.AsyncioServerInstance.listen = listen


CA_BASENAME = "mitmproxy"  # mitmproxy.options.CONF_BASENAME: the file names mitmproxy looks for


def create_ca(directory: Path, name: str = "schoolproxy") -> bool:
    """Create the interception CA in ``directory`` unless one is there; True if created.

    mitmproxy would create an RSA-2048 CA, and it signs every certificate it issues, and every TLS
    handshake with a client, with the CA's key. An ECDSA P-256 key signs an order of magnitude faster
    (the handshake's share of the proxy's CPU drops by ~5 % per HTTPS request in make bench), and every
    browser and operating system a school runs accepts it. A CA already in ``directory`` is kept: the
    schools' devices trust it."""
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / f"{CA_BASENAME}-ca.pem").exists():
        return False
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .serial_number(x509.random_serial_number())
            .subject_name(subject).issuer_name(subject)
            .not_valid_before(now + certs.CERT_VALIDITY_OFFSET)
            .not_valid_after(now + certs.CERT_VALIDITY_OFFSET + certs.CA_EXPIRY)
            .public_key(key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    with certs.CertStore.umask_secret():  # the private key files: readable by the service only
        (directory / f"{CA_BASENAME}-ca.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()) + pem)
        (directory / f"{CA_BASENAME}-ca.p12").write_bytes(pkcs12.serialize_key_and_certificates(
            CA_BASENAME.encode(), key, cert, None, serialization.NoEncryption()))
    (directory / f"{CA_BASENAME}-ca-cert.pem").write_bytes(pem)
    (directory / f"{CA_BASENAME}-ca-cert.cer").write_bytes(pem)
    (directory / f"{CA_BASENAME}-ca-cert.p12").write_bytes(pkcs12.serialize_key_and_certificates(
        CA_BASENAME.encode(), None, cert, None, serialization.NoEncryption()))
    (directory / f"{CA_BASENAME}-dhparam.pem").write_bytes(certs.DEFAULT_DHPARAM)
    return True


def send_in_absolute_form(request: http.Request, proxy: tuple[str, int]) -> None:
    """Send a plain-HTTP request to the proxy at ``proxy`` as ``GET http://site/path`` (its Host header
    unchanged), as mitmproxy's upstream mode does: set from the ``request`` hook."""
    authority = request.host if request.port == 80 else f"{request.host}:{request.port}"
    request.data.authority = authority.encode("ascii", "replace")
    request.data.host, request.data.port = proxy


def parse_client_hello(data: bytes):
    """The ClientHello at the start of ``data`` (``.sni``), None if more bytes are needed; ValueError if
    ``data`` is not a TLS handshake."""
    from mitmproxy.proxy.layers.tls import parse_client_hello as parse
    return parse(data)


# -- bounds on mitmproxy's HTTP/1 layers ------------------------------------------------------------
# Bounds mitmproxy's HTTP/1 layers leave to us, each change small and tested against the pinned
# mitmproxy (tests/test_internals.py):
#
# - **What a peer can make a connection hold.** mitmproxy appends everything it receives to a per-connection
#   buffer and never bounds it ("FIXME: protect against header size DoS" in ``_http1.py``): a 60 MB header
#   line, a chunk-size line that never ends, a trailer section, or bytes sent while a response is awaited
#   were all held in full. :func:`_handle_event` refuses a request head over its limit with 431 and closes
#   any connection whose unread bytes exceed it.
# - **Slow request heads.** A head must be complete within ``header_timeout`` of its first byte (408), so a
#   client trickling a byte every few seconds cannot hold a connection; a silent one meets the idle timeout.
# - **Bodies of requests answered here.** A 407 or a block page is decided from the headers, but mitmproxy
#   still reads the whole body into memory before answering (and cannot stream it: "Can't set a response
#   and enable streaming"). Such bodies are now read and thrown away as they arrive.
# - **Chunked bodies with trailers** raised NotImplementedError (a traceback per request); trailers are
#   dropped, as RFC 9112 7.1.2 allows an intermediary to.

log = logging.getLogger(__name__)

#: A response head from a server may be this large (big Set-Cookie and CSP headers exist).
MAX_RESPONSE_HEAD = 256 * 1024


@dataclass
class HeadLimits:
    """What one client connection may make the proxy hold; set by the Limits addon from the config."""

    #: Request line and headers, in bytes, before the client has signed in, and after.
    head_bytes_before_signin: int = 32 * 1024
    head_bytes: int = 64 * 1024
    #: Seconds from the first byte of a request head to its end.
    header_timeout: float = 20.0
    #: Has this client connection (or its address, lately) carried an identified request?
    signed_in: Callable[[connection.Client], bool] = lambda client: False
    #: Told when a connection is refused: (client address, which limit, why).
    refused: Callable[[str, str, str], None] = lambda address, limit, why: None


http1_limits = HeadLimits()

_original_handle_event = _http1.Http1Connection._handle_event
_original_consume_body = http_layers.HttpStream.state_consume_request_body
_original_start_request_stream = http_layers.HttpStream.start_request_stream
_original_make_body_reader = _http1.make_body_reader


def _handle_event(self: _http1.Http1Connection, event: events.Event):
    yield from _original_handle_event(self, event)
    if not isinstance(event, events.DataReceived) or self.state == self.passthrough:
        return
    if isinstance(self, _http1.Http1Server):
        yield from _bound_request_side(self)
    elif len(self.buf) > MAX_RESPONSE_HEAD:
        yield from _close(self, f"server sent more than {MAX_RESPONSE_HEAD} bytes without a complete message")


def _bound_request_side(self: _http1.Http1Server):
    client = self.context.client
    waiting_for_head = self.state == self.read_headers
    if not waiting_for_head or not self.buf:
        self._schoolproxy_head_since = None
        if len(self.buf) > http1_limits.head_bytes:  # unread bytes after a head: a chunk line, a trailer, a flood
            yield from _close(self, f"more than {http1_limits.head_bytes} unread bytes from the client")
        return
    most = http1_limits.head_bytes if http1_limits.signed_in(client) else http1_limits.head_bytes_before_signin
    if len(self.buf) > most:
        http1_limits.refused(client.peername[0], "header-bytes", f"request head over {most} bytes")
        yield from _answer_and_close(self, 431, "Request Header Fields Too Large",
                                     f"The request's headers are larger than {most} bytes.\n")
        return
    now = time.monotonic()
    since = getattr(self, "_schoolproxy_head_since", None)
    if since is None:
        self._schoolproxy_head_since = now
    elif now - since > http1_limits.header_timeout:
        http1_limits.refused(client.peername[0], "header-time",
                       f"request head not complete within {http1_limits.header_timeout:g} s")
        yield from _answer_and_close(self, 408, "Request Timeout",
                                     f"The request's headers did not arrive within {http1_limits.header_timeout:g} s.\n")


def _answer_and_close(self: _http1.Http1Server, status: int, reason: str, text: str):
    body = text.encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    yield commands.SendData(self.conn, head + body)
    yield commands.CloseConnection(self.conn)
    self.buf = type(self.buf)()
    self.state = self.done


def _close(self: _http1.Http1Connection, why: str):
    yield commands.CloseConnection(self.conn)
    if self.stream_id is not None:
        yield http_layers.ReceiveHttp(self.ReceiveProtocolError(self.stream_id, why, code=self.ReceiveProtocolError.code))
    self.buf = type(self.buf)()
    self.state = self.done


def state_consume_request_body(self: http_layers.HttpStream, event: events.Event):
    if self.flow.response is not None and isinstance(event, RequestData):
        return  # answered here (407, block page): the body is never needed, so it is never held
    yield from _original_consume_body(self, event)


def start_request_stream(self: http_layers.HttpStream):
    if self.flow.response is not None:  # answered here: read and drop the body instead of streaming it
        self.flow.request.stream = False
        self.client_state = self.state_consume_request_body
        return
    yield from _original_start_request_stream(self)


class _ChunkedReaderWithoutTrailers(h11._readers.ChunkedReader):
    def __call__(self, buf):
        event = super().__call__(buf)
        if isinstance(event, h11.EndOfMessage) and event.headers:
            return h11.EndOfMessage()
        return event


def make_body_reader(expected_size: int | None):
    if expected_size is None:
        return _ChunkedReaderWithoutTrailers()
    return _original_make_body_reader(expected_size)


def install_http1_limits() -> None:
    """Apply the changes (idempotent). Called when the Limits addon loads, before any connection."""
    _http1.Http1Connection._handle_event = _handle_event
    http_layers.HttpStream.state_consume_request_body = state_consume_request_body
    http_layers.HttpStream.start_request_stream = start_request_stream
    _http1.make_body_reader = make_body_reader
