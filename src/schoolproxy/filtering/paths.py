"""Request paths as a server would resolve them, for matching URL entries (``amtso.org/check-…``).

A URL entry is only as good as its matching. ``/%63heck-…`` (an encoded unreserved character),
``//check-…`` (a repeated slash) and ``/bitesize/../news`` (a dot segment) are, to the server, the same
resource as ``/check-…`` and ``/news``; matched on the text as sent they slipped past a block, or into
a guest's allow-list. Servers also differ: nginx decodes every escape (``%2F`` too) before resolving dot
segments, IIS reads ``\\`` as ``/``, Tomcat drops ``;params`` from segments; Apache does none of that.

:func:`readings` gives every path the request could resolve to: the RFC 3986 reading (escapes of
unreserved characters decoded, dot segments removed, repeated slashes merged) and, if different, the
lenient reading of the permissive servers. The decision must hold for each of them — a block in any
reading blocks, an allow-list must allow them all — so a path that servers resolve in different ways
cannot be used to reach what one of them would serve. The query is kept as sent.
"""

from __future__ import annotations

import re

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_PARAMS = re.compile(r";[^/]*")
# Anything that can make a server read the path differently from its text.
_SPECIAL = ("%", "/.", "//", "\\", ";")


def readings(target: str) -> tuple[str, ...]:
    """The paths (with the query as sent) a server may resolve ``target`` to: one, or two when the RFC
    reading and the lenient one differ. A target that is not a path (``*``) is returned as it is."""
    if "%" not in target and "/." not in target and "//" not in target and "\\" not in target \
            and ";" not in target:
        return (target,)  # the common case: nothing to resolve
    path, mark, query = target.partition("?")
    if not path.startswith("/") or not any(s in path for s in _SPECIAL):
        return (target,)
    strict = _resolve(_ESCAPE.sub(_unreserved, path)) + mark + query
    lenient = _resolve(_PARAMS.sub("", _decode_all(path).replace("\\", "/"))) + mark + query
    return (strict,) if lenient == strict else (strict, lenient)


def canonical(target: str) -> str:
    """The RFC 3986 reading of ``target`` (what list and override entries are stored as)."""
    return readings(target)[0]


def _unreserved(m: re.Match) -> str:
    byte = int(m.group(1), 16)
    return chr(byte) if byte in _UNRESERVED else "%" + m.group(1).upper()


def _decode_all(path: str) -> str:
    # Once, as a server does (not twice: %252e stays %2e); invalid escapes stay as they are.
    raw = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), path)
    return raw.encode("latin-1", "surrogateescape").decode("utf-8", "surrogateescape") if not raw.isascii() \
        else raw


def _resolve(path: str) -> str:
    """Remove dot segments (RFC 3986 5.2.4) and merge repeated slashes; the result starts with "/"."""
    out: list[str] = []
    segments = path.split("/")
    for seg in segments[1:]:
        if seg == "..":
            if out:
                out.pop()
        elif seg and seg != ".":
            out.append(seg)
    trailing = segments[-1] in ("", ".", "..") and len(segments) > 1 and out
    return "/" + "/".join(out) + ("/" if trailing else "")


def split_target(target: str) -> tuple[str | None, str]:
    """``https://host:port/path?q`` → (``host:port``, ``/path?q``); an origin-form target → (None, target).

    Inside a tunnel, or as HTTP/2's ``:path``, an absolute URL names a site of its own: that name must
    pass the policy too (a server may follow it rather than the Host header)."""
    if target.startswith("/") or "://" not in target:
        return None, target
    scheme, _, rest = target.partition("://")
    if not scheme.isalpha():
        return None, target
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    authority, path = rest[:end].rpartition("@")[2], rest[end:]
    if path.startswith("#"):
        path = ""
    return authority, (path if path.startswith("/") else "/" + path)
