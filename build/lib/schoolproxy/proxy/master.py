"""A lean mitmproxy master for ``schoolproxy run``.

``mitmdump`` loads about 30 built-in addons (playback, export, map-local, sticky cookies…) and every
event walks all of them. A gateway needs only the proxy machinery itself; with just these the proxy
serves about 1.6× the requests per second of ``mitmdump`` (shared/REFERENCE.md). What a network
manager relies on is kept: clear start-up errors (ErrorCheck), upstream mode and upstream
authentication, and the mitm.it onboarding page for installing the CA.

The master also dispatches events through :class:`HookIndex` rather than mitmproxy's stock manager,
which walks every addon (a generator, a ``getattr``, a context manager and a coroutine each) for every
event of every request — including the ``update`` event that follows each flow event and that no
gateway addon handles. Measured with py-spy, that walk was the largest single cost of the full stack.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from mitmproxy import addonmanager, exceptions, flow, hooks, master, options
from mitmproxy.addons import (
    block,
    core,
    disable_h2c,
    dns_resolver,
    errorcheck,
    next_layer,
    onboarding,
    proxyserver,
    termlog,
    tlsconfig,
    upstream_auth,
)

from schoolproxy.proxy import make_addons
from schoolproxy.snapshot import Engine


class HookIndex(addonmanager.AddonManager):
    """mitmproxy's addon manager with each event's handlers resolved once, not on every event.

    Same semantics as the stock manager: chain order, children after their parent, sync and async
    handlers, ``AddonHalt`` stopping the rest, an exception in one top-level addon logged and the next
    one still called. The index is rebuilt whenever the chain changes (add, register, remove, clear);
    an addon that swaps its own ``addons`` list later must not be used with it (the lean master has none).
    """

    def __init__(self, master):
        super().__init__(master)
        self._index: dict[str, list[list[Callable[..., Any]]]] = {}

    def register(self, addon):
        try:
            return super().register(addon)
        finally:
            self._index.clear()

    def add(self, *addons):
        super().add(*addons)
        self._index.clear()

    def remove(self, addon):
        super().remove(addon)
        self._index.clear()

    def clear(self):
        super().clear()
        self._index.clear()

    def handlers(self, name: str) -> list[list[Callable[..., Any]]]:
        """Per top-level addon, the callables handling event ``name`` (addons without one left out)."""
        groups = self._index.get(name)
        if groups is None:
            groups = []
            for top in self.chain:
                funcs = [f for a in addonmanager.traverse([top]) if callable(f := getattr(a, name, None))]
                if funcs:
                    groups.append(funcs)
            self._index[name] = groups
        return groups

    async def trigger_event(self, event: hooks.Hook) -> None:
        groups = self.handlers(event.name)
        if not groups:
            return
        args = event.args()
        for funcs in groups:
            # mitmproxy's safecall() semantics, without entering a generator-based context manager for
            # every addon on every event (~1 µs each): only an error goes through safecall, to be reported.
            try:
                for func in funcs:
                    res = func(*args)
                    if res is not None and inspect.isawaitable(res):
                        await res
            except exceptions.AddonHalt:
                return
            except exceptions.OptionsError:
                raise
            except Exception as e:
                _report(e)

    async def handle_lifecycle(self, event: hooks.Hook) -> None:
        await self.trigger_event(event)
        if self.handlers("update"):
            args = event.args()
            if args and isinstance(args[0], flow.Flow):
                await self.trigger_event(hooks.UpdateHook([args[0]]))


def _report(error: Exception) -> None:
    """Log an addon's error exactly as mitmproxy's safecall() does (message, cut traceback)."""
    with addonmanager.safecall():
        raise error


def lean_master(opts: options.Options, engine: Engine | None = None, verbose: bool = False,
                policy: bool = True) -> master.Master:
    """The lean proxy; ``policy=False`` leaves out schoolproxy's own addons (the benchmark's baseline)."""
    m = master.Master(opts, with_termlog=False)
    opts.changed.disconnect(m.addons._configure_all)  # the stock manager it replaces (still empty)
    m.addons = HookIndex(m)
    m._termlog_addon = termlog.TermLog()
    m.addons.add(m._termlog_addon)
    m.addons.add(
        core.Core(),
        block.Block(),               # refuses clients from outside the local networks (block_global)
        disable_h2c.DisableH2C(),
        proxyserver.Proxyserver(),
        dns_resolver.DnsResolver(),
        next_layer.NextLayer(),
        tlsconfig.TlsConfig(),
        upstream_auth.UpstreamAuth(),
        onboarding.Onboarding(),     # http://mitm.it serves the CA certificate to devices
        *(make_addons(engine) if policy else ()),
        errorcheck.ErrorCheck(repeat_errors_on_stderr=True),
    )
    if verbose:
        from mitmproxy.addons import dumper
        m.addons.add(dumper.Dumper())
    return m
