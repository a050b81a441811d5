"""``schoolproxy run --workers N``: N proxy processes sharing one listening port.

mitmproxy runs on one asyncio loop, so one process uses one core. The kernel's SO_REUSEPORT lets N
processes each bind the same address and port; it spreads new connections across them by a hash of
the connection, and every worker accepts its connections itself, so the client's real address —
which identity depends on (logon feed, subnets, device) — reaches the worker unchanged. We chose it
over nftables load balancing (``numgen`` + DNAT to N ports) because it needs no firewall rules, no root
and nothing to clean up, and over a balancer of our own because that would hide the client's address.
Only processes of the same user can join the port's group (a Linux rule), so nothing else can steal it.

What the workers share: the compiled list cache (memory-mapped, so the pages are shared), the records
database (each worker has its own writer and its own spool file), the live logons (worker 0 runs the
logon feed and saves the table; the others follow the saved file within a second), the alert tables.
Worker 0 alone runs what must happen once: the logon feed listener, alert delivery and the weekly
digest, and the retention purge. Each worker serves its own metrics on the configured port + its
number (Prometheus scrapes each; the shipped scrape config lists them).

The supervisor (this module's :func:`supervise`) starts the workers, forwards SIGHUP (reload) and
SIGTERM/SIGINT (clean shutdown: every worker flushes its records) and restarts a worker that dies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from schoolproxy.snapshot import WORKER_ENV

RESTART_LIMIT = 5  # a worker dying this many times within a minute stops the proxy


def supervise(argv: list[str], workers: int) -> int:
    """Run ``argv`` (a ``schoolproxy run`` command line) as ``workers`` processes until told to stop."""
    procs: dict[int, subprocess.Popen] = {}
    deaths: list[float] = []
    stopping = False

    def start(i: int) -> None:
        env = {**os.environ, WORKER_ENV: f"{i}/{workers}"}
        procs[i] = subprocess.Popen(argv, env=env)

    def forward(sig: int, _frame=None) -> None:
        nonlocal stopping
        if sig != signal.SIGHUP:
            stopping = True
        for p in procs.values():
            if p.poll() is None:  # SIGTERM, not SIGINT: a worker still starting exits without a traceback
                p.send_signal(signal.SIGHUP if sig == signal.SIGHUP else signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for i in range(workers):
        start(i)
    print(f"schoolproxy: {workers} workers sharing the port (SO_REUSEPORT), pids "
          f"{', '.join(str(p.pid) for p in procs.values())}", flush=True)
    status = 0
    while procs:
        time.sleep(0.2)
        for i, p in list(procs.items()):
            code = p.poll()
            if code is None:
                continue
            del procs[i]
            if stopping:
                status = status or (code if code > 0 else 0)
                continue
            now = time.monotonic()
            deaths[:] = [t for t in deaths if now - t < 60] + [now]
            if len(deaths) >= RESTART_LIMIT:
                print(f"schoolproxy: worker {i} keeps exiting (code {code}); stopping", file=sys.stderr, flush=True)
                forward(signal.SIGTERM)
                status = 1
                continue
            print(f"schoolproxy: worker {i} exited (code {code}); restarting it", file=sys.stderr, flush=True)
            start(i)
    return status
