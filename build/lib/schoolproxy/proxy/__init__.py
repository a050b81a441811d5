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
from schoolproxy.proxy.ownpages import OwnPages
from schoolproxy.proxy.record import Record
from schoolproxy.proxy.reload import Reload
from schoolproxy.proxy.transparent import PassthroughViaUpstream, Transparent
from schoolproxy.proxy.upstreamidentity import UpstreamIdentity
from schoolproxy.snapshot import Engine


def make_addons(engine: Engine | None = None) -> list[object]:
    engine = engine or Engine()
    return [LoadConfig(engine), LogonFeed(engine), OwnPages(engine), Transparent(engine), Identify(engine), Enforce(engine),
            PassthroughViaUpstream(engine), UpstreamIdentity(engine), Reload(engine), Record(engine), Alert(engine),
            MetricsExporter(engine), FreezeHeap()]
