"""The mitmproxy side: thin addons that turn flows into the core's request facts and apply verdicts.

Order matters: configuration is loaded first, identity is established before enforcement, and the
reloader runs beside them. :func:`make_addons` is what ``addons/schoolproxy_addons.py`` (``mitmdump -s``)
and ``schoolproxy run`` both use.
"""

from __future__ import annotations

from ..engine import Engine
from .alert import Alert
from .enforce import Enforce
from .heap import FreezeHeap
from .identify import Identify
from .loadconfig import LoadConfig
from .logonfeed import LogonFeed
from .metrics import MetricsExporter
from .record import Record
from .reload import Reload


def make_addons(engine: Engine | None = None) -> list[object]:
    engine = engine or Engine()
    return [LoadConfig(engine), LogonFeed(engine), Identify(engine), Enforce(engine), Reload(engine), Record(engine), Alert(engine),
            MetricsExporter(engine), FreezeHeap()]
