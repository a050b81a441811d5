"""The console's HTTPS certificate: issued by the proxy's CA for the console's names, private, renewed."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading

import pytest
from console_school import make_console_school
from cryptography import x509

from schoolproxy.config import ConfigError, load_config
from schoolproxy.console import certs
from schoolproxy.console.server import tls_context

UTC = dt.timezone.utc


@pytest.fixture
def cfg(tmp_path):
    return load_config(make_console_school(tmp_path, console_extra="hostnames: [console.school.test]\n"))


def test_issued_by_the_proxy_ca_for_the_listen_address_and_hostnames(cfg, tmp_path):
    files = certs.console_certificate(cfg)
    assert files.issued
    cert = x509.load_pem_x509_certificate(files.certificate.read_bytes())
    ca = x509.load_pem_x509_certificate((tmp_path / "ca" / certs.CA_CERT_FILE).read_bytes())
    assert certs.signed_by(cert, ca)
    assert certs.names_on(cert) == {"127.0.0.1", "console.school.test", "localhost"}
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= dt.timedelta(days=398)  # what browsers accept
    assert oct(files.key.stat().st_mode & 0o777) == "0o600"
    assert oct(files.key.parent.stat().st_mode & 0o777) == "0o700"


def test_a_client_that_trusts_only_the_school_ca_connects_by_name(cfg, tmp_path):
    files = certs.console_certificate(cfg)
    server_ctx = tls_context(str(files.certificate), str(files.key))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept():
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as s:
            s.recv(1)
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    client = ssl.create_default_context(cafile=str(tmp_path / "ca" / certs.CA_CERT_FILE))
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with client.wrap_socket(raw, server_hostname="console.school.test") as s:
            assert s.version() in ("TLSv1.2", "TLSv1.3")
            s.send(b"x")
    t.join(5)
    listener.close()


def test_kept_while_good_and_issued_again_near_expiry_or_when_names_change(cfg, tmp_path):
    first = certs.console_certificate(cfg)
    again = certs.console_certificate(cfg)
    assert not again.issued and again.certificate.read_bytes() == first.certificate.read_bytes()
    later = dt.datetime.now(UTC) + dt.timedelta(days=certs.LEAF_DAYS - certs.RENEW_DAYS + 1)
    assert certs.console_certificate(cfg, now=later).issued
    renamed = cfg.model_copy(update={"console": cfg.console.model_copy(update={"hostnames": ["other.school.test"]})})
    assert certs.console_certificate(renamed).issued


def test_a_replaced_ca_means_a_new_certificate(cfg, tmp_path):
    certs.console_certificate(cfg)
    for f in (tmp_path / "ca").iterdir():
        f.unlink()
    assert certs.console_certificate(cfg).issued   # the old one is not signed by the new CA


def test_own_certificate_and_key_are_used_as_given(tmp_path):
    config = make_console_school(tmp_path, console_extra="certificate: mine.pem\nkey: mine.key\n")
    cfg = load_config(config)
    with pytest.raises(ConfigError, match="mine.pem does not exist"):
        certs.console_certificate(cfg)
    (tmp_path / "mine.pem").write_text("x")
    (tmp_path / "mine.key").write_text("y")
    files = certs.console_certificate(cfg)
    assert (files.certificate.name, files.key.name, files.issued) == ("mine.pem", "mine.key", False)


def test_a_certificate_without_its_key_is_refused_in_the_config(tmp_path):
    with pytest.raises(ConfigError, match="give both certificate and key"):
        load_config(make_console_school(tmp_path, console_extra="certificate: mine.pem\n"))


@pytest.mark.parametrize("listen", ["0.0.0.0:8443", "[::]:8443", "console:99999", "8443"])
def test_the_console_listens_on_one_admin_address(tmp_path, listen):
    with pytest.raises(ConfigError, match="console.listen"):
        load_config(_with_listen(tmp_path, listen))


def _with_listen(tmp_path, listen):
    config = make_console_school(tmp_path)
    text = config.read_text()
    start = text.index('listen: "127.0.0.1:', text.index("console:"))
    end = text.index("\n", start)
    config.write_text(text[:start] + f'listen: "{listen}"' + text[end:])
    return config
