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


def names(m, event: str) -> set[str]:
    return {type(f.__self__).__name__ for group in m.addons.handlers(event) for f in group}


async def test_hooks_of_features_the_config_turns_off_are_not_called_and_a_reload_turns_them_on(tmp_path):
    import yaml
    from conftest import make_school

    config = make_school(tmp_path, upstream="http://127.0.0.1:9")  # explicit mode, through an upstream filter
    opts = options.Options()
    m = lean_master(opts)
    opts.update(confdir=str(tmp_path / "ca"), mode=["upstream:http://127.0.0.1:9"], schoolproxy_config=str(config))
    on = names(m, "requestheaders")
    assert {"Identify", "Enforce", "Limits", "HeaderCheck", "OwnPages", "Pages", "Notice"} <= on
    # No transparent listener, no identity headers for the upstream, the upstream resolves names,
    # no profile scores content: their addons are not called at all.
    assert not on & {"Transparent", "UpstreamIdentity", "LocalGuard"}
    assert "Content" not in names(m, "responseheaders")
    assert not names(m, "tls_clienthello") & {"Transparent", "PassthroughViaUpstream"}
    # A new configuration asks again: one that scores pupils' pages and names users to the upstream.
    data = yaml.safe_load(config.read_text())
    data["profiles"]["pupil"]["content"] = {"scan": True}
    data["proxy"]["upstream_identity"] = {"username_header": "X-Authenticated-User"}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    snapshots = next(a for a in m.addons.chain if type(a).__name__ == "LoadConfig").snapshots
    snapshots.swap(snapshots.build())
    assert "Content" in names(m, "responseheaders")
    assert "UpstreamIdentity" in names(m, "requestheaders") and "UpstreamIdentity" in names(m, "http_connect_upstream")
    # A transparent listener (an option of mitmproxy's) brings the transparent addons in.
    opts.update(mode=["upstream:http://127.0.0.1:9", "transparent@127.0.0.1:0"])
    assert {"Transparent", "PassthroughViaUpstream"} <= names(m, "tls_clienthello")
