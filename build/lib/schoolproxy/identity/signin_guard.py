"""Slowing password guessing at the proxy's sign-in prompt.

A browser with a saved wrong password repeats the *same* credentials; someone guessing tries
*different* ones. So we count distinct failed credentials (by their HMAC, never the password) per client
address within a window. At ``max_failures`` the address is reported once and each further sign-in
attempt from it waits 2, 4, 8 … up to 30 seconds before it is checked — the directory (and its account
lockout policy) is not hammered, and a guesser gets a handful of tries a minute instead of thousands.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

MAX_DELAY = 30.0
MAX_TRACKED = 10_000


@dataclass(slots=True)
class _Client:
    failures: deque = field(default_factory=deque)  # (time, credential key)
    reported_until: float = 0.0


class SigninGuard:
    def __init__(self, max_failures: int = 10, window_seconds: float = 300.0):
        self.max_failures = max_failures
        self.window = window_seconds
        self._clients: dict[str, _Client] = {}

    def failed(self, ip: str, key: bytes, now: float) -> bool:
        """Count a failed sign-in; True the first time in a window that ``ip`` crosses the threshold."""
        c = self._clients.get(ip)
        if c is None:
            if len(self._clients) >= MAX_TRACKED:
                self._forget(now)
                if len(self._clients) >= MAX_TRACKED:  # a flood of addresses: start afresh, bounded memory
                    self._clients.clear()
            c = self._clients[ip] = _Client()
        self._trim(c, now)
        if all(k != key for _, k in c.failures):
            c.failures.append((now, key))
        if len(c.failures) >= self.max_failures and now >= c.reported_until:
            c.reported_until = now + self.window
            return True
        return False

    def delay(self, ip: str, now: float) -> float:
        """Seconds to wait before checking a sign-in from ``ip`` (0 for almost everyone)."""
        c = self._clients.get(ip)
        if c is None:
            return 0.0
        self._trim(c, now)
        excess = len(c.failures) - self.max_failures
        if excess < 0:
            if not c.failures:
                del self._clients[ip]
            return 0.0
        return min(MAX_DELAY, 2.0 ** (excess + 1))

    def failures(self, ip: str, now: float) -> int:
        c = self._clients.get(ip)
        if c is None:
            return 0
        self._trim(c, now)
        return len(c.failures)

    def _trim(self, c: _Client, now: float) -> None:
        while c.failures and c.failures[0][0] <= now - self.window:
            c.failures.popleft()

    def _forget(self, now: float) -> None:
        for ip, c in list(self._clients.items()):
            self._trim(c, now)
            if not c.failures:
                del self._clients[ip]
