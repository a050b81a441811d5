"""The lean master's event dispatch (HookIndex): the same behaviour as mitmproxy's stock manager."""

from __future__ import annotations

import logging

from mitmproxy import exceptions, hooks, master, options
from mitmproxy.http import HTTPFlow
from mitmproxy.proxy.layers.http import HttpRequestHook
from mitmproxy.test import tflow

from schoolproxy.proxy.master import HookIndex, lean_master


class Recorder:
    def __init__(self, name: str, calls: list, fail: bool = False, halt: bool = False):
        self.name, self.calls, self.fail, self.halt = name, calls, fail, halt

    def request(self, f: HTTPFlow) -> None:
        self.calls.append(self.name)
        if self.fail:
            raise RuntimeError(f"{self.name} broke")
        if self.halt:
            raise exceptions.AddonHalt()


class AsyncRecorder(Recorder):
    async def request(self, f: HTTPFlow) -> None:
        self.calls.append(self.name)


class Parent(Recorder):
    def __init__(self, name, calls, children):
        super().__init__(name, calls)
        self.addons = children


class Updates:
    def __init__(self):
        self.seen = []

    def update(self, flows):
        self.seen.extend(flows)


async def dispatch(*addons) -> master.Master:
    m = master.Master(options.Options())
    m.addons = HookIndex(m)
    m.addons.add(*addons)
    f = tflow.tflow()
    await m.addons.handle_lifecycle(HttpRequestHook(f))
    return m


async def test_chain_order_children_after_parent_and_async_handlers():
    calls = []
    await dispatch(Parent("p", calls, [Recorder("c1", calls), AsyncRecorder("c2", calls)]), Recorder("b", calls))
    assert calls == ["p", "c1", "c2", "b"]


async def test_an_addon_error_is_logged_and_the_next_addon_still_runs(caplog):
    calls = []
    with caplog.at_level(logging.ERROR):
        await dispatch(Recorder("a", calls, fail=True), Recorder("b", calls))
    assert calls == ["a", "b"]
    assert "Addon error: a broke" in caplog.text
    # mitmproxy's report, with the traceback down to where the addon raised
    assert "Traceback" in caplog.text and 'raise RuntimeError(f"{self.name} broke")' in caplog.text


async def test_addon_halt_stops_the_rest():
    calls = []
    await dispatch(Recorder("a", calls, halt=True), Recorder("b", calls))
    assert calls == ["a"]


async def test_an_addon_added_later_gets_events_and_a_removed_one_does_not():
    calls = []
    first = Recorder("first", calls)
    m = await dispatch(first)
    late = Recorder("late", calls)
    m.addons.add(late)
    m.addons.remove(first)
    await m.addons.handle_lifecycle(HttpRequestHook(tflow.tflow()))
    assert calls == ["first", "late"]


async def test_update_follows_a_flow_event_only_when_someone_listens():
    u = Updates()
    m = await dispatch(u)
    assert len(u.seen) == 1
    await m.addons.handle_lifecycle(hooks.RunningHook())  # not a flow: no update
    assert len(u.seen) == 1


async def test_the_lean_master_dispatches_through_the_index():
    m = lean_master(options.Options(), policy=False)
    assert isinstance(m.addons, HookIndex)
    assert m.addons.get("proxyserver") and m.addons.get("termlog")
    assert not m.addons.handlers("update")  # nothing in the gateway listens, so no update walk
