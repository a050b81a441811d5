"""The proxy auto-config (PAC/WPAD) file the proxy serves at ``/proxy.pac`` and ``/wpad.dat``.

Browsers ask it, for every address, whether to go through the proxy. It sends everything through the
proxy except plain names, the school's own domains and networks (``proxy.pac_direct``) and the gateway
itself. There is no DIRECT fallback: when the proxy is down, browsing stops rather than going round the
filter. Networks are matched only when the browser asks for an IP address, never by looking a name up
(a DNS lookup per address would slow every page).
"""

from __future__ import annotations

import ipaddress
import json

CONTENT_TYPE = "application/x-ns-proxy-autoconfig"


def pac_file(proxy: str | None, direct: list[str], gateway: str | None = None) -> str:
    """The PAC file. ``proxy``: "10.0.0.1:8080", or None when there is no explicit listener (transparent
    mode catches the traffic anyway, so browsers are told to go "direct")."""
    domains, networks = [], []
    for entry in direct:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            domains.append(entry.lower().strip(".").removeprefix("*."))
    tests = ['isPlainHostName(host)', 'host == "localhost"', 'shExpMatch(host, "127.*")']
    if gateway:
        tests.append(f"host == {json.dumps(gateway)}")
    for d in domains:
        tests.append(f"host == {json.dumps(d)} || dnsDomainIs(host, {json.dumps('.' + d)})")
    ip_tests = [f"isInNet(host, {json.dumps(str(n.network_address))}, {json.dumps(str(n.netmask))})"
                for n in networks if n.version == 4]
    lines = [
        "// Proxy auto-config, served by schoolproxy. Everything goes through the school's filter except",
        "// the school's own names and networks. No DIRECT fallback: if the proxy is down, browsing stops",
        "// rather than going round the filter.",
        "function FindProxyForURL(url, host) {",
        "  host = host.toLowerCase();",
        "  if (" + " ||\n      ".join(tests) + ") {",
        '    return "DIRECT";',
        "  }",
    ]
    if ip_tests:
        lines += [
            "  // Networks, only for addresses typed as numbers (no DNS lookup here).",
            "  if (/^\\d+\\.\\d+\\.\\d+\\.\\d+$/.test(host) && (" + " ||\n      ".join(ip_tests) + ")) {",
            '    return "DIRECT";',
            "  }",
        ]
    lines += [f'  return {json.dumps(f"PROXY {proxy}" if proxy else "DIRECT")};', "}", ""]
    return "\n".join(lines)
