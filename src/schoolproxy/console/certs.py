"""The console's HTTPS certificate, issued by the school's proxy CA (``proxy.ca_dir``).

School devices already trust that CA (it is how HTTPS block pages work), so the console opens without a
warning. The certificate names the listen address and ``console.hostnames``; it is issued for 397 days
(the most browsers accept), kept in ``console.state_dir`` with its key private (0600), and issued again
when it is within 30 days of expiry, when the names change, or when the CA is replaced.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from schoolproxy.config import Config, ConfigError

CA_FILE = "mitmproxy-ca.pem"            # mitmproxy's CA: private key and certificate
CA_CERT_FILE = "mitmproxy-ca-cert.pem"  # the certificate alone (what devices trust)
CERT_FILE = "console-cert.pem"
KEY_FILE = "console-key.pem"
LEAF_DAYS = 397
RENEW_DAYS = 30
UTC = dt.timezone.utc


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    certificate: Path
    key: Path
    issued: bool            # True if issued just now


def certificate_names(config: Config) -> list[str]:
    """What the certificate must name: the listen address, the configured hostnames, localhost on loopback."""
    s = config.console
    names = [s.host, *s.hostnames]
    try:
        if ipaddress.ip_address(s.host).is_loopback:
            names.append("localhost")
    except ValueError:
        pass
    seen: list[str] = []
    for n in names:
        if n.lower() not in (x.lower() for x in seen):
            seen.append(n)
    return seen


def console_certificate(config: Config, now: dt.datetime | None = None) -> CertificateFiles:
    """The certificate and key to serve: the configured pair, else one from the proxy's CA (issued or
    renewed as needed)."""
    s = config.console
    if s.certificate is not None and s.key is not None:
        cert, key = config.path(s.certificate), config.path(s.key)
        for p in (cert, key):
            if not p.is_file():
                raise ConfigError(f"console.certificate/key: {p} does not exist")
        return CertificateFiles(cert, key, False)
    now = now or dt.datetime.now(UTC)
    ca_key, ca_cert = load_ca(config.path(config.proxy.ca_dir))
    state = config.path(s.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o700)
    cert_path, key_path = state / CERT_FILE, state / KEY_FILE
    names = certificate_names(config)
    current = read_certificate(cert_path)
    if current is not None and key_path.is_file() and still_good(current, ca_cert, names, now):
        return CertificateFiles(cert_path, key_path, False)
    cert_pem, key_pem = issue(ca_key, ca_cert, names, now)
    _write_private(key_path, key_pem)
    _write_private(cert_path, cert_pem)
    return CertificateFiles(cert_path, key_path, True)


def load_ca(ca_dir: Path):
    """(private key, certificate) of the proxy's CA, created as the proxy would if it has never run."""
    ca_file = ca_dir / CA_FILE
    if not ca_file.exists():
        from mitmproxy.certs import CertStore  # the same CA the proxy makes on its first start
        ca_dir.mkdir(parents=True, exist_ok=True)
        CertStore.from_store(ca_dir, "mitmproxy", 2048)
    try:
        data = ca_file.read_bytes()
        return serialization.load_pem_private_key(data, None), x509.load_pem_x509_certificate(data)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{ca_file}: cannot read the proxy's CA: {e}") from None


def read_certificate(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    if cert.issuer != ca_cert.subject:
        return False
    public = ca_cert.public_key()
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def names_on(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {n.lower() for n in san.get_values_for_type(x509.DNSName)} | \
        {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}


def still_good(cert: x509.Certificate, ca_cert: x509.Certificate, names: list[str], now: dt.datetime) -> bool:
    wanted = {str(ipaddress.ip_address(n)) if _is_ip(n) else n.lower() for n in names}
    return (signed_by(cert, ca_cert) and names_on(cert) == wanted
            and cert.not_valid_after_utc - now > dt.timedelta(days=RENEW_DAYS)
            and cert.not_valid_before_utc <= now)


def issue(ca_key, ca_cert: x509.Certificate, names: list[str], now: dt.datetime) -> tuple[bytes, bytes]:
    """A server certificate for ``names`` (hostnames and IP addresses), signed by the CA: (cert PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    alt = [x509.IPAddress(ipaddress.ip_address(n)) if _is_ip(n) else x509.DNSName(n) for n in names]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64]),
                                 x509.NameAttribute(NameOID.ORGANIZATION_NAME, "schoolproxy console")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(min(now + dt.timedelta(days=LEAF_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def expiry(path: Path) -> dt.datetime | None:
    """When the certificate in ``path`` (PEM) expires; None if there is none to read."""
    cert = read_certificate(path)
    return cert.not_valid_after_utc if cert is not None else None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _write_private(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".console.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
