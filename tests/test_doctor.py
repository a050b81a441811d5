"""``schoolproxy doctor`` against real services: a running proxy, the stand-in upstream filter (which
inspects HTTPS with its own CA), a real SMTP server with STARTTLS and sign-in — and the same gateway
with things broken, each reported in one plain line with its fix."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port, make_school
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from internet import Internet
from proxyproc import ProxyProcess
from test_alert_delivery import tls_smtp  # noqa: F401 - a fixture

BIN = Path(sys.executable).parent / "schoolproxy"


def doctor(config: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), "doctor", "--config", str(config), "--probe", "learning.test", *extra],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def gateway(tmp_path, tls_smtp):  # noqa: F811
    smtp_port, smtp_ca, received, smtp_root = tls_smtp
    port = free_port()
    with Internet(tmp_path / "internet") as internet:
        config = make_school(tmp_path, upstream=internet.proxy_url, database=f"sqlite:///{tmp_path / 'records.db'}")
        text = config.read_text().replace(
            "proxy: {listen_host: 127.0.0.1, listen_port: 8080,",
            f"proxy: {{upstream_ca: {internet.ca_path}, listen_host: 127.0.0.1, listen_port: {port},")
        text += (f"alerts:\n  recipients: {{dsl: [d@s.test], computing_lead: [c@s.test], head: [h@s.test], "
                 f"slt: [s@s.test]}}\n  smtp: {{host: localhost, port: {smtp_port}, username: alerts, "
                 f"password_file: {smtp_root / 'smtp-password'}, from: f@s.test, ca_file: {smtp_ca}}}\n")
        config.write_text(text)
        (tmp_path / "users.htpasswd").chmod(0o640)
        (smtp_root / "smtp-password").chmod(0o640)
        argv = [str(BIN), "run", "--config", str(config)]
        with ProxyProcess(argv, port, tmp_path / "proxy.log") as proxy:
            yield config, internet, received, proxy


def test_a_healthy_gateway(gateway):
    config, internet, received, proxy = gateway
    r = doctor(config)
    out = r.stdout
    port = proxy.port
    for line in (f"OK       explicit proxy: answers on 127.0.0.1:{port}",
                 "OK       configuration: valid; 2 policy tests pass",
                 "OK       school CA: valid until",
                 f"OK       upstream filter: {internet.proxy_url} answers",
                 "upstream CA: CN=schoolproxy test origin CA",  # (a test CA of 30 days: PROBLEM, expires soon)
                 "OK       HTTPS through the upstream: learning.test's certificate verifies (issued by schoolproxy test origin CA)",
                 "OK       records database: sqlite:///",
                 "OK       mail server: localhost:",
                 "accepts the gateway and its sign-in (no message sent)",
                 "OK       secrets: 2 secret files, none readable by other users",
                 "OK       disk space: "):
        assert line in out, out + r.stderr
    assert not received  # no mail was sent
    assert "Traceback" not in r.stderr


def test_broken_items_are_reported_clearly_with_their_fix(gateway, tmp_path):
    config, internet, received, proxy = gateway
    proxy.stop()
    text = config.read_text()
    text = text.replace(f"upstream_ca: {internet.ca_path}, ", "")                  # upstream CA not trusted
    text = re.sub(r"smtp: \{host: localhost, port: \d+", f"smtp: {{host: localhost, port: {free_port()}", text)  # mail down
    text = text.replace(f'database: "sqlite:///{tmp_path / "records.db"}"',          # database down
                        f'database: "postgresql+psycopg://nobody@127.0.0.1:{free_port()}/nothing"')
    config.write_text(text)
    (tmp_path / "users.htpasswd").chmod(0o644)                                       # a secret anyone can read
    expired_ca(tmp_path / "ca" / "mitmproxy-ca-cert.pem")
    r = doctor(config)
    out = r.stdout
    assert r.returncode == 1 and "Traceback" not in r.stderr + out
    expected = [
        ("PROBLEM  explicit proxy: nothing answers on 127.0.0.1:", "fix: is the proxy running? systemctl status schoolproxy"),
        ("PROBLEM  school CA: ", "expired on"),
        ("PROBLEM  HTTPS through the upstream: learning.test's certificate is not trusted",
         "fix: if the upstream filter decrypts HTTPS, set proxy.upstream_ca to its inspection CA (PEM) — never turn verification off"),
        ("PROBLEM  records database: cannot open postgresql+psycopg://", "fix: check records.database"),
        ("PROBLEM  mail server: localhost:", "Connection refused"),
        ("PROBLEM  secrets: readable by every user on the gateway: users file", "fix: chmod 640 each"),
    ]
    for found, detail in expected:
        assert found in out and detail in out, out
    assert "problems found." in out.splitlines()[-1]


def test_unreachable_upstream_and_stale_lists(tmp_path):
    config = make_school(tmp_path, upstream=f"http://127.0.0.1:{free_port()}")
    config.write_text(config.read_text().replace(
        "lists: {sources: [lists], metadata: lists/categories.yaml}",
        "lists: {sources: [lists, ut1], metadata: lists/categories.yaml, update: {dest: ut1}}"))
    (tmp_path / "ut1" / "adult").mkdir(parents=True)
    (tmp_path / "ut1" / "adult" / "domains").write_text("x.test\n")
    old = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30)).isoformat()
    (tmp_path / "ut1.status.json").write_text(json.dumps(
        {"updated": old, "entries": 1, "last_result": "refused: the archive is damaged or truncated (EOFError: x)"}))
    out = doctor(config).stdout
    assert "PROBLEM  upstream filter: http://127.0.0.1:" in out and "does not answer (Connection refused): every allowed request fails" in out
    assert "PROBLEM  list updates: the last update was refused: the archive is damaged or truncated" in out
    assert "PROBLEM  list freshness: the UT1 lists were last updated 30 days ago" in out
    assert "fix: systemctl status schoolproxy-lists-update.timer; schoolproxy lists update" in out


def test_a_config_that_does_not_load_is_the_one_problem_reported(tmp_path):
    config = make_school(tmp_path)
    config.write_text(config.read_text().replace("block_categories: [adult,", "block_categories: [adultt,"))
    r = doctor(config)
    assert r.returncode == 1 and "PROBLEM  configuration:" in r.stdout and "unknown category 'adultt'" in r.stdout
    assert "fix: schoolproxy check --config" in r.stdout and "Traceback" not in r.stderr


def expired_ca(path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expired school CA")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=400)).not_valid_after(now - dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.utime(path)
