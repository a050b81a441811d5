"""make soak: the proxy under hostile load for a few minutes — does memory stay bounded, and do real users
still get their pages?

`schoolproxy run` (records on) chained to the stand-in upstream (tests/internet.py), and at once:

  users      8 signed-in browsers, one request after another: allowed pages (200) and blocked ones (403)
  slowloris  40 connections trickling a request head, a byte a second (408 after header_timeout_seconds)
  silent     30 connections that never send anything (closed after idle_timeout_seconds)
  unsigned   2 clients POSTing 20 MB bodies without signing in (407), over and over
  uploads    2 signed-in clients uploading 10 MB to an allowed site (streamed through)
  headers    1 client sending 1 MB header lines (431)
  guessing   bursts of 20 wrong passwords at once from one address, every 10 s

It reports the proxy's resident memory (start, peak, end), the users' failed requests (an error, a time-out
or a wrong status) and their latency, and what the hostile clients got. SOAK_SECONDS sets the length
(default 180). The last line is machine-readable.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import PASSWORD, make_school  # noqa: E402
from internet import Internet  # noqa: E402

SECONDS = int(os.environ.get("SOAK_SECONDS", "180"))
LIMITS = {"header_timeout_seconds": 10, "idle_timeout_seconds": 30}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def basic(user: str, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def rss_kb(pid: int) -> int:
    """Resident memory of the proxy process and its children (the records writer)."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Load:
    def __init__(self, port: int, deadline: float):
        self.port, self.deadline = port, deadline
        self.outcomes: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.failures: Counter[str] = Counter()

    async def open(self, source: str = "127.0.0.1"):
        return await asyncio.open_connection("127.0.0.1", self.port, local_addr=(source, 0))

    # -- real users ------------------------------------------------------------------------------------
    async def user(self, i: int) -> None:
        auth = basic(f"pupil{i % 4}" if i % 2 else "teacher1")
        pages = [("learning.test", "/lesson", 200), ("socialsite.test", "/feed", 403 if i % 2 else 200),
                 ("www.google.com", "/search?q=volcanoes", 200), ("example.org", f"/page{i}", 200)]
        n, conn = 0, None
        while time.monotonic() < self.deadline:
            host, path, expected = pages[n % len(pages)]
            n += 1
            started = time.monotonic()
            try:
                if conn is None:
                    conn = await asyncio.wait_for(self.open(), 10)
                reader, writer = conn
                writer.write(f"GET http://{host}{path} HTTP/1.1\r\nHost: {host}\r\nProxy-Authorization: {auth}"
                             f"\r\n\r\n".encode())
                status, closes = await asyncio.wait_for(_read_response(reader), 10)
                self.latencies.append(time.monotonic() - started)
                if status != expected:
                    self.failures[f"status {status} for {host}"] += 1
                if closes:
                    writer.close()
                    conn = None
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
                self.failures[type(e).__name__] += 1
                if conn is not None:
                    conn[1].close()
                conn = None
                await asyncio.sleep(0.1)

    # -- hostile clients -------------------------------------------------------------------------------
    async def slowloris(self, i: int) -> None:
        head = b"GET http://learning.test/ HTTP/1.1\r\nHost: learning.test\r\nX-Slow: " + b"a" * 200
        while time.monotonic() < self.deadline:
            try:
                reader, writer = await self.open(f"127.0.1.{i % 200 + 1}")
                for b in head:
                    writer.write(bytes([b]))
                    await writer.drain()
                    try:
                        line = await asyncio.wait_for(reader.readline(), 1.0)
                    except asyncio.TimeoutError:
                        continue
                    self.outcomes["slowloris " + (line.split(b" ")[1].decode() if line else "closed")] += 1
                    break
                writer.close()
            except OSError:
                self.outcomes["slowloris refused"] += 1
                await asyncio.sleep(1)

    async def silent(self, i: int) -> None:
        while time.monotonic() < self.deadline:
            try:
                reader, writer = await self.open(f"127.0.2.{i % 200 + 1}")
                data = await asyncio.wait_for(reader.read(1), max(0.1, self.deadline - time.monotonic()))
                self.outcomes["silent closed by proxy" if data == b"" else "silent got data"] += 1
                writer.close()
            except asyncio.TimeoutError:
                return
            except OSError:
                self.outcomes["silent refused"] += 1
                await asyncio.sleep(1)

    async def post(self, i: int, size: int, signed_in: bool) -> None:
        what = "upload" if signed_in else "unsigned"
        chunk = os.urandom(1 << 20)
        while time.monotonic() < self.deadline:
            try:
                reader, writer = await self.open(f"127.0.3.{i + 1}")
                auth = f"Proxy-Authorization: {basic('pupil1')}\r\n" if signed_in else ""
                writer.write(f"POST http://learning.test/upload HTTP/1.1\r\nHost: learning.test\r\n{auth}"
                             f"Content-Length: {size}\r\nConnection: close\r\n\r\n".encode())
                for _ in range(size >> 20):
                    writer.write(chunk)
                    await writer.drain()
                status, _ = await asyncio.wait_for(_read_response(reader), 60)
                self.outcomes[f"{what} {status}"] += 1
                writer.close()
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
                self.outcomes[f"{what} {type(e).__name__}"] += 1
                await asyncio.sleep(0.5)

    async def big_headers(self) -> None:
        while time.monotonic() < self.deadline:
            try:
                reader, writer = await self.open("127.0.4.1")
                writer.write(b"GET http://learning.test/ HTTP/1.1\r\nHost: learning.test\r\nX-Big: " + b"a" * (1 << 20))
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), 10)
                self.outcomes["header " + (line.split(b" ")[1].decode() if line else "closed")] += 1
                writer.close()
            except (OSError, asyncio.TimeoutError):
                self.outcomes["header refused"] += 1
            await asyncio.sleep(0.5)

    async def guessing(self) -> None:
        n = 0
        while time.monotonic() < self.deadline:
            async def guess(k: int) -> None:
                try:
                    reader, writer = await self.open("127.0.5.1")
                    writer.write(f"GET http://learning.test/ HTTP/1.1\r\nHost: learning.test\r\nProxy-Authorization: "
                                 f"{basic('pupil2', f'guess{k}')}\r\n\r\n".encode())
                    line = await asyncio.wait_for(reader.readline(), 5)
                    self.outcomes["guess " + (line.split(b" ")[1].decode() if line else "closed")] += 1
                    writer.close()
                except (OSError, asyncio.TimeoutError):
                    self.outcomes["guess waited over 5 s"] += 1
            await asyncio.gather(*(guess(n + k) for k in range(20)))
            n += 20
            await asyncio.sleep(10)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    status = int((await reader.readline()).split()[1])
    length, closes, chunked = 0, False, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value == "close":
            closes = True
        elif name == "transfer-encoding" and "chunked" in value:
            chunked = True
    if chunked:
        while (size := int((await reader.readline()).strip(), 16)) > 0:
            await reader.readexactly(size + 2)
        await reader.readline()
    elif length:
        await reader.readexactly(length)
    return status, closes


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="schoolproxy-soak-") as tmp, Internet(Path(tmp) / "net") as internet:
        root = Path(tmp)
        config = make_school(root, upstream=internet.proxy_url, users=("pupil0", "pupil1", "pupil2", "pupil3",
                                                                        "teacher1"))
        data = yaml.safe_load(config.read_text())
        data["proxy"]["limits"] = LIMITS
        data["identity"]["groups"]["year4"]["members"] = ["pupil0", "pupil1", "pupil2", "pupil3"]
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        port = free_port()
        log = open(root / "proxy.log", "wb")
        proc = subprocess.Popen([str(BIN / "schoolproxy"), "run", "--config", str(config), "--listen-port", str(port)],
                                cwd=root, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        print((root / "proxy.log").read_text(), file=sys.stderr)
                        return 1
                    time.sleep(0.2)
            time.sleep(2)
            start = rss_kb(proc.pid)
            samples: list[int] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(1.0):
                    samples.append(rss_kb(proc.pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            print(f"soak: {SECONDS} s of mixed traffic against schoolproxy run (pid {proc.pid}); RSS at start "
                  f"{start / 1024:.0f} MB", flush=True)
            load = Load(port, time.monotonic() + SECONDS)

            async def everything() -> None:
                await asyncio.gather(
                    *(load.user(i) for i in range(8)), *(load.slowloris(i) for i in range(40)),
                    *(load.silent(i) for i in range(30)), *(load.post(i, 20 << 20, False) for i in range(2)),
                    *(load.post(10 + i, 10 << 20, True) for i in range(2)), load.big_headers(), load.guessing())

            asyncio.run(everything())
            time.sleep(5)  # connections close, buffers drain
            stop.set()
            sampler.join()
            end = rss_kb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
        text = (root / "proxy.log").read_text(errors="replace")
    done = len(load.latencies)
    failed = sum(load.failures.values())
    peak = max(samples + [start, end])
    lat = sorted(load.latencies) or [0.0]
    p50, p99 = statistics.median(lat) * 1000, lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    print(f"users: {done} requests, {failed} failed ({', '.join(f'{k}: {v}' for k, v in load.failures.items()) or 'none'}); "
          f"latency p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    for key, n in sorted(load.outcomes.items()):
        print(f"  {key:<32} {n}")
    print(f"proxy RSS (with its record writer): start {start / 1024:.0f} MB, peak {peak / 1024:.0f} MB, "
          f"end {end / 1024:.0f} MB; tracebacks in its log: {text.count('Traceback')}")
    print(f"soak: seconds={SECONDS} requests={done} failed={failed} p99_ms={p99:.0f} rss_start_mb={start / 1024:.0f} "
          f"rss_peak_mb={peak / 1024:.0f} rss_end_mb={end / 1024:.0f} tracebacks={text.count('Traceback')}")
    return 0 if failed == 0 and "Traceback" not in text else 1


if __name__ == "__main__":
    sys.exit(main())
