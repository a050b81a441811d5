"""Enforce addon, with mitmproxy's test helpers: verdicts, block pages, SafeSearch, CONNECT, TLS."""

from unittest import mock

import pytest
from mitmproxy import connection, flow, http, tls
from mitmproxy.test import taddons, tflow, tutils

from schoolproxy.identity.profiles import Identity
from schoolproxy.proxy import enforce
from schoolproxy.proxy.enforce import Enforce
from schoolproxy.proxy.identify import IDENTITY
from schoolproxy.snapshot import SnapshotHolder

PUPIL = Identity("pupil1", "pupil", "proxy-auth", "group year4")
STAFF = Identity("teacher1", "staff", "proxy-auth", "user teacher1")


@pytest.fixture
def addon(school):
    snapshots = SnapshotHolder()
    snapshots.load(school)
    published = []
    a = Enforce(snapshots, published.append)
    a.published = published
    return a


def request_flow(url: str, ident: Identity = PUPIL, method: str = "GET"):
    f = tflow.tflow(req=tutils.treq())
    f.request.url = url
    f.request.method = method
    f.metadata[IDENTITY] = ident
    return f


def test_blocked_request_gets_block_page_and_one_verdict(addon):
    f = request_flow("http://www.socialsite.test/x?y=<script>")
    with taddons.context(addon):
        addon.requestheaders(f)
        assert f.response.status_code == 403
        addon.response(f)
    assert b"<script>" not in f.response.content and b"&lt;script&gt;" in f.response.content
    [v] = addon.published
    assert (v.action, v.username, v.profile, v.status) == ("block", "pupil1", "pupil", 403)
    # Named "window:lunchtime:category:..." when the suite runs in the test school's lunchtime window.
    assert v.rule.endswith("category:social-networking")
    assert v.ref.encode() in f.response.content and v.categories == ("social-networking",)


def test_allowed_request_verdict_carries_status_and_size(addon):
    f = request_flow("http://learning.test/")
    with taddons.context(addon):
        addon.requestheaders(f)
        assert f.response is None
        f.response = tutils.tresp(content=b"hello")
        addon.response(f)
        addon.response(f)  # a second response hook must not publish twice
    [v] = addon.published
    assert (v.action, v.status, v.bytes, v.host) == ("allow", 200, 5, "learning.test")


def test_error_publishes_verdict(addon):
    f = request_flow("http://learning.test/")
    with taddons.context(addon):
        addon.requestheaders(f)
        f.error = mock.Mock()
        addon.error(f)
    assert addon.published[0].error


def test_safesearch_rewrites_and_youtube_header(addon):
    g = request_flow("http://www.google.co.uk/search?q=a&safe=off&safe=off")
    y = request_flow("https://m.youtube.com/watch?v=1")
    y.request.headers["YouTube-Restrict"] = "off"
    with taddons.context(addon):
        addon.requestheaders(g)
        addon.requestheaders(y)
    assert g.request.query.get_all("safe") == ["active"] and g.request.query["q"] == "a"
    assert y.request.headers["YouTube-Restrict"] == "Strict"
    plain = request_flow("http://www.google.com/search?q=frogs%20and+toads")   # no safe= yet: appended
    with taddons.context(addon):
        addon.requestheaders(plain)
    assert plain.request.path == "/search?q=frogs%20and+toads&safe=active"
    assert plain.request.query.get_all("safe") == ["active"]
    s = request_flow("http://www.google.com/search?q=a", STAFF)
    with taddons.context(addon):
        addon.requestheaders(s)
    assert "safe" not in s.request.query


def test_connect_to_blocked_passthrough_or_bad_port_is_refused(addon):
    f = request_flow("http://learning.test:22/", method="CONNECT")
    with taddons.context(addon):
        addon.http_connect(f)
    assert f.response.status_code == 403
    assert addon.published[-1].rule == "connect-port" and addon.published[-1].layer == "connect"


def test_connect_to_blocked_intercepted_host_waits_for_the_request(addon):
    f = request_flow("https://socialsite.test:443/", method="CONNECT")
    with taddons.context(addon):
        addon.http_connect(f)
    assert f.response is None  # the block page is served inside the intercepted tunnel


def clienthello(addon, connect_flow, sni):
    data = tls.ClientHelloData(mock.Mock(), mock.Mock())
    data.context.client = connect_flow.client_conn
    data.client_hello.sni = sni
    data.context.server.address = (sni, 443)
    data.ignore_connection = False
    return data


def test_passthrough_for_staff_banking_is_recorded(addon):
    f = request_flow("https://bank.test:443/", STAFF, method="CONNECT")
    with taddons.context(addon):
        addon.http_connect(f)
        data = clienthello(addon, f, "bank.test")
        addon.tls_clienthello(data)
    assert data.ignore_connection is True
    [v] = addon.published
    assert (v.layer, v.action, v.host, v.username) == ("tls-passthrough", "allow", "bank.test", "teacher1")


def test_sni_naming_a_blocked_site_is_not_passed_through(addon):
    f = request_flow("https://bank.test:443/", PUPIL, method="CONNECT")
    with taddons.context(addon):
        addon.http_connect(f)
        data = clienthello(addon, f, "socialsite.test")
        addon.tls_clienthello(data)
        inner = request_flow("https://bank.test/", PUPIL)
        inner.client_conn = f.client_conn
        addon.requestheaders(inner)
    assert data.ignore_connection is False
    assert inner.response.status_code == 403  # the SNI's verdict applies inside the tunnel


def test_internal_error_fails_closed(addon, monkeypatch):
    monkeypatch.setattr(addon.snapshots.snapshot.policy, "decide", mock.Mock(side_effect=RuntimeError("boom")))
    f = request_flow("http://learning.test/")
    with taddons.context(addon):
        addon.requestheaders(f)
    assert f.response.status_code == 403


@pytest.mark.parametrize("where, part", [(Enforce, "_verdict"), (Enforce, "_safesearch"), (enforce, "decide")])
def test_a_bug_anywhere_in_enforcement_blocks_rather_than_lets_through(addon, monkeypatch, caplog, where, part):
    monkeypatch.setattr(where, part, mock.Mock(side_effect=RuntimeError("boom")))
    f = request_flow("http://www.google.com/search?q=a")   # allowed: the failure must still block it
    with taddons.context(addon):
        addon.requestheaders(f)
    assert f.response.status_code == 403 and b"blocked to be safe" in f.response.content
    assert "blocked to be safe" in caplog.text and "boom" in caplog.text


def test_flows_already_answered_are_left_alone(addon):
    f = request_flow("http://socialsite.test/")
    f.response = tutils.tresp(status_code=407)
    with taddons.context(addon):
        addon.requestheaders(f)
    assert f.response.status_code == 407 and not addon.published


def test_block_response_passes_mitmproxys_own_type_check(addon):
    # The block page skips mitmproxy's per-message debug type check for speed: what it skips must pass.
    f = request_flow("http://www.socialsite.test/x")
    with taddons.context(addon):
        addon.requestheaders(f)
    resp = f.response
    assert isinstance(resp, http.Response) and isinstance(resp.data, http.ResponseData)
    http.MessageData.__post_init__(resp.data)  # raises TypeError on any field of the wrong type
    assert (resp.http_version, resp.status_code, resp.reason) == ("HTTP/1.1", 403, "Forbidden")
    assert resp.headers["content-length"] == str(len(resp.raw_content))
    assert http.Response.from_state(resp.get_state()).get_state() == resp.get_state()  # serialisable as usual


def test_an_allowed_tunnel_connects_upstream_before_the_client_handshake_and_a_blocked_one_never(addon):
    allowed = request_flow("https://learning.test:443/", PUPIL, method="CONNECT")
    blocked = request_flow("https://socialsite.test:443/", PUPIL, method="CONNECT")
    blocked.client_conn = connection.Client(peername=("192.168.0.6", 5000), sockname=("127.0.0.1", 8080))
    with taddons.context(addon):
        for f, sni in ((allowed, "learning.test"), (blocked, "socialsite.test")):
            addon.http_connect(f)
            data = clienthello(addon, f, sni)
            data.establish_server_tls_first = False
            addon.tls_clienthello(data)
            f.hello = data
    assert allowed.hello.establish_server_tls_first is True   # the client is offered what the server speaks
    assert blocked.hello.establish_server_tls_first is False  # the block page needs no server


def test_an_allowed_tunnel_not_yet_connected_offers_the_client_http1(addon):
    # Under mitmdump -s, mitmproxy's TLS addon turns the early connection off again after ours: the
    # client then gets HTTP/1.1, over which the tunnel's requests share one upstream connection.
    f = request_flow("https://learning.test:443/", PUPIL, method="CONNECT")
    with taddons.context(addon):
        addon.http_connect(f)
        addon.tls_clienthello(clienthello(addon, f, "learning.test"))
        f.client_conn.alpn_offers = [b"h2", b"http/1.1"]
        start = tls.TlsData(f.client_conn, mock.Mock(client=f.client_conn))
        start.context.server.tls_established = False
        addon.tls_start_client(start)
    assert f.client_conn.alpn == b"http/1.1"


def test_an_absolute_target_inside_an_allowed_tunnel_is_decided_and_recorded_by_its_own_name(addon):
    # curl --request-target https://www.socialsite.test/ https://learning.test/: mitmproxy sets the
    # request's host to the tunnel's, but the request line still names the other site.
    f = request_flow("https://learning.test/")
    f.request.authority = "www.socialsite.test"
    with taddons.context(addon):
        addon.requestheaders(f)
        addon.response(f)
    [v] = addon.published
    assert f.response.status_code == 403 and (v.host, v.action) == ("www.socialsite.test", "block")


def test_a_second_host_header_must_pass_too(addon):
    f = request_flow("http://learning.test/")
    f.request.headers.fields = ((b"Host", b"learning.test"), (b"Host", b"socialsite.test"))
    with taddons.context(addon):
        addon.requestheaders(f)
    assert f.response.status_code == 403


def test_an_address_the_name_resolved_to_is_a_fact_of_the_request(addon):
    from schoolproxy.proxy.localguard import RESOLVED
    f = request_flow("http://sneaky.example/metrics", STAFF)
    f.metadata[RESOLVED] = ("127.0.0.1",)
    with taddons.context(addon):
        addon.requestheaders(f)
    assert f.response.status_code == 403 and b"gateway" in f.response.content


def test_a_compressed_403_page_is_never_unpacked_beyond_a_bound():
    # A site's own 403 page is read for the upstream filter's block-page markers: 329 bytes of brotli
    # unpacked to 200 MB in Response.get_text.
    import gzip

    import brotli
    from schoolproxy.proxy.enforce import page_text
    assert page_text(brotli.compress(b"\0" * (200 << 20)), "br", 1000) == ""
    assert len(page_text(gzip.compress(b"a" * (50 << 20)), "gzip", 1000)) == 1000
    marker = "This site has been blocked by your upstream filter"
    assert marker in page_text(gzip.compress(marker.encode()), "gzip", 1000)
    assert marker in page_text(marker.encode(), "", 1000)


def test_an_upstream_block_page_sent_gzipped_is_still_recognised(addon):
    import gzip
    f = request_flow("http://learning.test/")
    with taddons.context(addon):
        addon.requestheaders(f)
        f.response = tutils.tresp(status_code=403, headers=http.Headers(content_type="text/html",
                                                                          content_encoding="gzip"))
        f.response.raw_content = gzip.compress(b"<p>This site has been blocked by your upstream filter.</p>")
        addon.response(f)
    [v] = addon.published
    assert (v.action, v.rule) == ("block", "upstream-block")


def failed_handshake(addon, f, error: str):
    data = tls.TlsData(f.client_conn, mock.Mock(client=f.client_conn))
    f.client_conn.error = error
    addon.tls_failed_client(data)


@pytest.mark.parametrize("error, refused", [
    ("The client does not trust the proxy's certificate for learning.test (tlsv1 alert unknown ca)", True),
    ("The client may not trust the proxy's certificate for learning.test (sslv3 alert certificate unknown)", True),
    ("The client does not trust the proxy's certificate for learning.test (sslv3 alert bad certificate)", True),
    ("The client disconnected during the handshake. If this happens consistently for learning.test, this may "
     "indicate that the client does not trust the proxy's certificate.", False),
    ("Client and mitmproxy cannot agree on a TLS version to use.", False),
])
def test_a_client_refusing_the_schools_certificate_is_published_as_such_and_nothing_else(addon, error, refused):
    f = request_flow("https://learning.test:443/", PUPIL, method="CONNECT")
    with taddons.context(addon):
        addon.http_connect(f)
        addon.tls_clienthello(clienthello(addon, f, "learning.test"))
        failed_handshake(addon, f, error)
        failed_handshake(addon, f, error)  # published once
    if not refused:  # not a request, and not the client refusing anything: nothing to record
        assert addon.published == []
        return
    [v] = addon.published
    assert (v.layer, v.method, v.host, v.username, v.error) == ("tls", "TLS", "learning.test", "pupil1", error)
    assert v.client_refused_certificate is True


def test_an_upstream_certificate_failure_is_not_the_client_refusing(addon):
    f = request_flow("https://learning.test:443/", PUPIL, method="CONNECT")
    inner = request_flow("https://learning.test/", PUPIL)
    inner.client_conn = f.client_conn
    with taddons.context(addon):
        addon.http_connect(f)
        addon.tls_clienthello(clienthello(addon, f, "learning.test"))
        addon.requestheaders(inner)
        inner.error = flow.Error("TLS handshake failed: certificate verify failed (unable to get local issuer "
                                 "certificate) — SSL error")
        addon.error(inner)
    [v] = addon.published
    assert "certificate verify failed" in v.error and v.client_refused_certificate is False


def test_a_locked_block_page_never_offers_to_ask_for_the_page(tmp_path):
    # Illegal content cannot be allowed, so the pupil is not invited to ask; an ordinary block is askable.
    from test_locked import LOCKED_SITE, locked_school
    snapshots = SnapshotHolder()
    snapshots.load(locked_school(tmp_path))
    addon = Enforce(snapshots, lambda v: None)
    pages = []
    for url in (f"http://{LOCKED_SITE}/", "http://socialsite.test/"):
        f = request_flow(url)
        with taddons.context(addon):
            addon.requestheaders(f)
        assert f.response.status_code == 403
        pages.append(f.response.content)
    locked, ordinary = pages
    assert b"/unblock?ref=" not in locked and b"/unblock?ref=" in ordinary


def test_with_records_off_the_block_page_does_not_offer_to_ask(tmp_path):
    # Unblock requests are kept in the records database: without it the form could never take one.
    from conftest import make_school
    config = make_school(tmp_path)
    config.write_text(config.read_text().replace("records: {", "records: {enabled: false, "))
    snapshots = SnapshotHolder()
    snapshots.load(config)
    assert snapshots.snapshot.config.records.enabled is False
    addon = Enforce(snapshots, lambda v: None)
    f = request_flow("http://socialsite.test/")
    with taddons.context(addon):
        addon.requestheaders(f)
    assert f.response.status_code == 403 and b"This page is blocked" in f.response.content
    assert b"/unblock?ref=" not in f.response.content and not addon.live.recent(f.response.headers["x-schoolproxy-reference"])
