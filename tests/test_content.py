"""Real-time content core: which responses are read, bounded decoding, text out of bodies and events,
scores of text arriving in pieces, and the content rule (help sites, exceptions)."""

import gzip
import json
import zlib
from pathlib import Path

import brotli
import pytest

from schoolproxy.config import ContentSettings, load_config
from schoolproxy.monitoring.content import (ContentError, ContentRule, Decoder, EventText, StreamScore, content_rule,
                                            extract, judge, kind_of)
from schoolproxy.monitoring.phrases import load_phrase_lists

ROOT = Path(__file__).resolve().parent.parent
LISTS = load_phrase_lists(ROOT / "filterlists" / "phrases")


@pytest.mark.parametrize("ctype,kind", [
    ("text/html; charset=utf-8", "html"), ("application/json", "json"), ("application/problem+json", "json"),
    ("text/plain", "text"), ("text/event-stream", "sse"), ("application/x-ndjson", "ndjson"), (None, "html"),
    ("image/png", None), ("application/javascript", None), ("application/octet-stream", None), ("video/mp4", None),
])
def test_which_responses_are_read(ctype, kind):
    assert kind_of(ctype) == kind


@pytest.mark.parametrize("enc,compress", [("gzip", gzip.compress), ("deflate", zlib.compress), ("br", brotli.compress)])
def test_a_compression_bomb_never_decodes_past_the_limit(enc, compress):
    bomb = compress(b"a" * 20_000_000)
    d = Decoder(enc, 64 * 1024)
    out = b"".join(d.feed(bomb[i:i + 8192]) for i in range(0, len(bomb), 8192))
    assert len(out) == 64 * 1024 and d.full


def test_corrupt_or_unknown_encoding_is_an_error_not_a_crash():
    with pytest.raises(ContentError):
        Decoder("gzip", 1000).feed(b"<html>not gzip</html>")
    with pytest.raises(ContentError):
        Decoder("compress", 1000)


def test_html_text_without_scripts_styles_and_tags():
    html = b"<html><style>.kill{}</style><script>kill('myself')</script><p>Hello &amp; <b>welcome</b></p></html>"
    text = extract("html", html)
    assert "kill" not in text and "Hello & " in text and "welcome" in text


def test_html_text_drops_hidden_blocks_in_any_case_and_keeps_an_unclosed_opening():
    html = ("<p>one</p><SCRIPT type=x>kill myself</Script ><!-- kill myself --><p>two</p>"
            "<svg><text>kill</text></svg><style>p{}</style  ><p>three</p><script>never closed <p>four</p>")
    text = extract("html", html.encode())
    assert "kill" not in text and all(w in text for w in ("one", "two", "three", "never closed", "four"))


def test_invalid_utf8_and_binary_are_replaced_not_errors():
    assert "how to" in extract("html", b"\xff\xfe<p>how to</p>\x00\x80")


def test_json_string_values_and_a_truncated_document():
    assert extract("json", json.dumps({"reply": "how to kill\nmyself", "n": 3}).encode()) == "how to kill\nmyself"
    assert "kill myself" in extract("json", b'{"reply": "how to kill myself and more te')


def test_event_text_joins_tokens_split_across_events_and_chunks():
    ev = EventText("sse")
    pieces = ev.feed(b'data: {"choices":[{"delta":{"content":"kil"}}]}\n\ndata: {"choices":[{"del')
    pieces += ev.feed(b'ta":{"content":"l myself"}}]}\n\ndata: [DONE]\n\n')
    assert "".join(pieces) == "kill myself"


def test_stream_score_finds_a_phrase_split_across_pieces():
    sc = StreamScore(LISTS)
    for piece in ["I think ", "how to ki", "ll your", "self is ", "something"]:
        scores = sc.feed(piece)
    assert any(s.theme == "self-harm" and s.score >= 100 for s in scores)


def test_stream_score_finds_plain_phrases_at_once_and_leetspeak_when_the_sentence_ends():
    """Each piece goes through the page path as it comes (the cut must not wait); the typed-text path,
    which knows leetspeak and spacing tricks, over each sentence as it completes."""
    sc = StreamScore(LISTS)
    sc.feed("Some ask how to kill ")
    assert not [s for s in sc.scores() if s.score >= 100]
    assert any(s.theme == "self-harm" and s.score >= 100 for s in sc.feed("yourself"))
    sc = StreamScore(LISTS)
    for piece in ["well ", "how to ", "k1ll ", "mys", "elf"]:
        assert not [s for s in sc.feed(piece) if s.theme == "self-harm" and s.score >= 100]
    assert any(s.theme == "self-harm" and s.score >= 100 for s in sc.feed(". Anyway"))
    sc = StreamScore(LISTS)
    sc.feed("i want to d i e")
    assert any(s.theme == "self-harm" for s in sc.feed("", end=True))      # the end of the reply


def test_stream_score_memory_is_bounded():
    sc = StreamScore(LISTS)
    for _ in range(2000):
        sc.feed("lava is molten rock and volcanoes erupt ")
    assert len(sc._page._tail) <= sc.overlap and len(sc._typed._tail) <= 2 * sc.overlap
    assert len(sc._pending) < sc.batch and not sc.scores()


@pytest.fixture(scope="module")
def example():
    return load_config(ROOT / "config" / "schoolproxy.yaml")


def test_content_rule_of_the_example(example):
    assert content_rule(example, "pupil", "forum.example").mode == "scan"
    assert content_rule(example, "staff", "forum.example").mode == "off"
    help_site = content_rule(example, "pupil", "www.childline.org.uk", ("helpsites",), "helpsite")
    assert help_site.mode == "no-block" and "help site" in help_site.why
    news = content_rule(example, "pupil", "www.bbc.co.uk")
    assert news.mode == "no-block" and "content_exceptions[0]" in news.why and "C Lawrence" in news.why


def test_judge_blocks_only_where_allowed():
    scores = LISTS.score_content("here is how to kill yourself, the quickest way to die, how many pills")
    settings = ContentSettings(scan=True, alert_score=100, block_score=150)
    assert judge(scores, ContentRule("scan", "", settings)).block.theme == "self-harm"
    out = judge(scores, ContentRule("no-block", "", settings))
    assert out.block is None and [s.theme for s in out.alerts] == ["self-harm"]
