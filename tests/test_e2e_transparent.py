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
    # The LAN's one PC stands for a staff PC too (teacher1 logs on there): it is in the staff subnets.
    text = text.replace("identity:\n", "identity:\n"
                        f"  logon_feed: {{listen: \"{GATEWAY_LAN_IP}:9465\", secret_file: feed-secret, "
                        f"staff_subnets: [{PUPIL_IP}/32], "
                        "state_file: logons.json}\n", 1)  # its own: the default (../var) is shared by every test
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
    # Another name in the Host header than the one connected to (SNI) or resolved: decided on both.
    status, _ = status_and_body(curl(lan, "https://learning.test/", "--cacert", str(ca), "-H", "Host: socialsite.test"))
    assert status == 403
    status, _ = status_and_body(curl(lan, "http://learning.test/", "-H", "Host: socialsite.test"))
    assert status == 403 and not internet.requests_for("socialsite.test")
    rows = records(gateway.root, 6)
    assert {(r["host"], r["action"], r["client_ip"], r["profile"], r["identity_source"]) for r in rows} == {
        ("socialsite.test", "block", PUPIL_IP, "pupil", "default"),
        ("learning.test", "allow", PUPIL_IP, "pupil", "default")}


@pytest.fixture
def chained(lan, internet, tmp_path):
    """The gateway chained to the upstream filter (the stand-in internet's proxy), telling it who browses."""
    config = gateway_config(tmp_path, internet, upstream=True, proxy_extra=" upstream_identity: {},")
    r = firewall(lan, config, "apply")
    assert r.returncode == 0, r.stdout + r.stderr
    with GatewayProxy(lan, config, tmp_path / "proxy.log") as proxy:
        proxy.root = tmp_path
        yield proxy
    firewall(lan, config, "remove")


def test_transparent_traffic_goes_through_the_upstream_filter_with_who_is_browsing(lan, internet, chained):
    logon(lan, "pupil1")
    ca = chained.root / "ca" / "mitmproxy-ca-cert.pem"
    status, body = status_and_body(curl(lan, "http://learning.test/a", "-H", "X-Authenticated-User: teacher1"))
    assert status == 200 and "origin learning.test" in body, chained.log()
    status, body = status_and_body(curl(lan, "https://learning.test/b", "--cacert", str(ca)))
    assert status == 200 and "origin learning.test" in body, chained.log()
    plain, tls = internet.requests_for("learning.test")
    # Plain HTTP reached the upstream as an explicit proxy sends it, naming the pupil, not the spoofed name.
    assert (plain.scheme, plain.via_connect, plain.path) == ("http", False, "/a")
    assert plain.header("X-Forwarded-For") == PUPIL_IP and plain.header("X-Authenticated-User") == "pupil1"
    # HTTPS went through a CONNECT to the upstream, which carried the identity; the site saw none of it.
    assert tls.via_connect and tls.header("X-Authenticated-User") is None and tls.header("X-Forwarded-For") is None
    [connect] = [c for c in internet.connect_requests if c.host == "learning.test"]
    assert connect.port == 443 and connect.header("X-Authenticated-User") == "pupil1"
    assert connect.header("X-Forwarded-For") == PUPIL_IP
    # Blocked sites never reach the upstream.
    status, _ = status_and_body(curl(lan, "https://socialsite.test/", "--cacert", str(ca)))
    assert status == 403 and not internet.connects_for("socialsite.test")


def test_passed_through_tls_is_relayed_through_the_upstream_filter(lan, internet, chained):
    logon(lan, "teacher1", "STAFF-01")  # staff: banking is passed through undecrypted
    # The pupil PC trusts only the real sites' CA: it succeeds only if the connection was not decrypted.
    status, body = status_and_body(curl(lan, "https://bank.test/account", "--cacert", str(internet.ca_path)))
    assert status == 200 and "origin bank.test" in body, chained.log()
    assert internet.connects_for("bank.test") == [("bank.test", 443)]
    [connect] = [c for c in internet.connect_requests if c.host == "bank.test"]
    assert connect.header("X-Forwarded-For") == PUPIL_IP and connect.header("X-Authenticated-User") == "teacher1"
    row = next(r for r in records(chained.root, 1) if r["host"] == "bank.test")
    assert (row["layer"], row["username"], row["device"]) == ("tls-passthrough", "teacher1", "STAFF-01")


def test_the_logon_feed_says_who_is_browsing(lan, internet, gateway):
    logon(lan, "teacher1", "STAFF-01")
    status, body = status_and_body(curl(lan, "http://socialsite.test/"))
    assert status == 200 and "origin socialsite.test" in body  # staff are not restricted locally
    logon(lan, "pupil1", "ICT-07")  # the next person to sign in to that PC
    status, _ = status_and_body(curl(lan, "http://socialsite.test/"))
    assert status == 403
    rows = records(gateway.root, 2)
    assert [(r["username"], r["device"], r["profile"], r["action"], r["identity_source"]) for r in rows] == [
        ("teacher1", "STAFF-01", "staff", "allow", "logon-feed"), ("pupil1", "ICT-07", "pupil", "block", "logon-feed")]


def udp_listener() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((INTERNET_IP, 0))
    return s


def test_quic_dns_over_tls_and_the_transparent_port_itself_are_refused(lan, internet, gateway):
    # The internet listens on UDP 443 (QUIC), TCP 853 (DNS over TLS) and, as a control, on UDP 4433.
    def listen():
        quic, control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        quic.bind((INTERNET_IP, 443))
        control.bind((INTERNET_IP, 4433))
        dot = socket.create_server((INTERNET_IP, 853))
        for s in (quic, control, dot):
            s.settimeout(2)
        return quic, control, dot
    quic, control, dot = netns.in_netns(lan.internet, listen)
    try:
        send = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                f"[s.sendto(b'hello', ('{INTERNET_IP}', p)) for p in (443, 4433)]")
        lan.exec(lan.pupil, sys.executable, "-c", send, check=True)
        assert control.recvfrom(100)[0] == b"hello"  # the path works...
        with pytest.raises(TimeoutError):
            quic.recvfrom(100)                       # ...but QUIC never arrives
        r = lan.exec(lan.pupil, "curl", "-sS", "--max-time", "3", f"telnet://{INTERNET_IP}:853")
        assert r.returncode == 7, r.stderr  # refused at once (not a time-out): the client falls back
        with pytest.raises(TimeoutError):
            dot.accept()
    finally:
        for s in (quic, control, dot):
            s.close()
    # A device that connects to the transparent port directly gets nothing (the proxy would loop).
    r = lan.exec(lan.pupil, "curl", "-sS", "--max-time", "2", "--noproxy", "*", f"http://{GATEWAY_LAN_IP}:8081/")
    assert r.returncode == 28, r.stdout + r.stderr  # timed out: dropped


def test_rules_applied_twice_are_the_same_ruleset_and_status_says_so(lan, internet, tmp_path):
    config = gateway_config(tmp_path, internet)
    assert firewall(lan, config, "status").returncode == 1
    assert firewall(lan, config, "apply").returncode == 0
    first = lan.exec(lan.gateway, "nft", "list", "ruleset", check=True).stdout
    assert firewall(lan, config, "apply").returncode == 0
    assert lan.exec(lan.gateway, "nft", "list", "ruleset", check=True).stdout == first
    r = firewall(lan, config, "status")
    assert r.returncode == 0 and "applied, and the same as this config's" in r.stdout
    config.write_text(config.read_text().replace("port: 8081", "port: 8082"))
    r = firewall(lan, config, "status")
    assert r.returncode == 1 and "DIFFERENT" in r.stdout
    assert firewall(lan, config, "remove").returncode == 0
    assert "schoolproxy" not in lan.exec(lan.gateway, "nft", "list", "ruleset", check=True).stdout
    r = firewall(lan, config, "remove")
    assert r.returncode == 0 and "no schoolproxy firewall rules were in force" in r.stdout


def test_the_gateway_serves_its_certificate_page_and_pac_file_on_port_80(lan, gateway):
    r = lan.exec(lan.pupil, "curl", "-sS", "--max-time", "10", "--noproxy", "*", f"http://{GATEWAY_LAN_IP}/")
    assert "Set up this device for the school internet" in r.stdout, r.stderr + gateway.log()
    r = lan.exec(lan.pupil, "curl", "-sS", "--max-time", "10", "--noproxy", "*", f"http://{GATEWAY_LAN_IP}/schoolproxy-ca.pem")
    assert r.stdout == (gateway.root / "ca" / "mitmproxy-ca-cert.pem").read_text()
    r = lan.exec(lan.pupil, "curl", "-sS", "--max-time", "10", "--noproxy", "*", f"http://{GATEWAY_LAN_IP}/wpad.dat")
    assert "function FindProxyForURL" in r.stdout and 'return "DIRECT";' in r.stdout  # transparent only
    # The gateway's other ports are not redirected: the logon feed answers as itself.
    r = lan.exec(lan.pupil, "curl", "-sS", "--max-time", "10", "--noproxy", "*", f"http://{GATEWAY_LAN_IP}:9465/health")
    assert r.stdout == '{"ok": true}'


def test_a_device_signed_in_on_the_sign_in_page_is_browsing_as_that_person(lan, gateway):
    from schoolproxy.identity.signin import post_sign_in
    # What the console's sign-in page does once the password has passed: attach the person to the
    # address the page's request came from (here, the pupil's own phone).
    done = netns.in_netns(lan.gateway, post_sign_in, f"http://{GATEWAY_LAN_IP}:9465", SECRET, "teacher1", PUPIL_IP, 1)
    assert done.user == "teacher1"
    status, _ = status_and_body(curl(lan, "http://socialsite.test/"))
    assert status == 200
    [row] = records(gateway.root, 1)
    assert (row["username"], row["identity_source"], row["profile"]) == ("teacher1", "sign-in", "staff")


def test_doctor_checks_the_transparent_gateway(lan, gateway):
    def doctor():
        return lan.exec(lan.gateway, str(BIN / "schoolproxy"), "doctor", "--config", str(gateway.config),
                        "--probe", "learning.test", timeout=120).stdout
    out = doctor()
    assert f"OK       transparent proxy: answers on {GATEWAY_LAN_IP}:8081" in out, out
    assert "OK       firewall rules: web traffic from lan0 goes to port 8081; QUIC and DNS over TLS refused" in out
    assert "OK       logon feed: answers on" in out and "who is browsing" not in out
    firewall(lan, gateway.config, "remove")
    out = doctor()
    assert "PROBLEM  firewall rules: not applied: devices without proxy settings are not filtered" in out
    assert "fix: schoolproxy firewall apply" in out
