"""Slowing password guessing at the proxy's sign-in prompt.

A browser with a saved wrong password repeats the *same* credentials; someone guessing tries
*different* ones. So we count distinct failed credentials (by their HMAC, never the password) per client
address within a window. At ``max_failures`` the address is reported once and each further sign-in
attempt from it waits 2, 4, 8 … up to 30 seconds before it is checked — the directory (and its account
lockout policy) is not hammered, and a guesser gets a handful of tries a minute instead of thousands.

Failures are counted per client address and per account (``account:jsmith``), so guessing one account
from many addresses is slowed too. A delay computed when an attempt arrives would let guesses sent all
at once through unslowed (40 parallel guesses were all checked within seconds): :class:`Turns` makes the
checks of one address, and of one account, wait their turn, each delayed by the failures of the turns
before it; more waiting than a person could type are refused without being checked.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

MAX_DELAY = 30.0
MAX_TRACKED = 10_000
#: Password checks waiting for their turn per address or account; beyond it they are refused unchecked.
MAX_WAITING = 8


def account(username: str) -> str:
    """The guard's key for an account (never confused with an address)."""
    return "account:" + username.lower()


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


class Turns:
    """One password check at a time per key (a client address, an account): a FIFO queue per key, kept
    only while someone is in it."""

    def __init__(self, max_waiting: int = MAX_WAITING):
        self.max_waiting = max_waiting
        self._locks: dict[str, asyncio.Lock] = {}
        self._queued: dict[str, int] = {}

    def full(self, *keys: str) -> bool:
        return any(self._queued.get(k, 0) > self.max_waiting for k in keys)

    @asynccontextmanager
    async def turn(self, *keys: str) -> AsyncIterator[None]:
        """Hold the turn of every key (taken in a fixed order, so two waiters never deadlock)."""
        keys = tuple(sorted(set(keys)))
        for k in keys:
            self._queued[k] = self._queued.get(k, 0) + 1
        held: list[asyncio.Lock] = []
        try:
            for k in keys:
                lock = self._locks.setdefault(k, asyncio.Lock())
                await lock.acquire()
                held.append(lock)
            yield
        finally:
            for lock in held:
                lock.release()
            for k in keys:
                n = self._queued[k] - 1
                if n:
                    self._queued[k] = n
                else:
                    del self._queued[k]
                    self._locks.pop(k, None)
