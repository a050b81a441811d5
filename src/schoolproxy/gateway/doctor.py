"""``schoolproxy doctor``: everything the proxy depends on, checked in plain words, one line each.

Each check says OK or PROBLEM, what it found, and for a problem what to do about it. Checks are run
against the live gateway (ports answering, the directory, the mail server, the upstream filter), never
changing anything: no alert is sent, no record written, no rule applied.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
import ssl
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from schoolproxy.config import Config, ConfigError, load_config

TIMEOUT = 5.0
CA_WARN_DAYS = 90
LISTS_STALE_DAYS = 8          # with daily updates: a week of failures
LISTS_UNCHANGED_DAYS = 90     # without updates
MIN_FREE_BYTES = 1 << 30
MIN_FREE_SHARE = 0.10


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def lines(self) -> list[str]:
        out = [f"{'OK' if self.ok else 'PROBLEM':<8} {self.name}: {self.detail}"]
        if not self.ok and self.fix:
            out.append(f"{'':<8} fix: {self.fix}")
        return out


def ok(name: str, detail: str) -> Check:
    return Check(name, True, detail)


def problem(name: str, detail: str, fix: str) -> Check:
    return Check(name, False, detail, fix)


def run_checks(config_path: str | Path, probe_host: str = "www.gov.uk") -> Iterator[Check]:
    """Every check, in the order a network manager would look; stops early only if the config is unusable."""
    try:
        cfg = load_config(config_path)
    except ConfigError as e:
        yield problem("configuration", str(e), f"fix the file, then: schoolproxy check --config {config_path}")
        return
    yield from _configuration(cfg, config_path)
    for check in (_listeners, _proxy_ca, _upstream, lambda c: _upstream_tls(c, probe_host), _database,
                  _directory, _alert_delivery, _lists, _disk, _transparent, _secrets):
        try:
            yield from check(cfg)
        except Exception as e:  # a check that breaks is itself a finding, never a traceback
            yield problem(getattr(check, "__name__", "check").strip("_").replace("_", " "),
                          f"the check itself failed: {type(e).__name__}: {e}", "report this to schoolproxy's maintainers")


# -- the configuration ----------------------------------------------------------------------------------
def _configuration(cfg: Config, path) -> Iterator[Check]:
    from schoolproxy.gateway.modes import identity_warnings
    from schoolproxy.snapshot import build_snapshot
    try:
        snap = build_snapshot(path)
    except ConfigError as e:
        yield problem("configuration", str(e).splitlines()[0][:300], f"schoolproxy check --config {path}")
        return
    yield ok("configuration", f"valid; {len(cfg.tests)} policy tests pass; {len(snap.lists):,} list entries")
    for warning in identity_warnings(cfg):
        fix = "list the staff PCs in identity.logon_feed.staff_subnets" if "staff_subnets" in warning \
            else "set identity.logon_feed or identity.subnets"
        yield problem("who is browsing", warning, fix)


# -- ports ----------------------------------------------------------------------------------------------
def _answers(host: str, port: int) -> str | None:
    """None if something accepts connections at host:port, else why not."""
    host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=TIMEOUT):
            return None
    except OSError as e:
        return e.strerror or str(e)


def _listeners(cfg: Config) -> Iterator[Check]:
    proxy = cfg.proxy
    running = "is the proxy running? systemctl status schoolproxy; journalctl -u schoolproxy"
    wanted = []
    if proxy.mode != "transparent":
        wanted.append(("explicit proxy", proxy.listen_host, proxy.listen_port))
    if proxy.transparent_port() is not None:
        wanted.append(("transparent proxy", proxy.listen_host, proxy.transparent_port()))
    if proxy.listen_host.startswith("127.") or proxy.listen_host in ("localhost", "::1"):
        yield problem("proxy address", f"the proxy listens on {proxy.listen_host} only: devices on the LAN "
                      "cannot reach it", "set proxy.listen_host to the gateway's LAN address, e.g. 10.0.0.1")
    for name, host, port in wanted:
        why = _answers(host, port)
        yield ok(name, f"answers on {host}:{port}") if why is None else \
            problem(name, f"nothing answers on {host}:{port} ({why})", running)
    if cfg.metrics.enabled:
        host, _, port = cfg.metrics.listen.rpartition(":")
        if host.strip("[]") in ("0.0.0.0", "::", ""):
            yield problem("metrics", f"served on every interface ({cfg.metrics.listen}): pupils can read them",
                          "set metrics.listen to the gateway's management address or 127.0.0.1")
        why = _answers(host, int(port))
        yield ok("metrics", f"served on http://{cfg.metrics.listen}/metrics") if why is None else \
            problem("metrics", f"nothing answers on {cfg.metrics.listen} ({why})", running)
    feed = cfg.identity.logon_feed
    if feed is not None:
        host, _, port = feed.listen.rpartition(":")
        why = _answers(host, int(port))
        yield ok("logon feed", f"answers on {feed.listen}") if why is None else \
            problem("logon feed", f"nothing answers on {feed.listen} ({why})", running)


# -- certificates ---------------------------------------------------------------------------------------
def _proxy_ca(cfg: Config) -> Iterator[Check]:
    from schoolproxy.gateway.trust import TrustError, read_ca
    ca_dir = cfg.path(cfg.proxy.ca_dir)
    cert = ca_dir / "mitmproxy-ca-cert.pem"
    if not cert.exists():
        yield problem("school CA", f"no CA certificate in {ca_dir} yet",
                      "start the proxy once (it creates the CA), then give devices the certificate")
        return
    try:
        info, _ = read_ca(cert)
    except TrustError as e:
        yield problem("school CA", str(e), "replace the CA (see docs/install.md, 'Renewing the school CA')")
        return
    days = info.days_left()
    if days < CA_WARN_DAYS:
        yield problem("school CA", f"expires in {days} days ({info.not_after:%d/%m/%Y}): devices will then show "
                      "certificate warnings", "make a new CA and roll it out to devices before then "
                      "(docs/install.md, 'Renewing the school CA')")
    else:
        yield ok("school CA", f"valid until {info.not_after:%d/%m/%Y}; devices get it from "
                 f"http://{_lan_address(cfg)}/ (the certificate page)")
    key = ca_dir / "mitmproxy-ca.pem"
    if key.exists() and key.stat().st_mode & 0o077:
        yield problem("school CA key", f"{key} (the CA's private key) can be read by other users",
                      f"chmod 600 {key}; chmod 700 {ca_dir}")


def _lan_address(cfg: Config) -> str:
    host = cfg.proxy.listen_host
    return "<gateway>" if host in ("0.0.0.0", "::", "127.0.0.1") else host


# -- the upstream filter --------------------------------------------------------------------------------
def _upstream(cfg: Config) -> Iterator[Check]:
    from schoolproxy.proxy.transparent import upstream_address
    target = upstream_address(cfg.proxy.upstream)
    if target is None:
        yield ok("upstream filter", "none configured: traffic goes straight out (right only if the school's "
                 "certified filter sits further along the line, e.g. at the ISP)")
        return
    host, port = target[1]
    why = _answers(host, port)
    yield ok("upstream filter", f"{cfg.proxy.upstream} answers") if why is None else \
        problem("upstream filter", f"{cfg.proxy.upstream} does not answer ({why}): every allowed request fails",
                "check the address in proxy.upstream and the route to it from the gateway")


def _upstream_tls(cfg: Config, probe_host: str) -> Iterator[Check]:
    """An HTTPS handshake to a real site, as the proxy makes it (through the upstream, trusting what the
    proxy trusts): does the upstream's own HTTPS inspection verify?"""
    from schoolproxy.gateway.trust import TrustError, read_ca, upstream_bundle
    from schoolproxy.proxy.transparent import upstream_address
    if cfg.proxy.upstream_ca is not None:
        try:
            info, _ = read_ca(cfg.path(cfg.proxy.upstream_ca))
        except TrustError as e:
            yield problem("upstream CA", str(e), "export the upstream filter's inspection CA as PEM and set "
                          "proxy.upstream_ca to it")
            return
        yield ok("upstream CA", f"{info.subject}, valid until {info.not_after:%d/%m/%Y}") if info.days_left() >= 30 else \
            problem("upstream CA", f"{info.subject} expires on {info.not_after:%d/%m/%Y}",
                    "get the upstream filter's new inspection CA and put it in proxy.upstream_ca")
    target = upstream_address(cfg.proxy.upstream)
    if target is None and cfg.proxy.upstream_ca is None:
        return
    bundle = upstream_bundle(cfg)
    context = ssl.create_default_context(cafile=str(bundle) if bundle else None)
    try:
        if target is not None:
            sock = socket.create_connection(target[1], timeout=TIMEOUT)
            sock.sendall(f"CONNECT {probe_host}:443 HTTP/1.1\r\nHost: {probe_host}:443\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 8192:
                chunk = sock.recv(1024)
                if not chunk:
                    break
                head += chunk
            status = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
            if " 200" not in status:
                sock.close()
                yield problem("HTTPS through the upstream", f"the upstream answered {status or 'nothing'!r} to a "
                              f"CONNECT to {probe_host}", "allow the gateway's address to use the upstream filter")
                return
        else:
            sock = socket.create_connection((probe_host, 443), timeout=TIMEOUT)
        with context.wrap_socket(sock, server_hostname=probe_host) as tls:
            issuer = dict(x[0] for x in tls.getpeercert()["issuer"]).get("commonName", "?")
        yield ok("HTTPS through the upstream", f"{probe_host}'s certificate verifies (issued by {issuer})")
    except ssl.SSLCertVerificationError as e:
        yield problem("HTTPS through the upstream", f"{probe_host}'s certificate is not trusted ({e.verify_message}): "
                      "the proxy would refuse every HTTPS site",
                      "if the upstream filter decrypts HTTPS, set proxy.upstream_ca to its inspection CA (PEM) — "
                      "never turn verification off")
    except (OSError, ssl.SSLError) as e:
        yield problem("HTTPS through the upstream", f"cannot reach {probe_host} ({e})",
                      "check the gateway's route to the internet, or give --probe a site the upstream allows")


# -- records --------------------------------------------------------------------------------------------
def _database(cfg: Config) -> Iterator[Check]:
    from schoolproxy.records.database import current_revision, head_revision, open_database
    url = cfg.records.database
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = "sqlite:///" + str(cfg.path(Path(url[len("sqlite:///"):])))
    from sqlalchemy.engine import make_url
    shown = make_url(url).render_as_string(hide_password=True)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        yield problem("records database", f"{shown} does not exist yet",
                      "schoolproxy db upgrade (the proxy also creates it when it starts)")
        return
    try:
        engine = open_database(url)
        revision = current_revision(engine)
        engine.dispose()
    except Exception as e:
        yield problem("records database", f"cannot open {shown}: {str(e).splitlines()[0][:200]}",
                      "check records.database; for PostgreSQL, that the server runs and lets the gateway in")
        return
    head = head_revision()
    if revision != head:
        yield problem("records database", f"{shown} is at schema {revision or 'none'}, not {head}",
                      "schoolproxy db upgrade (the proxy also does it when it starts)")
    else:
        yield ok("records database", f"{shown}, schema up to date")
    spool = cfg.path(cfg.records.spool_dir)
    waiting = sum(f.stat().st_size for f in spool.glob("*") if f.is_file()) if spool.is_dir() else 0
    if waiting:
        yield problem("record spool", f"{waiting // 1024} KB of records wait in {spool}: the database is not "
                      "taking them", "check the database; the proxy replays them by itself once it can")


# -- people ---------------------------------------------------------------------------------------------
def _directory(cfg: Config) -> Iterator[Check]:
    settings = cfg.identity.directory
    if settings is None:
        return
    from schoolproxy.identity.directory import Directory
    directory = Directory(settings, cfg.base_dir)
    if settings.bind == "search":
        directory.groups("schoolproxy-doctor-probe")
        if directory.up:
            yield ok("directory", f"{', '.join(settings.urls)}: the service account signs in and searches")
        else:
            yield problem("directory", f"{directory.last_error}", "check identity.directory (addresses, ca_file, "
                          "service_dn and its password file) and that the domain controllers answer")
        return
    from urllib.parse import urlsplit
    for url in settings.urls:
        u = urlsplit(url)
        why = _answers(u.hostname or "", u.port or (636 if u.scheme == "ldaps" else 389))
        yield ok("directory", f"{url} answers") if why is None else \
            problem("directory", f"{url} does not answer ({why})", "check the address and the route to it")


def _alert_delivery(cfg: Config) -> Iterator[Check]:
    alerts = cfg.alerts
    if not alerts.enabled:
        yield problem("alerts", "switched off (alerts.enabled: false): no safeguarding alerts are raised",
                      "set alerts.enabled: true")
        return
    if alerts.smtp is None and alerts.webhook is None:
        if alerts.immediate:
            yield problem("alert delivery", f"{' and '.join(alerts.immediate)} alerts should go out at once, but "
                          "neither alerts.smtp nor alerts.webhook is set: they reach no one until someone looks",
                          "set alerts.smtp (the school's mail server) or alerts.webhook")
        return
    if alerts.smtp is not None:
        yield _smtp(cfg)
    if alerts.webhook is not None:
        yield ok("alert webhook", f"{alerts.webhook.url} configured (not called: it would deliver a message)")


def _smtp(cfg: Config) -> Check:
    from schoolproxy.identity.directory import read_secret
    smtp = cfg.alerts.smtp
    context = ssl.create_default_context(cafile=str(cfg.path(smtp.ca_file)) if smtp.ca_file else None)
    where = f"{smtp.host}:{smtp.port}"
    try:
        if smtp.security == "tls":
            server = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout_seconds, context=context)
        else:
            server = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_seconds)
        with server:
            server.ehlo()
            if smtp.security == "starttls":
                server.starttls(context=context)
                server.ehlo()
            if smtp.username:
                password = read_secret(cfg.path(smtp.password_file)) if smtp.password_file else ""
                server.login(smtp.username, password)
    except smtplib.SMTPAuthenticationError:
        return problem("mail server", f"{where} refused the sign-in of {smtp.username}",
                       "check alerts.smtp.username and the password in its password_file")
    except (OSError, smtplib.SMTPException, ssl.SSLError, ConfigError) as e:
        return problem("mail server", f"{where}: {type(e).__name__}: {str(e)[:200]}",
                       "check alerts.smtp (host, port, security) and that the gateway may reach it")
    return ok("mail server", f"{where} accepts the gateway{' and its sign-in' if smtp.username else ''} "
              "(no message sent)")


# -- lists ----------------------------------------------------------------------------------------------
def _lists(cfg: Config) -> Iterator[Check]:
    from schoolproxy.filtering.listupdate import age_days, read_status
    update = cfg.lists.update
    if update is not None:
        dest = cfg.path(update.dest)
        status = read_status(dest)
        age = age_days(dest)
        if age is None:
            yield problem("list updates", f"the UT1 lists have never been fetched into {dest}",
                          "schoolproxy lists update (the schoolproxy-lists-update timer runs it daily)")
            return
        if status.get("last_result", "ok") != "ok":
            yield problem("list updates", f"the last update was {status['last_result']}",
                          "read the reason above; the lists in use are unchanged")
        if age > LISTS_STALE_DAYS:
            yield problem("list freshness", f"the UT1 lists were last updated {age:.0f} days ago",
                          "systemctl status schoolproxy-lists-update.timer; schoolproxy lists update")
        else:
            yield ok("list freshness", f"the UT1 lists were updated {_ago(age)} "
                     f"({status.get('entries', 0):,} entries)")
        return
    newest = max((f.stat().st_mtime for s in cfg.lists.sources for f in cfg.path(s).rglob("*")
                  if f.is_file()), default=None)
    if newest is None:
        return
    age = (time.time() - newest) / 86400
    if age > LISTS_UNCHANGED_DAYS:
        yield problem("list freshness", f"no list has changed for {age:.0f} days",
                      "set lists.update to fetch the UT1 lists daily (docs/install.md)")
    else:
        yield ok("list freshness", f"lists last changed {_ago(age)}")


def _ago(days: float) -> str:
    if days < 1 / 24:
        return "within the hour"
    if days < 1:
        return f"{days * 24:.0f} hours ago"
    return f"{days:.0f} days ago"


# -- the machine ----------------------------------------------------------------------------------------
def _disk(cfg: Config) -> Iterator[Check]:
    places = {cfg.path(cfg.records.spool_dir).parent}
    for place in sorted(places):
        existing = place
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        usage = shutil.disk_usage(existing)
        free = usage.free / usage.total if usage.total else 1
        text = f"{usage.free / 2**30:.1f} GB free ({free:.0%}) where {place} is"
        if usage.free < MIN_FREE_BYTES or free < MIN_FREE_SHARE:
            yield problem("disk space", text + ": records and the spool need room",
                          "free space there, or lower records.retention_days and run schoolproxy purge")
        else:
            yield ok("disk space", text)


def _transparent(cfg: Config) -> Iterator[Check]:
    if cfg.proxy.transparent_port() is None:
        return
    from schoolproxy.gateway import firewall
    try:
        forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
    except OSError:
        forwarding = True
    if not forwarding:
        yield problem("routing", "the gateway does not forward IPv4 (net.ipv4.ip_forward is 0)",
                      "sysctl -w net.ipv4.ip_forward=1, and set it in /etc/sysctl.d/")
    if os.geteuid() != 0:
        yield problem("firewall rules", "cannot be checked without root", "run schoolproxy doctor with sudo")
        return
    try:
        rules = firewall.ruleset(cfg)
        now = firewall.current()
        same = now is not None and firewall.same_as_config(now, rules)
    except firewall.FirewallError as e:
        yield problem("firewall rules", str(e), "apt-get install nftables; schoolproxy firewall apply")
        return
    if now is None:
        yield problem("firewall rules", "not applied: devices without proxy settings are not filtered",
                      "schoolproxy firewall apply (and systemctl enable schoolproxy-firewall)")
    elif not same:
        yield problem("firewall rules", "in force, but not this config's (port or LAN changed?)",
                      "schoolproxy firewall apply")
    else:
        t = cfg.proxy.transparent
        yield ok("firewall rules", f"web traffic from {', '.join([*t.lan_interfaces, *map(str, t.lan_subnets)])} "
                 f"goes to port {t.port}; QUIC and DNS over TLS refused")


def _secrets(cfg: Config) -> Iterator[Check]:
    ident, alerts = cfg.identity, cfg.alerts
    files = []
    if ident.proxy_auth is not None and ident.proxy_auth.users_file is not None:
        files.append(("users file", ident.proxy_auth.users_file))
    if ident.logon_feed is not None:
        files.append(("logon feed secret", ident.logon_feed.secret_file))
    if ident.directory is not None and ident.directory.service_password_file is not None:
        files.append(("directory password", ident.directory.service_password_file))
    if alerts.smtp is not None and alerts.smtp.password_file is not None:
        files.append(("mail password", alerts.smtp.password_file))
    if alerts.webhook is not None and alerts.webhook.secret_file is not None:
        files.append(("webhook secret", alerts.webhook.secret_file))
    loose = []
    for name, path in files:
        p = cfg.path(path)
        try:
            mode = p.stat().st_mode
        except OSError:
            continue  # a missing file is reported where it is used
        if mode & stat.S_IROTH:
            loose.append(f"{name} ({p})")
    if loose:
        yield problem("secrets", "readable by every user on the gateway: " + "; ".join(loose),
                      "chmod 640 each (owner root, group schoolproxy)")
    elif files:
        yield ok("secrets", f"{len(files)} secret files, none readable by other users")


def report(checks: list[Check], write: Callable[[str], None] = print) -> int:
    """Print the checks; the exit status (1 if any problem)."""
    for check in checks:
        for line in check.lines():
            write(line)
    problems = sum(not c.ok for c in checks)
    write(f"{problems} problem{'s' if problems != 1 else ''} found." if problems else "All checks passed.")
    return 1 if problems else 0

