"""The record writer in a process of its own, so that logging every request costs the proxy almost nothing.

Building a row and inserting it costs CPU on every request, and in a thread of the proxy it would hold
the interpreter lock the event loop needs. Here the proxy's only work per request is a deque append
(``submit``). Every ``HANDOFF`` seconds the event loop packs what is there into one frame of plain
tuples (marshal) and writes it to the writer process's stdin without blocking. The writer process runs
at a lower CPU priority than the proxy. The writer process (``python -m schoolproxy.records.process``) runs
the ordinary :class:`RecordWriter` — batches, spool, replay, idempotent inserts — and reports its
counters and an acknowledgement back on stdout as JSON lines, which the event loop reads when they
arrive (no thread in the proxy; the pipe's machinery is :mod:`schoolproxy.framedchild`).

A frame is acknowledged once every record in it is in the database or the on-disk spool. Until then
the proxy keeps it (at most ``queue_size`` records), so nothing is lost when:

- the writer process dies: it is restarted and every unacknowledged frame is sent again (inserts are
  idempotent on the reference id, so nothing is duplicated either);
- it cannot keep up, cannot start, or has hung: past ``queue_size`` records the proxy writes new
  records straight to the spool itself, and the writer process replays them later;
- the proxy is killed: the writer process reads to end-of-file, writes or spools all of it, and exits.
  A crash of the proxy loses at most the records of the last hand-off interval (0.1 s).

The writer process ignores SIGINT and SIGTERM (a terminal's Ctrl-C and systemd's stop reach every process
of the group): it stops when the proxy closes the pipe, after flushing.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import marshal
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from schoolproxy.framedchild import FRAME_HEADER, FramedChild, Reporter, child_start
from schoolproxy.records.redact import SEARCH_PARAMS
from schoolproxy.records.spool import Spool
from schoolproxy.records.writer import to_row
from schoolproxy.verdict import Verdict

log = logging.getLogger(__name__)

REPORT = 0.2            # seconds between the writer process's reports
WRITER_NICE = 10        # the writer process's CPU priority below the proxy's (see main)
COUNTERS = ("written", "spooled", "replayed", "dropped", "db_errors", "batches")


class WriterProcess(FramedChild):
    """The proxy's side: the same face as :class:`RecordWriter` (submit, counters, queue_depth, spool,
    close) for the addon and the metrics. Records the writer process cannot be given (it is
    ``queue_size`` behind, or a record cannot be packed) are spooled here."""

    module = "schoolproxy.records.process"
    name = "the record writer process"
    items = "records"

    def __init__(self, database_url: str, spool: Spool, batch_size: int = 500, max_delay: float = 0.5,
                 queue_size: int = 10_000, keep: frozenset[str] = SEARCH_PARAMS, redact: bool = True):
        super().__init__({"database": database_url, "spool_dir": str(spool.dir), "spool_name": spool.name,
                          "fsync": "batch" if spool.fsync else "none", "batch_size": batch_size,
                          "max_delay": max_delay, "queue_size": queue_size, "keep": sorted(keep),
                          "redact": redact}, limit=queue_size)
        self.spool = spool
        self.keep, self.redact = keep, redact
        self.queue_size = queue_size
        # Totals of all writer processes so far, replaced whole by each report: the metrics server's
        # thread reads them, and a single assignment never shows it half an update.
        self._totals = dict.fromkeys(COUNTERS, 0)
        self._base = dict.fromkeys(COUNTERS, 0)     # from writer processes that have exited
        self.spooled_here = self.dropped_here = 0

    # -- the unblock and notice state, read by the writer process ---------------------------------
    #: Called on the event loop with each answer to :meth:`ask_live`: the parts that changed.
    on_live: Callable[[dict], None] | None = None

    def ask_live(self, told: list[int], notice_since: dt.datetime | None) -> None:
        """Ask the writer process, which holds the database, for the unblock and notice state
        (:func:`~schoolproxy.standards.live.read_live`): the proxy itself never reads the database for it.
        The answer comes back as a report, to :attr:`on_live`, when it has changed."""
        since = notice_since.isoformat() if notice_since is not None else None
        self.send(json.dumps({"live": {"told": told, "notice_since": since}}).encode())

    def _report(self, report: dict) -> None:
        if "live" in report:
            if self.on_live is not None:
                self.on_live(report["live"])
            return
        base = self._base
        self._totals = {k: base[k] + report.get(k, 0) for k in COUNTERS}

    def _ended(self) -> None:
        self._base = dict(self._totals)

    def _not_handed(self, verdicts: list[Verdict]) -> None:
        self._spool_verdicts(verdicts)

    # -- counters, as RecordWriter has them -------------------------------------------------------
    written = property(lambda self: self._totals["written"])
    replayed = property(lambda self: self._totals["replayed"])
    db_errors = property(lambda self: self._totals["db_errors"])
    batches = property(lambda self: self._totals["batches"])
    spooled = property(lambda self: self._totals["spooled"] + self.spooled_here)
    dropped = property(lambda self: self._totals["dropped"] + self.dropped_here)

    @property
    def queue_depth(self) -> int:
        """Records not yet in the database or the spool, in this process and the writer process."""
        return len(self._queue) + self.unacknowledged

    # -- shutdown ---------------------------------------------------------------------------------
    def close(self, timeout: float = 30.0) -> None:
        """Flush everything: the writer process writes (or spools) all it was given, then exits; whatever
        it could not acknowledge is spooled here."""
        self.stop(timeout)
        if self._unacked:
            self._spool_verdicts([Verdict(*t) for _, data in self._unacked
                                  for t in marshal.loads(data[FRAME_HEADER.size:])])
            self._unacked.clear()
            self._acked = self._handed

    def _spool_verdicts(self, verdicts: list[Verdict]) -> None:
        if self.spool.save([to_row(v, self.keep, self.redact) for v in verdicts]):
            self.spooled_here += len(verdicts)
        else:
            self.dropped_here += len(verdicts)


# -- the writer process itself ----------------------------------------------------------------------
def main() -> int:
    # Give way to the proxy: at equal priority a batch insert or WAL checkpoint here could take the CPU
    # from the proxy's event loop while requests are in flight. Records wait in the pipe and catch up
    # when it is idle.
    started = child_start(WRITER_NICE)
    if started is None:
        return 0
    s, frames = started
    from schoolproxy.records.database import open_database
    from schoolproxy.records.writer import RecordWriter

    spool = Spool(Path(s["spool_dir"]), s["fsync"], s["spool_name"])
    db = open_database(s["database"])
    writer = RecordWriter(db, spool, s["batch_size"], s["max_delay"], s["queue_size"],
                          frozenset(s["keep"]), s["redact"]).start()
    marks: deque[tuple[int, int]] = deque()   # (frame's upto, records submitted to this writer up to it)
    state = {"submitted": 0, "ack": 0}

    def report() -> dict:
        handled = writer.written + writer.spooled + writer.dropped
        while marks and marks[0][1] <= handled:
            state["ack"] = marks.popleft()[0]
        return {**{k: getattr(writer, k) for k in COUNTERS}, "ack": state["ack"]}

    reporter = Reporter(report, REPORT).start()
    live = LiveAnswers(db, reporter)
    for upto, payload in frames:
        if upto == 0:  # a question: the unblock and notice state
            live.answer(json.loads(payload)["live"])
            continue
        verdicts = [Verdict(*t) for t in marshal.loads(payload)]
        # Wait for room rather than let RecordWriter spill to the spool out of order: acknowledgements
        # count records in the order they were given.
        while writer.queue_depth + len(verdicts) > s["queue_size"] and writer.queue_depth:
            time.sleep(0.01)
        for v in verdicts:
            writer.submit(v)
        state["submitted"] += len(verdicts)
        marks.append((upto, state["submitted"]))
    writer.close()
    reporter.last()
    return 0


class LiveAnswers:
    """In the writer process: answers the proxy's questions about the unblock and notice state with the
    parts that changed since the last answer (the first answer has them all)."""

    def __init__(self, db, reporter: Reporter):
        self.db = db
        self.reporter = reporter
        self._sent: dict[str, str] = {}
        # The acceptances go as what was added and removed since the last answer (there may be thousands,
        # and the proxy reads them on its event loop); all of them at first and when the notice is due again.
        self._accepted: tuple[str | None, set[tuple[str, str]]] = (None, set())
        self._failing = False
        self._quiet_until = time.monotonic() + 15  # the records database may still be being created at start

    def answer(self, question: dict) -> None:
        from schoolproxy.standards.live import read_live

        since = question.get("notice_since")
        try:
            live = read_live(self.db, question.get("told", []), dt.datetime.fromisoformat(since) if since else None)
        except Exception as e:  # the database may be starting or down: the proxy keeps the last state
            if not self._failing and time.monotonic() > self._quiet_until:
                log.warning("schoolproxy: unblock and notice state not refreshed: %s", str(e).splitlines()[0][:200])
            self._failing = time.monotonic() > self._quiet_until
            return
        self._failing = False
        changed = {}
        accepted = live.pop("accepted", None)
        if accepted is not None:
            since, subjects = accepted["since"], {tuple(s) for s in accepted["subjects"]}
            last_since, last = self._accepted
            if since != last_since:
                changed["accepted"] = accepted
            elif subjects != last:
                changed["accepted"] = {"since": since, "added": sorted(subjects - last), "removed": sorted(last - subjects)}
            self._accepted = (since, subjects)
        for part, value in live.items():
            text = json.dumps(value)
            if self._sent.get(part) != text:
                changed[part] = value
                self._sent[part] = text
        if changed:
            self.reporter.write({"live": changed})


if __name__ == "__main__":
    sys.exit(main())
