"""FreezeHeap addon: keeps Python's cyclic garbage collector from pausing the proxy.

A running proxy holds over a hundred thousand long-lived objects (mitmproxy, SQLAlchemy, pydantic, our
compiled config). Every full (generation 2) collection walks all of them — tens of milliseconds in
which no request moves. ``gc.freeze()`` once everything has started moves those objects out of the collector's sight, so a
collection only walks what requests create. After a reload the heap is collected and frozen again, so
the previous configuration's objects are still freed. (Freezing hides objects from the cycle collector
only; reference counting frees them as usual.)
"""

from __future__ import annotations

import gc


def freeze_heap() -> None:
    gc.unfreeze()  # after a reload: the previous configuration's cycles must still be collectable
    gc.collect()
    gc.freeze()


class FreezeHeap:
    def running(self) -> None:
        freeze_heap()
