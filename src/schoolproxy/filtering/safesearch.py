"""SafeSearch and YouTube Restricted Mode: what each engine documents, applied to every request so
that a client cannot turn it off (its own parameter values are replaced, not kept).

- Google: ``safe=active`` on every google.<tld> request (Google's documented SafeSearch parameter).
- Bing: ``adlt=strict``.
- DuckDuckGo: ``kp=1`` (strict).
- YouTube: the ``YouTube-Restrict: Strict|Moderate`` request header on the hosts Google lists for
  network-level restrictions.

Only intercepted HTTPS and plain HTTP can be rewritten; a profile that passes a search engine through
without interception loses SafeSearch (``schoolproxy check`` warns).
"""

from __future__ import annotations

from typing import Literal

YOUTUBE_HOSTS = frozenset({
    "www.youtube.com", "m.youtube.com", "youtube.com", "youtubei.googleapis.com",
    "youtube.googleapis.com", "www.youtube-nocookie.com", "music.youtube.com",
})

Engine = Literal["google", "bing", "duckduckgo"]
#: engine → (query parameter, enforced value)
PARAMS: dict[str, tuple[str, str]] = {
    "google": ("safe", "active"),
    "bing": ("adlt", "strict"),
    "duckduckgo": ("kp", "1"),
}


def search_engine(host: str) -> str | None:
    """Which engine a (normalised) host belongs to, if any (cheap for the common non-match: it runs on
    every request)."""
    if "google." in host:
        labels = host.split(".")
        # google.co.uk, www.google.com, images.google.de — but not googleapis.com or evilgoogle.com
        if "google" in labels and labels.index("google") >= len(labels) - 3:
            i = labels.index("google")
            if i == 0 or labels[i - 1] in ("www", "images", "news", "video", "books", "scholar"):
                return "google"
        return None
    if host == "bing.com" or host.endswith(".bing.com"):
        return "bing"
    if host == "duckduckgo.com" or host.endswith(".duckduckgo.com"):
        return "duckduckgo"
    return None


def youtube_header(host: str, mode: str) -> tuple[str, str] | None:
    """The YouTube-Restrict header to set for this host, or None."""
    if mode == "off" or host not in YOUTUBE_HOSTS:
        return None
    return ("YouTube-Restrict", "Strict" if mode == "strict" else "Moderate")


def with_param(path: str, param: str, value: str) -> str | None:
    """``path`` with ``param=value`` appended when its query certainly does not carry ``param`` yet, else
    None: the caller then rewrites the parsed query (replacing the client's values). Appending leaves the
    rest of the query byte for byte as sent and costs a fraction of a parse and re-encode.

    A name counts as itself only without ``%`` or ``+``: servers decode those (``%73afe=off`` is
    ``safe=off``), so such a query always takes the parsed route.
    """
    base, _, query = path.partition("?")
    if not query:
        return f"{base}?{param}={value}"
    for part in query.split("&"):
        name = part.partition("=")[0]
        if name == param or "%" in name or "+" in name:
            return None
    return f"{path}&{param}={value}"
