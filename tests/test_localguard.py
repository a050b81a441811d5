"""LocalGuard addon: a name that resolves to the gateway is decided as the gateway (no upstream filter)."""

import socket

import pytest
from mitmproxy.test import taddons, tflow

from schoolproxy.proxy.localguard import RESOLVED, LocalGuard
from schoolproxy.snapshot import SnapshotHolder


@pytest.fixture
def guard(school):
    snapshots = SnapshotHolder()
    snapshots.load(school)
    return LocalGuard(snapshots)


def request_to(host: str, upstream: bool = False):
    f = tflow.tflow()
    f.request.host = host
    f.server_conn.via = ("http", ("10.0.0.2", 800)) if upstream else None
    return f


def resolving(monkeypatch, answers: dict[str, list[str]]):
    calls = []

    async def getaddrinfo(self, host, port, **kw):
        calls.append(host)
        if host not in answers:
            raise socket.gaierror("no such name")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0)) for a in answers[host]]

    import asyncio
    monkeypatch.setattr(asyncio.get_running_loop().__class__, "getaddrinfo", getaddrinfo)
    return calls


async def test_the_addresses_of_a_name_go_into_the_facts_and_are_cached(guard, monkeypatch):
    calls = resolving(monkeypatch, {"sneaky.example": ["93.184.216.34", "127.0.0.1"]})
    with taddons.context(guard):
        for _ in range(3):
            f = request_to("sneaky.example")
            pending = guard.requestheaders(f)
            if pending is not None:
                await pending
            assert f.metadata[RESOLVED] == ("93.184.216.34", "127.0.0.1")
    assert calls == ["sneaky.example"]


async def test_nothing_is_resolved_through_an_upstream_filter_or_for_an_address(guard, monkeypatch):
    calls = resolving(monkeypatch, {})
    for f in (request_to("sneaky.example", upstream=True), request_to("10.1.2.3")):
        assert guard.requestheaders(f) is None and RESOLVED not in f.metadata
    assert calls == []


async def test_a_name_that_does_not_resolve_is_left_to_the_connection(guard, monkeypatch):
    resolving(monkeypatch, {})
    f = request_to("nxdomain.example")
    await guard.requestheaders(f)
    assert RESOLVED not in f.metadata and f.response is None


def test_a_response_from_the_gateways_own_address_is_dropped(guard):
    # DNS may answer differently when the proxy connects than when it checked (rebinding).
    f = tflow.tflow(resp=True)
    f.server_conn.via = None
    f.server_conn.peername = ("127.0.0.1", 9464)
    guard.responseheaders(f)
    assert f.error is not None
    ok = tflow.tflow(resp=True)
    ok.server_conn.via = None
    ok.server_conn.peername = ("93.184.216.34", 80)
    guard.responseheaders(ok)
    assert ok.error is None


async def test_nothing_is_resolved_or_dropped_with_an_upstream_filter(school, monkeypatch):
    # Transparent mode sends plain HTTP to the upstream filter without mitmproxy's "via": the config says.
    school.write_text(school.read_text().replace("upstream: null}", "upstream: http://127.0.0.1:3128}"))
    snapshots = SnapshotHolder()
    snapshots.load(school)
    guard = LocalGuard(snapshots)
    calls = resolving(monkeypatch, {})
    f = request_to("sneaky.example")
    assert guard.requestheaders(f) is None and calls == []
    r = tflow.tflow(resp=True)
    r.server_conn.via = None
    r.server_conn.peername = ("127.0.0.1", 3128)  # the upstream filter itself, here on loopback
    guard.responseheaders(r)
    assert r.error is None
