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

This addon sits before ``Enforce`` in the pipeline: its ``response`` hook must finish the verdict
(block, content findings) before ``Enforce.response`` publishes it.
"""

from __future__ import annotations

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
from schoolproxy.monitoring.phrases import (
    PhraseError,
    PhraseLists,
    load_phrase_lists,
)
from schoolproxy.proxy.enforce import VERDICT
from schoolproxy.snapshot import Snapshot, SnapshotHolder
from schoolproxy.verdict import Verdict

log = logging.getLogger(__name__)

CONTENT = "schoolproxy.content"
BUFFERED_MAX = 2 * 1024 * 1024     # a declared length up to this is read whole by mitmproxy
STREAM_MAX = 32 * 1024 * 1024      # a streamed reply longer than this (decoded) is cut off: bounded work
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
        self._lists: tuple[Path, object, PhraseLists | None] | None = None
        if registry is not None:
            registry.register(Scraped(self._metrics))

    # -- hooks ------------------------------------------------------------------------------------
    def wants(self, event: str) -> bool:
        snap = self.snapshots.snapshot
        return snap is None or any(p.content.scan for p in snap.config.profiles.values())

    def responseheaders(self, flow: http.HTTPFlow) -> None:
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
        scan = _Scan(kind, rule, self._phrase_lists(snap))
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

    def _phrase_lists(self, snap: Snapshot) -> PhraseLists | None:
        """The phrase lists of the running config, loaded once per change of ``alerts`` settings."""
        cfg = snap.config
        path = cfg.path(cfg.alerts.phrases)
        cached = self._lists
        if cached is None or cached[0] != path or cached[1] != cfg.alerts:
            try:
                lists = load_phrase_lists(path)
                lists.prepare_content()
            except PhraseError as e:
                # A warning, not an error: mitmdump ends a start-up that logs an error, and then no one
                # could browse at all. Said loudly, and counted in the metrics (schoolproxy_content_scoring_off).
                log.warning("schoolproxy: CONTENT SCORING IS OFF — content scoring: phrase lists not loaded, "
                            "EVERY PAGE is blocked for profiles that score content (%s), to be safe: %s. Fix "
                            "them (schoolproxy check says what is wrong), then reload the proxy",
                            ", ".join(n for n, p in cfg.profiles.items() if p.content.scan), e)
                lists = None
            self._lists = cached = (path, cfg.alerts, lists)
        return cached[2]

    def running(self) -> None:
        snap = self.snapshots.snapshot
        if snap is not None and any(p.content.scan for p in snap.config.profiles.values()):
            self._phrase_lists(snap)  # at start-up, not on the first pupil's page

    def _metrics(self) -> Iterable[Metric]:
        snap, cached = self.snapshots.snapshot, self._lists
        scoring = snap is not None and any(p.content.scan for p in snap.config.profiles.values())
        # As last loaded (at start-up, then on the first scored page after the alerts settings change).
        off = scoring and cached is not None and cached[2] is None
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
