"""MetricsExporter addon: serves the proxy's metrics registry on /metrics (config ``metrics.listen``,
default 127.0.0.1:9464) from a background thread, and subscribes the request metrics to the verdict bus.
Nothing here runs per request beyond that subscriber."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, make_wsgi_app

from schoolproxy.metrics import Metrics
from schoolproxy.proxy import adminhttp
from schoolproxy.snapshot import SnapshotHolder
from schoolproxy.verdict import VerdictBus

log = logging.getLogger(__name__)


class MetricsExporter:
    def __init__(self, snapshots: SnapshotHolder, bus: VerdictBus, registry: CollectorRegistry, worker: int = 0):
        self.snapshots = snapshots
        self.registry = registry
        self.worker = worker
        self.metrics = Metrics(registry)
        bus.subscribe(self.metrics.on_verdict)
        self._server = None

    def running(self) -> None:
        snap = self.snapshots.snapshot
        if snap is None or not snap.config.metrics.enabled or self._server is not None:
            return
        host, _, base = snap.config.metrics.listen.rpartition(":")
        port = int(base) + self.worker  # worker N of `run --workers`: the port + N
        listen = f"{host}:{port}"
        try:
            self._server = adminhttp.serve(host, port, make_wsgi_app(self.registry))
        except OSError as e:
            log.error("schoolproxy: cannot serve metrics on %s: %s", listen, e)
            return
        log.info("schoolproxy: Prometheus metrics on http://%s/metrics", listen)

    def done(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
