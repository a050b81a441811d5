"""Alert addon: starts the alert service (rules and delivery threads) beside the proxy and subscribes it
to the verdict bus. Nothing here runs per request beyond the service's deque append."""

from __future__ import annotations

import logging

from mitmproxy import ctx

from schoolproxy.monitoring.service import AlertService
from schoolproxy.records import open_database, upgrade
from schoolproxy.snapshot import Engine

log = logging.getLogger(__name__)


class Alert:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.service: AlertService | None = None

    def load(self, loader) -> None:
        loader.add_option("schoolproxy_alert_retry_seconds", int, 30,
                          "First retry delay for an undelivered alert (doubles each time, up to 15 min).")

    def running(self) -> None:
        snap = self.engine.snapshot
        if snap is None or self.service is not None or not snap.config.alerts.enabled:
            return
        db = open_database(snap.config.database_url())
        try:
            if self.engine.primary:  # one process migrates (two at once collide on a fresh database)
                upgrade(db)
        except Exception as e:  # the service retries its writes; the proxy serves regardless
            log.error("schoolproxy: alerts: cannot prepare the database yet: %s", str(e).splitlines()[0][:200])
        self.service = AlertService(self.engine, db, retry_seconds=ctx.options.schoolproxy_alert_retry_seconds,
                                    deliver=self.engine.primary).start()
        self.engine.alert_service = self.service
        self.engine.bus.subscribe(self.service.submit)

    def done(self) -> None:
        if self.service is not None:
            self.engine.bus.unsubscribe(self.service.submit)
            self.service.process()  # what arrived before shutdown is stored, so nothing is lost
            self.service.stop()
            self.service = None
