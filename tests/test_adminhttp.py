"""The gateway's own HTTP endpoints (metrics) hold a bounded number of threads whatever reaches them:
idle connections are let go, and a flood of them cannot make the proxy start a thread each."""

from __future__ import annotations

import socket
import threading
import urllib.request

from prometheus_client import CollectorRegistry, Counter, make_wsgi_app
from proxyproc import free_port
from waits import wait_until

from schoolproxy.proxy import adminhttp


def scrape(port: int) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def test_a_flood_of_idle_connections_holds_few_threads_and_scrapes_work_after(tmp_path):
    registry = CollectorRegistry()
    Counter("schoolproxy_test_total", "A test counter.", registry=registry).inc()
    port = free_port()
    before = threading.active_count()
    server = adminhttp.serve("127.0.0.1", port, make_wsgi_app(registry), timeout=1.0, max_connections=4)
    flood = []
    try:
        assert "schoolproxy_test_total 1.0" in scrape(port)
        for _ in range(100):
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        # prometheus_client's own server: a thread per connection, never let go (~100 here).
        assert threading.active_count() <= before + 1 + 4
        for s in flood:
            s.close()
        wait_until(lambda: threading.active_count() <= before + 1, timeout=10, what="idle connections let go")
        assert "schoolproxy_test_total 1.0" in scrape(port)
    finally:
        for s in flood:
            s.close()
        server.shutdown()
        server.server_close()


def test_a_silent_connection_is_closed_after_the_timeout():
    port = free_port()
    server = adminhttp.serve("127.0.0.1", port, make_wsgi_app(CollectorRegistry()), timeout=1.0)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\n")   # and then nothing
            assert s.recv(100) == b""                  # closed by the server, not by our 5 s timeout
    finally:
        server.shutdown()
        server.server_close()
