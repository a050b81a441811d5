"""Bounds mitmproxy's HTTP/1 layers leave to us: everything here uses mitmproxy's private API.

Kept in this one module, each change small and tested against the pinned mitmproxy version
(tests/test_mitmpatch.py), so an upgrade that moves them fails there and nowhere else:

- **What a peer can make a connection hold.** mitmproxy appends everything it receives to a per-connection
  buffer and never bounds it ("FIXME: protect against header size DoS" in ``_http1.py``): a 60 MB header
  line, a chunk-size line that never ends, a trailer section, or bytes sent while a response is awaited
  were all held in full. :func:`_handle_event` refuses a request head over its limit with 431 and closes
  any connection whose unread bytes exceed it.
- **Slow request heads.** A head must be complete within ``header_timeout`` of its first byte (408), so a
  client trickling a byte every few seconds cannot hold a connection; a silent one meets the idle timeout.
- **Bodies of requests answered here.** A 407 or a block page is decided from the headers, but mitmproxy
  still reads the whole body into memory before answering (and cannot stream it: "Can't set a response
  and enable streaming"). Such bodies are now read and thrown away as they arrive.
- **Chunked bodies with trailers** raised NotImplementedError (a traceback per request); trailers are
  dropped, as RFC 9112 7.1.2 allows an intermediary to.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import h11
import h11._readers
from mitmproxy import connection
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http._events import RequestData

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


limits = HeadLimits()

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
        if len(self.buf) > limits.head_bytes:  # unread bytes after a head: a chunk line, a trailer, a flood
            yield from _close(self, f"more than {limits.head_bytes} unread bytes from the client")
        return
    most = limits.head_bytes if limits.signed_in(client) else limits.head_bytes_before_signin
    if len(self.buf) > most:
        limits.refused(client.peername[0], "header-bytes", f"request head over {most} bytes")
        yield from _answer_and_close(self, 431, "Request Header Fields Too Large",
                                     f"The request's headers are larger than {most} bytes.\n")
        return
    now = time.monotonic()
    since = getattr(self, "_schoolproxy_head_since", None)
    if since is None:
        self._schoolproxy_head_since = now
    elif now - since > limits.header_timeout:
        limits.refused(client.peername[0], "header-time",
                       f"request head not complete within {limits.header_timeout:g} s")
        yield from _answer_and_close(self, 408, "Request Timeout",
                                     f"The request's headers did not arrive within {limits.header_timeout:g} s.\n")


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


def install() -> None:
    """Apply the changes (idempotent). Called when the Limits addon loads, before any connection."""
    _http1.Http1Connection._handle_event = _handle_event
    http_layers.HttpStream.state_consume_request_body = state_consume_request_body
    http_layers.HttpStream.start_request_stream = start_request_stream
    _http1.make_body_reader = make_body_reader
