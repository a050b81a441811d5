"""The lean master: the proxy machinery and schoolproxy's addons, dispatched through HookIndex."""

from __future__ import annotations

from mitmproxy import options

from schoolproxy.proxy.internals import HookIndex
from schoolproxy.proxy.master import lean_master


async def test_the_lean_master_dispatches_through_the_index():
    m = lean_master(options.Options(), policy=False)
    assert isinstance(m.addons, HookIndex)
    assert m.addons.get("proxyserver") and m.addons.get("termlog")
    assert not m.addons.handlers("update")  # nothing in the gateway listens, so no update walk
