from urllib.parse import parse_qsl

import pytest

from schoolproxy.filtering.safesearch import search_engine, with_param, youtube_header


@pytest.mark.parametrize("host, engine", [
    ("www.google.com", "google"), ("google.co.uk", "google"), ("images.google.de", "google"),
    ("www.bing.com", "bing"), ("bing.com", "bing"), ("duckduckgo.com", "duckduckgo"),
    ("html.duckduckgo.com", "duckduckgo"),
    ("googleapis.com", None), ("evilgoogle.com", None), ("google.evil.test.example", None),
    ("notbing.com", None), ("learning.test", None),
])
def test_search_engine(host, engine):
    assert search_engine(host) == engine


def test_youtube_header_modes():
    assert youtube_header("www.youtube.com", "strict") == ("YouTube-Restrict", "Strict")
    assert youtube_header("m.youtube.com", "moderate") == ("YouTube-Restrict", "Moderate")
    assert youtube_header("www.youtube.com", "off") is None
    assert youtube_header("youtube.evil.test", "strict") is None


@pytest.mark.parametrize("path, appended", [
    ("/search?q=volcanoes+for+kids", "/search?q=volcanoes+for+kids&safe=active"),
    ("/search", "/search?safe=active"),
    ("/search?", "/search?safe=active"),
    ("/search?q=a%20b&hl=en", "/search?q=a%20b&hl=en&safe=active"),     # escapes in values are fine
    ("/search?q=safe%3Doff", "/search?q=safe%3Doff&safe=active"),        # "safe=off" as a search term
    ("/search?safe=off", None),                                          # present: parsed route replaces it
    ("/search?q=a&safe=active", None),
    ("/search?q=a&%73afe=off", None),                                    # decodes to safe=off
    ("/search?q=a&saf%65=off", None),
    ("/search?q=a&safe+=off", None),                                     # "+" decodes to a space
])
def test_with_param_appends_only_when_the_parameter_is_certainly_absent(path, appended):
    assert with_param(path, "safe", "active") == appended
    if appended is not None:  # what a server parses from the result: exactly one safe=active
        params = parse_qsl(appended.partition("?")[2], keep_blank_values=True)
        assert [v for k, v in params if k == "safe"] == ["active"]
