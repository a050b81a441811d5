"""Alert rules for what the detection work added: evidence in the words as typed; content findings."""

from pathlib import Path

from conftest import make_verdict

from schoolproxy.config import AlertSettings
from schoolproxy.monitoring.phrases import load_phrase_lists
from schoolproxy.monitoring.rules import AlertRules

PHRASES = load_phrase_lists(Path(__file__).resolve().parent.parent / "filterlists" / "phrases")


def rules():
    return AlertRules(AlertSettings(), PHRASES, {}, {"pupil": "pupil", "staff": "staff"})


def test_search_evidence_names_the_words_as_typed_never_a_list_phrase():
    from urllib.parse import quote_plus
    v = make_verdict(host="www.google.com", path="/search?q=" + quote_plus("pls s3nd me n00dz"), action="allow",
                     rule="default", categories=())
    [c] = rules().evaluate(v)
    matched = c.evidence.split("matched: ")[1].split(";")[0]
    assert c.theme == "grooming" and matched == "s3nd, n00dz"        # what was typed, nothing else


def test_content_findings_raise_an_alert_with_the_site_and_the_words():
    v = make_verdict(host="chat.example", path="/api", action="block", rule="content:self-harm", categories=(),
                     content=(("self-harm", 180, ("how to kill yourself",), "block", 150, "reply"),))
    [c] = rules().evaluate(v)
    assert (c.theme, c.severity, c.rule, c.score) == ("self-harm", "high", "content", 180)
    assert 'streamed from chat.example containing "how to kill yourself"' in c.evidence and "blocked at 150" in c.evidence
