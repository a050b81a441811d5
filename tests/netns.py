"""A small school network made of Linux network namespaces, for end-to-end tests of transparent mode.

    pupil (10.55.1.2) ──lan0── gateway (10.55.1.1 | 198.51.100.1) ──wan0── internet (198.51.100.2)

The pupil PC's default route is the gateway, which forwards (``ip_forward``) to the "internet"
namespace; the internet routes the school's network back through the gateway. Nothing is NATed, so
whatever reaches the internet namespace went through the gateway's rules. The gateway resolves the
test sites to the internet's address through its own hosts file (``/etc/netns/NAME/hosts``, which
``ip netns exec`` mounts over /etc/hosts).

Namespace names are unique per use, so parallel runs never collide; :meth:`Lan.close` removes
everything it made (namespaces, their veths, the hosts file) and is safe to call twice.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable

PUPIL_IP, GATEWAY_LAN_IP = "10.55.1.2", "10.55.1.1"
GATEWAY_WAN_IP, INTERNET_IP = "198.51.100.1", "198.51.100.2"
LAN_SUBNET = "10.55.1.0/24"


def available() -> str | None:
    """Why namespaces cannot be made here, or None if they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft", "curl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2 nftables curl)"
    return None


def run(*argv: str, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}: {r.stderr.strip()}")
    return r


def in_netns(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn`` in a thread that has entered namespace ``name`` (sockets it opens live there)."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            with open(f"/run/netns/{name}") as ns:
                os.setns(ns.fileno(), os.CLONE_NEWNET)
            result["value"] = fn(*args)
        except BaseException as e:  # handed back to the caller
            result["error"] = e

    t = threading.Thread(target=target, name=f"netns-{name}")
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


class Lan:
    def __init__(self, hosts: list[str]):
        token = os.urandom(3).hex()
        self.pupil, self.gateway, self.internet = f"sp-pupil-{token}", f"sp-gw-{token}", f"sp-net-{token}"
        self._hosts_dir = Path("/etc/netns") / self.gateway
        self._made: list[str] = []
        try:
            self._build(token, hosts)
        except BaseException:
            self.close()
            raise

    def _build(self, token: str, hosts: list[str]) -> None:
        for ns in (self.pupil, self.gateway, self.internet):
            run("ip", "netns", "add", ns)
            self._made.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        # Temporary names in the root namespace (15 characters at most), renamed once moved.
        run("ip", "link", "add", f"spp{token}", "type", "veth", "peer", "name", f"spl{token}")
        run("ip", "link", "set", f"spp{token}", "netns", self.pupil)
        run("ip", "link", "set", f"spl{token}", "netns", self.gateway)
        run("ip", "link", "add", f"spw{token}", "type", "veth", "peer", "name", f"spi{token}")
        run("ip", "link", "set", f"spw{token}", "netns", self.gateway)
        run("ip", "link", "set", f"spi{token}", "netns", self.internet)
        for ns, old, new, addr in ((self.pupil, f"spp{token}", "eth0", f"{PUPIL_IP}/24"),
                                   (self.gateway, f"spl{token}", "lan0", f"{GATEWAY_LAN_IP}/24"),
                                   (self.gateway, f"spw{token}", "wan0", f"{GATEWAY_WAN_IP}/24"),
                                   (self.internet, f"spi{token}", "eth0", f"{INTERNET_IP}/24")):
            run("ip", "-n", ns, "link", "set", old, "name", new)
            run("ip", "-n", ns, "addr", "add", addr, "dev", new)
            run("ip", "-n", ns, "link", "set", new, "up")
        run("ip", "-n", self.pupil, "route", "add", "default", "via", GATEWAY_LAN_IP)
        run("ip", "-n", self.internet, "route", "add", LAN_SUBNET, "via", GATEWAY_WAN_IP)
        run("ip", "netns", "exec", self.gateway, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self._hosts_dir.mkdir(parents=True, exist_ok=True)
        (self._hosts_dir / "hosts").write_text(
            "127.0.0.1 localhost\n" + "".join(f"{INTERNET_IP} {h}\n" for h in hosts))

    def exec(self, ns: str, *argv: str, check: bool = False, timeout: float = 30,
             **kw) -> subprocess.CompletedProcess:
        """Run a command in namespace ``ns`` (no proxy settings from the environment)."""
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        return run("ip", "netns", "exec", ns, *argv, check=check, timeout=timeout, env=env, **kw)

    def close(self) -> None:
        for ns in reversed(self._made):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:  # anything a failed test left running in it
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # its veths go with it
        self._made.clear()
        shutil.rmtree(self._hosts_dir, ignore_errors=True)
