"""Search terms from search engines, YouTube and Wikipedia."""

import pytest

from schoolproxy.monitoring.searchterms import MAX_TERM, extract


@pytest.mark.parametrize("host,path,term", [
    ("www.google.co.uk", "/search?q=how+to+draw+a+cat&safe=active", "how to draw a cat"),
    ("www.google.com", "/search?client=x&q=volcano%20facts", "volcano facts"),
    ("www.bing.com", "/search?q=rivers&adlt=strict", "rivers"),
    ("duckduckgo.com", "/?q=frogs&kp=1", "frogs"),
    ("html.duckduckgo.com", "/html/?q=toads", "toads"),
    ("search.yahoo.com", "/search?p=rain", "rain"),
    ("www.youtube.com", "/results?search_query=minecraft+tips", "minecraft tips"),
    ("en.wikipedia.org", "/w/index.php?search=Romans&title=Special:Search", "Romans"),
    ("en.m.wikipedia.org", "/wiki/Special:Search?search=Tudors", "Tudors"),
    ("www.example-school-site.test", "/find?query=trips", "trips"),
])
def test_terms_are_found(host, path, term):
    assert extract(host, path) == term


@pytest.mark.parametrize("host,path", [
    ("www.google.com", "/maps?q=london"), ("www.youtube.com", "/watch?v=abc"), ("www.bbc.co.uk", "/news"),
    ("www.google.com", "/search"), ("www.yahoo.com", "/?p=1"),
])
def test_no_term_where_there_is_no_search(host, path):
    assert extract(host, path) is None


def test_hostile_input_is_cleaned_and_bounded():
    assert extract("www.google.com", "/search?q=a%0d%0aBcc:%20x%00%e2%80%aey") == "aBcc: xy"
    assert len(extract("www.google.com", "/search?q=" + "a" * 100_000)) == MAX_TERM
    assert extract("www.google.com", "/search?q=%ff%fe") == "\ufffd\ufffd"
    assert extract("www.google.com", "/search?" + "&".join(f"x{i}=1" for i in range(5000)) + "&q=a") is None
