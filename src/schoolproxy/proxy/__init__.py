"""The mitmproxy side: thin addons that turn flows into the core's request facts and apply its rulings.

:func:`make_addons` is the pipeline, in order: load the configuration, run the logon feed, identify the
user, decide and enforce, reload on change, then record, alert and count each verdict. It is what
``addons/schoolproxy_addons.py`` (``mitmdump -s``) and ``schoolproxy run`` both use. Around identify and
enforce: the proxy's own pages (PAC file, certificate page) are answered before anyone signs in, and
its pages for a signed-in person (the unblock request form, the acceptable-use notice) after; a first
page navigation goes to the notice until it is accepted;
transparent-mode connections are named and chained to the upstream filter before they are decided; the
upstream is told who is browsing once they are.
Content sits before enforce although it acts later in a flow's life: its ``response`` hook scores the
page and finishes the draft verdict before enforce's ``response`` publishes it.

An addon whose feature the running configuration turns off (transparent mode, telling the upstream
who is browsing, resolving names without an upstream, the notice, content scoring) says so in
``wants``: the lean master then calls none of its per-request hooks (:class:`~.internals.HookIndex`).

The addons share no hub. What they share is passed to them: the running snapshot, the verdict bus the
enforce addon publishes on and the records, alerts and metrics subscribe to, the metrics registry each
registers its own metrics on, and the logon feed that identify asks. Per request they talk through
``flow.metadata``.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry

from schoolproxy.proxy.alert import Alert
from schoolproxy.proxy.content import Content
from schoolproxy.proxy.enforce import Enforce
from schoolproxy.proxy.headercheck import HeaderCheck
from schoolproxy.proxy.heap import FreezeHeap
from schoolproxy.proxy.identify import Identify
from schoolproxy.proxy.limits import Limits
from schoolproxy.proxy.localguard import LocalGuard
from schoolproxy.proxy.loadconfig import LoadConfig
from schoolproxy.proxy.logonfeed import LogonFeed
from schoolproxy.proxy.metrics import MetricsExporter
from schoolproxy.proxy.notice import Notice
from schoolproxy.proxy.ownpages import OwnPages
from schoolproxy.proxy.pages import Pages
from schoolproxy.proxy.record import Record
from schoolproxy.proxy.reload import Reload
from schoolproxy.proxy.transparent import PassthroughViaUpstream, Transparent
from schoolproxy.proxy.upstreamidentity import UpstreamIdentity
from schoolproxy.snapshot import SnapshotHolder, worker_from_env
from schoolproxy.standards.live import LiveState
from schoolproxy.verdict import VerdictBus


def make_addons(reindex: Callable[[], None] | None = None) -> list[object]:
    """The pipeline. ``reindex`` is called whenever a configuration is loaded (the lean master asks the
    addons' ``wants`` again)."""
    snapshots = SnapshotHolder()
    if reindex is not None:
        snapshots.on_config(lambda snap: reindex())
    bus = VerdictBus()
    registry = CollectorRegistry()
    worker, _ = worker_from_env()  # this process's number among `schoolproxy run --workers N`
    logon_feed = LogonFeed(snapshots, registry, worker)
    live = LiveState()  # unblock outcomes, notice acceptances and recent blocks, kept fresh by Pages
    record = Record(snapshots, bus, registry, worker)  # its writer process reads that state for Pages
    return [
        LoadConfig(snapshots, registry),
        logon_feed,
        HeaderCheck(),  # ambiguous request heads are refused before anything else reads them
        OwnPages(snapshots),
        Transparent(snapshots),
        Identify(snapshots, registry, logon_feed),
        LocalGuard(snapshots),  # without an upstream filter: what the request's host resolves to
        Pages(snapshots, live, record),
        Content(snapshots, bus.publish, registry),
        Enforce(snapshots, bus.publish, logon_feed, live),
        Notice(snapshots, live),
        Limits(snapshots, registry),  # after Enforce and Notice: a request answered here never has its body kept
        PassthroughViaUpstream(snapshots, logon_feed),
        UpstreamIdentity(snapshots),
        Reload(snapshots, registry),
        record,
        Alert(snapshots, bus, registry, worker),
        MetricsExporter(snapshots, bus, registry, worker),
        FreezeHeap(),
    ]
