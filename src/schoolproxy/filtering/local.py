"""The gateway's own services are not reachable through the proxy.

The proxy runs on the school's gateway next to its metrics, the logon feed and the console, which
listen on loopback or the gateway's admin address. Forwarded by the proxy, a request from a pupil comes
*from* the gateway and reaches them (``http://localhost:9464/metrics`` answered a pupil). So a request
to a loopback, link-local or unspecified address, to one of the gateway's own addresses, or to a name
for them (``localhost``, ``*.localhost``, the gateway's host names) is blocked for everyone, in any
spelling (``0x7f.1`` and ``[::ffff:127.0.0.1]`` are normalised to ``127.0.0.1`` first), unless the config
lists it under ``proxy.allow_local``. Names that only DNS maps to such an address are caught when the
proxy connects (proxy/localguard.py), since only then is the address known.

:class:`LocalDestinations` is pure; :func:`own_addresses` and :func:`own_names` read the machine once,
when a snapshot is built.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from pathlib import Path

from schoolproxy.config import Config, ConfigError
from schoolproxy.filtering.hostnames import InvalidHost, normalise_host

_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
# Never a destination a pupil needs: loopback, "this host", link-local (cloud metadata too), multicast,
# broadcast; in IPv6 the same and the IPv4 forms embedded in NAT64 and 6to4 addresses.
_LOCAL_NETS = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "255.255.255.255/32",
    "::/128", "::1/128", "fe80::/10", "ff00::/8"))
_EMBEDDING = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("2002::/16"))


class LocalDestinations:
    """Which normalised hosts are the gateway itself (see :mod:`hostnames` for the normal forms)."""

    def __init__(self, addresses: Iterable[str] = (), names: Iterable[str] = (), allowed: Iterable[str] = ()):
        self.addresses = frozenset(_ip_text(a) for a in addresses)
        self.names = _LOCAL_NAMES | {n.lower().rstrip(".") for n in names if n}
        self.allowed = frozenset(allowed)
        self._seen: dict[str, bool] = {}

    def forbidden(self, host: str, is_ip: bool) -> bool:
        """Is ``host`` (normalised) the gateway itself, and not allowed by the config?"""
        if is_ip:
            hit = self._seen.get(host)
            if hit is None:
                hit = host not in self.allowed and (host in self.addresses or is_special_address(host))
                if len(self._seen) < 65536:
                    self._seen[host] = hit
            return hit
        if host in self.allowed:
            return False
        return host in self.names or host.endswith(".localhost")

    def forbidden_address(self, address: str) -> bool:
        """An address a name resolved to (proxy/localguard.py): the gateway's, or never a site's."""
        try:
            text = _ip_text(address)
        except ValueError:
            return True  # not an address at all: refuse rather than guess
        return self.forbidden(text, True)


def is_special_address(text: str) -> bool:
    """Loopback, unspecified, link-local, multicast or broadcast (also inside NAT64 / 6to4 addresses)."""
    ip = ipaddress.ip_address(text)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _EMBEDDING[0]:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip in _EMBEDDING[1]:
            ip = ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF)
    return any(ip.version == net.version and ip in net for net in _LOCAL_NETS)


def _ip_text(text: str) -> str:
    ip = ipaddress.ip_address(text.split("%", 1)[0].strip("[]"))
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ip)


# -- reading the machine (when a snapshot is built) ----------------------------------------------------
def for_config(config: Config) -> LocalDestinations:
    """This gateway's addresses and names (and the addresses the config makes it listen on), less what
    ``proxy.allow_local`` allows."""
    addresses = own_addresses()
    listening = [config.proxy.listen_host, config.metrics.listen.rpartition(":")[0]]
    if config.identity.logon_feed is not None:
        listening.append(config.identity.logon_feed.listen.rpartition(":")[0])
    for host in listening:
        try:
            addresses.add(_ip_text(host))
        except ValueError:
            continue  # a name, or every interface ("0.0.0.0" is special anyway)
    allowed = []
    for i, entry in enumerate(config.proxy.allow_local):
        try:
            allowed.append(normalise_host(entry)[0])
        except InvalidHost as e:
            raise ConfigError(f"{config.source}: proxy.allow_local[{i}]: {e}") from None
    return LocalDestinations(addresses, own_names(addresses), allowed)


def own_addresses(proc: Path = Path("/proc/net")) -> set[str]:
    """Every address of this machine's interfaces (Linux: the kernel's local routes), plus what its
    host name resolves to."""
    found: set[str] = set()
    try:
        last = None
        for line in (proc / "fib_trie").read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("|--", "+--")):
                last = stripped[3:].strip().split("/")[0]
            elif "host LOCAL" in stripped and last:
                found.add(last)
    except OSError:
        pass
    try:
        for line in (proc / "if_inet6").read_text().splitlines():
            raw = line.split()[0]
            found.add(str(ipaddress.IPv6Address(bytes.fromhex(raw))))
    except (OSError, ValueError, IndexError):
        pass
    try:
        for *_, sockaddr in socket.getaddrinfo(socket.gethostname(), None):
            found.add(sockaddr[0])
    except OSError:
        pass
    out = set()
    for a in found:
        try:
            out.add(_ip_text(a))
        except ValueError:
            continue
    return out


def own_names(addresses: set[str], hosts_file: Path = Path("/etc/hosts")) -> set[str]:
    """This machine's host name, and every name /etc/hosts gives one of its addresses."""
    names = {socket.gethostname()}
    try:
        for line in hosts_file.read_text(errors="replace").splitlines():
            fields = line.split("#", 1)[0].split()
            if len(fields) < 2:
                continue
            try:
                ip = _ip_text(fields[0])
            except ValueError:
                continue
            if ip in addresses or is_special_address(ip):
                names.update(fields[1:])
    except OSError:
        pass
    return {n.lower().rstrip(".") for n in names if n}
