"""The mitmproxy side: thin addons that turn flows into the core's request facts and apply verdicts.

Order matters: configuration is loaded first, identity is established before enforcement, and the
reloader runs beside them. :func:`make_addons` is what ``addons/schoolproxy_addons.py`` (``mitmdump -s``)
and ``schoolproxy run`` both use.
"""

from __future__ import annotations

from schoolproxy.proxy.alert import Alert
from schoolproxy.proxy.enforce import Enforce
from schoolproxy.proxy.headercheck import HeaderCheck
from schoolproxy.proxy.heap import FreezeHeap
from schoolproxy.proxy.identify import Identify
from schoolproxy.proxy.limits import Limits
from schoolproxy.proxy.loadconfig import LoadConfig
from schoolproxy.proxy.logonfeed import LogonFeed
from schoolproxy.proxy.metrics import MetricsExporter
from schoolproxy.proxy.record import Record
from schoolproxy.proxy.reload import Reload
from schoolproxy.snapshot import Engine


def make_addons(engine: Engine | None = None) -> list[object]:
    engine = engine or Engine()
    # HeaderCheck refuses ambiguous request heads before a password is checked; Limits comes after
    # Enforce, when it is known whether a request is answered here (its body then never kept).
    return [LoadConfig(engine), LogonFeed(engine), HeaderCheck(), Identify(engine), Enforce(engine), Limits(engine),
            Reload(engine), Record(engine), Alert(engine), MetricsExporter(engine), FreezeHeap()]
