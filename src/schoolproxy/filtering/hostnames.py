"""Hostname normalisation: one canonical form for list entries and request hosts alike.

A filter is only as good as its matching, and hostnames arrive in many spellings that reach the same
site: upper case, a trailing dot (``facebook.com.``), a port, Unicode (IDN) labels, or an IP literal in
one of the forms browsers and curl accept (``0x7f.1``, ``2130706433``). Everything is reduced here to
lower-case ASCII (punycode) without port or trailing dot; IPs to their canonical text form.
Anything that cannot be a hostname raises :class:`InvalidHost`, which the policy blocks for everyone.
"""

from __future__ import annotations

import ipaddress
import re

import idna

from schoolproxy.filtering.paths import canonical

MAX_HOST_LENGTH = 253

# The common case: already-normal ASCII labels (underscores occur in real-world hostnames).
_PLAIN = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*")
# Forms that inet_aton (and so browsers and curl) read as IPv4: 1-4 parts of decimal, octal or hex.
_NUMERIC_PART = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")


class InvalidHost(ValueError):
    """The text cannot be a hostname or IP address."""


def normalise_host(raw: str) -> tuple[str, bool]:
    """Return ``(host, is_ip)`` in canonical form, or raise :class:`InvalidHost`.

    Accepts an optional ``:port`` and IPv6 in brackets, as found in a Host header or CONNECT target.
    """
    host = raw.strip().lower()
    if host.startswith("["):  # [v6]:port
        end = host.find("]")
        if end < 0:
            raise InvalidHost(f"unbalanced bracket in host {raw[:80]!r}")
        return _ip_text(host[1:end], raw), True
    if host.count(":") == 1:
        host, _, port = host.partition(":")
        if not port.isdigit():
            raise InvalidHost(f"bad port in host {raw[:80]!r}")
    elif ":" in host:  # bare IPv6
        return _ip_text(host, raw), True
    host = host.rstrip(".")
    if not host or len(host) > MAX_HOST_LENGTH:
        raise InvalidHost(f"empty or over-long host {raw[:80]!r}")
    if _PLAIN.fullmatch(host):
        if host[-1].isdigit() or host.startswith("0x") or ".0x" in host:
            ip = _numeric_ipv4(host)
            if ip is not None:
                return ip, True
        return host, False
    try:
        ascii_host = idna.encode(host, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError) as e:
        raise InvalidHost(f"not a valid hostname {raw[:80]!r}: {e}") from None
    ascii_host = ascii_host.rstrip(".")
    if not _PLAIN.fullmatch(ascii_host) or len(ascii_host) > MAX_HOST_LENGTH:
        raise InvalidHost(f"not a valid hostname {raw[:80]!r}")
    return ascii_host, False


def _ip_text(text: str, raw: str) -> str:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        raise InvalidHost(f"not a valid IP address {raw[:80]!r}") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ip)


def _numeric_ipv4(host: str) -> str | None:
    """IPv4 in any inet_aton form (``127.1``, ``0x7f000001``, ``017700000001``) → dotted quad."""
    parts = host.split(".")
    if len(parts) > 4 or not all(_NUMERIC_PART.fullmatch(p) for p in parts):
        return None
    try:
        nums = [int(p, 16) if p.startswith("0x") else int(p, 8) if len(p) > 1 and p[0] == "0" else int(p)
                for p in (p if p != "0x" else "0x0" for p in parts)]
    except ValueError:  # e.g. "08" is not octal: not an IP; treat as an (odd) name
        return None
    *head, last = nums
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(nums)):
        raise InvalidHost(f"IPv4 address out of range {host[:80]!r}")
    value = 0
    for n in head:
        value = value << 8 | n
    value = value << (8 * (5 - len(nums))) | last
    return str(ipaddress.IPv4Address(value))


def normalise_entry(raw: str) -> tuple[str, str]:
    """A list or config entry ``host[/path]`` → ``(host, path_prefix)``; path is "" for a domain entry.

    Tolerates what list files contain in the wild: a scheme, a leading ``*.`` or ``.``, upper case. The
    path is stored as requests are matched: resolved as a server would (:func:`paths.canonical`).
    """
    entry = raw.strip()
    if "://" in entry:
        entry = entry.split("://", 1)[1]
    host, slash, path = entry.partition("/")
    host = host.lstrip("*").lstrip(".")
    name, _ = normalise_host(host)
    return name, canonical(slash + path).lower() if path else ""
