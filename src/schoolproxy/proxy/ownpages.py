"""OwnPages addon: what the proxy answers itself, to requests addressed to the proxy (the gateway) rather
than to a site — before anyone has signed in, since a browser fetches them before it can:

    /proxy.pac, /wpad.dat            the proxy auto-config file (browsers set to "automatic")
    /  and /certificate              how to install the school's certificate, per platform
    /schoolproxy-ca.pem, .cer        the certificate itself (PEM; DER for Windows) — never the key

A request is addressed to the proxy when it names the proxy's own address and port (explicit mode, e.g.
``http://10.0.0.1:8080/proxy.pac``), one of ``proxy.own_names`` or an address of the gateway itself
(``http://wpad.school.local/wpad.dat``), or — in transparent mode — was going to an address of the
gateway (the firewall sends the gateway's own port 80 here). Everything else is left to the filter.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import socket
from pathlib import Path

import jinja2
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mitmproxy import http

from schoolproxy.gateway.pac import CONTENT_TYPE as PAC_TYPE
from schoolproxy.gateway.pac import pac_file
from schoolproxy.proxy.transparent import is_transparent
from schoolproxy.snapshot import SnapshotHolder

log = logging.getLogger(__name__)

CA_FILE = "mitmproxy-ca-cert.pem"
_env = jinja2.Environment(loader=jinja2.PackageLoader("schoolproxy.gateway", "templates"), autoescape=True,
                          undefined=jinja2.StrictUndefined)
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class LocalAddresses:
    """Is an address one of this machine's own? Asked of the kernel (can a socket be bound to it?), so
    addresses added after start are known too; answers are cached, bounded."""

    def __init__(self, limit: int = 4096):
        self._known: dict[str, bool] = {}
        self.limit = limit

    def __contains__(self, host: str) -> bool:
        hit = self._known.get(host)
        if hit is not None:
            return hit
        try:
            addr = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False  # a name, not an address
        local = addr.is_loopback
        if not local:
            family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
            try:
                with socket.socket(family, socket.SOCK_STREAM) as s:
                    s.bind((str(addr), 0))
                local = True
            except OSError:
                local = False
        if len(self._known) >= self.limit:
            self._known.clear()
        self._known[host] = local
        return local


class OwnPages:
    def __init__(self, snapshots: SnapshotHolder):
        self.snapshots = snapshots
        self.local = LocalAddresses()
        self._ca: tuple[Path, float, bytes, bytes, str, str] | None = None
        # Per snapshot: the ports and names the proxy answers for itself (explicit mode).
        self._snap = None
        self._ports: frozenset[int] = frozenset()
        self._names: frozenset[str] = frozenset()
        self._pages_host = ""

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        snap = self.snapshots.snapshot
        if snap is None:
            return
        if snap is not self._snap:
            proxy = snap.config.proxy
            self._ports = frozenset({proxy.listen_port, 80})
            self._names = frozenset(n.lower().rstrip(".") for n in proxy.own_names)
            self._pages_host = snap.config.block_page.pages_host
            self._snap = snap
        if not self._for_us(flow):
            return
        req = flow.request
        if req.method not in ("GET", "HEAD"):
            flow.response = self._reply(405, "text/plain; charset=utf-8", b"Only GET here.\n", {"Allow": "GET, HEAD"})
        else:
            flow.response = self._page(flow, snap.config)
        if req.method == "HEAD":
            flow.response.content = b""

    # -- which requests ---------------------------------------------------------------------------------
    def _for_us(self, flow: http.HTTPFlow) -> bool:
        client = flow.client_conn
        sockname = client.sockname
        if is_transparent(client):
            # The firewall redirected it: sockname is where the device was going. The pages for a signed-in
            # person (block_page.pages_host, which the school's DNS points at the gateway) are not ours.
            return sockname is not None and sockname[0] in self.local \
                and flow.request.host.lower().rstrip(".") != self._pages_host
        req = flow.request
        port = req.port
        if port not in self._ports and (sockname is None or port != sockname[1]):
            return False
        host = req.host.lower().rstrip(".")
        if sockname is not None and host == sockname[0]:
            return True
        if host[-1:].isdigit() or ":" in host:  # an address: is it one of the gateway's?
            return host in self.local
        return host in self._names

    # -- what is answered -------------------------------------------------------------------------------
    def _page(self, flow: http.HTTPFlow, config) -> http.Response:
        path = flow.request.path.split("?", 1)[0]
        if path in ("/proxy.pac", "/wpad.dat"):
            return self._reply(200, PAC_TYPE, self._pac(flow, config).encode())
        ca = self._ca_files(config)
        if path in ("/", "/certificate", "/certificate/"):
            page = _env.get_template("certificate.html").render(
                school=config.school, ca_ready=ca is not None, filename=_filename(config.school),
                fingerprint=ca[4] if ca else "", expires=ca[5] if ca else "")
            return self._reply(200, "text/html; charset=utf-8", page.encode())
        if path in ("/schoolproxy-ca.pem", "/schoolproxy-ca.cer") and ca is not None:
            pem, der = ca[2], ca[3]
            if path.endswith(".pem"):
                return self._reply(200, "application/x-x509-ca-cert", pem,
                                   {"Content-Disposition": f'attachment; filename="{_filename(config.school)}.pem"'})
            return self._reply(200, "application/pkix-cert", der,
                               {"Content-Disposition": f'attachment; filename="{_filename(config.school)}.cer"'})
        return self._reply(404, "text/plain; charset=utf-8",
                           b"Not found. This is the school's internet filter: see / for how to set up a device.\n")

    def _pac(self, flow: http.HTTPFlow, config) -> str:
        proxy = config.proxy
        sockname = flow.client_conn.sockname
        gateway = sockname[0] if sockname else None
        if proxy.mode == "transparent" or gateway is None:
            target = None  # no explicit listener: the firewall sends the traffic to the filter anyway
        else:
            host = proxy.listen_host if proxy.listen_host not in ("0.0.0.0", "::", "") else gateway
            target = f"[{host}]:{proxy.listen_port}" if ":" in host else f"{host}:{proxy.listen_port}"
        return pac_file(target, proxy.pac_direct, gateway)

    def _ca_files(self, config) -> tuple[Path, float, bytes, bytes, str, str] | None:
        """(path, mtime, PEM, DER, SHA-256 fingerprint, expiry) of the CA certificate, read once per change."""
        path = config.path(config.proxy.ca_dir) / CA_FILE
        try:
            mtime = path.stat().st_mtime
            if self._ca is not None and self._ca[0] == path and self._ca[1] == mtime:
                return self._ca
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError) as e:
            log.warning("schoolproxy: the CA certificate %s cannot be served: %s", path, e)
            return None
        der = cert.public_bytes(serialization.Encoding.DER)
        pem = cert.public_bytes(serialization.Encoding.PEM)  # the certificate alone, whatever else the file holds
        digest = hashlib.sha256(der).hexdigest().upper()
        fingerprint = ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
        self._ca = (path, mtime, pem, der, fingerprint, f"{cert.not_valid_after_utc:%d %B %Y}")
        return self._ca

    @staticmethod
    def _reply(status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> http.Response:
        return http.Response.make(status, body, {"Content-Type": content_type, **_NO_STORE, **(headers or {})})


def _filename(school: str) -> str:
    """A file name for the certificate from the school's name: "Example Primary School" → example-primary-school-ca."""
    words = "".join(c if c.isalnum() else " " for c in school.lower()).split()
    return "-".join(words)[:60] + "-ca" if words else "school-ca"
