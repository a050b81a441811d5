"""Prometheus metrics of the requests themselves, and the collector shape every service uses.

One registry per proxy process, handed to each service, which registers its own metrics: the
per-request ones here (fed by the verdict bus), and the state each service owns (records writer,
alerts, sign-ins, reloads, lists, logon feed), read at scrape time through :class:`Scraped`.

Per request: label children are created once and cached, so a request costs one dict lookup, one
``inc()`` and one ``observe()``. Label values are bounded — profile, action, category, result — and
never a username, URL or IP.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from schoolproxy.verdict import Verdict

#: Decision latency buckets: the decision itself is microseconds; anything near a millisecond is a problem.
DECISION_BUCKETS = (2e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2)
ACTIVE_WINDOW = 300.0  # a user counts as active for five minutes after their last request
MAX_TRACKED_USERS = 100_000


class Scraped(Collector):
    """Metrics read at scrape time from the state of whoever registers them: ``collect`` yields the
    metric families (off the hot path, on the metrics server's thread)."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]):
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


class Metrics:
    """Requests by profile, action and category; decision latency; active users. Subscribe
    :meth:`on_verdict` to the verdict bus."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter("schoolproxy_requests", "Requests decided, by profile, action and category.",
                                ["profile", "action", "category"], registry=registry)
        self.decision = Histogram("schoolproxy_decision_seconds", "Time to identify-and-decide one request.",
                                  buckets=DECISION_BUCKETS, registry=registry)
        self._observe = self.decision.observe
        self._children: dict[tuple[str, str, str], Callable[[], None]] = {}
        self._last_seen: dict[str, float] = {}
        registry.register(Scraped(self._scrape))

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
        # Also runs on the metrics server's thread while the event loop adds users: list() copies the
        # items in one step under the GIL, where iterating the dict itself could see it change size.
        cutoff = now - ACTIVE_WINDOW
        for u, t in list(self._last_seen.items()):
            if t < cutoff:
                self._last_seen.pop(u, None)
        return len(self._last_seen)

    def _scrape(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("schoolproxy_active_users", "Distinct identified users seen in the last five minutes.",
                                value=self.active_users())
