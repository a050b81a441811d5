"""Serving the console over HTTPS: the Flask app on a small thread pool behind tornado's HTTP server
(both come with mitmproxy), with the certificate renewed while it runs."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from concurrent.futures import ThreadPoolExecutor

from tornado.httpserver import HTTPServer
from tornado.wsgi import WSGIContainer

from schoolproxy.config import Config
from schoolproxy.console.certs import console_certificate

log = logging.getLogger("schoolproxy.console")
THREADS = 8
RENEW_CHECK_SECONDS = 12 * 3600


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


async def serve(app, config: Config, ready=None) -> None:
    """Serve until SIGINT/SIGTERM. ``ready(port)`` is called once listening."""
    files = console_certificate(config)
    ctx = tls_context(str(files.certificate), str(files.key))
    logging.getLogger("tornado.access").disabled = True   # it logs query strings; the app logs paths only
    with ThreadPoolExecutor(THREADS, thread_name_prefix="console") as pool:
        server = HTTPServer(WSGIContainer(app, executor=pool), ssl_options=ctx, max_header_size=64 * 1024,
                            max_body_size=256 * 1024, idle_connection_timeout=120, body_timeout=30)
        server.listen(config.console.port, config.console.host)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready(config.console.port)

        async def renew() -> None:
            while True:
                await asyncio.sleep(RENEW_CHECK_SECONDS)
                try:
                    again = await loop.run_in_executor(pool, console_certificate, config)
                    if again.issued:
                        ctx.load_cert_chain(str(again.certificate), str(again.key))
                        log.info("console: certificate renewed (%s)", again.certificate)
                except Exception:
                    log.exception("console: could not renew the certificate; the current one is still served")
        renewal = asyncio.create_task(renew())
        await stop.wait()
        renewal.cancel()
        server.stop()
        await server.close_all_connections()
