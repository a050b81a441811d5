"""OwnPages addon: the PAC/WPAD file and the certificate page, answered for requests addressed to the proxy."""

import shutil
import subprocess

import pytest
from conftest import make_school, require
from cryptography import x509
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow

from schoolproxy.gateway.pac import pac_file
from schoolproxy.proxy.ownpages import LocalAddresses, OwnPages
from schoolproxy.snapshot import SnapshotHolder

PROXY = ("10.0.0.1", 8080)


@pytest.fixture
def school(tmp_path):
    config = make_school(tmp_path, extra="")
    text = config.read_text().replace(
        "proxy: {listen_host: 127.0.0.1,",
        "proxy: {own_names: [wpad.school.local], pac_direct: [school.local, 10.0.0.0/8], listen_host: 10.0.0.1,")
    config.write_text(text)
    ca = tmp_path / "ca"
    ca.mkdir()
    # A CA file as mitmproxy writes it: the key first, then the certificate.
    from mitmproxy import certs
    certs.CertStore.from_store(str(ca), "mitmproxy", 2048)
    return config


@pytest.fixture
def addon(school):
    engine = SnapshotHolder()
    engine.load(school)
    return OwnPages(engine)


def flow(url: str, method: str = "GET", sockname=PROXY, transparent: bool = False):
    f = tflow.tflow()
    f.request.url = url
    f.request.method = method
    f.client_conn.sockname = sockname
    if transparent:
        f.client_conn.proxy_mode = ProxyMode.parse("transparent")
    return f


def answer(addon, f):
    with taddons.context(addon):
        addon.requestheaders(f)
    return f.response


def test_pac_file_for_a_browser_asking_the_proxy(addon):
    r = answer(addon, flow("http://10.0.0.1:8080/proxy.pac"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ns-proxy-autoconfig"
    text = r.get_text()
    assert 'return "PROXY 10.0.0.1:8080";' in text and "DIRECT" in text
    assert 'dnsDomainIs(host, ".school.local")' in text and 'isInNet(host, "10.0.0.0", "255.0.0.0")' in text
    assert answer(addon, flow("http://wpad.school.local/wpad.dat")).get_text() == text


def test_certificate_page_and_files_never_the_key(addon, school):
    page = answer(addon, flow("http://10.0.0.1:8080/")).get_text()
    assert "Set up this device for the school internet" in page and "Test Primary" in page
    assert "iPhone and iPad" in page and "Chromebook" in page and "Windows" in page
    pem = answer(addon, flow("http://10.0.0.1:8080/schoolproxy-ca.pem")).content
    assert b"PRIVATE KEY" not in pem and b"PRIVATE KEY" in (school.parent / "ca" / "mitmproxy-ca.pem").read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    der = answer(addon, flow("http://10.0.0.1:8080/schoolproxy-ca.cer")).content
    assert x509.load_der_x509_certificate(der) == cert
    fingerprint = cert.fingerprint(__import__("cryptography.hazmat.primitives.hashes", fromlist=["x"]).SHA256())
    assert fingerprint.hex().upper()[:8] in page.replace(":", "")


def test_other_paths_and_methods_at_the_proxy(addon):
    assert answer(addon, flow("http://10.0.0.1:8080/../../etc/passwd")).status_code == 404
    hostile = answer(addon, flow("http://10.0.0.1:8080/<script>alert(1)</script>"))
    assert hostile.status_code == 404 and b"<script>" not in hostile.content
    assert answer(addon, flow("http://10.0.0.1:8080/proxy.pac", method="POST")).status_code == 405
    assert answer(addon, flow("http://10.0.0.1:8080/proxy.pac", method="HEAD")).content == b""


@pytest.mark.parametrize("url", ["http://www.bbc.co.uk/proxy.pac", "http://10.0.0.1:9464/metrics",
                                 "http://wpad.school.local:8443/", "https://www.bbc.co.uk/"])
def test_requests_for_sites_are_left_to_the_filter(addon, url):
    assert answer(addon, flow(url)) is None


def test_transparent_mode_answers_what_was_going_to_the_gateway_itself(addon):
    # The firewall redirected a device's request for the gateway's own port 80 (127.0.0.1 is always local).
    f = flow("http://wpad/wpad.dat", sockname=("127.0.0.1", 80), transparent=True)
    assert 'return "PROXY' in answer(addon, f).get_text()
    away = flow("http://10.0.0.1/wpad.dat", sockname=("203.0.113.9", 80), transparent=True)
    assert answer(addon, away) is None  # going to a site on the internet: the filter decides


def test_transparent_only_pac_sends_browsers_direct():
    text = pac_file(None, ["school.local"], "10.0.0.1")
    assert text.rstrip().endswith('return "DIRECT";\n}'.rstrip()) and "PROXY" not in text


def test_pac_file_is_valid_javascript_that_answers_as_expected():
    node = shutil.which("node")
    if not node:
        require("node is not installed (apt-get install nodejs): it runs the PAC file's JavaScript")
    text = pac_file("10.0.0.1:8080", ["school.local", "10.0.0.0/8"], "10.0.0.1")
    # The functions browsers give PAC files, as specified (isInNet without a DNS lookup: only IPs reach it).
    script = text + """
function isPlainHostName(h) { return h.indexOf(".") < 0; }
function dnsDomainIs(h, d) { return h.length >= d.length && h.substring(h.length - d.length) == d; }
function shExpMatch(h, p) { return new RegExp("^" + p.replace(/\\./g, "\\\\.").replace(/\\*/g, ".*") + "$").test(h); }
function ip(a) { return a.split(".").reduce((n, o) => n * 256 + Number(o), 0); }
function isInNet(h, n, m) { return (ip(h) & ip(m)) >>> 0 === (ip(n) & ip(m)) >>> 0; }
for (const h of ["intranet", "www.school.local", "10.1.2.3", "www.bbc.co.uk", "10.evil.com", "11.1.2.3",
                 "evilschool.local", "127.0.0.1"])
  console.log(h + " " + FindProxyForURL("http://" + h + "/", h));
"""
    out = subprocess.run([node, "-e", script], capture_output=True, text=True).stdout.split("\n")
    assert out[:8] == ["intranet DIRECT", "www.school.local DIRECT", "10.1.2.3 DIRECT",
                       "www.bbc.co.uk PROXY 10.0.0.1:8080", "10.evil.com PROXY 10.0.0.1:8080",
                       "11.1.2.3 PROXY 10.0.0.1:8080", "evilschool.local PROXY 10.0.0.1:8080", "127.0.0.1 DIRECT"]


def test_local_addresses():
    local = LocalAddresses()
    assert "127.0.0.1" in local and "::1" in local
    assert "203.0.113.9" not in local and "www.bbc.co.uk" not in local
