"""Alert addon: starts the alert service (rules and delivery) in a process of its own beside the proxy
(:mod:`schoolproxy.monitoring.process`), subscribes it to the verdict bus and tells it when the proxy
loads a new configuration. Nothing here runs per request beyond a deque append. Its metrics are the
service's counters."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from mitmproxy import ctx
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from schoolproxy.metrics import Scraped
from schoolproxy.monitoring.process import AlertProcess
from schoolproxy.records import open_database, upgrade
from schoolproxy.snapshot import SnapshotHolder
from schoolproxy.verdict import VerdictBus

log = logging.getLogger(__name__)


class Alert:
    def __init__(self, snapshots: SnapshotHolder, bus: VerdictBus, registry: CollectorRegistry, worker: int = 0):
        self.snapshots = snapshots
        self.bus = bus
        #: This process's number among ``schoolproxy run --workers N``; worker 0 migrates and delivers.
        self.worker = worker
        self.service: AlertProcess | None = None
        registry.register(Scraped(self._metrics))
        snapshots.on_config(self._reloaded)

    def load(self, loader) -> None:
        loader.add_option("schoolproxy_alert_retry_seconds", int, 30,
                          "First retry delay for an undelivered alert (doubles each time, up to 15 min).")

    def running(self) -> None:
        snap = self.snapshots.snapshot
        if snap is None or self.service is not None or not snap.config.alerts.enabled:
            return
        primary = self.worker == 0
        db = open_database(snap.config.database_url())
        try:
            if primary:  # one process migrates (two at once collide on a fresh database)
                upgrade(db)
        except Exception as e:  # the service retries its writes; the proxy serves regardless
            # A warning, not an error: mitmproxy ends a start-up that logs an error, and the proxy must serve.
            log.warning("schoolproxy: alerts: cannot prepare the database yet: %s", str(e).splitlines()[0][:200])
        db.dispose()  # the alert process has its own connections
        assert self.snapshots.config_path is not None
        self.service = AlertProcess(self.snapshots.config_path, snap.config.database_url(),
                                    retry_seconds=ctx.options.schoolproxy_alert_retry_seconds, deliver=primary).start()
        self.bus.subscribe(self.service.submit)

    def _reloaded(self, snap) -> None:
        if self.service is not None:
            self.service.reload()

    def done(self) -> None:
        if self.service is not None:
            self.bus.unsubscribe(self.service.submit)
            self.service.stop()  # what arrived before shutdown is evaluated and stored, so nothing is lost
            self.service = None

    def _metrics(self) -> Iterable[Metric]:
        service = self.service
        if service is None:
            return
        raised = CounterMetricFamily("schoolproxy_alerts", "Online-safety alerts raised, by theme and severity.",
                                     labels=["theme", "severity"])
        for (theme, severity), n in list(service.raised.items()):
            raised.add_metric([theme, severity], n)
        yield raised
        yield CounterMetricFamily("schoolproxy_alert_repeats", "Matches counted on an alert already raised "
                                  "(throttled: one alert per user per theme per window).", value=service.repeats)
        deliveries = CounterMetricFamily("schoolproxy_alert_deliveries", "Alert and digest deliveries, by "
                                         "channel and result.", labels=["channel", "result"])
        for (channel, result), n in list(service.deliveries.items()):
            deliveries.add_metric([channel, result], n)
        yield deliveries
        yield GaugeMetricFamily("schoolproxy_alert_outbox_pending", "Alerts and digests waiting to be "
                                "delivered (retried with backoff).", value=service.outbox_pending)
        yield GaugeMetricFamily("schoolproxy_alerts_undelivered", "High and critical alerts that have reached no "
                                "one (no email or webhook sent) and that no one has acknowledged.",
                                value=service.undelivered)
        yield GaugeMetricFamily("schoolproxy_search_alerts_off", "1 when search alerts are off because the phrase "
                                "lists could not be loaded (no search is checked for concerns), else 0.",
                                value=1 if service.search_alerts_off is not None else 0)
        yield GaugeMetricFamily("schoolproxy_phrase_lists_edit_refused", "1 while the last edit of the phrase "
                                "lists has a mistake in it: it was refused and the lists before it are still in "
                                "use (schoolproxy check says what is wrong), else 0.",
                                value=1 if service.phrase_edit_refused is not None else 0)
