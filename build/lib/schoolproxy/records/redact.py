"""What of a request is kept: privacy by default (UK GDPR data minimisation).

Query strings carry session ids, tokens and personal data, so their values are dropped — except
recognised search parameters, because the DfE standard asks schools to see what was searched for.
Keys are kept (``?sid=…``) so the record still shows the shape of the request. Cookies, bodies and
credentials are never part of a record at all.
"""

from __future__ import annotations

from urllib.parse import quote, unquote_plus

#: Search parameters of the major engines (Google/Bing/DDG/Yahoo ``q``/``p``, YouTube
#: ``search_query``, Wikipedia ``search``, Baidu ``wd``, Yandex ``text``).
SEARCH_PARAMS = frozenset({"q", "p", "query", "search_query", "search", "wd", "text"})
MAX_PATH = 2048
REDACTED = "…"


def redact_path(path: str, keep: frozenset[str] = SEARCH_PARAMS, redact: bool = True) -> str:
    """Path with query values other than ``keep`` replaced by ``…``; the fragment dropped; bounded."""
    path = path.split("#", 1)[0]
    if redact:
        base, sep, query = path.partition("?")
        if sep:
            parts = []
            for item in query.split("&"):
                key, eq, value = item.partition("=")
                parts.append(item if (not eq or unquote_plus(key).lower() in keep) else f"{key}={quote(REDACTED)}")
            path = f"{base}?{'&'.join(parts)}"
    if len(path) > MAX_PATH:
        path = path[:MAX_PATH] + quote(REDACTED)
    return path
