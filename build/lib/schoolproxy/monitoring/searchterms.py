"""What was searched for: the search term of a request to a search engine, YouTube or Wikipedia.

Pure and cheap: the host decides which parameter to read (a dict lookup on the registrable part of the
name), then the query string is parsed. The term is attacker-controlled text: it is decoded, stripped of
control characters, whitespace-collapsed and bounded in length here, and escaped wherever it is shown.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs

MAX_TERM = 300
MAX_QUERY = 8192  # a longer query string is cut before parsing: bounded work for any input
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")

# engine: (host test, path test, parameters in order of preference)
_ENGINES: list[tuple[str, re.Pattern, tuple[str, ...]]] = [
    ("google", re.compile(r"^/(search|webhp|images|m/search)?$|^/search"), ("q", "as_q")),
    ("bing", re.compile(r"^/(search|images/search|videos/search|news/search)"), ("q",)),
    ("duckduckgo", re.compile(r"^/(html/?|lite/?)?$"), ("q",)),
    ("yahoo", re.compile(r"^/search"), ("p", "q")),
    ("youtube", re.compile(r"^/results"), ("search_query", "q")),
    ("wikipedia", re.compile(r"^/(w/index\.php|wiki/Special:Search)"), ("search",)),
]
_GENERIC = ("q", "query", "search", "search_query", "searchterm", "keyword", "keywords", "term", "text")


def engine_of(host: str) -> str | None:
    """Which search engine serves ``host`` (google.co.uk, www.bing.com, en.m.wikipedia.org …)."""
    labels = host.split(".")
    for name in ("google", "bing", "duckduckgo", "yahoo", "youtube", "wikipedia"):
        if name in labels:
            if name == "yahoo" and "search" not in labels:
                return None
            return name
    return None


def extract(host: str, path: str) -> str | None:
    """The search term in a request (host already normalised, path with query), or None."""
    path_only, sep, query = path.partition("?")
    if not sep or not query:
        return None
    engine = engine_of(host)
    if engine is not None:
        for name, path_rx, params in _ENGINES:
            if name == engine:
                if not path_rx.search(path_only):
                    return None
                return _first(query, params)
    return _first(query, _GENERIC)


def _first(query: str, params: tuple[str, ...]) -> str | None:
    try:
        values = parse_qs(query[:MAX_QUERY], keep_blank_values=False, max_num_fields=200)
    except ValueError:
        return None
    for p in params:
        for v in values.get(p, ()):
            term = clean(v)
            if term:
                return term
    return None


def clean(text: str) -> str:
    """Control and invisible characters removed, whitespace collapsed, at most MAX_TERM characters."""
    text = _CONTROL.sub("", text[: MAX_TERM * 4])
    return " ".join(text.split())[:MAX_TERM]
