"""A child process beside the proxy's event loop, handed verdicts in frames on its stdin and reporting back
in JSON lines on its stdout: what the record writer process (:mod:`schoolproxy.records.process`) and the
alert process (:mod:`schoolproxy.monitoring.process`) have in common.

The proxy's side, :class:`FramedChild`, does all its work on the event loop, so that nothing but the
loop runs Python in the proxy process:

- ``submit`` (the request path) appends a verdict to a deque;
- every ``HANDOFF`` seconds a timer packs what is there into one frame of plain tuples (marshal) and
  writes what the pipe takes without blocking; the rest goes at the next hand-off;
- the loop reads the child's reports when they arrive (``add_reader``), a few times a second at most;
- a frame is kept until the child acknowledges it (a report's ``ack``: the count of verdicts handed off
  up to it); a child that has died is started again, with backoff, and sent every frame it had not
  acknowledged, so nothing is lost;
- ``stop`` hands over the rest, closes the pipe, reads the last reports and waits for the child.

A frame is its length, a count and the payload. The count of a frame of verdicts is the number handed
off so far, this frame's included; a frame with count 0 carries a control message (the settings, always
first; then whatever the child understands) and is not kept for resending.

The child's side: :func:`child_start` (signals, priority, logging; the settings and the frames after
them) and :class:`Reporter` (its reports).
"""

from __future__ import annotations

import asyncio
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
from collections.abc import Callable
from typing import BinaryIO, Iterator

from schoolproxy.verdict import Verdict

log = logging.getLogger(__name__)

HANDOFF = 0.1           # seconds between hand-offs to the child
RESTART_BACKOFF = (1.0, 30.0)
FRAME_HEADER = struct.Struct("<IQ")  # frame length, verdicts handed off up to and including this frame


def frame(upto: int, payload: bytes) -> bytes:
    """One frame of the pipe to a child process: length, a count, bytes."""
    return FRAME_HEADER.pack(len(payload), upto) + payload


def read_frames(stream: BinaryIO) -> Iterator[tuple[int, bytes]]:
    while len(header := stream.read(FRAME_HEADER.size)) == FRAME_HEADER.size:
        size, upto = FRAME_HEADER.unpack(header)
        payload = stream.read(size)
        if len(payload) < size:
            return  # the proxy died mid-frame: it was never acknowledged, the proxy keeps or resends it
        yield upto, payload


class FramedChild:
    """The proxy's side of a framed child process (see the module docstring). A subclass names the child
    and says what its reports mean and what becomes of verdicts the child cannot be given."""

    #: ``python -m`` this module: the child.
    module = ""
    #: The child in the log ("the record writer process").
    name = ""
    #: What a frame carries, in the log ("records").
    items = "verdicts"

    def __init__(self, settings: dict, limit: int):
        self._settings = settings
        #: Verdicts handed off and not yet acknowledged, at most: past that, :meth:`_not_handed`.
        self.limit = limit
        self._queue: deque[Verdict] = deque()
        self._unacked: deque[tuple[int, bytes]] = deque()  # (verdicts handed off up to it, the frame)
        self._out = bytearray()      # bytes for the current child's pipe
        self._handed = 0             # verdicts handed off so far
        self._acked = 0              # ... of which the children have acknowledged this many
        self._proc: subprocess.Popen | None = None
        self._reports = bytearray()  # the current child's report lines, read so far
        self._restart_at = 0.0
        self._backoff = RESTART_BACKOFF[0]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.restarts = 0

    # -- what a subclass says -----------------------------------------------------------------------
    def _not_handed(self, verdicts: list[Verdict]) -> None:
        """Verdicts that do not go to the child: it is ``limit`` behind, or they cannot be packed."""
        raise NotImplementedError

    def _report(self, report: dict) -> None:
        """A report of the current child (its acknowledgement is already taken)."""

    def _ended(self) -> None:
        """The current child has ended, its last report read: keep its totals."""

    # -- event loop side ----------------------------------------------------------------------------
    def submit(self, verdict: Verdict) -> None:
        """Hot path: enqueue and return."""
        self._queue.append(verdict)

    @property
    def unacknowledged(self) -> int:
        """Verdicts handed off that the child has not acknowledged yet."""
        return self._handed - self._acked

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> "FramedChild":
        self._loop = loop or asyncio.get_running_loop()
        self._spawn()
        self._timer = self._loop.call_later(HANDOFF, self._tick)
        return self

    def send(self, message: bytes) -> None:
        """A control message for the child (a frame with count 0; not resent to a restarted child)."""
        self._out += frame(0, message)
        self._pump()

    def handoff(self) -> None:
        """Pack the queue into a frame and push what the pipe takes (never blocks); restart a dead child."""
        self._pack()
        if self._proc is None or self._proc.poll() is not None:
            self._respawn()
        else:
            self._pump()

    def _tick(self) -> None:
        try:
            self.handoff()
        except Exception:  # never stop handing off because of one bad moment
            log.exception("schoolproxy: hand-off to %s failed", self.name)
        finally:
            if not self._closed and self._loop is not None:
                self._timer = self._loop.call_later(HANDOFF, self._tick)

    def _pack(self) -> None:
        while self._unacked and self._unacked[0][0] <= self._acked:
            self._unacked.popleft()
        if not self._queue:
            return
        verdicts = [self._queue.popleft() for _ in range(len(self._queue))]
        if self.unacknowledged + len(verdicts) > self.limit:
            self._not_handed(verdicts)  # the child is behind, dead or hung
            return
        try:
            payload = marshal.dumps(list(map(tuple, verdicts)))
        except (ValueError, TypeError) as e:  # a field of an unexpected type
            log.error("schoolproxy: %d %s could not be handed to %s: %s", len(verdicts), self.items, self.name, e)
            self._not_handed(verdicts)
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
            pass  # the child has gone: _respawn sends every unacknowledged frame again

    # -- the child ----------------------------------------------------------------------------------
    def _spawn(self) -> None:
        if self._proc is not None:
            self._forget(self._proc)
        try:
            proc = subprocess.Popen([sys.executable, "-m", self.module], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, bufsize=0, close_fds=True)
        except OSError as e:
            log.error("schoolproxy: cannot start %s: %s", self.name, e)
            self._proc = None
            return
        self._proc = proc
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
            log.error("schoolproxy: %s exited (code %s); restarting it and sending its %d unacknowledged %s again",
                      self.name, self._proc.returncode, self.unacknowledged, self.items)
            self.restarts += 1
        self._restart_at = now + self._backoff
        self._backoff = min(self._backoff * 2, RESTART_BACKOFF[1])
        self._spawn()

    def _read_reports(self, proc: subprocess.Popen) -> None:
        """Called by the event loop when the child has reported (a few times a second at most)."""
        if not self._read_some(proc) and self._loop is not None:  # it has ended: the next hand-off restarts it
            self._loop.remove_reader(proc.stdout.fileno())

    def _read_some(self, proc: subprocess.Popen) -> bool:
        """Read and apply what the child has written; False at its end."""
        try:
            data = os.read(proc.stdout.fileno(), 65536)
        except BlockingIOError:
            return True
        except (OSError, ValueError):
            data = b""
        if not data:
            return False
        self._reports += data
        *lines, rest = self._reports.split(b"\n")
        self._reports = bytearray(rest)
        for line in lines:
            try:
                report = json.loads(line)
            except ValueError:
                continue
            self._acked = max(self._acked, report.get("ack", 0))
            if report.get("ack", 0):
                self._backoff = RESTART_BACKOFF[0]  # it works: a later crash restarts it promptly
            self._report(report)
        return True

    def _forget(self, proc: subprocess.Popen) -> None:
        """A child that has ended: read what it still had to say, keep its totals, close its pipes."""
        if proc.stdout is not None and not proc.stdout.closed:
            if self._loop is not None:
                self._loop.remove_reader(proc.stdout.fileno())
            if proc.poll() is not None:
                while self._read_some(proc) and select.select([proc.stdout], [], [], 0)[0]:
                    pass
        self._reports = bytearray()
        self._ended()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    # -- shutdown -----------------------------------------------------------------------------------
    def stop(self, timeout: float = 30.0) -> None:
        """Hand over what is queued; the child finishes with everything it was given and exits. What it
        has not acknowledged by then stays in ``_unacked``."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._pack()
        proc = self._proc
        if proc is not None:
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
                while (left := deadline - time.monotonic()) > 0 and select.select([proc.stdout], [], [], left)[0]:
                    if not self._read_some(proc):
                        break
                try:
                    proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.error("schoolproxy: %s did not finish in %.0f s; stopping it", self.name, timeout)
                    proc.kill()
                    proc.wait()
            self._forget(proc)
            self._proc = None
        while self._unacked and self._unacked[0][0] <= self._acked:
            self._unacked.popleft()


# -- the child's side -------------------------------------------------------------------------------
def child_start(nice: int) -> tuple[dict, Iterator[tuple[int, bytes]]] | None:
    """First thing in the child: ignore SIGINT and SIGTERM (a terminal's Ctrl-C and systemd's stop reach
    every process of the group; the child stops when the proxy closes the pipe), run ``nice`` steps below
    the proxy, log to stderr. Returns the settings (the first frame) and the frames after them; None if
    the proxy closed the pipe at once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        os.nice(nice)
    except OSError:
        pass
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    frames = read_frames(sys.stdin.buffer)
    first = next(frames, None)
    if first is None:
        return None
    return json.loads(first[1]), frames


class Reporter:
    """The child's reports: ``make()`` as a JSON line on stdout every ``every`` seconds from a thread (only
    when it differs from the last, with ``only_changes``), and once more at :meth:`last`."""

    def __init__(self, make: Callable[[], dict], every: float, only_changes: bool = False):
        self._make = make
        self._every = every
        self._only_changes = only_changes
        self._lock = threading.Lock()  # the reporter thread, and the last report
        self._sent = ""
        self._done = False

    def start(self) -> "Reporter":
        threading.Thread(target=self._run, name="reports", daemon=True).start()
        return self

    def _run(self) -> None:
        while not self._done:
            time.sleep(self._every)
            try:
                self.send()
            except (BrokenPipeError, ValueError):
                return

    def send(self, always: bool = False) -> None:
        with self._lock:
            line = json.dumps(self._make())
            if always or not self._only_changes or line != self._sent:
                self._write(line)
                self._sent = line

    def write(self, message: dict) -> None:
        """Another report line, from another thread of the child."""
        with self._lock:
            try:
                self._write(json.dumps(message))
            except (BrokenPipeError, ValueError):
                pass  # the proxy has gone: the child still finishes what it was given

    @staticmethod
    def _write(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def last(self) -> None:
        """The last report, once everything is done (the proxy may be gone: then nobody reads it)."""
        self._done = True
        try:
            self.send(always=True)
        except (BrokenPipeError, ValueError):
            pass
