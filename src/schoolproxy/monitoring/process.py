"""The alert service in a process of its own, so that nothing but the event loop runs Python in the proxy.

In a thread of the proxy, the alert rules and the delivery held the interpreter lock while they worked;
when the OS descheduled such a thread holding it, the event loop waited for it (up to ~27 ms seen on a
busy machine), and so did the request in flight. Here the proxy's work per request is a deque append
(``submit``). Every ``HANDOFF`` seconds the event loop packs what is there into one frame of plain
tuples (marshal) and writes it to the alert process's stdin without blocking, as it does for the record
writer (:mod:`schoolproxy.framedchild`). The alert process (``python -m schoolproxy.monitoring.process``)
runs the ordinary :class:`~schoolproxy.monitoring.service.AlertService` — rules, delivery, outbox,
digest — on a snapshot of the same configuration file, rebuilt whenever the proxy loads a new one, and
reports its counters and an acknowledgement back on stdout as JSON lines, which the event loop reads
when they arrive (no thread in the proxy).

:class:`AlertProcess` has the service's face (``submit``, ``start``/``stop``, ``process``, the counters
the metrics read), so the alert addon uses either. A frame is acknowledged once the service has it;
until then the proxy keeps it (at most ``QUEUE_MAX`` verdicts: past that, rule evaluation is skipped
and counted, as the service does), so if the alert process dies it is restarted and sent every
unacknowledged frame again. When the proxy stops, or is killed, the alert process reads to end of
file, evaluates and stores what it was given, and exits; it ignores SIGINT and SIGTERM (they reach the
whole process group) and runs at a lower CPU priority than the proxy.
"""

from __future__ import annotations

import json
import logging
import marshal
import sys
from pathlib import Path

from schoolproxy.framedchild import FramedChild, Reporter, child_start
from schoolproxy.verdict import Verdict

log = logging.getLogger(__name__)

REPORT = 0.5             # seconds between the alert process's reports (when something changed)
QUEUE_MAX = 100_000      # verdicts waiting for the alert process, at most (AlertService's own bound)
ALERTS_NICE = 5          # below the proxy, above the record writer: alerts are read by people
_RELOAD = json.dumps({"reload": True}).encode()


class AlertProcess(FramedChild):
    """The proxy's side of the alert process (see the module docstring)."""

    module = "schoolproxy.monitoring.process"
    name = "the alert process"

    def __init__(self, config_path: str | Path, database_url: str, retry_seconds: float = 30.0,
                 deliver: bool = True):
        super().__init__({"config": str(config_path), "database": database_url, "retry_seconds": retry_seconds,
                          "deliver": deliver}, limit=QUEUE_MAX)
        self._skipped_here = 0
        self._base: dict = _empty()     # from alert processes that have exited
        self._child: dict = _empty()    # from the current one
        #: Why search alerts are off (the phrase lists could not be loaded), None while they are on — as the
        #: alert process last said (kept while a restarted one starts).
        self.search_alerts_off: str | None = None
        #: Why the last edit of the phrase lists was refused (the lists before it still in use), or None.
        self.phrase_edit_refused: str | None = None

    # -- the service's counters -------------------------------------------------------------------
    @property
    def raised(self) -> dict[tuple[str, str], int]:
        return _merged(self._base["raised"], self._child["raised"])

    @property
    def deliveries(self) -> dict[tuple[str, str], int]:
        return _merged(self._base["deliveries"], self._child["deliveries"])

    @property
    def repeats(self) -> int:
        return self._base["repeats"] + self._child["repeats"]

    @property
    def skipped(self) -> int:
        return self._base["skipped"] + self._child["skipped"] + self._skipped_here

    @property
    def outbox_pending(self) -> int:
        return self._child["outbox_pending"]

    @property
    def undelivered(self) -> int:
        """High and critical alerts that have reached no one (the alert process counts them)."""
        return self._child["undelivered"]

    # -- event loop side --------------------------------------------------------------------------
    def submit(self, verdict: Verdict) -> None:
        """Bus subscriber on the request path: append and return."""
        if len(self._queue) + self.unacknowledged < QUEUE_MAX:
            self._queue.append(verdict)
        else:
            self._skipped_here += 1  # the record of the request is still kept; only rule evaluation is skipped

    def reload(self) -> None:
        """The proxy loaded a new configuration: the alert process loads it too."""
        self.send(_RELOAD)

    def process(self) -> None:
        """Hand everything queued to the alert process now (at shutdown, before :meth:`stop`)."""
        self._pack()
        self._pump()

    def _not_handed(self, verdicts: list[Verdict]) -> None:
        self._skipped_here += len(verdicts)  # not evaluated, counted

    def _report(self, report: dict) -> None:
        self._child = {
            "raised": {(t, s): n for t, s, n in report.get("raised", ())},
            "deliveries": {(c, r): n for c, r, n in report.get("deliveries", ())},
            "repeats": report.get("repeats", 0), "skipped": report.get("skipped", 0),
            "outbox_pending": report.get("outbox_pending", 0), "undelivered": report.get("undelivered", 0)}
        if "search_alerts_off" in report:
            self.search_alerts_off = report["search_alerts_off"]
            self.phrase_edit_refused = report.get("phrase_edit_refused")

    def _ended(self) -> None:
        for name in ("raised", "deliveries"):
            self._base[name] = _merged(self._base[name], self._child[name])
        for name in ("repeats", "skipped"):
            self._base[name] += self._child[name]
        self._child = _empty()

    def stop(self, timeout: float = 30.0) -> None:
        """The alert process evaluates and stores everything it was given, then exits."""
        super().stop(timeout)
        if self.unacknowledged:
            log.error("schoolproxy: %d verdicts were not evaluated by the alert rules at shutdown",
                      self.unacknowledged)


def _empty() -> dict:
    return {"raised": {}, "deliveries": {}, "repeats": 0, "skipped": 0, "outbox_pending": 0, "undelivered": 0}


def _merged(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, n in b.items():
        out[k] = out.get(k, 0) + n
    return out


# -- the alert process itself -----------------------------------------------------------------------
def main() -> int:
    started = child_start(ALERTS_NICE)  # give way to the proxy's event loop; alerts can wait a few milliseconds
    if started is None:
        return 0
    s, frames = started
    from schoolproxy.config import ConfigError
    from schoolproxy.monitoring.service import AlertService
    from schoolproxy.records.database import open_database
    from schoolproxy.snapshot import SnapshotHolder, build_snapshot

    snapshots = SnapshotHolder()
    snapshots.config_path = Path(s["config"])
    snapshots.snapshot = build_snapshot(snapshots.config_path, run_tests=False)
    service = AlertService(snapshots, open_database(s["database"]), retry_seconds=s["retry_seconds"],
                           deliver=s["deliver"]).start()
    acked = [0]

    def report() -> dict:
        return {"ack": acked[0], "raised": [[t, sv, n] for (t, sv), n in list(service.raised.items())],
                "deliveries": [[c, r, n] for (c, r), n in list(service.deliveries.items())],
                "repeats": service.repeats, "skipped": service.skipped, "outbox_pending": service.outbox_pending,
                "undelivered": service.undelivered, "search_alerts_off": service.search_alerts_off,
                "phrase_edit_refused": service.phrase_edit_refused}

    reporter = Reporter(report, REPORT, only_changes=True).start()
    for upto, payload in frames:
        if upto == 0:  # a new configuration: decided on as the proxy does, a refused one changes nothing
            try:
                snapshots.swap(build_snapshot(snapshots.config_path, run_tests=False, previous=snapshots.snapshot))
            except (ConfigError, OSError) as e:
                log.debug("alerts: configuration not reloaded: %s", e)
            continue
        for t in marshal.loads(payload):
            service.submit(Verdict(*t))
        acked[0] = upto
    service.stop()  # its rules thread evaluates and stores what arrived before the proxy stopped
    reporter.last()
    return 0


if __name__ == "__main__":
    sys.exit(main())
