"""Real-time content: what text a response holds, and what to do about its score. Pure (no mitmproxy);
the ``proxy/content.py`` addon feeds it bytes and applies the outcome.

- :func:`kind_of` — which responses are read: HTML, JSON, plain text, server-sent events, NDJSON (a
  missing Content-Type is read as HTML, as a browser would sniff it). Images, video, fonts, scripts and
  downloads are not text a person reads and are left alone.
- :class:`Decoder` — Content-Encoding (gzip, deflate, br, zstd) undone incrementally and **bounded**: at
  most ``limit`` bytes ever come out, so a compression bomb costs no more than a small page.
- :func:`extract` — the text of a body: HTML without tags, scripts and styles; JSON's string values;
  plain text as is. Invalid UTF-8 is replaced, never an error.
- :class:`EventText` — text pieces from a server-sent event stream as it arrives (an AI chat reply's
  tokens, concatenated as the client shows them).
- :class:`StreamScore` — scores text that arrives in pieces: a phrase split across two pieces is found.
- :func:`content_rule` — whether and how a profile's responses from a host are scored (help sites are
  never blocked by content; exceptions by site and profile), shared by the addon and ``explain``.
"""

from __future__ import annotations

import html
import json
import re
import zlib
from dataclasses import dataclass, field

from schoolproxy.config import Config, ContentSettings
from schoolproxy.monitoring.phrases import Hit, PhraseLists, Score

HELPSITES = "helpsites"
_TEXT_TYPES = {"text/html": "html", "application/xhtml+xml": "html", "text/plain": "text",
               "application/json": "json", "text/event-stream": "sse", "application/x-ndjson": "ndjson",
               "application/jsonl": "ndjson", "application/json-seq": "ndjson", "text/markdown": "text",
               "text/xml": "html", "application/xml": "html", "application/rss+xml": "html",
               "application/atom+xml": "html"}
_HIDDEN = ("script", "style", "noscript", "svg", "template")
#: The lookahead turns most tags away on their first letter ("<p", "<a", "</"): trying each alternative
#: case-insensitively at every "<" of a page costs twice as much.
_HIDDEN_FIRST = "".join(sorted({name[0] for name in _HIDDEN})) + "!"
_HIDDEN_OPEN = re.compile(rf"<(?=[{_HIDDEN_FIRST}])(?:({'|'.join(_HIDDEN)})\b|!--)", re.I)
_HIDDEN_CLOSE = {**{name: re.compile(rf"</{name}\s*>", re.I) for name in _HIDDEN}, "": re.compile("-->")}
_TAG = re.compile(r"<[^>]{0,2000}>")
_CONTENT_KEYS = ("content", "text", "delta", "response", "output_text", "token", "message", "completion",
                 "answer", "reply", "parts", "choices", "candidates", "output", "result", "data", "value")
MAX_JSON_STRINGS = 20_000


class ContentError(ValueError):
    """A body cannot be decoded (corrupt compression, unknown encoding)."""


def kind_of(content_type: str | None) -> str | None:
    """"html", "json", "text", "sse", "ndjson" — or None for what is not read as text."""
    if not content_type:
        return "html"
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime in _TEXT_TYPES:
        return _TEXT_TYPES[mime]
    if mime.endswith("+json"):
        return "json"
    return None


def charset_of(content_type: str | None) -> str:
    m = re.search(r"charset=\"?([\w.:-]{1,40})", content_type or "", re.I)
    if m:
        try:
            "".encode(m.group(1))
            return m.group(1)
        except LookupError:
            pass
    return "utf-8"


# -- decoding ---------------------------------------------------------------------------------------
class Decoder:
    """Undo a Content-Encoding chunk by chunk; never more than ``limit`` bytes out in total."""

    def __init__(self, encoding: str | None, limit: int):
        self.limit = limit
        self.out = 0
        self.full = False
        enc = (encoding or "identity").strip().lower()
        self.encoding = enc
        if enc in ("identity", "", "none"):
            self._step = self._identity
        elif enc in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self._step = self._zlib
        elif enc == "deflate":
            self._z = None  # raw or zlib-wrapped: decided on the first bytes
            self._step = self._zlib
        elif enc == "br":
            import brotli
            self._br = brotli.Decompressor()
            self._step = self._brotli
        elif enc == "zstd":
            try:
                from compression import zstd  # Python 3.14
            except ImportError:
                from backports import zstd  # what mitmproxy depends on before 3.14
            self._zs = zstd.ZstdDecompressor()
            self._step = self._zstd
        else:
            raise ContentError(f"unknown content encoding {encoding!r}")

    def feed(self, data: bytes) -> bytes:
        if self.full or not data:
            return b""
        try:
            out = self._step(data, self.limit - self.out)
        except ContentError:
            raise
        except Exception as e:  # zlib.error, brotli.error, zstd.ZstdError: corrupt or mis-declared
            raise ContentError(f"cannot decode {self.encoding} body: {str(e)[:100]}") from None
        out = out[: self.limit - self.out]
        self.out += len(out)
        if self.out >= self.limit:
            self.full = True
        return out

    @staticmethod
    def _identity(data: bytes, room: int) -> bytes:
        return data[:room]

    def _zlib(self, data: bytes, room: int) -> bytes:
        if self._z is None:
            # "deflate" is zlib-wrapped by the standard and raw by some servers: the first byte says which.
            self._z = zlib.decompressobj(zlib.MAX_WBITS if data[:1] == b"\x78" else -zlib.MAX_WBITS)
        out = self._z.decompress(data, room)
        return out

    def _brotli(self, data: bytes, room: int) -> bytes:
        return self._br.process(data, output_buffer_limit=max(room, 1))

    def _zstd(self, data: bytes, room: int) -> bytes:
        return self._zs.decompress(data, max_length=room)


# -- text -------------------------------------------------------------------------------------------
def extract(kind: str, data: bytes, charset: str = "utf-8") -> str:
    """The text a person would read in a body of this kind (bounded by the caller's ``data``)."""
    text = data.decode(charset, errors="replace")
    if kind == "html":
        return html_text(text)
    if kind == "json":
        return json_text(text)
    if kind in ("sse", "ndjson"):
        ev = EventText(kind)
        return "".join(ev.feed(text.encode("utf-8", "replace"))) + "".join(ev.flush())
    return text


def html_text(text: str) -> str:
    text = _visible(text)
    if "<" in text:
        text = _TAG.sub(" ", text)
    if "&" in text:
        text = html.unescape(text)
    return text


def _visible(html_doc: str) -> str:
    """The document without scripts, styles, SVG, templates and comments. Each is found with two regex
    searches, its opening and its closing (a lazy ``<script>.*?</script>`` walks the regex engine through
    every character of the script: 0.5 ms for a page with 70 KB of scripts, against ~0.05 ms)."""
    out: list[str] = []
    keep = pos = 0
    while (m := _HIDDEN_OPEN.search(html_doc, pos)) is not None:
        close = _HIDDEN_CLOSE[(m.group(1) or "").lower()].search(html_doc, m.end())
        if close is None:  # never closed: the opening is left as it is, as the lazy regex did
            pos = m.end()
            continue
        out.append(html_doc[keep:m.start()])
        keep = pos = close.end()
    if not out:
        return html_doc
    out.append(html_doc[keep:])
    return " ".join(out)


def json_text(text: str) -> str:
    """String values of a JSON document (a truncated or invalid one: its text with escapes undone)."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return re.sub(r"\\[nrtbf\\/\"]", " ", text)
    return " ".join(_strings(doc, all_keys=True))


def _strings(doc: object, all_keys: bool) -> list[str]:
    """String values, depth first, bounded; ``all_keys=False``: only under keys that carry text."""
    out: list[str] = []
    stack = [(doc, all_keys)]
    while stack and len(out) < MAX_JSON_STRINGS:
        node, take = stack.pop()
        if isinstance(node, str):
            if take:
                out.append(node)
        elif isinstance(node, dict):
            for k, v in reversed(list(node.items())):
                stack.append((v, take or k in _CONTENT_KEYS))
        elif isinstance(node, list):
            stack.extend((v, take) for v in reversed(node))
    return out


class EventText:
    """Text pieces from server-sent events (``data:`` lines; JSON data's text fields, else the data
    itself) or NDJSON lines, fed raw bytes as they arrive. Incomplete lines wait (bounded)."""

    MAX_LINE = 64 * 1024

    def __init__(self, kind: str = "sse"):
        self.kind = kind
        self._buf = b""

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        if len(self._buf) > self.MAX_LINE:  # an endless line: read what there is, start afresh
            lines.append(self._buf)
            self._buf = b""
        return [t for t in (self._line(raw) for raw in lines) if t]

    def flush(self) -> list[str]:
        rest, self._buf = self._buf, b""
        t = self._line(rest) if rest else ""
        return [t] if t else []

    def _line(self, raw: bytes) -> str:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        if self.kind == "sse":
            if not line.startswith("data:"):
                return ""
            line = line[5:]
            if line.startswith(" "):
                line = line[1:]
        payload = line.strip()
        if not payload or payload == "[DONE]":
            return ""
        if payload[0] in "{[":
            try:
                doc = json.loads(payload)
            except ValueError:
                return line
            return "".join(_strings(doc, all_keys=False)) or " ".join(_strings(doc, all_keys=True))
        return line


@dataclass
class _Stream:
    """Hits of one scoring path in text arriving in pieces, each piece searched together with the end of
    what came before (a phrase split across pieces is found); each place of a part is kept once."""

    lists: PhraseLists
    overlap: int
    places: int   # the latest few places of each part are kept: a combination's parts must be near
    _tail: str = ""
    _tail_at: int = 0   # where the tail starts in the whole text (as this path sees it)
    _hits: dict[tuple[int, int], list[Hit]] = field(default_factory=dict)
    #: The scores of the hits kept, until a new one is kept: most pieces add none, and scoring every hit
    #: again for each piece made a long reply cost more per piece the longer it ran.
    _scores: list[Score] | None = None

    def keep(self, found: list[Hit], base: int) -> None:
        for h in found:
            kept = self._hits.setdefault((h.entry, h.part), [])
            start = base + h.start
            if all(k.start != start for k in kept):
                kept.append(Hit(h.entry, h.part, start, base + h.end, h.words))
                del kept[:-self.places]
                self._scores = None

    def scores(self) -> list[Score]:
        if self._scores is None:
            self._scores = self.lists.aggregate([h for kept in self._hits.values() for h in kept])
        return self._scores


class _PageStream(_Stream):
    """The page path: each piece in the content path's normal form, the tail cut at a word start."""

    def feed(self, piece: str) -> None:
        form = self.lists.stream_form(piece)
        if form[:1] == " " and self._tail[-1:] == " ":
            form = form[1:]          # a run of spaces across pieces is one space
        window = self._tail + form
        self.keep(self.lists.line_hits(" " + window + " "), self._tail_at - 1)   # searched padded
        cut = window.find(" ", len(window) - self.overlap) if len(window) > self.overlap else 0
        cut = cut if cut >= 0 else len(window) - self.overlap
        self._tail, self._tail_at = window[cut:], self._tail_at + cut


class _TypedStream(_Stream):
    """The typed-text path (leetspeak, letters spaced apart, words run together): the text as written."""

    def feed(self, text: str) -> None:
        window = self._tail + text
        self.keep(self.lists.hits(window, fuzzy=False, limit=len(window)), self._tail_at)
        self._tail_at += len(window) - len(window[-self.overlap:])
        self._tail = window[-self.overlap:]


@dataclass
class StreamScore:
    """Scores of text arriving in pieces (a streamed reply): every piece with the page path, as it comes,
    for the cut; the typed-text path, which also knows leetspeak and spacing tricks but costs ~10x as
    much a piece, over each sentence (or :attr:`batch` characters) as it completes. Per theme the higher
    of the two; an entry counts once however often it recurs."""

    lists: PhraseLists
    #: What of the text before is searched again with each piece: more than the longest part of any rule
    #: (60 characters normalised), with room for punctuation and spacing.
    overlap: int = 120
    places: int = 4
    batch: int = 200
    chars: int = 0
    _pending: str = ""
    _page: _PageStream = field(init=False)
    _typed: _TypedStream = field(init=False)

    def __post_init__(self) -> None:
        self._page = _PageStream(self.lists, self.overlap, self.places)
        self._typed = _TypedStream(self.lists, 2 * self.overlap, self.places)

    def feed(self, piece: str, end: bool = False) -> list[Score]:
        """Scores so far with ``piece``; ``end``: the text is complete (what waits for the typed path is
        scored now)."""
        if piece:
            self.chars += len(piece)
            self._page.feed(piece)
            self._pending += piece
        if self._pending and (end or len(self._pending) >= self.batch or _SENTENCE_END.search(piece)):
            self._typed.feed(self._pending)
            self._pending = ""
        return self.scores()

    def scores(self) -> list[Score]:
        best: dict[str, Score] = {}
        for s in self._page.scores() + self._typed.scores():
            if s.theme not in best or s.score > best[s.theme].score:
                best[s.theme] = s
        return sorted(best.values(), key=lambda s: -s.score)


_SENTENCE_END = re.compile(r"[.!?:;\n]")


# -- what to do -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ContentRule:
    mode: str          # "off" | "scan" | "no-block" (scored and alerted, never blocked)
    why: str
    settings: ContentSettings

    @property
    def scan(self) -> bool:
        return self.mode != "off"

    @property
    def may_block(self) -> bool:
        return self.mode == "scan"


def content_rule(config: Config, profile: str, host: str, categories: tuple[str, ...] = (),
                 decision_rule: str = "") -> ContentRule:
    """How ``profile``'s allowed responses from ``host`` are treated (pure: used by the addon and explain)."""
    p = config.profiles.get(profile)
    settings = p.content if p is not None else ContentSettings()
    if p is None or not settings.scan:
        return ContentRule("off", f"profile {profile} does not score content", settings)
    for i, ex in enumerate(config.content_exceptions):
        if ("*" in ex.profiles or profile in ex.profiles) and _site_matches(ex.site, host):
            why = f"content_exceptions[{i}] {ex.site}: {ex.rationale} ({ex.author}, {ex.date})"
            return ContentRule("off" if ex.action == "no-scan" else "no-block", why, settings)
    if HELPSITES in categories or decision_rule == "helpsite":
        return ContentRule("no-block", "help site: never blocked by content (still scored for alerts)", settings)
    return ContentRule("scan", f"profile {profile}: alert at {settings.alert_score}, block at "
                       f"{settings.block_score}, first {settings.max_kb} KB of each response", settings)


def _site_matches(site: str, host: str) -> bool:
    site = site.lower().strip().rstrip(".").split("/", 1)[0]
    return host == site or host.endswith("." + site)


@dataclass(frozen=True, slots=True)
class Outcome:
    block: Score | None                    # the theme that blocks, if any
    alerts: tuple[Score, ...]              # themes at or over the alert score (the block's included)


def judge(scores: list[Score], rule: ContentRule) -> Outcome:
    s = rule.settings
    alerts = tuple(x for x in scores if x.score >= min(s.alert_score, s.block_score))
    block = next((x for x in scores if x.score >= s.block_score), None) if rule.may_block else None
    return Outcome(block, alerts)
