"""Content addon (real-time content, SPEC §5.11): the text of allowed responses to profiles that score
content is scored with the same phrase lists as search terms.

- A response of known, modest length is read whole by mitmproxy; at ``response`` its first ``max_kb`` of
  decoded text is scored. Over the block score it is replaced by the block page (403, the theme as the
  reason); over the alert score the verdict carries the finding, and the alert rules raise it.
- Server-sent events and NDJSON (streamed AI-chat replies) are scored as they stream: each chunk is
  scored before it is forwarded, and the reply is cut off at the chunk that crosses the block score — a
  last event says so, nothing after it reaches the pupil, and the verdict is published at once.
- Any other response (no length, or a large one) is held back up to ``max_kb`` decoded, scored, then
  passed on — or replaced by the block page, re-encoded in the response's own encoding.

Bounded whatever the server sends: decompression stops at the limit (a compression bomb costs no more
than a page), held-back data is bounded, an endless stream is scored chunk by chunk with constant memory.
A body that cannot be decoded, or a failure while scoring, blocks (fail closed): a profile that requires
scoring never gets a page unscored. Help sites are scored for alerts but never blocked.

The phrase lists are loaded (about a second's work) in a worker thread, when a configuration or a list
file changes: pages are scored with the lists before until the new ones are ready, and an edit that does
not load is refused, the lists before kept. Only at start-up, before any lists are ready, does a pupil's
page wait for them (briefly; then it is blocked as one that could not be checked).

This addon sits before ``Enforce`` in the pipeline: its ``response`` hook must finish the verdict
(block, content findings) before ``Enforce.response`` publishes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mitmproxy import http
from mitmproxy.net import encoding
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from schoolproxy.filtering import blockpage
from schoolproxy.metrics import Scraped
from schoolproxy.monitoring.content import (
    ContentError,
    ContentRule,
    Decoder,
    EventText,
    Outcome,
    StreamScore,
    charset_of,
    content_rule,
    extract,
    judge,
    kind_of,
)
from schoolproxy.monitoring.message import label
from schoolproxy.monitoring.phrases import PhraseLists, load_phrase_lists
from schoolproxy.proxy.enforce import VERDICT
from schoolproxy.snapshot import Snapshot, SnapshotHolder
from schoolproxy.verdict import Verdict

log = logging.getLogger(__name__)

CONTENT = "schoolproxy.content"
BUFFERED_MAX = 2 * 1024 * 1024     # a declared length up to this is read whole by mitmproxy
STREAM_MAX = 32 * 1024 * 1024      # a streamed reply longer than this (decoded) is cut off: bounded work
#: At start-up, before the first phrase lists are ready, a pupil's page waits for them up to this long (then
#: it is blocked as one that could not be checked).
FIRST_LOAD_WAIT = 10.0
_BLOCK_HEADERS = {"content-type": "text/html; charset=utf-8", "cache-control": "no-store"}


@dataclass
class _Scan:
    kind: str
    rule: ContentRule
    lists: PhraseLists | None
    streamed: bool = False


class Content:
    def __init__(self, snapshots: SnapshotHolder, publish: Callable[[Verdict], None],
                 registry: CollectorRegistry | None = None):
        self.snapshots = snapshots
        #: Where a verdict goes when a cut-off reply ends it early (the verdict bus).
        self.publish = publish
        #: The phrase lists pages are scored with; while newer ones load (in a worker thread), these.
        self._lists: PhraseLists | None = None
        #: The last load tried is the one that failed with no lists to fall back on: pages are all blocked.
        self._failed = False
        self._loading: asyncio.Task | None = None
        self._generation = 0                            # of the latest load started: an older one is dropped
        self._tried: tuple[tuple, object] | None = None  # (phrase files, config) of the latest load started
        self._seen: Snapshot | None = None
        if registry is not None:
            registry.register(Scraped(self._metrics))
        snapshots.on_config(self._configured)

    # -- hooks ------------------------------------------------------------------------------------
    def wants(self, event: str) -> bool:
        snap = self.snapshots.snapshot
        return snap is None or any(p.content.scan for p in snap.config.profiles.values())

    def responseheaders(self, flow: http.HTTPFlow):
        if flow.error or flow.response is None or not flow.live:
            return
        verdict = flow.metadata.get(VERDICT)
        if verdict is None or verdict.action != "allow" or flow.request.method == "HEAD":
            return
        resp = flow.response
        if resp.status_code < 200 or resp.status_code in (204, 304):
            return
        snap = self.snapshots.snapshot
        if snap is None:
            return
        rule = content_rule(snap.config, verdict.profile, verdict.host, verdict.categories, verdict.rule)
        if not rule.scan:
            return
        kind = kind_of(resp.headers.get("content-type"))
        if kind is None:
            return
        lists = self._phrase_lists(snap)
        if lists is None and self._loading is not None:
            return self._after_first_load(flow, verdict, rule, kind, snap)  # start-up: the lists are on their way
        self._scan(flow, verdict, rule, kind, snap, lists)

    async def _after_first_load(self, flow: http.HTTPFlow, verdict: Verdict, rule: ContentRule, kind: str,
                                snap: Snapshot) -> None:
        """A pupil's page that arrives before the first phrase lists are ready waits for them (briefly, and
        only at start-up): blocking it as unchecked would put a false block in front of the pupil and in
        the records for a second's start-up. Still never shown unscored: no lists in time, blocked."""
        loading = self._loading
        if loading is not None:
            try:
                await asyncio.wait_for(asyncio.shield(loading), FIRST_LOAD_WAIT)
            except Exception:  # too slow (blocked below), or failed (said by the loader)
                pass
        if flow.response is None or not flow.live:
            return
        self._scan(flow, verdict, rule, kind, snap, self._lists)

    def _scan(self, flow: http.HTTPFlow, verdict: Verdict, rule: ContentRule, kind: str, snap: Snapshot,
              lists: PhraseLists | None) -> None:
        resp = flow.response
        scan = _Scan(kind, rule, lists)
        flow.metadata[CONTENT] = scan
        if kind in ("sse", "ndjson"):
            scan.streamed = True
            flow.response.stream = _ReplyStream(self, flow, verdict, scan, snap)
            return
        length = resp.headers.get("content-length", "")
        # resp.stream already set: mitmproxy streams a body over proxy.limits.stream_bytes, so it would
        # never be read whole here
        if resp.stream or not (length.isdigit() and int(length) <= BUFFERED_MAX):
            scan.streamed = True
            flow.response.stream = _HeldBack(self, flow, verdict, scan, snap)

    def response(self, flow: http.HTTPFlow) -> None:
        scan = flow.metadata.pop(CONTENT, None)
        verdict = flow.metadata.get(VERDICT)
        if scan is None or scan.streamed or verdict is None or flow.response is None:
            return
        snap = self.snapshots.snapshot
        resp = flow.response
        try:
            if scan.lists is None:
                raise ContentError("the phrase lists are not loaded")
            limit = scan.rule.settings.max_kb * 1024
            data = Decoder(resp.headers.get("content-encoding"), limit).feed(resp.raw_content or b"")
            outcome = self.score(scan, extract(scan.kind, data, charset_of(resp.headers.get("content-type"))))
        except Exception as e:  # fail closed: a page that cannot be scored is not shown
            verdict = flow.metadata[VERDICT] = self.unreadable(verdict, scan, e)
            flow.response = self.block_page(flow, verdict, snap)
            return
        verdict, blocked = self.apply(verdict, scan, outcome, "page")
        flow.metadata[VERDICT] = verdict
        if blocked:
            flow.response = self.block_page(flow, verdict, snap)

    # -- shared by the hooks and the stream handlers ----------------------------------------------
    @staticmethod
    def score(scan: _Scan, text: str) -> Outcome:
        lists = scan.lists
        assert lists is not None
        s = scan.rule.settings
        # The words as on the page are looked up only for themes that will be shown (alert or block).
        return judge(lists.score_content(text, evidence_at=min(s.alert_score, s.block_score)), scan.rule)

    @staticmethod
    def apply(verdict: Verdict, scan: _Scan, outcome: Outcome, kind: str) -> tuple[Verdict, bool]:
        """The verdict with the findings on it, and whether the response is to be blocked."""
        s = scan.rule.settings
        findings = {f[0]: f for f in verdict.content}
        for sc in outcome.alerts:
            blocked = outcome.block is not None and sc.theme == outcome.block.theme
            findings[sc.theme] = (sc.theme, sc.score, sc.matched[:5], "block" if blocked else "alert",
                                  s.block_score if blocked else s.alert_score, kind)
        verdict = verdict._replace(content=tuple(findings.values()))
        if outcome.block is None:
            return verdict, False
        sc = outcome.block
        return verdict._replace(action="block", rule=f"content:{sc.theme}", reason=(
            f"its content is about {label(sc.theme).lower()} (score {sc.score}, blocked at {s.block_score})")), True

    @staticmethod
    def unreadable(verdict: Verdict, scan: _Scan, error: Exception) -> Verdict:
        log.warning("schoolproxy: content of %s could not be scored (%s); blocked to be safe",
                    verdict.host[:253], str(error)[:120])
        return verdict._replace(action="block", rule="content:unreadable",
                                reason="its content could not be checked, so it was blocked to be safe")

    def block_page(self, flow: http.HTTPFlow, verdict: Verdict, snap: Snapshot | None) -> http.Response:
        body = self.block_html(flow, verdict, snap)
        resp = http.Response.make(403, body, _BLOCK_HEADERS)
        resp.headers["x-schoolproxy-reference"] = verdict.ref
        return resp

    @staticmethod
    def block_html(flow: http.HTTPFlow, verdict: Verdict, snap: Snapshot | None) -> bytes:
        if flow.request.method == "HEAD":
            return b""
        school, bp = (snap.config.school, snap.config.block_page) if snap is not None else ("", None)
        return blockpage.render(verdict, flow.request.url, school, bp.report_to if bp else "",
                                bp.report_email if bp else "")

    # -- the phrase lists, loaded off the event loop --------------------------------------------------
    def _phrase_lists(self, snap: Snapshot) -> PhraseLists | None:
        """The lists to score with now. A new snapshot whose phrase list files differ (or a new
        configuration, after lists that failed) starts loading them in a worker thread; until they are
        ready, pages are scored with the lists before."""
        if snap is not self._seen:
            self._seen = snap
            self._maybe_load(snap)
        return self._lists

    def _configured(self, snap: Snapshot) -> None:
        """A new configuration: start loading its lists now, not at the first page scored."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # start-up, before the loop runs: ``running`` starts the load
        self._phrase_lists(snap)

    def running(self) -> None:
        snap = self.snapshots.snapshot
        if snap is not None:
            self._phrase_lists(snap)  # at start-up, not on the first pupil's page

    def _maybe_load(self, snap: Snapshot) -> None:
        cfg = snap.config
        if not any(p.content.scan for p in cfg.profiles.values()):
            return  # nothing scored: nothing to load (a config that scores again loads them then)
        tried = self._tried
        if tried is not None and tried[0] == snap.phrase_files and (tried[1] is cfg or not self._failed):
            return  # these files are loaded or loading (and failed lists are tried again on a new config)
        self._tried = (snap.phrase_files, cfg)
        self._generation += 1
        path = cfg.path(cfg.alerts.phrases)
        scoring = [n for n, p in cfg.profiles.items() if p.content.scan]
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a tool or test driving the hooks by hand): load here
            self._loaded(self._generation, path, scoring)
            return
        self._loading = asyncio.create_task(self._load(self._generation, path, scoring))

    async def _load(self, generation: int, path: Path, scoring: list[str]) -> None:
        # ~1 s of work: on the event loop every connection of the proxy would stall for it, at each reload
        try:
            await asyncio.to_thread(self._loaded, generation, path, scoring)
        finally:
            if generation == self._generation:
                self._loading = None

    def _loaded(self, generation: int, path: Path, scoring: list[str]) -> None:
        """Load the lists and put them in use, or say why not. Runs in the worker thread: the hooks read
        ``self._lists`` with a single reference read, so the swap needs no lock."""
        try:
            lists = load_phrase_lists(path)
            lists.prepare_content()  # the page automata now, not on the first page scored
        except Exception as e:  # PhraseError names the file and line; anything else is as bad for the pages
            if generation != self._generation:
                return  # a newer load has been started
            if self._lists is not None:
                # Lists were running: a mistake in an edit must not leave pages unscored, nor block them
                # all. The running lists are kept; the edit is refused loudly.
                log.error("schoolproxy: content scoring: phrase list edit REFUSED — still scoring pages with the "
                          "previous phrase lists: %s. Fix it (schoolproxy check says what is wrong)", e)
                return
            # A warning, not an error: mitmdump ends a start-up that logs an error, and then no one could
            # browse at all. Said loudly, and counted in the metrics (schoolproxy_content_scoring_off).
            log.warning("schoolproxy: CONTENT SCORING IS OFF — content scoring: phrase lists not loaded, "
                        "EVERY PAGE is blocked for profiles that score content (%s), to be safe: %s. Fix "
                        "them (schoolproxy check says what is wrong), then reload the proxy", ", ".join(scoring), e)
            self._failed = True
            return
        if generation != self._generation:
            return
        if self._failed:
            log.info("schoolproxy: content scoring: phrase lists loaded, pages are scored again")
        elif self._lists is not None:
            log.info("schoolproxy: content scoring: phrase lists loaded again (%s)", path)
        self._lists, self._failed = lists, False

    def _metrics(self) -> Iterable[Metric]:
        snap = self.snapshots.snapshot
        scoring = snap is not None and any(p.content.scan for p in snap.config.profiles.values())
        # Off while no lists are in use because they failed to load (not while the first ones load, nor
        # when an edit was refused and the lists before it still score).
        off = scoring and self._lists is None and self._failed
        yield GaugeMetricFamily("schoolproxy_content_scoring_off", "1 when profiles score page content but the "
                                "phrase lists could not be loaded (their pages are all blocked, to be safe), else 0.",
                                value=1 if off else 0)


@dataclass
class _ReplyStream:
    """``flow.response.stream`` for server-sent events and NDJSON: scored chunk by chunk, cut off at the
    chunk that crosses the block score. The body is forwarded decoded (its encoding header removed)."""

    addon: Content
    flow: http.HTTPFlow
    verdict: Verdict
    scan: _Scan
    snap: Snapshot
    cut: bool = False
    decoder: Decoder = field(init=False)
    events: EventText = field(init=False)
    scores: StreamScore | None = field(init=False)

    def __post_init__(self) -> None:
        headers = self.flow.response.headers
        self.events = EventText(self.scan.kind)
        self.scores = StreamScore(self.scan.lists) if self.scan.lists is not None else None
        try:
            self.decoder = Decoder(headers.get("content-encoding"), STREAM_MAX)
        except ContentError:
            self.decoder = Decoder(None, STREAM_MAX)
            self.cut = True
            self._update(self.addon.unreadable(self.verdict, self.scan, ContentError("unknown encoding")))
            self._publish()
        headers.pop("content-encoding", None)
        headers.pop("content-length", None)

    def __call__(self, data: bytes) -> bytes:
        if self.cut:
            return b""  # everything after the cut is dropped, however long the server goes on
        try:
            if self.scores is None:
                raise ContentError("the phrase lists are not loaded")
            decoded = self.decoder.feed(data)
            pieces = self.events.feed(decoded) if data else self.events.flush()
            if self.decoder.full:
                raise ContentError("the reply is too long to check")
            # The pieces of one chunk are scored together: the chunk is forwarded or cut as a whole.
            outcome = judge(self.scores.feed("".join(pieces), end=not data), self.scan.rule) \
                if pieces or not data else None
            if outcome is not None and outcome.alerts:
                verdict, blocked = self.addon.apply(self.verdict, self.scan, outcome, "reply")
                self._update(verdict)
                if blocked:
                    return self._cut()
            return decoded
        except Exception as e:  # fail closed
            self._update(self.addon.unreadable(self.verdict, self.scan, e))
            return self._cut()

    def _update(self, verdict: Verdict) -> None:
        """The draft verdict with what the reply has shown so far (published when the reply ends)."""
        self.verdict = verdict
        if VERDICT in self.flow.metadata:
            self.flow.metadata[VERDICT] = verdict

    def _cut(self) -> bytes:
        self.cut = True
        self._publish()
        note = (f"This reply was stopped by the school's internet filter (reference {self.verdict.ref}). "
                f"If you are worried about something, talk to a trusted adult.")
        if self.scan.kind == "sse":
            return f"event: error\ndata: {note}\n\ndata: [DONE]\n\n".encode()
        return (note + "\n").encode()

    def _publish(self) -> None:
        """The verdict goes out now: a reply that never ends would otherwise never be recorded."""
        verdict = self.flow.metadata.pop(VERDICT, None)
        if verdict is None:
            return
        self.addon.publish(verdict._replace(
            status=self.flow.response.status_code if self.flow.response else None,
            duration=max(0.0, time.time() - self.flow.request.timestamp_start)))


@dataclass
class _HeldBack:
    """``flow.response.stream`` for a body of unknown or large length: the first ``max_kb`` (decoded) is
    held back and scored, then everything passes on unchanged — or the block page, in the body's own
    encoding, replaces it and the rest is dropped."""

    addon: Content
    flow: http.HTTPFlow
    verdict: Verdict
    scan: _Scan
    snap: Snapshot
    state: str = "holding"  # holding | passing | blocked
    held: list[bytes] = field(default_factory=list)
    held_bytes: int = 0
    decoded: bytearray = field(default_factory=bytearray)
    decoder: Decoder | None = None

    def __post_init__(self) -> None:
        self.limit = self.scan.rule.settings.max_kb * 1024
        try:
            self.decoder = Decoder(self.flow.response.headers.get("content-encoding"), self.limit)
        except ContentError:
            self.decoder = None
        self.flow.response.headers.pop("content-length", None)  # the block page is not the declared size

    def __call__(self, data: bytes) -> bytes | list[bytes]:
        if self.state == "passing":
            return data
        if self.state == "blocked":
            return b""
        try:
            if self.decoder is None:
                raise ContentError("unknown content encoding")
            self.held.append(data)
            self.held_bytes += len(data)
            self.decoded += self.decoder.feed(data)
            if data and not self.decoder.full and self.held_bytes < self.limit:
                return []  # keep holding
            if self.scan.lists is None:
                raise ContentError("the phrase lists are not loaded")
            r = self.flow.response
            text = extract(self.scan.kind, bytes(self.decoded), charset_of(r.headers.get("content-type")))
            verdict, blocked = self.addon.apply(self.verdict, self.scan, self.addon.score(self.scan, text), "page")
        except Exception as e:  # fail closed
            verdict, blocked = self.addon.unreadable(self.verdict, self.scan, e), True
        self.verdict = verdict
        if VERDICT in self.flow.metadata:
            self.flow.metadata[VERDICT] = verdict
        if blocked:
            return self._block()
        self.state = "passing"
        out, self.held, self.decoded = [c for c in self.held if c], [], bytearray()
        return out

    def _block(self) -> list[bytes]:
        self.state = "blocked"
        self.held, self.decoded = [], bytearray()
        r = self.flow.response
        r.status_code = 403  # for the record; the status line has already gone to the client
        body = self.addon.block_html(self.flow, self.verdict, self.snap)
        enc = r.headers.get("content-encoding", "identity").strip().lower()
        try:
            return [encoding.encode(body, enc) if enc not in ("", "identity") else body]
        except ValueError:
            return []  # an encoding we cannot produce: nothing of the page is shown
