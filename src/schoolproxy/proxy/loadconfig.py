"""LoadConfig addon: the ``schoolproxy_config`` option, loaded and compiled in ``configure``.

A config that fails validation or its own policy tests raises ``OptionsError`` at start-up, with the
file, key path and problem. It also checks and applies what the YAML says about mitmproxy itself:

- ``proxy.upstream``: mitmproxy must run in ``upstream:`` mode to exactly that filter, or the proxy
  refuses to start — a typo must never open a path around Smoothwall. (``schoolproxy run`` sets the
  mode from the YAML; with mitmdump, pass ``--mode upstream:URL``.)
- lazy upstream connections, so a blocked, unreachable host gets the block page rather than a 502;
- the CA directory, when mitmproxy's default is in use, with an ECDSA CA created there if it has none;
- the upstream filter's inspection CA (``proxy.upstream_ca``), trusted beside the public CAs.
"""

from __future__ import annotations

import logging
from pathlib import Path

from collections.abc import Iterable

from mitmproxy import ctx, exceptions
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from schoolproxy.config import ConfigError
from schoolproxy.gateway.modes import identity_warnings
from schoolproxy.gateway.trust import TrustError, upstream_bundle
from schoolproxy.metrics import Scraped
from schoolproxy.monitoring.pending import nowhere_to_go
from schoolproxy.proxy.internals import create_ca
from schoolproxy.private import exposed, private_dir
from schoolproxy.snapshot import SnapshotHolder

log = logging.getLogger(__name__)


class LoadConfig:
    def __init__(self, snapshots: SnapshotHolder, registry: CollectorRegistry):
        self.snapshots = snapshots
        registry.register(Scraped(self._metrics))

    def load(self, loader) -> None:
        loader.add_option("schoolproxy_config", str, "config/schoolproxy.yaml",
                          "Path of the schoolproxy YAML configuration file.")

    def configure(self, updated: set[str]) -> None:
        if "schoolproxy_config" not in updated:
            return
        path = Path(ctx.options.schoolproxy_config)
        try:
            snap = self.snapshots.load(path)
        except ConfigError as e:
            raise exceptions.OptionsError(f"schoolproxy: configuration refused:\n{e}") from None
        for warning in snap.policy.warnings + identity_warnings(snap.config) + exposed(snap.config) \
                + nowhere_to_go(snap.config):
            log.warning("schoolproxy: %s", warning)
        log.info("schoolproxy: loaded %s: %d profiles, %d list entries, %d policy tests passed",
                 path, len(snap.policy.profiles), len(snap.lists), len(snap.config.tests))
        problem = upstream_mismatch(snap.config.proxy.upstream, list(ctx.options.mode))
        if problem:
            raise exceptions.OptionsError(f"schoolproxy: {problem}")
        self._apply_proxy_options(snap.config)

    @staticmethod
    def _apply_proxy_options(config) -> None:
        wanted: dict[str, object] = {"connection_strategy": "lazy"}
        confdir = config.path(config.proxy.ca_dir)
        if ctx.options.confdir == "~/.mitmproxy":
            private_dir(confdir, tighten=True)  # the CA key impersonates any site to every device
            create_ca(confdir)  # an ECDSA CA, unless the directory has one (see internals.create_ca)
            wanted["confdir"] = str(confdir)
        try:
            bundle = upstream_bundle(config)
        except TrustError as e:
            raise exceptions.OptionsError(f"schoolproxy: proxy.upstream_ca: {e}") from None
        if bundle is not None and ctx.options.ssl_verify_upstream_trusted_ca in (None, str(bundle)):
            wanted["ssl_verify_upstream_trusted_ca"] = str(bundle)  # public CAs + the upstream's inspection CA
        changed = {k: v for k, v in wanted.items() if getattr(ctx.options, k) != v}
        if changed:
            ctx.options.update(**changed)


    def _metrics(self) -> Iterable[Metric]:
        """What the running snapshot holds: its lists, when it was loaded, its directory's health."""
        snap = self.snapshots.snapshot
        entries = GaugeMetricFamily("schoolproxy_list_entries", "Entries in the loaded lists, by category.",
                                    labels=["category"])
        if snap is not None:
            stats = snap.lists.stats
            for c in snap.lists.categories:
                entries.add_metric([c], stats.domains.get(c, 0) + stats.urls.get(c, 0))
        yield entries
        if snap is None:
            return
        yield GaugeMetricFamily("schoolproxy_config_loaded_timestamp_seconds",
                                "When the running configuration was loaded.", value=snap.loaded_at)
        directory = snap.directory
        if directory is not None:
            yield GaugeMetricFamily("schoolproxy_directory_up", "1 if the directory (AD/LDAP) answered the "
                                    "last time it was asked, else 0.", value=1 if directory.up else 0)
            yield CounterMetricFamily("schoolproxy_directory_errors", "Directory calls that failed "
                                      "(unreachable, timeout, service account refused).", value=directory.errors)


def upstream_mismatch(upstream: str | None, modes: list[str]) -> str | None:
    """Why the running proxy modes do not chain to the configured upstream filter, or None."""
    if not upstream:
        return None
    want = f"upstream:{upstream}"
    # Transparent listeners are chained to the upstream by the transparent addon.
    wrong = [m for m in modes if m.split("@")[0] not in (want, "transparent")]
    if wrong:
        return (f"the config chains to the upstream filter {upstream}, but mitmproxy runs in mode(s) "
                f"{', '.join(wrong)} — start it with --mode {want} (schoolproxy run does this itself)")
    return None
