"""Pages addon: the proxy answers requests for its own name (``block_page.pages_host``) itself — the
unblock request form and the acceptable-use notice (:mod:`schoolproxy.standards.pages`) — and keeps the
unblock and notice state the request path reads (:class:`~schoolproxy.standards.live.LiveState`)
fresh from the database: every few seconds it asks the record writer process, which holds the database,
and applies its answer on the event loop when something changed, so that no thread of the proxy reads
it while requests are in flight (only at start-up, until it is first loaded, a worker thread reads it too).

Requests for the pages are never forwarded and never decided by the filtering policy: the enforce
addon leaves a flow marked :data:`PAGE` alone. Pages are built in a worker thread (they may read or
write the database); a person may load at most :data:`PER_MINUTE` of them a minute.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import time
from collections.abc import Awaitable
from zoneinfo import ZoneInfo

from mitmproxy import ctx, http

from schoolproxy.identity.profiles import Identity
from schoolproxy.proxy.identify import IDENTITY
from schoolproxy.proxy.record import Record
from schoolproxy.records import open_database
from schoolproxy.snapshot import Snapshot, SnapshotHolder
from schoolproxy.standards import notice, pages
from schoolproxy.standards.live import LiveState, read_live

log = logging.getLogger(__name__)

#: Set on a flow this addon answers: no other addon decides, forwards or records it.
PAGE = "schoolproxy.page"
PER_MINUTE = 30
_TEXT = {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"}


class Pages:
    def __init__(self, snapshots: SnapshotHolder, live: LiveState, records: Record):
        self.snapshots = snapshots
        self.state = live
        self.records = records
        self.db = None
        self._key: bytes | None = None
        self._task: asyncio.Task | None = None
        self._recent: dict[str, collections.deque[float]] = {}

    def load(self, loader) -> None:
        loader.add_option("schoolproxy_pages_refresh_ms", int, 3000,
                          "Milliseconds between loads of expiring allows, unblock outcomes and notice acceptances.")

    def running(self) -> None:
        snap = self.snapshots.snapshot
        if snap is None or self._task is not None:
            return
        cfg = snap.config
        key_dir = cfg.path(cfg.proxy.ca_dir)
        key_dir.mkdir(parents=True, exist_ok=True)
        self._key = pages.load_key(key_dir / "forms.key")
        if cfg.records.enabled:
            self.db = open_database(cfg.database_url())
        self._task = asyncio.create_task(self._refresh_loop(ctx.options.schoolproxy_pages_refresh_ms / 1000))

    def done(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _refresh_loop(self, every: float) -> None:
        while True:
            snap = self.snapshots.snapshot
            writer = self.records.writer
            if writer is not None and snap is not None:
                writer.on_live = self._answered  # (the writer process is started after this addon's running)
                config = snap.config
                now = dt.datetime.now(dt.timezone.utc)
                since = notice.renewal_start(config, now) if config.notice.enabled else None
                if not self.state.loaded and self.db is not None:
                    # At start-up, until it is loaded, read it here too: the writer process takes a second
                    # or two to start, and the notice waits for the state.
                    try:
                        self._answered(await asyncio.to_thread(read_live, self.db, [], since))
                    except Exception as e:  # the records database may still be being created
                        log.debug("schoolproxy: unblock and notice state not loaded yet: %s", e)
                writer.ask_live(self.state.take_told(), since)
            await asyncio.sleep(every)

    def _answered(self, live: dict) -> None:
        """The record writer process's answer: what changed in the unblock and notice state."""
        snap = self.snapshots.snapshot
        if snap is None:
            return
        expiring = self.state.apply(live, ZoneInfo(snap.config.timezone))
        if expiring is not None and expiring.stamp != snap.expiring.stamp:
            self.snapshots.set_expiring(expiring)
            log.info("schoolproxy: %d expiring allow(s) in force", len(expiring))

    # -- requests ---------------------------------------------------------------------------------
    def requestheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if flow.response or flow.error or not flow.live:
            return None
        snap = self.snapshots.snapshot
        if snap is None:
            return None
        host = flow.request.host
        pages_host = snap.config.block_page.pages_host
        if host != pages_host and host.lower().rstrip(".") != pages_host:
            return None
        flow.metadata[PAGE] = True
        req = flow.request
        if req.method not in ("GET", "HEAD", "POST"):
            flow.response = http.Response.make(405, "Method not allowed.\n", {**_TEXT, "Allow": "GET, POST"})
            return None
        if not self._allowed(self._subject(flow)):
            flow.response = http.Response.make(429, "Too many requests; wait a minute.\n", {**_TEXT, "Retry-After": "60"})
            return None
        if req.method == "POST":
            length = req.headers.get("content-length", "")
            if "transfer-encoding" in req.headers or not length.isdigit():
                flow.response = http.Response.make(411, "A form must be sent with its length.\n", _TEXT)
            elif int(length) > pages.MAX_BODY:
                flow.response = http.Response.make(413, "That is too long.\n", _TEXT)
            return None  # answered in `request`, once the (small) body has arrived
        return self._answer(flow, snap)

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if PAGE not in flow.metadata or flow.response or flow.error or not flow.live:  # cheapest test first
            return None
        snap = self.snapshots.snapshot
        assert snap is not None
        return self._answer(flow, snap)

    async def _answer(self, flow: http.HTTPFlow, snap: Snapshot) -> None:
        req = flow.request
        identity = flow.metadata.get(IDENTITY) or snap.subnets.identity_of(flow.client_conn.peername[0])
        page_request = pages.PageRequest(
            req.method, req.scheme, req.path or "/", {k.lower(): v for k, v in req.headers.items()},
            (req.raw_content or b"") if req.method == "POST" else b"", identity, flow.client_conn.peername[0])
        context = pages.PagesContext(snap.config, self.db, self._key or b"", recent=self.state.recent,
                                     accepted=self.state.accepted)
        try:
            page = await asyncio.to_thread(pages.handle, context, page_request)
        except Exception:
            log.exception("schoolproxy: the page %s failed", req.path[:100])
            page = pages.message(snap.config, 500, "Something went wrong",
                                 ["Please try again in a minute, or tell your teacher."])
        if flow.live and flow.response is None:
            flow.response = http.Response.make(page.status, b"" if req.method == "HEAD" else page.body, page.headers)

    # -- limits -----------------------------------------------------------------------------------
    def _subject(self, flow: http.HTTPFlow) -> str:
        ident: Identity | None = flow.metadata.get(IDENTITY)
        return pages.subject_of(ident, flow.client_conn.peername[0]) if ident else f"ip:{flow.client_conn.peername[0]}"

    def _allowed(self, subject: str) -> bool:
        now = time.monotonic()
        times = self._recent.get(subject)
        if times is None:
            if len(self._recent) > 50_000:
                self._recent.clear()
            times = self._recent[subject] = collections.deque(maxlen=PER_MINUTE)
        while times and times[0] < now - 60:
            times.popleft()
        if len(times) >= PER_MINUTE:
            return False
        times.append(now)
        return True
