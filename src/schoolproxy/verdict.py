"""The Verdict: one per request (or per passthrough/blocked connection), built by the enforcement addon
and consumed by everything beside the hot path — the log store, alerts and metrics subscribe to the
:class:`VerdictBus`. Subscribers must not block: they enqueue and return.

A Verdict is immutable: subscribers on other threads read it while the proxy goes on, so what they see
is what was published. Build it by keyword; ``_replace`` makes a changed copy."""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import Callable, NamedTuple

log = logging.getLogger(__name__)

# Crockford base32 without I, L, O, U: a reference a child can read out to a teacher.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # 10 bits -> two digits
_EPOCH = 1_704_067_200  # 2024-01-01: 30 bits of seconds last until 2058
_counter = itertools.count(int.from_bytes(os.urandom(3)) & 0xFFFFF)
# Distinguishes proxy processes (workers, restarts within a second); see set_process_tag().
_tag = (os.getpid() ^ int.from_bytes(os.urandom(2))) & 0x3FF
_prefix: tuple[int, str] = (-1, "")  # (second, its first 8 digits with dashes), for this process tag


def set_process_tag(tag: int) -> None:
    """Give each worker of one proxy a distinct tag (0-1023) so their references never collide."""
    global _tag, _prefix
    _tag = tag & 0x3FF
    _prefix = (-1, "")


def new_reference() -> str:
    """Unique reference id shown on the block page and stored on the record, e.g. ``1BM9-7DG0-034X``.

    60 bits as 12 base32 digits: 30 bits of seconds (six digits), a 10-bit process tag (two) and a
    20-bit counter (four) — unique for up to a million requests per second per process. The first
    eight digits change once a second, so they are spelled once a second; every request (and every
    request has one) then costs two table lookups.
    """
    global _prefix
    second = (int(time.time()) - _EPOCH) & 0x3FFFFFFF
    prefix = _prefix
    if prefix[0] != second:
        t = _PAIRS[second >> 20] + _PAIRS[(second >> 10) & 0x3FF] + _PAIRS[second & 0x3FF]
        prefix = _prefix = (second, f"{t[:4]}-{t[4:]}{_PAIRS[_tag]}-")
    n = next(_counter) & 0xFFFFF
    return prefix[1] + _PAIRS[n >> 10] + _PAIRS[n & 0x3FF]


# A NamedTuple rather than a frozen dataclass: as immutable, and built twice a request for a quarter
# of the cost.
class Verdict(NamedTuple):
    ref: str
    time: float                    # epoch seconds when the request arrived
    client_ip: str
    username: str | None
    profile: str
    identity_source: str           # proxy-auth, subnet, default, ...
    identity_rule: str
    method: str                    # GET, POST, CONNECT, TLS (passthrough ClientHello)
    scheme: str                    # http, https
    host: str
    port: int
    path: str                      # path + query as requested (redaction is the store's job)
    action: str                    # allow | block
    rule: str
    reason: str
    categories: tuple[str, ...]
    layer: str = "http"            # http | connect | tls-passthrough | tls (a handshake the client refused)
    device: str | None = None
    safesearch: bool = False       # SafeSearch parameters/headers were enforced
    status: int | None = None
    bytes: int = 0
    duration: float | None = None
    error: str | None = None
    decision_seconds: float = 0.0  # time spent identifying-and-deciding (for the latency histogram)
    person: str | None = None      # the real person behind a shared logon (supply register)
    search_term: str | None = None
    #: Real-time content over a profile's alert score: (theme, score, the words as on the page,
    #: "block" | "alert", the score that applied, "page" | "reply").
    content: tuple[tuple[str, int, tuple[str, ...], str, int, str], ...] = ()
    #: The client itself refused the school's certificate in the TLS handshake with the proxy (a VPN app,
    #: a pinned client, a device without the school's CA). Never set for a failure on the upstream side
    #: (a site whose certificate the proxy does not trust): that is not something the person did.
    client_refused_certificate: bool = False

    @property
    def category(self) -> str:
        """The category that decided the request (from its rule), else its first category, else "none"."""
        i = self.rule.find("category:")
        if i >= 0:
            return self.rule[i + 9:]
        if self.rule.startswith("locked:"):
            return self.rule[7:]
        return self.categories[0] if self.categories else "none"

    @property
    def blocked(self) -> bool:
        return self.action == "block"


class VerdictBus:
    """Fan-out of finished verdicts to subscribers (record, alert, metrics)."""

    def __init__(self) -> None:
        self._subscribers: list[Callable[[Verdict], None]] = []

    def subscribe(self, fn: Callable[[Verdict], None]) -> None:
        self._subscribers.append(fn)

    def unsubscribe(self, fn: Callable[[Verdict], None]) -> None:
        self._subscribers.remove(fn)

    def publish(self, verdict: Verdict) -> None:
        for fn in self._subscribers:
            try:
                fn(verdict)
            except Exception:  # a broken consumer must never break the request path
                log.exception("verdict subscriber %r failed", fn)
