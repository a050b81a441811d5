"""The alert rules, with plain Verdicts (no proxy, no database)."""

from pathlib import Path

import pytest
from conftest import make_verdict

from schoolproxy.config import AlertSettings
from schoolproxy.monitoring.phrases import load_phrase_lists
from schoolproxy.monitoring.rules import AlertRules

PHRASES = load_phrase_lists(Path(__file__).resolve().parent.parent / "filterlists" / "phrases")
THEMES = {"adult": ("pornography", "high"), "vpn-proxy": ("circumvention", "high")}
ROLES = {"pupil": "pupil", "staff": "staff"}


@pytest.fixture
def rules():
    return AlertRules(AlertSettings(repeated_blocks=3, repeated_blocks_minutes=10), PHRASES, THEMES, ROLES)


def search(term, t=1000.0, **kw):
    from urllib.parse import quote_plus
    base = dict(host="www.google.com", path=f"/search?q={quote_plus(term)}", action="allow", rule="default",
                categories=(), time=t)
    base.update(kw)
    return make_verdict(**base)


def test_pupil_search_raises_high_self_harm_with_the_term(rules):
    [c] = rules.evaluate(search("how to kill myself"))
    assert (c.theme, c.severity, c.rule, c.search_term) == ("self-harm", "high", "search-phrases", "how to kill myself")
    assert 'searched for "how to kill myself" on google' in c.evidence


def test_thresholds_follow_the_role(rules):
    assert rules.evaluate(search("everyone hates me", username="p1"))              # 60 ≥ pupil threshold
    assert not rules.evaluate(search("everyone hates me", username="t1", profile="staff"))  # < staff's 100


def test_one_alert_per_user_per_theme_per_window(rules):
    first = rules.evaluate(search("how to kill myself", t=1000))
    again = rules.evaluate(search("i want to die", t=1100))
    later = rules.evaluate(search("i want to die", t=1000 + 3601))
    assert first[0].repeat_of is None and again[0].repeat_of == ("jsmith", "self-harm") and later[0].repeat_of is None
    other = rules.evaluate(search("how to kill myself", t=1100, username="someone-else"))
    assert other[0].repeat_of is None


def test_themed_categories_repeated_blocks_and_circumvention(rules):
    [c] = rules.evaluate(make_verdict(host="adult.test", categories=("adult",), rule="category:adult", path="/"))
    assert (c.theme, c.severity) == ("pornography", "high") and "tried to visit adult.test" in c.evidence
    found = []
    for i in range(3):
        found += rules.evaluate(make_verdict(host=f"social{i}.test", username="bob", time=2000 + i, path="/"))
    assert [c.theme for c in found] == ["repeated-blocks"]
    [ip] = rules.evaluate(make_verdict(host="203.0.113.9", port=443, categories=("ip-address",), layer="connect",
                                       method="CONNECT", path="", username="eve"))
    assert (ip.theme, ip.rule) == ("circumvention", "bare-ip")


def test_upstream_block_is_critical_and_never_carries_the_path(rules):
    v = make_verdict(host="bad.test", path="/secret/path?x=1", rule="upstream-block", categories=(), action="block")
    [c] = rules.evaluate(v)
    assert c.severity == "critical" and "bad.test" in c.evidence and "/secret" not in c.evidence


def test_a_flood_stays_bounded(rules):
    for i in range(2_000):
        rules.evaluate(search("how to kill myself", t=5000 + i, username=f"u{i % 100}"))
    assert len(rules._until) <= 200


def test_only_a_client_refusing_the_schools_certificate_counts_as_refusing_inspection(rules):
    upstream = [make_verdict(host=f"site{i}.test", time=3000 + i, action="allow", rule="default", categories=(),
                             error="Certificate verify failed: unable to get local issuer certificate (SSL "
                                   "handshake with the upstream server, TLS)") for i in range(10)]
    assert [c for v in upstream for c in rules.evaluate(v)] == []
    refused = [make_verdict(host="vpn-app.test", time=4000 + i, action="allow", rule="default", categories=(),
                            layer="tls", method="TLS", path="", client_refused_certificate=True,
                            error="The client does not trust the proxy's certificate for vpn-app.test "
                                  "(tlsv1 alert unknown ca)") for i in range(5)]
    found = [c for v in refused for c in rules.evaluate(v)]
    assert [(c.theme, c.rule) for c in found] == [("circumvention", "interception-refused")]
    assert found[0].verdict is refused[4] and "vpn-app.test" in found[0].evidence
