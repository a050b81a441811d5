"""Self-tests for the stand-in internet (tests/internet.py): upstream proxy, origin echo, TLS, block page.

Plain synchronous tests with their own fixture; they need no conftest.py and no mitmproxy.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from conftest import require
from internet import BLOCK_PAGE_MARKER, Internet, make_test_ca

CURL = Path("/usr/bin/curl")


@pytest.fixture
def internet(tmp_path):
    with Internet(tmp_path) as inet:
        yield inet


def origin_context(internet: Internet) -> ssl.SSLContext:
    """A client context that trusts only the stand-in origins' CA."""
    return ssl.create_default_context(cafile=str(internet.ca_path))


def raw_exchange(internet: Internet, data: bytes, timeout: float = 3.0) -> bytes:
    """Send raw bytes to the upstream proxy and read until it closes the connection."""
    with socket.create_connection(("127.0.0.1", internet.proxy_port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# -- plain HTTP -----------------------------------------------------------------------------------
def test_plain_http_echo_and_record(internet):
    with httpx.Client(proxy=internet.proxy_url) as client:
        r = client.get("http://anything.test/x?q=1")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.text == "<html><body><h1>origin anything.test</h1><p>GET /x?q=1</p></body></html>"
    assert int(r.headers["content-length"]) == len(r.content)

    seen = internet.wait_for(lambda s: s.host == "anything.test")
    assert (seen.method, seen.scheme, seen.port, seen.path) == ("GET", "http", 80, "/x?q=1")
    assert seen.query == {"q": ["1"]}
    assert seen.header("HOST") == "anything.test"
    assert seen.via_connect is False
    assert seen.url == "http://anything.test/x?q=1"
    assert internet.requests_for("ANYTHING.test") == [seen]
    assert internet.connects == []


def test_post_with_content_length_and_chunked_bodies(internet):
    def chunks():
        yield b"part one, "
        yield b"part two"

    with httpx.Client(proxy=internet.proxy_url) as client:
        r1 = client.post("http://forms.test:8080/submit", content=b"name=ada&year=7")
        r2 = client.post("http://forms.test:8080/stream", content=chunks())  # iterator → chunked
    assert r1.status_code == r2.status_code == 200
    assert "<p>POST /submit</p>" in r1.text

    first, second = internet.requests_for("forms.test")
    assert (first.port, first.body, first.header("content-length")) == (8080, b"name=ada&year=7", "15")
    assert second.header("transfer-encoding") == "chunked"
    assert second.body == b"part one, part two"


def test_head_has_headers_but_no_body(internet):
    with httpx.Client(proxy=internet.proxy_url) as client:
        get = client.get("http://head.test/page")
        head = client.head("http://head.test/page")
        after = client.get("http://head.test/after")  # the connection is still in sync
    assert head.status_code == 200 and head.content == b""
    expected = get.text.replace("GET", "HEAD")
    assert int(head.headers["content-length"]) == len(expected.encode())
    assert after.text.endswith("<p>GET /after</p></body></html>")
    assert [s.method for s in internet.requests_for("head.test")] == ["GET", "HEAD", "GET"]


def test_echo_is_html_escaped(internet):
    reply = raw_exchange(internet, b"GET http://esc.test/<b>?a=\"x\"&b HTTP/1.1\r\n"
                                   b"Host: esc.test\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"<p>GET /&lt;b&gt;?a=&quot;x&quot;&amp;b</p>" in reply
    assert internet.wait_for(lambda s: s.host == "esc.test").query == {"a": ['"x"'], "b": [""]}


# -- CONNECT + TLS ----------------------------------------------------------------------------------
def test_https_through_connect_terminates_tls_as_origin(internet):
    with httpx.Client(proxy=internet.proxy_url, verify=origin_context(internet)) as client:
        r = client.get("https://secure.test/path?x=2")
    assert r.status_code == 200
    assert r.text == "<html><body><h1>origin secure.test</h1><p>GET /path?x=2</p></body></html>"

    seen = internet.wait_for(lambda s: s.host == "secure.test")
    assert (seen.scheme, seen.port, seen.path, seen.via_connect) == ("https", 443, "/path?x=2", True)
    assert seen.query == {"x": ["2"]}
    assert internet.connects == [("secure.test", 443)]
    assert internet.connects_for("secure.test") == [("secure.test", 443)]


def test_tunnel_presents_a_certificate_for_the_host_and_alpn_http11(internet):
    ctx = origin_context(internet)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", internet.proxy_port), timeout=3) as sock:
        sock.sendall(b"CONNECT cert.test:8443 HTTP/1.1\r\nHost: cert.test:8443\r\n\r\n")
        assert sock.recv(1024) == b"HTTP/1.1 200 Connection established\r\n\r\n"
        with ctx.wrap_socket(sock, server_hostname="cert.test") as tls:  # verifies chain + hostname
            assert tls.selected_alpn_protocol() == "http/1.1"
            assert ("DNS", "cert.test") in tls.getpeercert()["subjectAltName"]
            tls.sendall(b"GET /in HTTP/1.1\r\nHost: cert.test\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := tls.recv(65536):
                reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert internet.wait_for(lambda s: s.host == "cert.test").port == 8443


def test_failed_tls_handshake_just_closes(internet):
    with socket.create_connection(("127.0.0.1", internet.proxy_port), timeout=3) as sock:
        sock.sendall(b"CONNECT broken.test:443 HTTP/1.1\r\n\r\n")
        assert sock.recv(1024) == b"HTTP/1.1 200 Connection established\r\n\r\n"
        sock.sendall(b"GET / HTTP/1.1\r\nthis is not a TLS ClientHello\r\n\r\n")
        assert sock.recv(1024) == b""  # closed, nothing sent
    assert internet.seen == [] and internet.connects == [("broken.test", 443)]
    with httpx.Client(proxy=internet.proxy_url) as client:  # still serving
        assert client.get("http://after.test/").status_code == 200


# -- upstream block page ----------------------------------------------------------------------------
def test_block_hosts_get_the_smoothwall_block_page(internet):
    internet.block_hosts.add("blocked.test")
    with httpx.Client(proxy=internet.proxy_url, verify=origin_context(internet)) as client:
        plain = client.get("http://blocked.test/game")
        tls = client.get("https://blocked.test/game")
        other = client.get("http://fine.test/")
    for r in (plain, tls):
        assert r.status_code == 403
        assert "Smoothwall" in r.text and BLOCK_PAGE_MARKER in r.text
        assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert "This site has been blocked by your upstream filter" in plain.text
    assert other.status_code == 200
    assert [s.via_connect for s in internet.requests_for("blocked.test")] == [False, True]
    internet.block_hosts.discard("blocked.test")
    with httpx.Client(proxy=internet.proxy_url) as client:
        assert client.get("http://blocked.test/game").status_code == 200


# -- connections --------------------------------------------------------------------------------------
def test_keep_alive_reuses_one_connection(internet):
    with httpx.Client(proxy=internet.proxy_url) as client:
        client.get("http://ka.test/1")
        client.get("http://ka.test/2")
    assert internet.connections == 1
    assert [s.path for s in internet.requests_for("ka.test")] == ["/1", "/2"]

    internet.clear()
    assert (internet.seen, internet.connects, internet.connections) == ([], [], 0)
    with httpx.Client(proxy=internet.proxy_url, verify=origin_context(internet)) as client:
        client.get("https://ka.test/3")
        client.get("https://ka.test/4")
    assert internet.connections == 1 and internet.connects == [("ka.test", 443)]


def test_http10_and_connection_close_close_the_connection(internet):
    reply = raw_exchange(internet, b"GET http://old.test/ HTTP/1.0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close\r\n" in reply
    # Pipelined: keep-alive request, then one asking to close; both answered, then closed.
    reply = raw_exchange(internet, b"GET http://p.test/a HTTP/1.1\r\nHost: p.test\r\n\r\n"
                                   b"GET http://p.test/b HTTP/1.1\r\nHost: p.test\r\nConnection: close\r\n\r\n")
    assert reply.count(b"HTTP/1.1 200 OK") == 2


@pytest.mark.parametrize("request_bytes", [
    b"NONSENSE\r\n\r\n",
    b"GET http://x.test/ HTTP/9.9\r\n\r\n",
    b"GET ftp://x.test/ HTTP/1.1\r\n\r\n",
    b"GET http://x.test/ HTTP/1.1\r\nno colon here\r\n\r\n",
    b"POST http://x.test/ HTTP/1.1\r\nContent-Length: ten\r\n\r\n",
    b"POST http://x.test/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"CONNECT nohostport HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",  # origin-form without Host
    b"GET http://x.test/ HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",
])
def test_malformed_requests_get_400_and_close(internet, request_bytes):
    reply = raw_exchange(internet, request_bytes)
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close\r\n" in reply
    assert internet.seen == []


def test_clients_vanishing_mid_request_do_not_hurt(internet):
    for partial in (b"GET http://gone.test/ HTTP/1.1\r\nHost: go",
                    b"POST http://gone.test/ HTTP/1.1\r\nContent-Length: 100\r\n\r\nonly a bit",
                    b"POST http://gone.test/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"):
        with socket.create_connection(("127.0.0.1", internet.proxy_port), timeout=3) as sock:
            sock.sendall(partial)  # and close without waiting
    with httpx.Client(proxy=internet.proxy_url) as client:
        assert client.get("http://still.test/").status_code == 200
    assert [s.host for s in internet.seen] == ["still.test"]


def test_wait_for_times_out_with_a_useful_message(internet):
    with httpx.Client(proxy=internet.proxy_url) as client:
        client.get("http://here.test/a")
    with pytest.raises(AssertionError, match="here.test"):
        internet.wait_for(lambda s: s.host == "elsewhere.test", timeout=0.1)


# -- lifecycle and CA -------------------------------------------------------------------------------
def test_starts_fast_and_stops_without_leaking_threads(tmp_path):
    before = threading.active_count()
    started = time.monotonic()
    with Internet(tmp_path) as internet:
        assert time.monotonic() - started < 1.0
        assert internet.proxy_url == f"http://127.0.0.1:{internet.proxy_port}"
        with httpx.Client(proxy=internet.proxy_url) as client:
            client.get("http://x.test/")
        port = internet.proxy_port
    assert threading.active_count() == before
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    internet.stop()  # idempotent


def test_ca_issues_leaves_that_openssl_accepts(tmp_path):
    ca = make_test_ca(tmp_path)
    assert (tmp_path / "ca.pem").exists() and ca.path == tmp_path / "ca.pem"
    cert_path, key_path = ca.issue(["a.test", "www.a.test", "10.0.0.1"])
    leaf = x509.load_pem_x509_certificate(cert_path.read_bytes())
    leaf.verify_directly_issued_by(ca.cert)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["a.test", "www.a.test"]
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"10.0.0.1", "127.0.0.1"}
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ExtendedKeyUsageOID.SERVER_AUTH in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment
    leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days <= 397
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)  # key matches


def test_curl_through_the_upstream_proxy(internet):
    if not CURL.exists():
        require("curl is not installed at /usr/bin/curl (apt-get install curl)")
    out = subprocess.run(
        [str(CURL), "-sS", "--proxy", internet.proxy_url, "--cacert", str(internet.ca_path),
         "https://secure.test/"],
        capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "<html><body><h1>origin secure.test</h1><p>GET /</p></body></html>"
    seen = internet.wait_for(lambda s: s.host == "secure.test")
    assert seen.via_connect and seen.header("user-agent").startswith("curl/")
