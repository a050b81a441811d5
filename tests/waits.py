"""Waiting for a condition instead of sleeping: a test that sleeps before "nothing arrived" or "exactly
once" can pass because the thing it waits for was late, or never ran at all."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float = 20.0, what: str = "the condition",
               every: float = 0.05, detail: Callable[[], str] | None = None) -> T:
    """Poll ``condition`` until it returns something true, and return that; fail naming ``what`` (and
    ``detail()``, e.g. the proxy's log) if it has not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout} s" + (f"\n{detail()}" if detail else ""))
        time.sleep(every)
