"""Record addon: opens the records database (migrating it), starts the writer process and the retention
purger, subscribes the writer to the verdict bus, and flushes everything at shutdown. Its metrics are
the writer's counters."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from schoolproxy.metrics import Scraped
from schoolproxy.records import Spool, open_database, upgrade
from schoolproxy.records.process import WriterProcess
from schoolproxy.records.purge import Purger
from schoolproxy.snapshot import SnapshotHolder
from schoolproxy.verdict import VerdictBus

log = logging.getLogger(__name__)


class Record:
    def __init__(self, snapshots: SnapshotHolder, bus: VerdictBus, registry: CollectorRegistry, worker: int = 0):
        self.snapshots = snapshots
        self.bus = bus
        #: This process's number among ``schoolproxy run --workers N``; worker 0 migrates and purges.
        self.worker = worker
        self.writer: WriterProcess | None = None
        self.purger: Purger | None = None
        registry.register(Scraped(self._metrics))

    def running(self) -> None:
        snap = self.snapshots.snapshot
        if snap is None or self.writer is not None or not snap.config.records.enabled:
            return
        cfg = snap.config.records
        primary = self.worker == 0
        db = open_database(snap.config.database_url())
        try:
            if primary:  # one process migrates (two at once collide on a fresh database)
                upgrade(db)
        except Exception as e:  # the proxy still serves; the writer spools until the database is usable
            # A warning, not an error: mitmproxy ends a start-up that logs an error, and the proxy must serve.
            log.warning("schoolproxy: cannot prepare the records database (records are spooled meanwhile): %s",
                      str(e).splitlines()[0][:300])
        spool = Spool(snap.config.path(cfg.spool_dir), cfg.fsync, "records" if primary else f"records-w{self.worker}")
        # Rows are built and inserted in a process of its own: off the proxy's CPU and GIL.
        self.writer = WriterProcess(snap.config.database_url(), spool, cfg.batch_size, cfg.batch_ms / 1000,
                                    cfg.queue_size, frozenset(cfg.keep_params), cfg.redact_query).start()
        self.bus.subscribe(self.writer.submit)
        if primary:  # one purger for all workers
            self.purger = Purger(db, cfg.retention_days, cfg.alert_retention_days, cfg.purge_every_hours).start()

    def done(self) -> None:
        if self.writer is not None:
            self.bus.unsubscribe(self.writer.submit)
            self.writer.close()
            log.info("schoolproxy: records flushed (%d written, %d spooled)", self.writer.written, self.writer.spooled)
        if self.purger is not None:
            self.purger.stop()

    def _metrics(self) -> Iterable[Metric]:
        writer = self.writer
        if writer is None:
            return
        yield GaugeMetricFamily("schoolproxy_record_queue_depth", "Records waiting for the database writer.",
                                value=writer.queue_depth)
        records = CounterMetricFamily("schoolproxy_records", "Request records by outcome: written to the "
                                      "database, spooled to disk, replayed from the spool, dropped.",
                                      labels=["outcome"])
        for outcome in ("written", "spooled", "replayed", "dropped"):
            records.add_metric([outcome], getattr(writer, outcome))
        yield records
        yield CounterMetricFamily("schoolproxy_record_db_errors", "Failed database writes.", value=writer.db_errors)
        yield GaugeMetricFamily("schoolproxy_record_spool_bytes", "Bytes waiting in the on-disk spool.",
                                value=writer.spool.size())
        yield CounterMetricFamily("schoolproxy_record_writer_restarts", "Times the record writer process "
                                  "died and was restarted (its unconfirmed records are sent again).",
                                  value=writer.restarts)
