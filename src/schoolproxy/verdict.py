"""The Verdict: one per request (or per passthrough/blocked connection), built by the enforcement addon
and consumed by everything beside the hot path — the log store, alerts and metrics subscribe to the
:class:`VerdictBus`. Subscribers must not block: they enqueue and return."""

from __future__ import annotations

import itertools
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)

# Crockford base32 without I, L, O, U: a reference a child can read out to a teacher.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_counter = itertools.count(int.from_bytes(os.urandom(3)))


def new_reference() -> str:
    """Short unique reference id, e.g. ``7KQ2-9XMA``: seconds since 2024 + a per-process counter +
    random bits, so ids from several workers and restarts do not collide."""
    n = ((int(time.time()) - 1_704_067_200) & 0xFFFFFFFF) << 24 | (next(_counter) & 0xFFF) << 12 \
        | int.from_bytes(os.urandom(2)) & 0xFFF
    chars = []
    for _ in range(12):
        n, r = divmod(n, 32)
        chars.append(_ALPHABET[r])
    s = "".join(reversed(chars)).lstrip("0").rjust(10, "0")
    return f"{s[:-5]}-{s[-5:]}"


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
