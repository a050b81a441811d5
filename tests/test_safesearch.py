import pytest

from schoolproxy.safesearch import search_engine, youtube_header


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
