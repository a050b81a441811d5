"""Prometheus metrics, in the proxy process, in its own registry.

Fed by the verdict bus (one call per request): label children are created once and cached, so a
request costs one dict lookup, one ``inc()`` and one ``observe()``. Label values are bounded — profile,
action, category, result — and never a username, URL or IP. Everything that is a *state* (list sizes,
reloads, active users, the log store's counters) is read at scrape time by a collector, off the hot path.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from schoolproxy.snapshot import Engine
from schoolproxy.verdict import Verdict

#: Decision latency buckets: the decision itself is microseconds; anything near a millisecond is a problem.
DECISION_BUCKETS = (2e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2)
ACTIVE_WINDOW = 300.0  # a user counts as active for five minutes after their last request
MAX_TRACKED_USERS = 100_000


class Metrics:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.registry = CollectorRegistry()
        self.requests = Counter("schoolproxy_requests", "Requests decided, by profile, action and category.",
                                ["profile", "action", "category"], registry=self.registry)
        self.decision = Histogram("schoolproxy_decision_seconds", "Time to identify-and-decide one request.",
                                  buckets=DECISION_BUCKETS, registry=self.registry)
        self._observe = self.decision.observe
        self._children: dict[tuple[str, str, str], Callable[[], None]] = {}
        self._last_seen: dict[str, float] = {}
        self.registry.register(_StateCollector(self))

    def on_verdict(self, v: Verdict) -> None:
        """Bus subscriber: the hot path. No I/O, no allocation beyond a first-seen label child."""
        key = (v.profile, v.action, v.category)
        inc = self._children.get(key)
        if inc is None:
            inc = self._children[key] = self.requests.labels(*key).inc
        inc()
        self._observe(v.decision_seconds)
        if v.username is not None:
            if len(self._last_seen) >= MAX_TRACKED_USERS and v.username not in self._last_seen:
                self._prune(time.monotonic())
            self._last_seen[v.username] = time.monotonic()

    def active_users(self) -> int:
        return self._prune(time.monotonic())

    def _prune(self, now: float) -> int:
        cutoff = now - ACTIVE_WINDOW
        stale = [u for u, t in self._last_seen.items() if t < cutoff]
        for u in stale:
            del self._last_seen[u]
        return len(self._last_seen)


class _StateCollector(Collector):
    """Gauges and counters read at scrape time."""

    def __init__(self, metrics: Metrics):
        self.m = metrics

    def collect(self):
        engine = self.m.engine
        snap = engine.snapshot
        entries = GaugeMetricFamily("schoolproxy_list_entries", "Entries in the loaded lists, by category.",
                                    labels=["category"])
        if snap is not None:
            stats = snap.lists.stats
            for c in snap.lists.categories:
                entries.add_metric([c], stats.domains.get(c, 0) + stats.urls.get(c, 0))
        yield entries
        reloads = CounterMetricFamily("schoolproxy_config_reloads", "Configuration reloads, by result.",
                                      labels=["result"])
        for result, n in engine.reloads.items():
            reloads.add_metric([result], n)
        yield reloads
        yield GaugeMetricFamily("schoolproxy_active_users", "Distinct identified users seen in the last five minutes.",
                                value=self.m.active_users())
        if snap is not None:
            yield GaugeMetricFamily("schoolproxy_config_loaded_timestamp_seconds",
                                    "When the running configuration was loaded.", value=snap.loaded_at)
        signins = CounterMetricFamily("schoolproxy_signin_problems", "Proxy sign-ins that did not simply "
                                      "succeed: failed (wrong password), unverified (directory down: default "
                                      "profile), slowed (password guessing), guessing_reports.",
                                      labels=["result"])
        for result, n in engine.auth_stats.items():
            signins.add_metric([result], n)
        yield signins
        directory = snap.directory if snap is not None else None
        if directory is not None:
            yield GaugeMetricFamily("schoolproxy_directory_up", "1 if the directory (AD/LDAP) answered the "
                                    "last time it was asked, else 0.", value=1 if directory.up else 0)
            yield CounterMetricFamily("schoolproxy_directory_errors", "Directory calls that failed "
                                      "(unreachable, timeout, service account refused).", value=directory.errors)
        if engine.logons is not None:
            yield GaugeMetricFamily("schoolproxy_logon_feed_live", "Client addresses with a live logon.",
                                    value=len(engine.logons.live()))
        if engine.logon_feed is not None:
            calls = CounterMetricFamily("schoolproxy_logon_feed_calls", "Logon feed calls, by result.",
                                        labels=["result"])
            for result, n in engine.logon_feed.stats.items():
                calls.add_metric([result], n)
            yield calls
        service = engine.alert_service
        if service is not None:
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
        writer = engine.record_writer
        if writer is not None:
            yield GaugeMetricFamily("schoolproxy_record_queue_depth", "Records waiting for the database writer.",
                                    value=writer.queue_depth)
            records = CounterMetricFamily("schoolproxy_records", "Request records by outcome: written to the "
                                          "database, spooled to disk, replayed from the spool, dropped.",
                                          labels=["outcome"])
            for outcome in ("written", "spooled", "replayed", "dropped"):
                records.add_metric([outcome], getattr(writer, outcome))
            yield records
            yield CounterMetricFamily("schoolproxy_record_db_errors", "Failed database writes.",
                                      value=writer.db_errors)
            yield GaugeMetricFamily("schoolproxy_record_spool_bytes", "Bytes waiting in the on-disk spool.",
                                    value=writer.spool.size())
            yield CounterMetricFamily("schoolproxy_record_writer_restarts", "Times the record writer process "
                                      "died and was restarted (its unconfirmed records are sent again).",
                                      value=getattr(writer, "restarts", 0))
