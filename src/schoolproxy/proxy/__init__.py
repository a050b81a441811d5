"""The mitmproxy side: thin addons that turn flows into the core's request facts and apply verdicts.

Order matters: configuration is loaded first, identity is established before enforcement, and the
reloader runs beside them. :func:`make_addons` is what ``addons/schoolproxy_addons.py`` (``mitmdump -s``)
and ``schoolproxy run`` both use.
"""

from __future__ import annotations

from schoolproxy.proxy.alert import Alert
from schoolproxy.proxy.enforce import Enforce
from schoolproxy.proxy.heap import FreezeHeap
from schoolproxy.proxy.identify import Identify
from schoolproxy.proxy.loadconfig import LoadConfig
from schoolproxy.proxy.logonfeed import LogonFeed
from schoolproxy.proxy.metrics import MetricsExporter
from schoolproxy.proxy.notice import Notice
from schoolproxy.proxy.pages import Pages
from schoolproxy.proxy.record import Record
from schoolproxy.proxy.reload import Reload
from schoolproxy.snapshot import Engine
from schoolproxy.standards.live import LiveState


def make_addons(engine: Engine | None = None) -> list[object]:
    engine = engine or Engine()
    live = LiveState()  # expiring allows, unblock outcomes and notice acceptances, kept fresh by Pages
    return [LoadConfig(engine), LogonFeed(engine), Identify(engine), Pages(engine, live), Enforce(engine, live),
            Notice(engine, live), Reload(engine), Record(engine), Alert(engine), MetricsExporter(engine), FreezeHeap()]
