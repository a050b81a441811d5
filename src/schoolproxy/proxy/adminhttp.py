"""A small threaded HTTP server for the gateway's own endpoints (Prometheus metrics), bounded so that
whoever can reach its address cannot make the proxy hold more than a few threads: a connection that sits
silent is closed after ``timeout`` seconds, and beyond ``max_connections`` at once new ones are closed
unanswered. (prometheus_client's own server starts a thread per connection and never times one out.)"""

from __future__ import annotations

import socket
import threading
from socketserver import ThreadingMixIn
from typing import Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

MAX_CONNECTIONS = 16
TIMEOUT_SECONDS = 10.0


class _QuietHandler(WSGIRequestHandler):
    timeout = TIMEOUT_SECONDS   # socketserver applies it to the connection: idle or trickling clients let go

    def log_message(self, format: str, *args) -> None:  # noqa: A002 — the base class's name
        pass   # a scrape every 15 s would fill the proxy's log


class _BoundedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    max_connections = MAX_CONNECTIONS

    def server_activate(self) -> None:
        self._slots = threading.BoundedSemaphore(self.max_connections)
        super().server_activate()

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)   # full: refuse rather than start another thread
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _BoundedServer6(_BoundedServer):
    address_family = socket.AF_INET6


def serve(host: str, port: int, app: Callable, timeout: float = TIMEOUT_SECONDS,
          max_connections: int = MAX_CONNECTIONS) -> WSGIServer:
    """Serve the WSGI ``app`` on host:port from a daemon thread; stop it with ``shutdown()`` and
    ``server_close()``. Raises OSError if the address cannot be bound."""
    host = host.strip("[]")
    server_class = type("AdminServer", (_BoundedServer6 if ":" in host else _BoundedServer,),
                        {"max_connections": max_connections})
    handler = type("AdminHandler", (_QuietHandler,), {"timeout": timeout})
    server = make_server(host, port, app, server_class=server_class, handler_class=handler)
    threading.Thread(target=server.serve_forever, name=f"schoolproxy-admin-http-{port}", daemon=True).start()
    return server
