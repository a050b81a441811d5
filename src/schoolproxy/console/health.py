"""Is everything working? The network manager's health page, and the warnings every page carries when
high alerts have nowhere to go or search alerts are off.

Each check is one plain sentence and a state — fine, needs attention, or cannot be checked — with the
figures behind it. Nothing here names a person or shows browsing.
"""

from __future__ import annotations

import datetime as dt
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from schoolproxy.console import certs
from schoolproxy.console.state import State
from schoolproxy.console.words import aware
from schoolproxy.monitoring import pending, status
from schoolproxy.records.schema import alert_outbox, requests

UTC = dt.timezone.utc
CERT_WARN = dt.timedelta(days=30)
LIST_WARN = dt.timedelta(days=90)
MAX_WORKERS = 64
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # never via http_proxy


@dataclass
class Check:
    name: str
    ok: bool | None            # None: cannot be checked here
    summary: str
    details: list[str] = field(default_factory=list)


def undelivered_high(state: State, now: dt.datetime | None = None) -> int:
    """Open, unacknowledged alerts sent at once (high, critical) that have reached no one — counted as the
    CLI, the digest and the metrics count them (monitoring/pending.py)."""
    return pending.count_undelivered(state.db, state.config, now)


def delivery_warning(state: State, now: dt.datetime | None = None) -> str | None:
    """The red banner's text, or None when high alerts have a working way to reach someone."""
    s = state.config.alerts
    if not s.enabled or not s.immediate:
        return None
    n = undelivered_high(state, now)
    if not pending.ways_to_tell(state.config):
        waiting = (f" {n} high or critical alert{'s have' if n != 1 else ' has'} reached no one but this console."
                   if n else "")
        return ("No email or webhook is set up, so high alerts are only in this console." + waiting + " Until the "
                "network manager sets one up (alerts: smtp in the configuration), check the inbox yourself several "
                "times a day.")
    if n:
        return (f"{n} high or critical alert{'s have' if n != 1 else ' has'} not reached anyone: sending "
                f"{'them' if n != 1 else 'it'} failed. Check the inbox now; the network manager can see why on "
                f"the Health page.")
    return None


def search_alerts_warning(state: State, now: dt.datetime | None = None) -> str | None:
    """The red banner's text when the running proxy has said that search alerts are off (the phrase lists
    could not be loaded: monitoring/status.py), or None."""
    if not state.config.alerts.enabled:
        return None
    said = status.search_alerts(state.db)
    if said is None or said["ok"]:
        return None
    text = status.off_because(said["detail"][:300])
    if status.is_stale(said, now):
        text += f" (As the proxy last said, at {_local(state, said['reported_at'])}: it has not said since.)"
    return text


def search_alerts_check(state: State, proxy_answers: list[dict[str, float]], now: dt.datetime) -> Check:
    """Search alerts: what the running proxy says — its metrics now, and its record of why."""
    name = "Search alerts"
    if not state.config.alerts.enabled:
        return Check(name, None, "Alerts are switched off in the configuration (alerts.enabled).")
    said = status.search_alerts(state.db)
    off_now = any(a.get("schoolproxy_search_alerts_off", 0) > 0 for a in proxy_answers)
    details = []
    if said is not None:
        details.append(f"{'on' if said['ok'] else 'OFF'} since {_local(state, said['since'])}; "
                       f"last said by the proxy {_local(state, said['reported_at'])}")
    if any(a.get("schoolproxy_content_scoring_off", 0) > 0 for a in proxy_answers):
        details.append("page content cannot be checked either: every page of the profiles that score content is "
                       "being blocked, to be safe")
    if off_now or (said is not None and not said["ok"]):
        why = said["detail"][:300] if said is not None and not said["ok"] else "the proxy's log says why"
        return Check(name, False, status.off_because(why) + " Run 'schoolproxy check' on the gateway to see "
                     "what is wrong, fix it, then reload the proxy (systemctl reload schoolproxy).", details)
    if said is None and not proxy_answers:
        return Check(name, None, "Not known yet: the proxy has not said.", details)
    return Check(name, True, "On: searches are checked against the phrase lists.", details)


# -- the checks ---------------------------------------------------------------------------------------------
def scrape(url: str, timeout: float = 1.5) -> dict[str, float] | None:
    """Sample name → value (summed over labels) from a Prometheus endpoint; None if it does not answer."""
    try:
        with _NO_PROXY.open(url, timeout=timeout) as r:
            text = r.read(4_000_000).decode("utf-8", "replace")
    except (OSError, urllib.error.URLError, ValueError):
        return None
    out: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[sample.name] = out.get(sample.name, 0.0) + sample.value
    except ValueError:
        return None
    return out


def proxy_check(state: State) -> tuple[Check, list[dict[str, float]]]:
    m = state.config.metrics
    if not m.enabled:
        return Check("The filter (proxy)", None, "Cannot be checked here: the proxy's metrics are switched off "
                     "(metrics.enabled)."), []
    host, _, port = m.listen.rpartition(":")
    host = "127.0.0.1" if host in ("0.0.0.0", "", "*") else host.strip("[]")
    host = f"[{host}]" if ":" in host else host
    answers = []
    for i in range(MAX_WORKERS):  # worker i of `run --workers N` serves its metrics on port + i
        got = scrape(f"http://{host}:{int(port) + i}/metrics")
        if got is None:
            break
        answers.append(got)
    if not answers:
        return Check("The filter (proxy)", False, f"Not answering at {m.listen}: the proxy may be stopped. "
                     f"On the gateway: systemctl status schoolproxy"), []
    details = [f"{len(answers)} proxy process{'es' if len(answers) != 1 else ''} answering"]
    active = sum(a.get("schoolproxy_active_users", 0) for a in answers)
    details.append(f"{int(active)} people browsing in the last five minutes")
    loaded = max((a.get("schoolproxy_config_loaded_timestamp_seconds", 0) for a in answers), default=0)
    if loaded:
        details.append(f"configuration loaded {_local(state, dt.datetime.fromtimestamp(loaded, UTC))}")
    return Check("The filter (proxy)", True, "Running.", details), answers


def records_check(state: State, now: dt.datetime) -> Check:
    spool = state.config.path(state.config.records.spool_dir)
    waiting = _size(spool)
    with state.db.connect() as conn:
        latest = conn.execute(select(func.max(requests.c.time))).scalar()
    details = [f"newest record: {_local(state, latest)}" if latest else "no records yet"]
    if waiting:
        return Check("Records of browsing", False, f"{waiting / 1e6:.1f} MB of records are waiting on disk for "
                     f"the database (they are kept and written when it can take them).", details)
    return Check("Records of browsing", True, "Being written; nothing waiting on disk.", details)


def delivery_check(state: State, now: dt.datetime) -> Check:
    s = state.config.alerts
    channels = pending.ways_to_tell(state.config)
    o = alert_outbox.c
    with state.db.connect() as conn:
        waiting = conn.execute(select(func.count()).where(o.status == "pending")).scalar_one()
        failing = conn.execute(select(func.count()).where(o.status == "pending", o.attempts > 0)).scalar_one()
        last_sent = conn.execute(select(func.max(o.sent_at)).where(o.channel.in_(pending.TELLING))).scalar()
        last_error = conn.execute(select(o.last_error).where(o.status == "pending", o.last_error.is_not(None))
                                  .order_by(o.id.desc()).limit(1)).scalar()
    unsent = undelivered_high(state, now)
    details = [f"ways of sending: {', '.join(channels) or 'none set up'}"
               + (f" (a copy of each alert is kept in {state.config.path(s.mailbox)})" if s.mailbox else ""),
               f"waiting to be sent: {waiting}" + (f" ({failing} after failed attempts)" if failing else ""),
               f"last sent: {_local(state, last_sent)}" if last_sent else "nothing sent yet"]
    if last_error:
        details.append(f"last error: {last_error[:200]}")
    missing = sorted({t for targets in s.routes.values() for t in targets} - set(s.recipients))
    if channels and "email" in channels and missing:
        details.append(f"no email addresses for: {', '.join(missing)} (alerts: recipients)")
    if not channels:
        return Check("Alert delivery", False, "No email or webhook is set up: high alerts reach no one unless they "
                     f"open this console ({unsent} waiting for someone now).", details)
    if unsent or failing:
        return Check("Alert delivery", False, f"Failing: {unsent} high alert(s) have reached no one.", details)
    return Check("Alert delivery", True, "Working.", details)


def directory_check(state: State, proxy_answers: list[dict[str, float]]) -> Check:
    d = state.accounts.directory
    if d is None:
        return Check("School directory (AD)", None, "Not used: people sign in with the local users file.")
    seen_by_proxy = [a["schoolproxy_directory_up"] for a in proxy_answers if "schoolproxy_directory_up" in a]
    if d.settings.bind == "search":
        d.attributes("schoolproxy-health-check", ["cn"])   # binds with the service account and searches
        ok = d.up
    else:
        ok = all(seen_by_proxy) if seen_by_proxy else None
    details = [f"servers: {', '.join(d.settings.urls)}"]
    if seen_by_proxy:
        details.append("the proxy " + ("reaches it" if all(seen_by_proxy) else "cannot reach it"))
    if ok is None:
        return Check("School directory (AD)", None, "Checked when someone signs in.", details)
    if not ok:
        details.append(f"error: {d.last_error[:200]}")
        return Check("School directory (AD)", False, "Not answering: new sign-ins get the default (pupil) filtering, "
                     "and staff cannot sign in here with their school account.", details)
    return Check("School directory (AD)", True, "Answering.", details)


def lists_check(state: State, now: dt.datetime) -> Check:
    newest, files = 0.0, 0
    for source in state.config.lists.sources:
        root = state.config.path(source)
        for dirpath, _, names in os.walk(root):
            for n in names:
                if n in ("domains", "urls"):
                    files += 1
                    try:
                        newest = max(newest, os.stat(os.path.join(dirpath, n)).st_mtime)
                    except OSError:
                        pass
    if not files:
        return Check("Filter lists", False, "No list files found (lists.sources).")
    changed = dt.datetime.fromtimestamp(newest, UTC)
    age = now - changed
    text = f"Last changed {changed:%d/%m/%Y} ({age.days} day{'s' if age.days != 1 else ''} ago)."
    if age > LIST_WARN:
        return Check("Filter lists", False, text + " Consider importing fresh lists (schoolproxy lists import).",
                     [f"{files} list files"])
    return Check("Filter lists", True, text, [f"{files} list files"])


def certificate_check(state: State, now: dt.datetime, console_cert: Path | None) -> Check:
    ca = certs.expiry(state.config.path(state.config.proxy.ca_dir) / certs.CA_CERT_FILE)
    mine = certs.expiry(console_cert) if console_cert is not None else None
    details, ok = [], True
    for label, when in (("school's proxy CA", ca), ("this console's certificate", mine)):
        if when is None:
            details.append(f"{label}: not found")
            ok = False
            continue
        left = when - now
        details.append(f"{label}: expires {when:%d/%m/%Y} ({left.days} days)")
        if left < CERT_WARN:
            ok = False
    summary = "In date." if ok else "Needs attention: a certificate is missing or expires within 30 days."
    return Check("Certificates", ok, summary, details)


def checks(state: State, console_cert: Path | None = None, now: dt.datetime | None = None) -> list[Check]:
    now = now or dt.datetime.now(UTC)
    proxy, answers = proxy_check(state)
    return [proxy, search_alerts_check(state, answers, now), delivery_check(state, now), records_check(state, now),
            directory_check(state, answers),
            lists_check(state, now), certificate_check(state, now, console_cert)]


def _local(state: State, t: dt.datetime) -> str:
    return f"{aware(t).astimezone(ZoneInfo(state.config.timezone)):%d/%m/%Y %H:%M}"


def _size(directory: Path) -> int:
    total = 0
    try:
        for p in directory.iterdir():
            if p.is_file():
                total += p.stat().st_size
    except OSError:
        return 0
    return total
