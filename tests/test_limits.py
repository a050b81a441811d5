"""Limits addon: connections per client address, streaming instead of holding bodies, descriptor shortage."""

import asyncio
import errno
import logging

import pytest
from mitmproxy import tcp
from mitmproxy.addons import proxyserver
from mitmproxy.test import taddons, tflow
from prometheus_client import CollectorRegistry

from schoolproxy.identity.profiles import Identity
from schoolproxy.proxy import internals
from schoolproxy.proxy.identify import IDENTITY
from schoolproxy.proxy.limits import Limits
from schoolproxy.snapshot import SnapshotHolder

EXTRA = ("  limits: {connections_per_client: 20, unidentified_connections_per_client: 4, request_buffer_bytes: 1000,\n"
         "           requests_in_flight_per_client: 16, buffered_bodies_per_client: 3}\n")


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def limits(school, registry):
    school.write_text(school.read_text().replace("upstream: null}", "upstream: null,\n" + EXTRA + "}"))
    engine = SnapshotHolder()
    engine.load(school)
    addon = Limits(engine, registry)
    with taddons.context(proxyserver.Proxyserver(), addon):  # Proxyserver declares stream_large_bodies
        addon.configure({"schoolproxy_config"})  # as when LoadConfig has loaded the snapshot
        yield addon


def client(ip: str = "10.0.0.5"):
    c = tflow.tclient_conn()
    c.peername = (ip, 40000)
    c.id = f"{ip}-{id(c)}"
    return c


def test_limits_are_applied_to_mitmproxy(limits):
    from mitmproxy import ctx
    assert ctx.options.stream_large_bodies == str(1 << 20) and ctx.options.tcp_timeout == 300
    assert ctx.options.websocket is False  # upgraded connections are relayed, not held message by message
    assert internals.http1_limits.head_bytes == 64 * 1024 and internals.http1_limits.header_timeout == 20


def test_connections_that_never_sign_in_are_capped_per_address(limits, registry):
    conns = [client() for _ in range(5)]
    for c in conns:
        limits.client_connected(c)
    assert [c.error is not None for c in conns] == [False] * 4 + [True]
    assert registry.get_sample_value("schoolproxy_client_limit_refusals_total", {"limit": "connections"}) == 1
    assert registry.get_sample_value("schoolproxy_client_connections") == 4
    other = client("10.0.0.6")
    limits.client_connected(other)
    assert other.error is None  # another pupil is not affected
    limits.client_disconnected(conns[0])
    again = client()
    limits.client_connected(again)
    assert again.error is None


def signed_in_request(c):
    f = tflow.tflow()
    f.client_conn = c
    f.metadata[IDENTITY] = Identity("pupil1", "pupil", "proxy-auth", "group year4")
    return f


def test_signed_in_connections_count_against_the_larger_cap(limits):
    for i in range(20):
        c = client()
        limits.client_connected(c)
        assert c.error is None, i
        limits.requestheaders(signed_in_request(c))
    over = client()
    limits.client_connected(over)
    assert "20 connections open already" in over.error
    assert internals.http1_limits.signed_in(client())  # the address signed in lately: larger head limit


def test_a_large_declared_body_of_an_allowed_request_is_streamed(limits):
    f = signed_in_request(client())
    f.request.headers["content-length"] = "5000"
    limits.requestheaders(f)
    assert f.request.stream is True
    small = signed_in_request(client())
    small.request.headers["content-length"] = "500"
    limits.requestheaders(small)
    assert not small.request.stream


def test_a_request_answered_here_is_never_streamed(limits):
    f = tflow.tflow(resp=True)  # e.g. the 407 or the block page
    f.request.headers["content-length"] = "50000000"
    f.request.stream = True  # as mitmproxy sets it before the hook for a large declared body
    limits.requestheaders(f)
    assert f.request.stream is False


def test_relayed_tcp_messages_are_not_kept(limits):
    f = tcp.TCPFlow(tflow.tclient_conn(), tflow.tserver_conn())
    for i in range(100):
        f.messages.append(tcp.TCPMessage(True, b"x" * 1000))
        limits.tcp_message(f)
    assert len(f.messages) == 1


async def test_running_out_of_descriptors_is_said_once_without_a_traceback(limits, caplog, monkeypatch):
    from schoolproxy.proxy import limits as module
    monkeypatch.setattr(module, "RECOVERED_AFTER", 0.05)
    limits.running()
    loop = asyncio.get_running_loop()
    exc = OSError(errno.EMFILE, "Too many open files")
    with caplog.at_level(logging.INFO):
        for _ in range(5):
            loop.call_exception_handler({"message": "socket.accept() out of system resource", "exception": exc})
            await asyncio.sleep(0.02)  # accepts that succeed in between do not end the shortage
        assert "accepting connections again" not in caplog.text
        await asyncio.sleep(0.2)
    errors = [r for r in caplog.records if "out of file descriptors" in r.getMessage()]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert "accepting connections again (5 attempts waited" in caplog.text


def test_requests_waiting_at_once_are_capped_per_address(limits):
    # HTTP/2 carries many requests on one connection: the connection cap alone does not bound them.
    c = client()
    flows = [signed_in_request(c) for _ in range(17)]
    for f in flows:
        limits.requestheaders(f)
    assert [f.response is not None for f in flows] == [False] * 16 + [True]
    assert flows[-1].response.status_code == 503
    limits.response(flows[0])  # one answered: room for another
    again = signed_in_request(c)
    limits.requestheaders(again)
    assert again.response is None


def test_only_a_few_bodies_per_address_are_held_whole(limits):
    c = client()
    small = []
    for _ in range(4):
        f = signed_in_request(c)
        f.request.headers["content-length"] = "100"
        limits.requestheaders(f)
        small.append(f)
    assert [bool(f.request.stream) for f in small] == [False, False, False, True]  # the fourth streams
    resp = signed_in_request(c)
    limits.requestheaders(resp)
    resp.response = tflow.tresp()
    limits.responseheaders(resp)
    assert resp.response.stream is True  # three bodies held already
    limits.error(small[0])
    other = signed_in_request(c)
    limits.requestheaders(other)
    other.response = tflow.tresp()
    limits.responseheaders(other)
    assert not other.response.stream


def test_a_body_of_unknown_length_streams(limits):
    f = signed_in_request(client())
    del f.request.headers["content-length"]
    f.request.headers["transfer-encoding"] = "chunked"
    limits.requestheaders(f)
    assert f.request.stream is True


def test_a_page_the_content_addon_reads_whole_is_not_streamed_by_the_budget(limits):
    from schoolproxy.proxy.content import CONTENT
    c = client()
    for _ in range(3):  # the device's budget of held bodies, used up
        f = signed_in_request(c)
        limits.requestheaders(f)
        f.response = tflow.tresp()
        limits.responseheaders(f)
    scored = signed_in_request(c)
    limits.requestheaders(scored)
    scored.response = tflow.tresp()
    scored.metadata[CONTENT] = object()  # the content addon scores this page: it must be read whole
    limits.responseheaders(scored)
    assert not scored.response.stream
