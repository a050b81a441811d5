"""The alert service in a process of its own, so that nothing but the event loop runs Python in the proxy.

In a thread of the proxy, the alert rules and the delivery held the interpreter lock while they worked;
when the OS descheduled such a thread holding it, the event loop waited for it (up to ~27 ms seen on a
busy machine), and so did the request in flight. Here the proxy's work per request is a deque append
(``submit``). Every ``HANDOFF`` seconds the event loop packs what is there into one frame of plain
tuples (marshal, as the record writer's) and writes it to the alert process's stdin without blocking.
The alert process (``python -m schoolproxy.monitoring.process``) runs the ordinary
:class:`~schoolproxy.monitoring.service.AlertService` — rules, delivery, outbox, digest — on a snapshot
of the same configuration file, rebuilt whenever the proxy loads a new one, and reports its counters
and an acknowledgement back on stdout as JSON lines, which the event loop reads when they arrive (no
thread in the proxy).

:class:`AlertProcess` has the service's face (``submit``, ``start``/``stop``, ``process``, the counters
the metrics read), so the alert addon uses either. A frame is acknowledged once the service has it;
until then the proxy keeps it (at most ``QUEUE_MAX`` verdicts: past that, rule evaluation is skipped
and counted, as the service does), so if the alert process dies it is restarted and sent every
unacknowledged frame again. When the proxy stops, or is killed, the alert process reads to end of
file, evaluates and stores what it was given, and exits; it ignores SIGINT and SIGTERM (they reach the
whole process group) and runs at a lower CPU priority than the proxy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import marshal
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from schoolproxy.records.process import frame, read_frames
from schoolproxy.verdict import Verdict

log = logging.getLogger(__name__)

HANDOFF = 0.1            # seconds between hand-offs to the alert process
REPORT = 0.5             # seconds between the alert process's reports (when something changed)
QUEUE_MAX = 100_000      # verdicts waiting for the alert process, at most (AlertService's own bound)
RESTART_BACKOFF = (1.0, 30.0)
ALERTS_NICE = 5          # below the proxy, above the record writer: alerts are read by people
_RELOAD = json.dumps({"reload": True}).encode()


class AlertProcess:
    """The proxy's side of the alert process (see the module docstring)."""

    def __init__(self, config_path: str | Path, database_url: str, retry_seconds: float = 30.0,
                 deliver: bool = True):
        self._settings = {"config": str(config_path), "database": database_url, "retry_seconds": retry_seconds,
                          "deliver": deliver}
        self._queue: deque[Verdict] = deque()
        self._unacked: deque[tuple[int, bytes]] = deque()  # (verdicts handed off up to it, the frame)
        self._out = bytearray()
        self._handed = 0
        self._acked = 0
        self._proc: subprocess.Popen | None = None
        self._reports = bytearray()
        self._restart_at = 0.0
        self._backoff = RESTART_BACKOFF[0]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.restarts = 0
        self._skipped_here = 0
        self._base: dict = _empty()     # from alert processes that have exited
        self._child: dict = _empty()    # from the current one

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
        if len(self._queue) + self._handed - self._acked < QUEUE_MAX:
            self._queue.append(verdict)
        else:
            self._skipped_here += 1  # the record of the request is still kept; only rule evaluation is skipped

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> "AlertProcess":
        self._loop = loop or asyncio.get_running_loop()
        self._spawn()
        self._timer = self._loop.call_later(HANDOFF, self._tick)
        return self

    def reload(self) -> None:
        """The proxy loaded a new configuration: the alert process loads it too."""
        self._out += frame(0, _RELOAD)
        self._pump()

    def process(self) -> None:
        """Hand everything queued to the alert process now (at shutdown, before :meth:`stop`)."""
        self._pack()
        self._pump()

    def _tick(self) -> None:
        try:
            self._pack()
            if self._proc is None or self._proc.poll() is not None:
                self._respawn()
            else:
                self._pump()
        except Exception:  # never stop handing off because of one bad moment
            log.exception("schoolproxy: alerts: hand-off failed")
        finally:
            if not self._closed and self._loop is not None:
                self._timer = self._loop.call_later(HANDOFF, self._tick)

    def _pack(self) -> None:
        while self._unacked and self._unacked[0][0] <= self._acked:
            self._unacked.popleft()
        if not self._queue:
            return
        verdicts = [self._queue.popleft() for _ in range(len(self._queue))]
        try:
            payload = marshal.dumps(list(map(tuple, verdicts)))
        except (ValueError, TypeError) as e:  # a field of an unexpected type: not evaluated, counted
            log.error("schoolproxy: alerts: verdicts could not be handed to the alert process: %s", e)
            self._skipped_here += len(verdicts)
            return
        self._handed += len(verdicts)
        data = frame(self._handed, payload)
        self._unacked.append((self._handed, data))
        self._out += data

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
            pass  # the alert process has gone: _respawn sends every unacknowledged frame again

    # -- the alert process ------------------------------------------------------------------------
    def _spawn(self) -> None:
        if self._proc is not None:
            self._forget(self._proc)
        try:
            proc = subprocess.Popen([sys.executable, "-m", "schoolproxy.monitoring.process"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, bufsize=0, close_fds=True)
        except OSError as e:
            log.error("schoolproxy: cannot start the alert process: %s", e)
            self._proc = None
            return
        self._proc = proc
        self._child = _empty()
        self._reports = bytearray()
        os.set_blocking(proc.stdout.fileno(), False)
        if self._loop is not None:
            self._loop.add_reader(proc.stdout.fileno(), self._read_reports, proc)
        self._out = bytearray(frame(0, json.dumps(self._settings).encode())
                              + b"".join(data for _, data in self._unacked))
        self._pump()

    def _respawn(self) -> None:
        now = time.monotonic()
        if now < self._restart_at:
            return
        if self._proc is not None:
            log.error("schoolproxy: the alert process exited (code %s); restarting it and sending its %d "
                      "unacknowledged verdicts again", self._proc.returncode, self._handed - self._acked)
            self.restarts += 1
        self._restart_at = now + self._backoff
        self._backoff = min(self._backoff * 2, RESTART_BACKOFF[1])
        self._spawn()

    def _forget(self, proc: subprocess.Popen) -> None:
        """An alert process that has ended (or is being replaced): keep its totals, stop reading it."""
        if self._loop is not None and proc.stdout is not None and not proc.stdout.closed:
            self._loop.remove_reader(proc.stdout.fileno())
        for name in ("raised", "deliveries"):
            self._base[name] = _merged(self._base[name], self._child[name])
        for name in ("repeats", "skipped"):
            self._base[name] += self._child[name]
        self._child = _empty()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    def _read_reports(self, proc: subprocess.Popen) -> None:
        """Called by the event loop when the alert process has reported (a few times a second at most)."""
        try:
            data = os.read(proc.stdout.fileno(), 65536)
        except BlockingIOError:
            return
        except (OSError, ValueError):
            data = b""
        if not data:  # it has ended: the next hand-off restarts it
            if self._loop is not None:
                self._loop.remove_reader(proc.stdout.fileno())
            return
        self._reports += data
        *lines, rest = self._reports.split(b"\n")
        self._reports = bytearray(rest)
        for line in lines:
            self._apply_report(line)

    def _apply_report(self, line: bytes) -> None:
        try:
            report = json.loads(line)
        except ValueError:
            return
        self._acked = max(self._acked, report.get("ack", 0))
        if report.get("ack", 0):
            self._backoff = RESTART_BACKOFF[0]  # it works: a later crash restarts it promptly
        self._child = {
            "raised": {(t, s): n for t, s, n in report.get("raised", ())},
            "deliveries": {(c, r): n for c, r, n in report.get("deliveries", ())},
            "repeats": report.get("repeats", 0), "skipped": report.get("skipped", 0),
            "outbox_pending": report.get("outbox_pending", 0), "undelivered": report.get("undelivered", 0)}

    # -- shutdown ---------------------------------------------------------------------------------
    def stop(self, timeout: float = 30.0) -> None:
        """The alert process evaluates and stores everything it was given, then exits."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._pack()
        proc = self._proc
        if proc is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(proc.stdout.fileno())
        if proc.poll() is None:
            self._pump(wait=timeout)
            try:
                proc.stdin.close()
            except OSError:
                pass
            # Its last reports, read here: the event loop may not run again.
            deadline = time.monotonic() + timeout
            fd = proc.stdout.fileno()
            while (left := deadline - time.monotonic()) > 0 and select.select([fd], [], [], left)[0]:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not data:
                    break
                self._reports += data
            for line in bytes(self._reports).split(b"\n"):
                self._apply_report(line)
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("schoolproxy: the alert process did not finish in %.0f s; stopping it", timeout)
                proc.kill()
                proc.wait()
        if self._handed > self._acked:
            log.error("schoolproxy: %d verdicts were not evaluated by the alert rules at shutdown",
                      self._handed - self._acked)
        self._forget(proc)
        self._proc = None


def _empty() -> dict:
    return {"raised": {}, "deliveries": {}, "repeats": 0, "skipped": 0, "outbox_pending": 0, "undelivered": 0}


def _merged(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, n in b.items():
        out[k] = out.get(k, 0) + n
    return out


# -- the alert process itself -----------------------------------------------------------------------
def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        os.nice(ALERTS_NICE)  # give way to the proxy's event loop; alerts can wait a few milliseconds
    except OSError:
        pass
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from schoolproxy.config import ConfigError
    from schoolproxy.monitoring.service import AlertService
    from schoolproxy.records.database import open_database
    from schoolproxy.snapshot import SnapshotHolder, build_snapshot

    frames = read_frames(sys.stdin.buffer)
    first = next(frames, None)
    if first is None:
        return 0
    s = json.loads(first[1])
    snapshots = SnapshotHolder()
    snapshots.config_path = Path(s["config"])
    snapshots.snapshot = build_snapshot(snapshots.config_path, run_tests=False)
    service = AlertService(snapshots, open_database(s["database"]), retry_seconds=s["retry_seconds"],
                           deliver=s["deliver"]).start()
    state = {"ack": 0, "done": False}
    out = sys.stdout
    lock = threading.Lock()
    last: list[str] = [""]

    def report(always: bool = False) -> None:
        with lock:  # the reporter thread, and once more at the end
            line = json.dumps({
                "ack": state["ack"], "raised": [[t, sv, n] for (t, sv), n in list(service.raised.items())],
                "deliveries": [[c, r, n] for (c, r), n in list(service.deliveries.items())],
                "repeats": service.repeats, "skipped": service.skipped, "outbox_pending": service.outbox_pending,
                "undelivered": service.undelivered})
            if always or line != last[0]:
                out.write(line + "\n")
                out.flush()
                last[0] = line

    def reporter() -> None:
        while not state["done"]:
            time.sleep(REPORT)
            try:
                report()
            except (BrokenPipeError, ValueError):
                return

    threading.Thread(target=reporter, name="reports", daemon=True).start()
    for upto, payload in frames:
        if upto == 0:  # a new configuration: decided on as the proxy does, a refused one changes nothing
            try:
                snapshots.swap(build_snapshot(snapshots.config_path, run_tests=False, previous=snapshots.snapshot))
            except (ConfigError, OSError) as e:
                log.debug("alerts: configuration not reloaded: %s", e)
            continue
        for t in marshal.loads(payload):
            service.submit(Verdict(*t))
        state["ack"] = upto
    service.stop()  # its rules thread evaluates and stores what arrived before the proxy stopped
    state["done"] = True
    try:
        report(always=True)
    except (BrokenPipeError, ValueError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
