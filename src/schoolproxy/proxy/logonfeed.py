"""LogonFeed addon: the HTTP endpoint that the Windows logon task calls (``deploy/logon-feed/``).

    POST /logon   {"user": "jsmith", "device": "IT-SUITE-07"}           → 200 {"ok": true, ...}
    POST /logon   {"user": "jsmith", "ip": "...", "source": "sign-in", "hours": "8"}  (a sign-in page)
    POST /logoff  {"user": "jsmith"}                                    → 200 {"ok": true, "cleared": true}
    GET  /logons                                                        → the live logons (JSON)
    GET  /health                                                        → 200 ok (no secret needed)

Every call but /health carries ``Authorization: Bearer <secret>`` (the config's ``secret_file``). The
client address is the caller's own; only the gateway (the console) and configured relays (a login server
for thin clients) may name another ``ip``. A well-formed call is still checked before it is believed
(:func:`identity.logons.admit`): the user must exist, and a staff account is accepted only at a staff PC.
A refusal is logged at most once a minute per caller and counted by reason. Bodies are JSON or
form-encoded, at most 4 KiB. The server runs in its own threads, listens only on the configured admin
address, and never touches the event loop: it replaces entries in the :class:`LogonTable` that the
Identify addon reads.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from mitmproxy import exceptions
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from schoolproxy.identity.logons import (REFUSALS, FeedSources, Logon, LogonError, LogonTable, Refused, admit,
                                        check_address, clean_user, normalise_ip, who_exists)
from schoolproxy.metrics import Scraped
from schoolproxy.snapshot import SnapshotHolder

log = logging.getLogger(__name__)

MAX_BODY = 4096
FOLLOW_SECONDS = 0.5  # how soon a logon reaches the workers that do not run the feed
QUIET_SECONDS = 60    # a caller's refused calls are logged at most once in this long


class LogonFeed:
    def __init__(self, snapshots: SnapshotHolder, registry: CollectorRegistry, worker: int = 0):
        self.snapshots = snapshots
        #: This process's number among ``schoolproxy run --workers N``: worker 0 runs the feed, others follow.
        self.worker = worker
        #: ip → user, when the config enables the feed.
        self.logons: LogonTable | None = None
        self.server: ThreadingHTTPServer | None = None
        self.stats = {"logon": 0, "logoff": 0, "rejected": 0, "refused": 0}
        self.refused = dict.fromkeys(REFUSALS, 0)
        self._last_logged: dict[str, float] = {}  # caller → when its last refusal was logged
        self._log_lock = threading.Lock()
        self._following: threading.Event | None = None
        registry.register(Scraped(self._metrics))

    def lookup(self, ip: str) -> Logon | None:
        """The live logon on this client address, if the feed is on and has one."""
        logons = self.logons
        return logons.lookup(ip) if logons is not None else None

    def configure(self, updated: set[str]) -> None:
        if "schoolproxy_config" not in updated or self.server is not None:
            return
        snap = self.snapshots.snapshot
        if snap is None or snap.config.identity.logon_feed is None:
            return
        feed = snap.config.identity.logon_feed
        table = LogonTable(feed.ttl_hours * 3600, snap.config.path(feed.state_file))
        if self.worker != 0:
            # Another worker runs the feed and saves the table; follow its file.
            table.refresh()
            self.logons = table
            self._following = threading.Event()
            threading.Thread(target=self._follow, args=(table,), name="logon-follow", daemon=True).start()
            return
        restored = table.load()
        host, _, port = feed.listen.rpartition(":")
        try:
            self.server = ThreadingHTTPServer((host.strip("[]"), int(port)), _handler(self))
        except OSError as e:
            raise exceptions.OptionsError(
                f"schoolproxy: cannot listen for the logon feed on {feed.listen}: {e.strerror}") from None
        self.server.daemon_threads = True
        self.logons = table
        threading.Thread(target=self.server.serve_forever, name="logon-feed", daemon=True).start()
        log.info("schoolproxy: logon feed on http://%s/ (%d live logons restored)", feed.listen, restored)

    def _follow(self, table: LogonTable) -> None:
        while not self._following.wait(FOLLOW_SECONDS):
            table.refresh()

    def done(self) -> None:
        if self._following is not None:
            self._following.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # -- called from the server's threads ---------------------------------------------------------------
    def authorised(self, header: str | None) -> bool:
        snap = self.snapshots.snapshot
        secret = snap.logon_secret if snap else None
        if not secret or not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode("utf-8", "replace"), secret.encode("utf-8"))

    def apply(self, action: str, fields: dict[str, str], peer: str) -> dict:
        table = self.logons
        snap = self.snapshots.snapshot
        assert table is not None and snap is not None and snap.config.identity.logon_feed is not None
        user = fields.get("user")
        if not user:
            raise LogonError("'user' is required")
        user, caller = clean_user(user), normalise_ip(peer)
        ip = normalise_ip(fields.get("ip") or caller)
        source = fields.get("source", "logon-feed")
        sources = FeedSources.of(snap.config.identity.logon_feed)
        if action == "logoff":
            check_address(ip, caller, source, sources)
            cleared = table.logoff(user, ip)
            self.stats["logoff"] += 1
            return {"ok": True, "cleared": cleared}

        def profile_of(name: str, groups: frozenset[str] | None):
            return snap.config.profiles[snap.resolver.resolve(snap.resolver.canonical(name), groups or frozenset())[0]]
        groups = admit(user, ip, caller, source, sources, who_exists(snap.config, snap.directory, snap.users),
                       profile_of)
        entry = table.logon(user, ip, fields.get("device"), groups=groups, source=source,
                            ttl_seconds=_hours(fields.get("hours")))
        self.stats["logon"] += 1
        log.info("logon feed: %s on %s%s", entry.user, entry.ip, f" ({entry.device})" if entry.device else "")
        return {"ok": True, "user": entry.user, "ip": entry.ip, "device": entry.device, "expires": entry.expires}

    def note_refusal(self, refused: Refused, caller: str) -> None:
        """Count a refused call; log it unless this caller's last refusal was logged under a minute ago (a
        pupil's script looping must not flood the log). Never the secret, never a password."""
        now = time.monotonic()
        with self._log_lock:
            self.stats["refused"] += 1
            self.refused[refused.reason] += 1
            last = self._last_logged.get(caller)
            if last is not None and now - last < QUIET_SECONDS:
                return
            if len(self._last_logged) > 10_000:
                self._last_logged.clear()
            self._last_logged[caller] = now
        log.warning("logon feed: refused a call from %s: %s (schoolproxy_logon_feed_refused_total counts "
                    "them; further refusals from %s in the next minute are not logged)", caller, refused.why, caller)

    def _metrics(self) -> Iterable[Metric]:
        if self.logons is not None:
            yield GaugeMetricFamily("schoolproxy_logon_feed_live", "Client addresses with a live logon.",
                                    value=len(self.logons.live()))
        if self.server is not None:
            calls = CounterMetricFamily("schoolproxy_logon_feed_calls", "Logon feed calls, by result.",
                                        labels=["result"])
            for result, n in self.stats.items():
                calls.add_metric([result], n)
            yield calls
            refused = CounterMetricFamily("schoolproxy_logon_feed_refused",
                                          "Logon feed calls with the right secret that were not believed, by reason.",
                                          labels=["reason"])
            for reason, n in self.refused.items():
                refused.add_metric([reason], n)
            yield refused


def _hours(text: str | None) -> float | None:
    """A sign-in's own duration ("hours"), in seconds; None for the feed's ttl_hours."""
    if text is None:
        return None
    try:
        return float(text) * 3600
    except ValueError:
        raise LogonError("'hours' must be a number") from None


def _handler(feed: LogonFeed) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "schoolproxy-logon-feed"
        sys_version = ""
        protocol_version = "HTTP/1.1"
        timeout = 10  # seconds a connection may sit silent: idle or trickling ones must not hold a thread each

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/health":
                return self._reply(200, {"ok": True})
            if path != "/logons":
                return self._reply(404, {"error": "not found"})
            if not self._authorised():
                return None
            table = feed.logons
            live = table.live() if table is not None else []
            return self._reply(200, {"logons": [{"user": e.user, "ip": e.ip, "device": e.device,
                                                 "since": e.since, "expires": e.expires} for e in live]})

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            if path not in ("/logon", "/logoff"):
                return self._reply(404, {"error": "not found: use POST /logon or /logoff"})
            if not self._authorised():
                return None
            fields = self._fields()
            if fields is None:
                return None
            try:
                return self._reply(200, feed.apply(path[1:], fields, self.client_address[0]))
            except Refused as e:
                feed.note_refusal(e, normalise_ip(self.client_address[0]))
                return self._reply(e.status, {"error": str(e)})
            except LogonError as e:
                feed.stats["rejected"] += 1
                return self._reply(400, {"error": str(e)})

        def _authorised(self) -> bool:
            if feed.authorised(self.headers.get("Authorization")):
                return True
            feed.stats["rejected"] += 1
            log.warning("logon feed: call from %s without the right secret refused", self.client_address[0])
            self._reply(401, {"error": "missing or wrong secret"}, {"WWW-Authenticate": "Bearer"})
            return False

        def _fields(self) -> dict[str, str] | None:
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._reply(411, {"error": "Content-Length required"})
                return None
            if length < 0 or length > MAX_BODY:
                self._reply(413, {"error": f"body larger than {MAX_BODY} bytes"})
                return None
            raw = self.rfile.read(length)
            try:
                text = raw.decode("utf-8")
                if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
                    data: object = dict(parse_qsl(text, strict_parsing=True))
                else:
                    data = json.loads(text)
            except (UnicodeDecodeError, ValueError):
                data = None
            if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, (str, type(None)))
                                                     for k, v in data.items()):
                feed.stats["rejected"] += 1
                self._reply(400, {"error": "body must be a JSON object of strings: "
                                           '{"user": "...", "device": "...", "ip": "..."}'})
                return None
            return {k: v for k, v in data.items() if v is not None}

        def _reply(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            if status >= 400:  # the body may be unread: never reuse this connection
                self.close_connection = True
                headers = {**(headers or {}), "Connection": "close"}
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            log.debug("logon feed: %s " + format, self.client_address[0], *args)

    return Handler
