"""Transparent mode on a real (namespaced) network: a pupil PC with no proxy settings, routed through a
gateway that runs ``schoolproxy run`` behind the shipped nftables rules, to a stand-in internet.

Real curl on the pupil PC; the gateway's rules applied by ``schoolproxy firewall apply``; records read from
the gateway's database. See tests/netns.py for the network.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PASSWORD, make_school, require
from internet import Internet
from proxyproc import ProxyProcess
from sqlalchemy import select

import netns
from netns import GATEWAY_LAN_IP, INTERNET_IP, PUPIL_IP

from schoolproxy.records import open_database
from schoolproxy.records.schema import requests

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
SITES = ["socialsite.test", "learning.test", "bank.test"]
SECRET = "feed-secret-for-the-tests-0123456789"


@pytest.fixture(scope="module")
def lan():
    why = netns.available()
    if why:
        require(why)
    network = netns.Lan(SITES)
    yield network
    network.close()


@pytest.fixture
def internet(lan, tmp_path):
    with Internet(tmp_path / "internet", host=INTERNET_IP, proxy_port=3128, origin_ports=True,
                  netns=lan.internet) as net:
        yield net


class GatewayProxy(ProxyProcess):
    """``schoolproxy run`` in the gateway namespace; listening once its transparent port answers there."""

    def __init__(self, lan: netns.Lan, config: Path, log_path: Path, port: int = 8081):
        self.lan = lan
        argv = ["ip", "netns", "exec", lan.gateway, str(BIN / "schoolproxy"), "run", "--config", str(config)]
        super().__init__(argv, port, log_path)

    def _wait_listening(self, timeout: float = 30.0) -> None:
        def answers() -> bool:
            try:
                with socket.create_connection((GATEWAY_LAN_IP, self.port), timeout=0.2):
                    return True
            except OSError:
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.proc.returncode}:\n{self.log()}")
            if netns.in_netns(self.lan.gateway, answers):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"proxy did not listen within {timeout}s:\n{self.log()}")


def gateway_config(root: Path, internet: Internet, upstream: bool = False, proxy_extra: str = "") -> Path:
    """The test school, set up as the gateway would be: transparent mode on lan0, the logon feed on the
    LAN address, and the stand-in internet's CA trusted for sites' certificates."""
    config = make_school(root, upstream=internet.proxy_url if upstream else None,
                         database=f"sqlite:///{root / 'records.db'}")
    (root / "feed-secret").write_text(SECRET)
    text = config.read_text()
    text = text.replace(
        "proxy: {listen_host: 127.0.0.1, listen_port: 8080, ca_dir: ca,",
        f"proxy: {{listen_host: {GATEWAY_LAN_IP}, listen_port: 8080, ca_dir: ca, mode: transparent, "
        f"transparent: {{port: 8081, lan_interfaces: [lan0]}}, upstream_ca: {internet.ca_path},{proxy_extra}")
    text = text.replace("identity:\n", "identity:\n"
                        f"  logon_feed: {{listen: \"{GATEWAY_LAN_IP}:9465\", secret_file: feed-secret}}\n", 1)
    config.write_text(text)
    return config


def firewall(lan: netns.Lan, config: Path, *args: str) -> subprocess.CompletedProcess:
    return lan.exec(lan.gateway, str(BIN / "schoolproxy"), "firewall", *args, "--config", str(config))


def curl(lan: netns.Lan, url: str, *args: str, timeout: float = 15) -> subprocess.CompletedProcess:
    """curl on the pupil PC: no proxy configured, names resolved to the internet's address."""
    host = url.split("/")[2]
    port = "443" if url.startswith("https") else "80"
    return lan.exec(lan.pupil, "curl", "-sS", "--max-time", str(timeout), "--noproxy", "*",
                    "--resolve", f"{host}:{port}:{INTERNET_IP}", "-w", "\n%{http_code}", *args, url,
                    timeout=timeout + 5)


def status_and_body(r: subprocess.CompletedProcess) -> tuple[int, str]:
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body


def logon(lan: netns.Lan, user: str, device: str = "ICT-07") -> None:
    """What the pupil PC's logon script does: tell the gateway's logon feed who signed in here."""
    r = lan.exec(lan.pupil, "curl", "-sS", "--max-time", "10", "--noproxy", "*", "-X", "POST",
                 "-H", f"Authorization: Bearer {SECRET}", "-H", "Content-Type: application/json",
                 "--data", f'{{"user": "{user}", "device": "{device}"}}', f"http://{GATEWAY_LAN_IP}:9465/logon")
    assert '"ok": true' in r.stdout, r.stdout + r.stderr


def records(root: Path, count: int, timeout: float = 10.0) -> list[dict]:
    engine = open_database(f"sqlite:///{root / 'records.db'}")
    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < deadline:
        try:
            with engine.connect() as c:
                rows = [dict(r) for r in c.execute(select(requests).order_by(requests.c.id)).mappings()]
        except Exception:
            rows = []
        if len(rows) >= count:
            return rows
        time.sleep(0.1)
    raise AssertionError(f"expected {count} records, found {len(rows)}: {rows}")


@pytest.fixture
def gateway(lan, internet, tmp_path):
    """The gateway with the firewall rules applied and the proxy running, straight to the internet."""
    config = gateway_config(tmp_path, internet)
    r = firewall(lan, config, "apply")
    assert r.returncode == 0, r.stdout + r.stderr
    with GatewayProxy(lan, config, tmp_path / "proxy.log") as proxy:
        proxy.root = tmp_path
        proxy.config = config
        yield proxy
    firewall(lan, config, "remove")


def test_pupil_without_proxy_settings_is_filtered(lan, internet, gateway):
    status, body = status_and_body(curl(lan, "http://socialsite.test/"))
    assert status == 403 and "socialsite.test" in body and "Blocked" in body
    ca = gateway.root / "ca" / "mitmproxy-ca-cert.pem"
    status, body = status_and_body(curl(lan, "https://socialsite.test/feed", "--cacert", str(ca)))
    assert status == 403 and "socialsite.test" in body
    assert not internet.requests_for("socialsite.test")
    status, body = status_and_body(curl(lan, "http://learning.test/lesson"))
    assert status == 200 and "origin learning.test" in body, gateway.log()
    status, body = status_and_body(curl(lan, "https://learning.test/quiz", "--cacert", str(ca)))
    assert status == 200 and "origin learning.test" in body, gateway.log()
    seen = [(s.scheme, s.host, s.path) for s in internet.requests_for("learning.test")]
    assert seen == [("http", "learning.test", "/lesson"), ("https", "learning.test", "/quiz")]
    rows = records(gateway.root, 4)
    assert {(r["host"], r["action"], r["client_ip"], r["profile"], r["identity_source"]) for r in rows} == {
        ("socialsite.test", "block", PUPIL_IP, "pupil", "default"),
        ("learning.test", "allow", PUPIL_IP, "pupil", "default")}
