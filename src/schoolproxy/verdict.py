"""The Verdict: one per request (or per passthrough/blocked connection), built by the enforcement addon
and consumed by everything beside the hot path — the log store, alerts and metrics subscribe to the
:class:`VerdictBus`. Subscribers must not block: they enqueue and return."""

from __future__ import annotations

import base64
import itertools
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)

# Crockford base32 without I, L, O, U: a reference a child can read out to a teacher.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())
_EPOCH = 1_704_067_200  # 2024-01-01: 30 bits of seconds last until 2058
_counter = itertools.count(int.from_bytes(os.urandom(3)) & 0xFFFFF)
# Distinguishes proxy processes (workers, restarts within a second); see set_process_tag().
_tag = (os.getpid() ^ int.from_bytes(os.urandom(2))) & 0x3FF


def set_process_tag(tag: int) -> None:
    """Give each worker of one proxy a distinct tag (0-1023) so their references never collide."""
    global _tag
    _tag = tag & 0x3FF


def new_reference() -> str:
    """Unique reference id shown on the block page and stored on the record, e.g. ``1BM9-7DG0-034X``.

    60 bits: 30 bits of seconds, a 10-bit process tag and a 20-bit counter — unique for up to a
    million requests per second per process.
    """
    n = ((int(time.time()) - _EPOCH) & 0x3FFFFFFF) << 30 | _tag << 20 | (next(_counter) & 0xFFFFF)
    # The 60 bits as 12 base32 digits: the standard encoder (in C), its alphabet mapped to Crockford's.
    s = base64.b32encode((n << 4).to_bytes(8, "big"))[:12].translate(_TO_CROCKFORD).decode()
    return f"{s[:4]}-{s[4:8]}-{s[8:]}"


@dataclass(slots=True)
class Verdict:
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
    layer: str = "http"            # http | connect | tls-passthrough
    device: str | None = None
    safesearch: bool = False       # SafeSearch parameters/headers were enforced
    status: int | None = None
    bytes: int = 0
    duration: float | None = None
    error: str | None = None
    decision_seconds: float = 0.0  # time spent identifying-and-deciding (for the latency histogram)
    person: str | None = None      # the real person behind a shared logon (supply register)
    search_term: str | None = None

    @property
    def category(self) -> str:
        """The category that decided the request (from its rule), else its first category, else "none"."""
        i = self.rule.find("category:")
        if i >= 0:
            return self.rule[i + 9:]
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
