"""The private mitmproxy API schoolproxy changes (proxy/mitmpatch.py), driven as mitmproxy drives its
layers, and pinned to the mitmproxy version it was written against: an upgrade that moves any of it fails
here first. The same bounds are tested end to end through a real mitmdump in test_e2e_hostile.py."""

import h11
import mitmproxy
import pytest
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.test import taddons, tflow

from schoolproxy.proxy import mitmpatch


def test_written_against_this_mitmproxy():
    # Before changing this pin, re-read the FIXMEs and the functions mitmpatch wraps in the new version.
    assert mitmproxy.version.VERSION.split(".")[0] == "12"
    assert callable(_http1.make_body_reader) and hasattr(h11._readers, "ChunkedReader")
    for name in ("state_consume_request_body", "start_request_stream"):
        assert name in http_layers.HttpStream.__dict__
    assert "_handle_event" in _http1.Http1Connection.__dict__ and "read_headers" in _http1.Http1Server.__dict__


@pytest.fixture
def server():
    mitmpatch.install()
    old = mitmpatch.limits
    mitmpatch.limits = mitmpatch.HeadLimits(head_bytes_before_signin=1000, head_bytes=4000, header_timeout=5)
    with taddons.context() as tctx:
        layer = _http1.Http1Server(Context(tflow.tclient_conn(), tctx.options))
        list(layer.handle_event(events.Start()))
        yield layer
    mitmpatch.limits = old


def feed(layer, data: bytes) -> list:
    return list(layer.handle_event(events.DataReceived(layer.context.client, data)))


def answer(cmds) -> bytes:
    sent = [c.data for c in cmds if isinstance(c, commands.SendData)]
    return sent[0] if sent else b""


def test_installed_once_whatever_the_number_of_calls():
    mitmpatch.install()
    mitmpatch.install()
    assert _http1.Http1Connection._handle_event is mitmpatch._handle_event
    assert mitmpatch._original_handle_event is not mitmpatch._handle_event


def test_a_head_over_the_limit_gets_431_and_the_connection_closes(server):
    cmds = feed(server, b"GET http://a.test/ HTTP/1.1\r\nX-Big: " + b"a" * 1500)
    assert answer(cmds).startswith(b"HTTP/1.1 431 Request Header Fields Too Large")
    assert any(isinstance(c, commands.CloseConnection) for c in cmds)
    assert len(server.buf) == 0  # nothing held after the refusal


def test_a_signed_in_client_gets_the_larger_limit(server):
    mitmpatch.limits.signed_in = lambda client: True
    assert feed(server, b"GET http://a.test/ HTTP/1.1\r\nX-Big: " + b"a" * 1500) == []
    assert answer(feed(server, b"a" * 3000)).startswith(b"HTTP/1.1 431")


def test_a_head_trickled_past_the_timeout_gets_408(server, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(mitmpatch.time, "monotonic", lambda: now[0])
    assert feed(server, b"GET http://a.test/ HTTP/1.1\r\n") == []
    for _ in range(4):
        now[0] += 1
        assert feed(server, b"X") == []
    now[0] += 2
    assert answer(feed(server, b"X")).startswith(b"HTTP/1.1 408 Request Timeout")


def test_the_head_timer_starts_again_for_each_request(server, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(mitmpatch.time, "monotonic", lambda: now[0])
    cmds = feed(server, b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert any(type(c).__name__ == "ReceiveHttp" for c in cmds) and not answer(cmds)
    assert server._schoolproxy_head_since is None


def test_bytes_sent_while_a_response_is_awaited_are_bounded(server):
    feed(server, b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert server.state == server.wait
    assert feed(server, b"x" * 3000) == []  # a pipelined request may wait
    cmds = feed(server, b"x" * 2000)       # a flood may not
    assert any(isinstance(c, commands.CloseConnection) for c in cmds) and len(server.buf) == 0


def test_a_chunked_body_with_a_trailer_ends_without_it():
    reader = mitmpatch.make_body_reader(None)
    buf = h11._receivebuffer.ReceiveBuffer()
    buf += b"5\r\nhello\r\n0\r\nX-Trailer: yes\r\n\r\n"
    assert bytes(reader(buf).data) == b"hello"
    end = reader(buf)
    assert isinstance(end, h11.EndOfMessage) and list(end.headers) == []
    assert isinstance(mitmpatch.make_body_reader(10), h11._readers.ContentLengthReader)
