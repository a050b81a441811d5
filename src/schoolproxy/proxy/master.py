"""A lean mitmproxy master for ``schoolproxy run``.

``mitmdump`` loads about 30 built-in addons (playback, export, map-local, sticky cookies…) and every
event walks all of them. A gateway needs only the proxy machinery itself. What a network manager relies
on is kept: clear start-up errors (ErrorCheck), upstream mode and upstream authentication, and the
mitm.it onboarding page for installing the CA. Events are dispatched through
:class:`~schoolproxy.proxy.internals.HookIndex`, which resolves each event's handlers once.
"""

from __future__ import annotations

from mitmproxy import master, options
from mitmproxy.addons import (
    block,
    core,
    disable_h2c,
    dns_resolver,
    errorcheck,
    next_layer,
    onboarding,
    proxyserver,
    tlsconfig,
    upstream_auth,
)

from schoolproxy.proxy import make_addons
from schoolproxy.proxy.internals import master_with_hook_index


def lean_master(opts: options.Options, verbose: bool = False, policy: bool = True) -> master.Master:
    """The lean proxy; ``policy=False`` leaves out schoolproxy's own addons (the benchmark's baseline)."""
    m = master_with_hook_index(opts)
    addons = make_addons(m.addons.reindex) if policy else ()
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
        *addons,
        errorcheck.ErrorCheck(repeat_errors_on_stderr=True),
    )
    if verbose:
        from mitmproxy.addons import dumper
        m.addons.add(dumper.Dumper())
    return m
