"""Reload addon: on SIGHUP or when the config, users file or a list changes, build a new snapshot in a
worker thread and swap it in atomically. A refused config is logged with its reason and the running
one keeps serving; connections are never dropped."""

from __future__ import annotations

import asyncio
import logging
import math
import signal
from collections.abc import Iterable

from mitmproxy import ctx
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric

from schoolproxy.config import ConfigError
from schoolproxy.metrics import Scraped
from schoolproxy.monitoring.pending import nowhere_to_go
from schoolproxy.proxy.heap import freeze_heap
from schoolproxy.proxy.loadconfig import upstream_mismatch
from schoolproxy.snapshot import SnapshotHolder

log = logging.getLogger(__name__)

#: Watched files looked at in one go on the event loop. A stat() costs a few microseconds: the few hundred
#: files of a full UT1 tree at once would hold the loop for a millisecond or more, and in a worker thread
#: every call hands the interpreter lock to and fro with the loop.
WATCH_SLICE = 50


class Reload:
    def __init__(self, snapshots: SnapshotHolder, registry: CollectorRegistry):
        self.snapshots = snapshots
        self.reloads = {"ok": 0, "refused": 0}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._refused_state: object = None
        registry.register(Scraped(self._metrics))

    def load(self, loader) -> None:
        loader.add_option("schoolproxy_reload_ms", int, 2000,
                          "Milliseconds between checks for changed config, users and list files (0 = only on SIGHUP).")

    def running(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, self.trigger, "SIGHUP")
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / platform
            log.debug("SIGHUP reload not available here")
        if ctx.options.schoolproxy_reload_ms > 0:
            self._task = asyncio.create_task(self._watch(ctx.options.schoolproxy_reload_ms / 1000))

    def done(self) -> None:
        if self._task:
            self._task.cancel()
        try:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        except (RuntimeError, ValueError, NotImplementedError):
            pass

    def trigger(self, why: str) -> None:
        asyncio.get_running_loop().create_task(self.reload(why, force=True))

    async def _watch(self, interval: float) -> None:
        """Every watched file is looked at once an interval, a slice at a time, on the event loop."""
        while True:
            snap = self.snapshots.snapshot
            slices = max(1, math.ceil(len(snap.watched) / WATCH_SLICE)) if snap is not None else 1
            for i in range(slices):
                await asyncio.sleep(interval / slices)
                try:
                    if self.snapshots.changed(slice(i, None, slices)):
                        await self.reload("file change")
                        break  # the new snapshot's files, from the start
                except Exception:  # never let one bad check end the watching
                    log.exception("schoolproxy: checking for changed files failed")

    async def reload(self, why: str, force: bool = False) -> bool:
        async with self._lock:
            state = await asyncio.to_thread(self.snapshots.file_state)
            if not force and state == self._refused_state:
                return False  # already refused this exact set of files; wait for the next edit
            try:
                snap = await asyncio.to_thread(self.snapshots.build)
            except ConfigError as e:
                self._refused_state = state
                self.reloads["refused"] += 1
                log.error("schoolproxy: reload (%s) REFUSED — still serving the previous configuration:\n%s",
                          why, e)
                return False
            except Exception:
                self._refused_state = state
                self.reloads["refused"] += 1
                log.exception("schoolproxy: reload (%s) failed — still serving the previous configuration", why)
                return False
            problem = upstream_mismatch(snap.config.proxy.upstream, list(ctx.options.mode))
            if problem:
                self._refused_state = state
                self.reloads["refused"] += 1
                log.error("schoolproxy: reload (%s) REFUSED — still serving the previous configuration: %s; "
                          "changing the upstream filter needs a restart", why, problem)
                return False
            self.snapshots.swap(snap)
            self.reloads["ok"] += 1
            self._refused_state = None
            freeze_heap()
            log.info("schoolproxy: reloaded (%s): %d profiles, %d list entries", why,
                     len(snap.policy.profiles), len(snap.lists))
            for warning in nowhere_to_go(snap.config):
                log.warning("schoolproxy: %s", warning)
            return True

    def _metrics(self) -> Iterable[Metric]:
        reloads = CounterMetricFamily("schoolproxy_config_reloads", "Configuration reloads, by result.",
                                      labels=["result"])
        for result, n in self.reloads.items():
            reloads.add_metric([result], n)
        yield reloads
