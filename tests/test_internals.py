"""mitmproxy's private API, used in one module (proxy/internals.py): each use checked against the pinned
mitmproxy, so an upgrade that changes what it relies on fails here rather than in production."""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
from unittest import mock

import h11
import mitmproxy
import pytest
from mitmproxy import addonmanager, exceptions, hooks, http, master, options
from mitmproxy.http import HTTPFlow
from mitmproxy.proxy import commands, events, mode_servers
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers.http import HttpRequestHook, _http1
from mitmproxy.test import taddons, tflow

from schoolproxy.proxy import internals
from schoolproxy.proxy.internals import (
    HookIndex,
    listen_with_reuse_port,
    local_response,
    master_with_hook_index,
)


# -- HookIndex: the lean master's dispatch ------------------------------------------------------------
class Recorder:
    def __init__(self, name: str, calls: list, fail: bool = False, halt: bool = False):
        self.name, self.calls, self.fail, self.halt = name, calls, fail, halt

    def request(self, f: HTTPFlow) -> None:
        self.calls.append(self.name)
        if self.fail:
            raise RuntimeError(f"{self.name} broke")
        if self.halt:
            raise exceptions.AddonHalt()


class AsyncRecorder(Recorder):
    async def request(self, f: HTTPFlow) -> None:
        self.calls.append(self.name)


class Parent(Recorder):
    def __init__(self, name, calls, children):
        super().__init__(name, calls)
        self.addons = children


class Updates:
    def __init__(self):
        self.seen = []

    def update(self, flows):
        self.seen.extend(flows)


async def dispatch(*addons) -> master.Master:
    m = master.Master(options.Options())
    m.addons = HookIndex(m)
    m.addons.add(*addons)
    f = tflow.tflow()
    await m.addons.handle_lifecycle(HttpRequestHook(f))
    return m


async def test_chain_order_children_after_parent_and_async_handlers():
    calls = []
    await dispatch(Parent("p", calls, [Recorder("c1", calls), AsyncRecorder("c2", calls)]), Recorder("b", calls))
    assert calls == ["p", "c1", "c2", "b"]


async def test_an_addon_error_is_logged_and_the_next_addon_still_runs(caplog):
    calls = []
    with caplog.at_level(logging.ERROR):
        await dispatch(Recorder("a", calls, fail=True), Recorder("b", calls))
    assert calls == ["a", "b"]
    assert "Addon error: a broke" in caplog.text
    # mitmproxy's report, with the traceback down to where the addon raised
    assert "Traceback" in caplog.text and 'raise RuntimeError(f"{self.name} broke")' in caplog.text


async def test_addon_halt_stops_the_rest():
    calls = []
    await dispatch(Recorder("a", calls, halt=True), Recorder("b", calls))
    assert calls == ["a"]


async def test_an_addon_added_later_gets_events_and_a_removed_one_does_not():
    calls = []
    first = Recorder("first", calls)
    m = await dispatch(first)
    late = Recorder("late", calls)
    m.addons.add(late)
    m.addons.remove(first)
    await m.addons.handle_lifecycle(HttpRequestHook(tflow.tflow()))
    assert calls == ["first", "late"]


async def test_update_follows_a_flow_event_only_when_someone_listens():
    u = Updates()
    m = await dispatch(u)
    assert len(u.seen) == 1
    await m.addons.handle_lifecycle(hooks.RunningHook())  # not a flow: no update
    assert len(u.seen) == 1



async def test_the_same_calls_as_mitmproxys_stock_manager(caplog):
    # The whole point of HookIndex: dispatch exactly as AddonManager does, for the same chain.
    async def run(manager_class) -> list:
        calls = []
        m = master.Master(options.Options())
        m.addons = manager_class(m)
        m.addons.add(Parent("p", calls, [Recorder("c1", calls, fail=True), AsyncRecorder("c2", calls)]),
                     Recorder("b", calls), AsyncRecorder("c", calls), Recorder("h", calls, halt=True),
                     Recorder("after-halt", calls))
        await m.addons.handle_lifecycle(HttpRequestHook(tflow.tflow()))
        return calls
    with caplog.at_level(logging.ERROR):
        assert await run(HookIndex) == await run(addonmanager.AddonManager) == ["p", "c1", "b", "c", "h"]


def test_the_stock_manager_still_has_what_hookindex_overrides_and_uses():
    for name in ("chain", "register", "add", "remove", "clear", "trigger_event", "handle_lifecycle", "get"):
        assert hasattr(addonmanager.AddonManager, name) or name == "chain", name
    assert list(inspect.signature(addonmanager.AddonManager.trigger_event).parameters) == ["self", "event"]
    assert list(inspect.signature(addonmanager.AddonManager.handle_lifecycle).parameters) == ["self", "event"]
    assert callable(addonmanager.traverse) and callable(addonmanager.safecall)
    assert hooks.UpdateHook([]).args() == [[]]


async def test_master_with_hook_index_replaces_the_stock_manager_and_its_option_wiring():
    opts = options.Options()
    m = master_with_hook_index(opts)
    assert isinstance(m.addons, HookIndex) and m.addons.get("termlog") is m._termlog_addon
    seen = []

    class Option:
        def load(self, loader):
            loader.add_option("probe", int, 0, "test option")

        def configure(self, updated):
            seen.append(set(updated))

    m.addons.add(Option())
    opts.update(probe=1)
    assert seen == [{"probe"}]                     # an option change reaches the addon, once
    with mock.patch.object(m._termlog_addon, "uninstall") as uninstall:
        await m.done()                             # the master uninstalls the terminal log it was given
    uninstall.assert_called_once()


# -- local_response: a response without Response.__init__ ---------------------------------------------
def test_response_data_has_the_fields_local_response_fills():
    import dataclasses
    names = {f.name for f in dataclasses.fields(http.ResponseData)}
    assert names == {"http_version", "headers", "content", "trailers", "timestamp_start", "timestamp_end",
                     "status_code", "reason"}
    with pytest.raises(TypeError):  # the debug check local_response skips still exists (and is what it skips)
        http.ResponseData(http_version="HTTP/1.1", headers=http.Headers(), content=b"", trailers=None,
                          timestamp_start=0.0, timestamp_end=0.0, status_code=200, reason=b"OK")


def test_local_response_is_what_response_make_builds():
    body = "<p>blocked</p>".encode()
    ours = local_response(403, body, ((b"content-type", b"text/html; charset=utf-8"),))
    theirs = http.Response.make(403, body, {"content-type": "text/html; charset=utf-8"})
    assert isinstance(ours.data, http.ResponseData)
    http.MessageData.__post_init__(ours.data)  # every field passes mitmproxy's own type check
    ours.timestamp_start = ours.timestamp_end = theirs.timestamp_start = theirs.timestamp_end = 1.0
    assert ours.get_state() == theirs.get_state()
    assert (ours.status_code, ours.reason, ours.content, ours.headers["content-length"]) == (403, "Forbidden", body,
                                                                                             str(len(body)))


# -- skip_message_type_checks: no debug type check of each parsed request and response ----------------
def test_the_check_skipped_is_what_every_new_message_calls_and_only_checks_types(monkeypatch):
    with mock.patch.object(http.MessageData, "__post_init__") as check:
        http.Request.make("GET", "https://example.org/")
        http.Response.make(200, b"ok")
    assert check.call_count == 2                      # the dataclass __init__ of every message calls it
    assert internals.MESSAGE_TYPE_CHECK is not None
    assert inspect.getsource(internals.MESSAGE_TYPE_CHECK).count("check_option_type") == 1
    assert "setattr" not in inspect.getsource(internals.MESSAGE_TYPE_CHECK)  # it changes nothing


def test_skip_message_type_checks_leaves_out_the_check_and_nothing_else(monkeypatch):
    monkeypatch.setattr(http.MessageData, "__post_init__", internals.MESSAGE_TYPE_CHECK)  # restored after
    wrong = dict(host="example.org", port=443, method=b"GET", scheme=b"https", authority=b"", path=b"/",
                 http_version="HTTP/1.1", headers=http.Headers(), content=b"", trailers=None, timestamp_start=0.0,
                 timestamp_end=None)  # http_version is str, not bytes
    with pytest.raises(TypeError):
        http.RequestData(**wrong)
    checked = http.Request.make("GET", "https://example.org/a?b=c", b"body", {"x": "1"})
    internals.skip_message_type_checks()
    http.RequestData(**wrong)                         # not checked any more
    unchecked = http.Request.make("GET", "https://example.org/a?b=c", b"body", {"x": "1"})
    unchecked.timestamp_start, unchecked.timestamp_end = checked.timestamp_start, checked.timestamp_end
    assert unchecked.get_state() == checked.get_state()


# -- listen_with_reuse_port: --workers N on one port ----------------------------------------------------
def test_asyncio_server_instance_listen_is_what_the_patch_replaces():
    listen = mode_servers.AsyncioServerInstance.listen
    assert inspect.iscoroutinefunction(listen)
    assert list(inspect.signature(listen).parameters) == ["self", "host", "port"]
    assert callable(getattr(mode_servers.AsyncioServerInstance, "handle_stream", None))


async def test_two_workers_listen_on_one_port(monkeypatch):
    monkeypatch.setattr(mode_servers.AsyncioServerInstance, "listen", mode_servers.AsyncioServerInstance.listen)
    listen_with_reuse_port()
    listen_with_reuse_port()  # idempotent
    manager = mock.Mock(connections={})
    instances = [mode_servers.ServerInstance.make("regular", manager) for _ in range(2)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    servers = [srv for inst in instances for srv in await inst.listen("127.0.0.1", port)]
    try:
        assert len(servers) == 2 and all(srv.sockets[0].getsockname()[1] == port for srv in servers)
        _, writer = await asyncio.open_connection("127.0.0.1", port)  # accepted by one of them
        writer.close()
    finally:
        for srv in servers:
            srv.close()


async def test_without_the_patch_a_second_listener_is_refused():
    # What the patch is for: the stock listen() cannot share a port.
    manager = mock.Mock(connections={})
    first, second = (mode_servers.ServerInstance.make("regular", manager) for _ in range(2))
    assert not getattr(mode_servers.AsyncioServerInstance.listen, "reuse_port", False)
    servers = await first.listen("127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            await second.listen("127.0.0.1", servers[0].sockets[0].getsockname()[1])
    finally:
        for srv in servers:
            srv.close()


# -- create_ca: the interception CA, with an ECDSA key ------------------------------------------------
def test_the_ca_is_written_as_mitmproxy_writes_one_and_mitmproxy_issues_from_it(tmp_path):
    from cryptography import x509
    from mitmproxy import certs

    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    assert internals.create_ca(ours)
    certs.CertStore.create_store(theirs, internals.CA_BASENAME, 2048)
    assert sorted(p.name for p in ours.iterdir()) == sorted(p.name for p in theirs.iterdir())
    for private in ("mitmproxy-ca.pem", "mitmproxy-ca.p12"):
        assert (ours / private).stat().st_mode & 0o077 == 0
    store = certs.CertStore.from_store(ours, internals.CA_BASENAME, 2048)
    leaf = store.get_cert("learning.test", [x509.DNSName("learning.test")])
    assert leaf.cert.keyinfo == ("EC (secp256r1)", 256) and leaf.cert.issuer == store.default_ca.subject
    leaf.cert.to_cryptography().verify_directly_issued_by(store.default_ca.to_cryptography())


def test_a_ca_already_there_is_kept(tmp_path):
    from mitmproxy import certs

    certs.CertStore.create_store(tmp_path, internals.CA_BASENAME, 2048)  # an existing (RSA) deployment
    before = (tmp_path / "mitmproxy-ca.pem").read_bytes()
    assert not internals.create_ca(tmp_path)
    assert (tmp_path / "mitmproxy-ca.pem").read_bytes() == before


def test_send_in_absolute_form_sets_where_mitmproxy_connects_and_the_request_line():
    from mitmproxy.net.http.http1.assemble import assemble_request_head
    f = tflow.tflow()
    f.request.url = "http://learning.test/a?b=1"
    f.request.headers["Host"] = "learning.test"
    internals.send_in_absolute_form(f.request, ("10.0.0.2", 800))
    assert (f.request.host, f.request.port) == ("10.0.0.2", 800)       # what the HTTP layer connects to
    assert f.request.headers["Host"] == "learning.test"                 # unchanged
    assert assemble_request_head(f.request).startswith(b"GET http://learning.test/a?b=1 HTTP/1.1\r\n")
    import inspect as _inspect

    from mitmproxy.proxy.layers import http as http_layer
    # The connection is asked for by the request's host and port, after the request hook.
    assert "(self.flow.request.host, self.flow.request.port)" in _inspect.getsource(http_layer.HttpStream)


def test_parse_client_hello_reads_the_server_name():
    import ssl as _ssl
    incoming, outgoing = _ssl.MemoryBIO(), _ssl.MemoryBIO()
    client = _ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="bank.test")
    with pytest.raises(_ssl.SSLWantReadError):
        client.do_handshake()
    hello = outgoing.read()
    assert internals.parse_client_hello(hello[:10]) is None            # more bytes needed
    assert internals.parse_client_hello(hello).sni == "bank.test"
    with pytest.raises(ValueError):
        internals.parse_client_hello(b"GET / HTTP/1.1\r\n\r\n")


# -- bounds on mitmproxy's HTTP/1 layers (driven as mitmproxy drives its layers; the same bounds are
# tested end to end through a real mitmdump in test_e2e_hostile.py) ---------------------------------


def test_written_against_this_mitmproxy():
    # Before changing this pin, re-read the FIXMEs and the functions install_http1_limits wraps in the new version.
    assert mitmproxy.version.VERSION.split(".")[0] == "12"
    assert callable(_http1.make_body_reader) and hasattr(h11._readers, "ChunkedReader")
    for name in ("state_consume_request_body", "start_request_stream"):
        assert name in http_layers.HttpStream.__dict__
    assert "_handle_event" in _http1.Http1Connection.__dict__ and "read_headers" in _http1.Http1Server.__dict__


@pytest.fixture
def server():
    internals.install_http1_limits()
    old = internals.http1_limits
    internals.http1_limits = internals.HeadLimits(head_bytes_before_signin=1000, head_bytes=4000, header_timeout=5)
    with taddons.context() as tctx:
        layer = _http1.Http1Server(Context(tflow.tclient_conn(), tctx.options))
        list(layer.handle_event(events.Start()))
        yield layer
    internals.http1_limits = old


def feed(layer, data: bytes) -> list:
    return list(layer.handle_event(events.DataReceived(layer.context.client, data)))


def answer(cmds) -> bytes:
    sent = [c.data for c in cmds if isinstance(c, commands.SendData)]
    return sent[0] if sent else b""


def test_installed_once_whatever_the_number_of_calls():
    internals.install_http1_limits()
    internals.install_http1_limits()
    assert _http1.Http1Connection._handle_event is internals._handle_event
    assert internals._original_handle_event is not internals._handle_event


def test_a_head_over_the_limit_gets_431_and_the_connection_closes(server):
    cmds = feed(server, b"GET http://a.test/ HTTP/1.1\r\nX-Big: " + b"a" * 1500)
    assert answer(cmds).startswith(b"HTTP/1.1 431 Request Header Fields Too Large")
    assert any(isinstance(c, commands.CloseConnection) for c in cmds)
    assert len(server.buf) == 0  # nothing held after the refusal


def test_a_signed_in_client_gets_the_larger_limit(server):
    internals.http1_limits.signed_in = lambda client: True
    assert feed(server, b"GET http://a.test/ HTTP/1.1\r\nX-Big: " + b"a" * 1500) == []
    assert answer(feed(server, b"a" * 3000)).startswith(b"HTTP/1.1 431")


def test_a_head_trickled_past_the_timeout_gets_408(server, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(internals.time, "monotonic", lambda: now[0])
    assert feed(server, b"GET http://a.test/ HTTP/1.1\r\n") == []
    for _ in range(4):
        now[0] += 1
        assert feed(server, b"X") == []
    now[0] += 2
    assert answer(feed(server, b"X")).startswith(b"HTTP/1.1 408 Request Timeout")


def test_the_head_timer_starts_again_for_each_request(server, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(internals.time, "monotonic", lambda: now[0])
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
    reader = internals.make_body_reader(None)
    buf = h11._receivebuffer.ReceiveBuffer()
    buf += b"5\r\nhello\r\n0\r\nX-Trailer: yes\r\n\r\n"
    assert bytes(reader(buf).data) == b"hello"
    end = reader(buf)
    assert isinstance(end, h11.EndOfMessage) and list(end.headers) == []
    assert isinstance(internals.make_body_reader(10), h11._readers.ContentLengthReader)


class Switchable(Recorder):
    """An addon whose feature can be off: ``wants`` keeps its flow hooks out of the index."""

    def __init__(self, name, calls):
        super().__init__(name, calls)
        self.on = False

    def wants(self, event: str) -> bool:
        return self.on

    def running(self) -> None:
        self.calls.append(f"{self.name} running")


async def test_an_addon_that_does_not_want_an_event_is_not_called_until_reindexed():
    calls = []
    switch = Switchable("s", calls)
    m = await dispatch(switch, Recorder("b", calls))
    assert calls == ["b"]
    await m.addons.handle_lifecycle(hooks.RunningHook())  # lifecycle events always arrive
    assert calls == ["b", "s running"]
    switch.on = True
    await m.addons.handle_lifecycle(HttpRequestHook(tflow.tflow()))
    assert calls == ["b", "s running", "b"]  # the index is kept until asked again
    m.addons.reindex()
    await m.addons.handle_lifecycle(HttpRequestHook(tflow.tflow()))
    assert calls == ["b", "s running", "b", "s", "b"]
