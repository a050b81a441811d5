"""The record writer in a process of its own, so that logging every request costs the proxy almost nothing.

Building a row and inserting it costs CPU on every request, and in a thread of the proxy it would hold
the interpreter lock the event loop needs. Here the proxy's only work per request is a deque append
(``submit``). Every ``HANDOFF`` seconds the event loop packs what is there into one frame of plain
tuples (marshal) and writes it to the writer process's stdin without blocking. The writer process runs
at a lower CPU priority than the proxy. The writer process (``python -m schoolproxy.records.process``) runs
the ordinary :class:`RecordWriter` — batches, spool, replay, idempotent inserts — and reports its
counters and an acknowledgement back on stdout as JSON lines.

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

import asyncio
import dataclasses
import json
import logging
import marshal
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import BinaryIO, Iterator

from schoolproxy.records.redact import SEARCH_PARAMS
from schoolproxy.records.spool import Spool
from schoolproxy.records.writer import to_row
from schoolproxy.verdict import Verdict

log = logging.getLogger(__name__)

HANDOFF = 0.1           # seconds between hand-offs to the writer process
REPORT = 0.2            # seconds between the writer process's reports
RESTART_BACKOFF = (1.0, 30.0)
WRITER_NICE = 10        # the writer process's CPU priority below the proxy's (see main)
FRAME_HEADER = struct.Struct("<IQ")  # frame length, records handed off up to and including this frame
COUNTERS = ("written", "spooled", "replayed", "dropped", "db_errors", "batches")


def frame(upto: int, payload: bytes) -> bytes:
    """One frame of the pipe to a child process (the record writer's, the alert rules'): length, a count, bytes."""
    return FRAME_HEADER.pack(len(payload), upto) + payload


def read_frames(stream: BinaryIO) -> Iterator[tuple[int, bytes]]:
    while len(header := stream.read(FRAME_HEADER.size)) == FRAME_HEADER.size:
        size, upto = FRAME_HEADER.unpack(header)
        payload = stream.read(size)
        if len(payload) < size:
            return  # the proxy died mid-frame: it was never acknowledged, the proxy spools or resends it
        yield upto, payload


@dataclasses.dataclass
class _Frame:
    upto: int   # identifies the frame: the count of records handed off, this frame's included
    data: bytes  # header included


class WriterProcess:
    """The proxy's side: the same face as :class:`RecordWriter` (submit, counters, queue_depth, spool,
    close) for the addon and the metrics."""

    def __init__(self, database_url: str, spool: Spool, batch_size: int = 500, max_delay: float = 0.5,
                 queue_size: int = 10_000, keep: frozenset[str] = SEARCH_PARAMS, redact: bool = True):
        self.spool = spool
        self.keep, self.redact = keep, redact
        self.queue_size = queue_size
        self._settings = {"database": database_url, "spool_dir": str(spool.dir), "spool_name": spool.name,
                          "fsync": "batch" if spool.fsync else "none", "batch_size": batch_size,
                          "max_delay": max_delay, "queue_size": queue_size, "keep": sorted(keep),
                          "redact": redact}
        self._queue: deque[Verdict] = deque()
        self._unacked: deque[_Frame] = deque()
        self._out = bytearray()      # bytes for the current writer process's pipe
        self._handed = 0             # records handed off so far
        self._acked = 0              # ... of which this many are in the database or the spool
        self._proc: subprocess.Popen | None = None
        self._restart_at = 0.0
        self._backoff = RESTART_BACKOFF[0]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._base = dict.fromkeys(COUNTERS, 0)     # from writer processes that have exited
        self._child = dict.fromkeys(COUNTERS, 0)    # from the current one
        self._lock = threading.Lock()               # between the event loop and the report reader
        self._reader: threading.Thread | None = None
        self.spooled_here = self.dropped_here = self.restarts = 0

    # -- event loop side --------------------------------------------------------------------------
    def submit(self, verdict: Verdict) -> None:
        """Hot path: enqueue and return."""
        self._queue.append(verdict)

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> "WriterProcess":
        self._loop = loop or asyncio.get_running_loop()
        self._spawn()
        self._timer = self._loop.call_later(HANDOFF, self._tick)
        return self

    def _tick(self) -> None:
        try:
            self.handoff()
        except Exception:  # never stop handing off because of one bad moment
            log.exception("schoolproxy: record hand-off failed")
        finally:
            if not self._closed and self._loop is not None:
                self._timer = self._loop.call_later(HANDOFF, self._tick)

    def handoff(self) -> None:
        """Pack the queue into a frame and push what the pipe takes (never blocks)."""
        self._pack()
        if self._proc is None or self._proc.poll() is not None:
            self._respawn()
        else:
            self._pump()

    def _pack(self) -> None:
        self._forget_acked()
        if not self._queue:
            return
        verdicts = [self._queue.popleft() for _ in range(len(self._queue))]
        if self._handed - self._acked + len(verdicts) > self.queue_size:
            self._spool_verdicts(verdicts)  # the writer process is behind, dead or hung
            return
        try:
            payload = marshal.dumps(list(map(tuple, verdicts)))
        except (ValueError, TypeError) as e:  # a field of an unexpected type: keep the records anyway
            log.error("schoolproxy: records could not be handed to the writer process, spooled instead: %s", e)
            self._spool_verdicts(verdicts)
            return
        self._handed += len(verdicts)
        packed = _Frame(self._handed, frame(self._handed, payload))
        self._unacked.append(packed)
        self._out += packed.data

    def _pump(self, wait: float = 0.0) -> None:
        """Write what the pipe takes now; with ``wait``, keep at it for up to that long (shutdown)."""
        if not self._out or self._proc is None:
            return
        fd = self._proc.stdin.fileno()
        deadline = time.monotonic() + wait
        try:
            os.set_blocking(fd, False)
            while self._out:
                try:
                    n = os.write(fd, self._out)
                except BlockingIOError:  # the pipe is full: the rest goes at the next hand-off
                    left = deadline - time.monotonic()
                    if left <= 0 or not select.select([], [fd], [], left)[1]:
                        return
                    continue
                del self._out[:n]
        except (OSError, ValueError):
            pass  # the writer process has gone: _respawn sends every unacknowledged frame again

    def _forget_acked(self) -> None:
        acked = self._acked
        while self._unacked and self._unacked[0].upto <= acked:
            self._unacked.popleft()

    # -- the writer process -----------------------------------------------------------------------
    def _spawn(self) -> None:
        if self._proc is not None and self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            proc = subprocess.Popen([sys.executable, "-m", "schoolproxy.records.process"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, bufsize=0, close_fds=True)
        except OSError as e:
            log.error("schoolproxy: cannot start the record writer process: %s", e)
            self._proc = None
            return
        with self._lock:
            self._proc = proc
            self._child = dict.fromkeys(COUNTERS, 0)
        settings = json.dumps(self._settings).encode()
        self._out = bytearray(frame(0, settings) + b"".join(f.data for f in self._unacked))
        self._reader = threading.Thread(target=self._read_reports, args=(proc,), name="schoolproxy-records-reports",
                                        daemon=True)
        self._reader.start()
        self._pump()

    def _respawn(self) -> None:
        now = time.monotonic()
        if now < self._restart_at:
            return
        if self._proc is not None:
            log.error("schoolproxy: the record writer process exited (code %s); restarting it and sending "
                      "its %d unacknowledged records again", self._proc.returncode, self._handed - self._acked)
            self.restarts += 1
        self._restart_at = now + self._backoff
        self._backoff = min(self._backoff * 2, RESTART_BACKOFF[1])
        self._spawn()

    def _read_reports(self, proc: subprocess.Popen) -> None:
        """Reader thread: wakes only when the writer process reports (a few times a second)."""
        last = None
        for line in proc.stdout:
            try:
                report = json.loads(line)
            except ValueError:
                continue
            last = report
            with self._lock:
                self._acked = max(self._acked, report.get("ack", 0))
                if self._proc is proc:
                    self._child = {k: report.get(k, 0) for k in COUNTERS}
                    if report.get("ack", 0):
                        self._backoff = RESTART_BACKOFF[0]  # it works: a later crash restarts it promptly
        with self._lock:  # the process has ended: keep its totals
            if last is not None:
                for k in COUNTERS:
                    self._base[k] += last.get(k, 0)
            if self._proc is proc:
                self._child = dict.fromkeys(COUNTERS, 0)

    # -- counters, as RecordWriter has them -------------------------------------------------------
    def _count(self, name: str) -> int:
        with self._lock:
            return self._base[name] + self._child[name]

    written = property(lambda self: self._count("written"))
    replayed = property(lambda self: self._count("replayed"))
    db_errors = property(lambda self: self._count("db_errors"))
    batches = property(lambda self: self._count("batches"))
    spooled = property(lambda self: self._count("spooled") + self.spooled_here)
    dropped = property(lambda self: self._count("dropped") + self.dropped_here)

    @property
    def queue_depth(self) -> int:
        """Records not yet in the database or the spool, in this process and the writer process."""
        return len(self._queue) + self._handed - self._acked

    # -- shutdown ---------------------------------------------------------------------------------
    def close(self, timeout: float = 30.0) -> None:
        """Flush everything: the writer process writes (or spools) all it was given, then exits; whatever
        it could not acknowledge is spooled here."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._pack()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._pump(wait=timeout)
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("schoolproxy: the record writer process did not finish in %.0f s; stopping it", timeout)
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(5)  # its last report
        self._forget_acked()
        if self._unacked:
            self._spool_verdicts([Verdict(*t) for f in self._unacked
                                  for t in marshal.loads(f.data[FRAME_HEADER.size:])])
            self._unacked.clear()
            self._acked = self._handed

    def _spool_verdicts(self, verdicts: list[Verdict]) -> None:
        if self.spool.save([to_row(v, self.keep, self.redact) for v in verdicts]):
            self.spooled_here += len(verdicts)
        else:
            self.dropped_here += len(verdicts)


# -- the writer process itself ----------------------------------------------------------------------
def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Give way to the proxy: at equal priority a batch insert or WAL checkpoint here could take the CPU
    # from the proxy's event loop (or from a proxy thread holding the interpreter lock the loop then
    # waits for) while requests are in flight. Records wait in the pipe and catch up when it is idle.
    try:
        os.nice(WRITER_NICE)
    except OSError:
        pass
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from schoolproxy.records.database import open_database
    from schoolproxy.records.writer import RecordWriter

    frames = read_frames(sys.stdin.buffer)
    first = next(frames, None)
    if first is None:
        return 0
    s = json.loads(first[1])
    spool = Spool(Path(s["spool_dir"]), s["fsync"], s["spool_name"])
    writer = RecordWriter(open_database(s["database"]), spool, s["batch_size"], s["max_delay"], s["queue_size"],
                          frozenset(s["keep"]), s["redact"]).start()
    marks: deque[tuple[int, int]] = deque()   # (frame's upto, records submitted to this writer up to it)
    state = {"submitted": 0, "ack": 0, "done": False}
    out = sys.stdout
    report_lock = threading.Lock()

    def report() -> None:
        with report_lock:  # the reporter thread, and once more at the end
            handled = writer.written + writer.spooled + writer.dropped
            while marks and marks[0][1] <= handled:
                state["ack"] = marks.popleft()[0]
            out.write(json.dumps({**{k: getattr(writer, k) for k in COUNTERS}, "ack": state["ack"]}) + "\n")
            out.flush()

    def reporter() -> None:
        while not state["done"]:
            time.sleep(REPORT)
            try:
                report()
            except (BrokenPipeError, ValueError):
                return

    threading.Thread(target=reporter, name="reports", daemon=True).start()
    for upto, payload in frames:
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
    state["done"] = True
    try:
        report()
    except (BrokenPipeError, ValueError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
