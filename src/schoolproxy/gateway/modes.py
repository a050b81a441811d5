"""How the proxy listens, from ``proxy.mode``, and what the configuration leaves unsaid about who is browsing.

- explicit: browsers are set to use the proxy (PAC/WPAD, Group Policy) on ``listen_port`` and sign in;
  chained to ``proxy.upstream`` by mitmproxy's upstream mode.
- transparent: the firewall redirects the LAN's TCP 80/443 to ``transparent.port``; nobody signs in, so
  the logon feed, the subnet map or a sign-in page say who is browsing. The transparent addon chains these
  connections to the upstream itself (mitmproxy has no transparent-and-upstream mode).
- both: the two listeners side by side (managed PCs explicit, BYOD and iPads transparent).
"""

from __future__ import annotations

from schoolproxy.config import Config


def proxy_modes(config: Config, listen_host: str | None = None) -> list[str]:
    """mitmproxy ``mode`` specs for the config. The explicit listener takes mitmproxy's own
    listen_host/listen_port options; the transparent one names its address."""
    proxy = config.proxy
    modes = []
    if proxy.mode in ("explicit", "both"):
        modes.append(f"upstream:{proxy.upstream}" if proxy.upstream else "regular")
    port = proxy.transparent_port()
    if port is not None:
        host = listen_host or proxy.listen_host
        modes.append(f"transparent@{f'[{host}]' if ':' in host else host}:{port}")
    return modes


def identity_warnings(config: Config) -> list[str]:
    """Plain-English warnings about identity that do not stop the proxy (filtering stays on)."""
    ident = config.identity
    warnings = []
    if config.proxy.mode != "explicit" and ident.logon_feed is None and not ident.subnets:
        warnings.append(
            f"transparent mode with no way to tell who is browsing: no identity.logon_feed and no "
            f"identity.subnets, so every redirected device gets the default profile "
            f"({ident.default_profile}) and records name no one. Filtering stays on. Set up the logon "
            f"feed (deploy/logon-feed/) or map device subnets to profiles (identity.subnets).")
    if ident.logon_feed is not None and not ident.logon_feed.staff_subnets:
        warnings.append(
            "the logon feed names pupils only: identity.logon_feed.staff_subnets lists no staff PCs, so a "
            "logon for a staff, supply or unfiltered account is refused (they sign in to the proxy instead). "
            "List the staff PCs' subnets to have the feed name staff there.")
    return warnings
