"""Cost of detection (``make bench`` and ``make eval`` call this): scoring a search term, scoring page text
and a streamed reply, with the shipped phrase lists. Targets: a search scored in <= 50 us p50; a 100 KB
page scored in <= 1 ms. The last line is machine-readable.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from schoolproxy.monitoring.content import Decoder, EventText, StreamScore, extract  # noqa: E402
from schoolproxy.monitoring.evaluation import CORPUS, load_corpus  # noqa: E402
from schoolproxy.monitoring.phrases import load_phrase_lists  # noqa: E402

WORDS = ("the school trip to the museum was on tuesday and everyone brought a packed lunch with sandwiches "
         "crisps and an apple our teacher explained how volcanoes form when magma rises through the crust "
         "and the class wrote a report about the romans who built roads and forts across britain").split()


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def page(size: int, words: list[str], extra: str = "", seed: int = 1, markup: float = 0.0) -> str:
    """An HTML page of about ``size`` bytes: paragraphs and links (worst case: almost all of it text),
    or with ``markup`` of it in scripts, styles and attributes, as real pages are."""
    rnd = random.Random(seed)
    parts = ["<html><head><title>News</title><style>body{font-family:sans-serif}.nav a{margin:4px}</style>"
             "<script>window.dataLayer=[];function track(e){dataLayer.push(e)}</script></head><body>"
             "<div class=\"nav\"><a href=\"/\">Home</a><a href=\"/news\">News</a></div>"]
    n = sum(map(len, parts))
    if markup:
        blob = "<script>" + "var x=function(a,b){return a.map(function(c){return c*b})};" * int(size * markup / 62) + "</script>"
        parts.append(blob)
        n += len(blob)
    while n < size:
        para = " ".join(rnd.choice(words) for _ in range(rnd.randint(40, 90)))
        chunk = f"<p class=\"story\">{para.capitalize()}.</p><a href=\"/story/{rnd.randint(1, 99999)}\">More</a>\n"
        parts.append(chunk)
        n += len(chunk)
    if extra:
        parts.insert(len(parts) // 2, f"<p>{extra}</p>")
    return "".join(parts) + "</body></html>"


def main() -> int:
    lists = load_phrase_lists(ROOT / "filterlists" / "phrases")
    queries = [q.text for q in load_corpus(CORPUS)]
    for q in queries:  # warm: the misspelling cache fills as it would in a running proxy
        lists.score(q)
    search = timed(lambda it=iter(queries * 20): lists.score(next(it)), len(queries) * 20)
    cold = []
    for q in queries:
        lists._corrections.clear()
        cold += timed(lambda: lists.score(q), 1)

    en = page(100 * 1024, WORDS)
    typical = page(100 * 1024, WORDS, markup=0.7)
    harmful = page(100 * 1024, WORDS, "here is how to kill yourself, the quickest way to die and how many pills")
    pl = page(100 * 1024, "szkolna wycieczka do muzeum była we wtorek i każdy przyniósł drugie śniadanie "
              "nauczycielka wyjaśniła jak powstają wulkany gdy magma przebija się przez skorupę ziemską".split())
    ar = page(100 * 1024, "ذهب الطلاب في رحلة مدرسية إلى المتحف يوم الثلاثاء وشرح المعلم كيف تتكون البراكين".split())
    results = {}
    pages = (("page_en", en), ("page_en_typical", typical), ("page_en_harmful", harmful), ("page_pl", pl),
             ("page_ar", ar))
    for name, doc in pages:
        raw = doc.encode()
        # The whole content path of a buffered page: decode (identity), text out of HTML, score, and for
        # a page over a theme's alert score the words as written.
        def run(raw=raw):
            text = extract("html", Decoder(None, 256 * 1024).feed(raw))
            lists.score_content(text, evidence_at=100)
        run()
        times = timed(run, 30)
        results[name] = statistics.median(times)
        results[name + "_min"] = min(times)
        results[name + "_bytes"] = len(raw)

    # A streamed reply: 2,000 SSE events of a few tokens each, scored as they arrive.
    events = [f'data: {{"choices":[{{"delta":{{"content":"{w} "}}}}]}}\n\n'.encode()
              for w in (WORDS * 50)[:2000]]

    def stream():
        ev, sc = EventText("sse"), StreamScore(lists)
        for e in events:
            for piece in ev.feed(e):
                sc.feed(piece)
    per_event = statistics.median(timed(stream, 5)) / len(events)

    p50, p99 = percentile(search, 0.5), percentile(search, 0.99)
    print(f"phrase lists: {lists.size} entries, {len(lists.themes)} themes")
    print(f"search term scored (corpus of {len(queries)}, warm): p50 {p50 * 1e6:.1f} us, p99 {p99 * 1e6:.1f} us "
          f"(target p50 <= 50 us); cold misspelling cache p50 {percentile(cold, 0.5) * 1e6:.1f} us")
    notes = {"page_en": "almost all text", "page_en_typical": "70% scripts and markup",
             "page_en_harmful": "with self-harm text: + the words as written", "page_pl": "Polish text",
             "page_ar": "Arabic text"}
    for name, _ in pages:
        print(f"{name:<16} {results[name + '_bytes'] / 1024:.0f} KB HTML ({notes[name]}) scored in "
              f"{results[name] * 1e3:.2f} ms median, {results[name + '_min'] * 1e3:.2f} ms best (target <= 1 ms)")
    print(f"streamed reply: {per_event * 1e6:.1f} us per SSE event")
    print(json.dumps({"search_p50_us": round(p50 * 1e6, 1), "search_p99_us": round(p99 * 1e6, 1),
                      **{f"{k}_ms": round(v * 1e3, 3) for k, v in results.items() if not k.endswith(("_bytes", "_min"))},
                      "sse_event_us": round(per_event * 1e6, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
