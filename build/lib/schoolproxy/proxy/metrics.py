"""MetricsExporter addon: serves /metrics (config ``metrics.listen``, default 127.0.0.1:9464) from a
background thread, and subscribes the metrics to the verdict bus. Nothing here runs per request."""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

from schoolproxy.metrics import Metrics
from schoolproxy.snapshot import Engine

log = logging.getLogger(__name__)


class MetricsExporter:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.metrics = Metrics(engine)
        engine.bus.subscribe(self.metrics.on_verdict)
        self._server = None

    def running(self) -> None:
        snap = self.engine.snapshot
        if snap is None or not snap.config.metrics.enabled or self._server is not None:
            return
        host, _, base = snap.config.metrics.listen.rpartition(":")
        port = int(base) + self.engine.worker  # worker N of `run --workers`: the port + N
        listen = f"{host}:{port}"
        try:
            self._server, _ = start_http_server(port, addr=host.strip("[]"), registry=self.metrics.registry)
        except OSError as e:
            log.error("schoolproxy: cannot serve metrics on %s: %s", listen, e)
            return
        log.info("schoolproxy: Prometheus metrics on http://%s/metrics", listen)

    def done(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
