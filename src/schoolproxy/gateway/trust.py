"""Certificates: the upstream filter's inspection CA the proxy must trust, and the proxy's own CA that
devices must trust.

When the upstream filter (Smoothwall) decrypts HTTPS too, every site's certificate the proxy sees is
issued by the upstream's inspection CA. The proxy then trusts that CA as well as the usual public CAs
(``proxy.upstream_ca``) — never by turning certificate verification off. mitmproxy takes one file of
trusted CAs, so the two are joined into a bundle in the CA directory.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import certifi
from cryptography import x509

from schoolproxy.config import Config

BUNDLE = "upstream-trust.pem"


class TrustError(ValueError):
    """A certificate file cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class CaInfo:
    subject: str
    not_after: dt.datetime
    is_ca: bool

    def days_left(self, now: dt.datetime | None = None) -> int:
        now = now or dt.datetime.now(dt.timezone.utc)
        return (self.not_after - now).days


def read_ca(path: Path) -> tuple[CaInfo, bytes]:
    """The first certificate of a PEM file, checked to be a CA in date; TrustError otherwise."""
    try:
        pem = path.read_bytes()
    except OSError as e:
        raise TrustError(f"{path}: cannot read it: {e.strerror}") from None
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise TrustError(f"{path}: not a PEM certificate (export the CA as Base-64/PEM, "
                         "'-----BEGIN CERTIFICATE-----')") from None
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    info = CaInfo(cert.subject.rfc4514_string(), cert.not_valid_after_utc, is_ca)
    if not is_ca:
        raise TrustError(f"{path}: {info.subject} is not a CA certificate (export the issuing CA, not a site's)")
    if info.days_left() < 0:
        raise TrustError(f"{path}: {info.subject} expired on {info.not_after:%d/%m/%Y}")
    return info, pem


def upstream_bundle(config: Config) -> Path | None:
    """Write the public CAs plus ``proxy.upstream_ca`` into the CA directory; its path, or None when no
    upstream CA is configured. TrustError if the CA file cannot be used."""
    if config.proxy.upstream_ca is None:
        return None
    _, pem = read_ca(config.path(config.proxy.upstream_ca))
    ca_dir = config.path(config.proxy.ca_dir)
    ca_dir.mkdir(parents=True, exist_ok=True)
    bundle = ca_dir / BUNDLE
    text = Path(certifi.where()).read_bytes().rstrip(b"\n") + b"\n" + pem.strip() + b"\n"
    if not bundle.exists() or bundle.read_bytes() != text:
        tmp = bundle.with_suffix(".tmp")
        tmp.write_bytes(text)
        tmp.replace(bundle)
    return bundle
