"""Record addon: opens the records database (migrating it), starts the writer process and the retention
purger, subscribes the writer to the verdict bus, and flushes everything at shutdown."""

from __future__ import annotations

import logging

from schoolproxy.records import Spool, open_database, upgrade
from schoolproxy.records.process import WriterProcess
from schoolproxy.records.purge import Purger
from schoolproxy.snapshot import Engine

log = logging.getLogger(__name__)


class Record:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.writer: WriterProcess | None = None
        self.purger: Purger | None = None

    def running(self) -> None:
        snap = self.engine.snapshot
        if snap is None or self.writer is not None or not snap.config.records.enabled:
            return
        cfg = snap.config.records
        db = open_database(snap.config.database_url())
        try:
            if self.engine.primary:  # one process migrates (two at once collide on a fresh database)
                upgrade(db)
        except Exception as e:  # the proxy still serves; the writer spools until the database is usable
            log.error("schoolproxy: cannot prepare the records database (records are spooled meanwhile): %s",
                      str(e).splitlines()[0][:300])
        spool = Spool(snap.config.path(cfg.spool_dir), cfg.fsync,
                      "records" if self.engine.primary else f"records-w{self.engine.worker}")
        # Rows are built and inserted in a process of its own: off the proxy's CPU and GIL.
        self.writer = WriterProcess(snap.config.database_url(), spool, cfg.batch_size, cfg.batch_ms / 1000,
                                    cfg.queue_size, frozenset(cfg.keep_params), cfg.redact_query).start()
        self.engine.bus.subscribe(self.writer.submit)
        self.engine.record_writer = self.writer
        if self.engine.primary:  # one purger for all workers
            self.purger = Purger(db, cfg.retention_days, cfg.alert_retention_days, cfg.purge_every_hours).start()

    def done(self) -> None:
        if self.writer is not None:
            self.engine.bus.unsubscribe(self.writer.submit)
            self.writer.close()
            log.info("schoolproxy: records flushed (%d written, %d spooled)", self.writer.written, self.writer.spooled)
        if self.purger is not None:
            self.purger.stop()
