"""Transparent addon, with mitmproxy's test helpers: redirected connections named by SNI / Host header and
chained to the upstream filter. (Through a real firewall and network: test_e2e_transparent.)"""

from unittest import mock

import pytest
from mitmproxy import tls
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow

from schoolproxy.proxy.transparent import PassthroughViaUpstream, Transparent
from schoolproxy.snapshot import SnapshotHolder


def engine_for(school, upstream: str | None = None) -> SnapshotHolder:
    if upstream:
        school.write_text(school.read_text().replace("upstream: null", f"upstream: {upstream}"))
    engine = SnapshotHolder()
    engine.load(school)
    return engine


def redirected(url: str, host_header: str | None = None, original=("203.0.113.7", 80)):
    f = tflow.tflow()
    f.client_conn.proxy_mode = ProxyMode.parse("transparent")
    f.request.url = url
    f.request.host, f.request.port = original
    if host_header is not None:
        f.request.headers["Host"] = host_header
    f.server_conn.address = original
    return f


def hello(sni: str | None, original=("203.0.113.7", 443)):
    """A TLS handshake on a redirected connection (the context and ClientHello as mitmproxy hands them over)."""
    f = tflow.tflow()
    f.client_conn.proxy_mode = ProxyMode.parse("transparent")
    f.server_conn.address = original
    f.server_conn.via = None
    data = tls.ClientHelloData(mock.Mock(), mock.Mock())
    data.context.client, data.context.server = f.client_conn, f.server_conn
    data.client_hello.sni = sni
    data.ignore_connection = False
    return data


def test_plain_http_is_named_by_its_host_header(school):
    addon = Transparent(engine_for(school))
    f = redirected("http://203.0.113.7/lesson", host_header="Learning.Test")
    with taddons.context(addon):
        addon.requestheaders(f)
    assert (f.request.host, f.request.port, f.request.headers["Host"]) == ("learning.test", 80, "learning.test")


@pytest.mark.parametrize("header", [None, "", "bad host\x00", "x" * 300])
def test_no_usable_host_header_leaves_the_address(school, header):
    addon = Transparent(engine_for(school))
    f = redirected("http://203.0.113.7/", host_header=header)
    if header is None:
        f.request.headers.pop("Host", None)
    with taddons.context(addon):
        addon.requestheaders(f)
    assert f.request.host == "203.0.113.7"  # decided as a bare address (the ip-address category)


def test_explicit_mode_flows_are_left_alone(school):
    addon = Transparent(engine_for(school, "http://10.0.0.2:800"))
    f = tflow.tflow()
    f.request.url = "http://learning.test/"
    f.request.headers["Host"] = "other.test"
    with taddons.context(addon):
        addon.requestheaders(f)
        addon.request(f)
    assert f.request.host == "learning.test" and f.request.authority == "" and f.server_conn.via is None


def test_plain_http_goes_to_the_upstream_in_absolute_form(school):
    addon = Transparent(engine_for(school, "http://10.0.0.2:800"))
    f = redirected("http://203.0.113.7/a?b=1", host_header="learning.test")
    with taddons.context(addon):
        addon.requestheaders(f)
        addon.request(f)
    assert (f.request.data.host, f.request.data.port) == ("10.0.0.2", 800)  # connect to the upstream...
    assert f.request.data.authority == b"learning.test"                        # ...and name the site to it
    from mitmproxy.net.http.http1 import assemble
    assert assemble.assemble_request_head(f.request).startswith(b"GET http://learning.test/a?b=1 HTTP/1.1\r\n")


def test_tls_is_named_by_sni_and_goes_through_the_upstream(school):
    addon = Transparent(engine_for(school, "http://10.0.0.2:800"))
    data = hello("Learning.Test")
    with taddons.context(addon):
        addon.tls_clienthello(data)
    assert data.context.server.address == ("learning.test", 443)
    assert data.context.server.via == ("http", ("10.0.0.2", 800))


def test_tls_without_sni_keeps_the_address_and_no_upstream_means_direct(school):
    addon = Transparent(engine_for(school))
    data = hello(None)
    with taddons.context(addon):
        addon.tls_clienthello(data)
    assert data.context.server.address == ("203.0.113.7", 443) and data.context.server.via is None


def test_passed_through_tls_goes_to_the_relay_never_straight_out(school):
    addon = PassthroughViaUpstream(engine_for(school, "http://10.0.0.2:800"))
    data = hello("bank.test")
    data.ignore_connection = True
    with taddons.context(addon):
        addon.tls_clienthello(data)  # no relay running: the connection fails closed
        assert data.context.server.error == "no relay to the upstream filter"
        addon.address = ("127.0.0.1", 45678)
        data = hello("bank.test")
        data.ignore_connection = True
        addon.tls_clienthello(data)
    assert data.context.server.address == ("127.0.0.1", 45678)
    source = data.context.server.sockname[0]  # the relay knows the device by this loopback address
    assert source.startswith("127.") and source != "127.0.0.1" and addon._pending[source][0] == data.context.client.peername[0]
