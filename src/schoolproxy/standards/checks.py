"""``schoolproxy checks run``: is the filter working, right now, as a pupil meets it?

What a run tests, in order (each a :class:`CheckResult`, stored in the checks log):

- the config's own policy tests (``tests:``), one result each;
- the locked tier: each locked category's test name is blocked for every profile;
- through the running proxy, signed in as ``checks.user``: a page that profile blocks gets the block
  page, whose reference then appears in the records database; SafeSearch is enforced on a search; a help
  site is reachable; an ordinary page comes back through the upstream filter;
- the upstream filter itself, asked directly for its test page (``checks.upstream_test_url``): its own
  block page must come back;
- alert delivery: a channel is configured and nothing waits in the outbox longer than it should.

A failed run raises a high alert to the network manager and the DSL, through the alert tables and the
outbox (so the running proxy retries it), and is also sent at once from here — the proxy may be what
is broken.
"""

from __future__ import annotations

import datetime as dt
import http.client
import logging
import re
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import Engine, and_, func, insert, select, update

from schoolproxy.config import Config
from schoolproxy.filtering import safesearch
from schoolproxy.filtering.hostnames import InvalidHost, normalise_host
from schoolproxy.identity.directory import read_secret
from schoolproxy.monitoring import pending, store
from schoolproxy.monitoring.delivery import DeliveryError, send_email, send_webhook
from schoolproxy.records.checks import CheckResult
from schoolproxy.records.schema import alert_outbox, alerts, requests
from schoolproxy.snapshot import Snapshot
from schoolproxy.verdict import new_reference

log = logging.getLogger(__name__)
UTC = dt.timezone.utc
USER_AGENT = "schoolproxy-checks"
#: The response header the proxy adds where it enforced SafeSearch.
SAFESEARCH_HEADER = "x-schoolproxy-safesearch"
REFERENCE_HEADER = "x-schoolproxy-reference"
MAX_BODY = 256 * 1024
RECORD_WAIT = 15.0
ALERT_THEME = "filter-check"
#: Who a failed check is reported to: the network manager fixes it, the DSL must know pupils may be unprotected.
ALERT_ROLES = ("network_manager", "dsl")
#: A failed run within this long of an open alert for the same failures is counted on that alert.
ALERT_THROTTLE = dt.timedelta(hours=24)


def locked_test_name(category: str) -> str:
    """The harmless name each shipped locked list holds for testing (``filterlists/<category>``)."""
    return f"locked-test.{category}.invalid"


# -- what the config says ---------------------------------------------------------------------------
def policy_tests(snap: Snapshot) -> list[CheckResult]:
    results = []
    for r in snap.run_tests():
        results.append(CheckResult(
            f"policy-test[{r.index}]", f"{r.who}: {r.url} should be {'blocked' if r.expect == 'block' else 'allowed'}",
            "pass" if r.passed else "fail", f"{r.decision.action} ({r.decision.rule})"))
    if not results:
        results.append(CheckResult("policy-tests", "the config's policy tests (tests:)", "fail",
                                   "the config declares no policy tests"))
    return results


def locked_checks(snap: Snapshot) -> list[CheckResult]:
    policy = snap.policy
    out = []
    for name, info in sorted(snap.lists.info.items()):
        if not info.locked or name not in snap.lists.bits:
            continue
        host = locked_test_name(name)
        what = f"locked category {name}: its test name {host} is blocked for every profile"
        if not policy.lists.classify(host, "/") & snap.lists.bits[name]:
            out.append(CheckResult(f"locked:{name}", what, "skip", f"{host} is not in the {name} list"))
            continue
        wrong = [p for p in policy.profiles if policy.decide(p, host, "/").rule != f"locked:{name}"]
        out.append(CheckResult(f"locked:{name}", what, "fail" if wrong else "pass",
                               f"not blocked as locked for: {', '.join(wrong)}" if wrong
                               else f"blocked for {', '.join(policy.profiles)}"))
    return out


# -- the running proxy ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Answer:
    status: int | None
    headers: dict[str, str]
    body: str
    error: str | None = None

    @property
    def block_page(self) -> bool:
        """The school's own block page (not the upstream filter's)."""
        return self.status == 403 and REFERENCE_HEADER in self.headers

    def said(self) -> str:
        if self.error:
            return self.error
        if self.status == 502:
            return "status 502: the proxy could not reach the upstream filter or the site"
        return f"status {self.status}" + (" (the school's block page)" if self.block_page else "")


def fetch(proxy: tuple[str, int], url: str, auth: str | None, context: ssl.SSLContext, timeout: float) -> Answer:
    """GET ``url`` through an HTTP proxy, as a browser configured with it would (CONNECT for HTTPS).
    Sends Accept: */*, not a page navigation."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    headers = {"User-Agent": USER_AGENT, "Accept": "*/*"}
    proxy_headers = {"Proxy-Authorization": auth} if auth else {}
    conn: http.client.HTTPConnection
    try:
        if https:
            conn = http.client.HTTPSConnection(proxy[0], proxy[1], timeout=timeout, context=context)
            conn.set_tunnel(host, port, headers=proxy_headers)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        else:
            conn = http.client.HTTPConnection(proxy[0], proxy[1], timeout=timeout)
            target = url
            headers.update(proxy_headers)
        conn.request("GET", target, headers=headers)
        resp = conn.getresponse()
        body = resp.read(MAX_BODY).decode("utf-8", "replace")
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
    except ConnectionRefusedError:
        return Answer(None, {}, "", f"nothing is listening at {proxy[0]}:{proxy[1]} (connection refused)")
    except (OSError, http.client.HTTPException) as e:
        text = str(e) or type(e).__name__
        refused = re.search(r"Tunnel connection failed: (\d{3})", text)
        if refused:  # the proxy answered the CONNECT itself (407 sign-in, 403 blocked, 502 upstream down)
            return Answer(int(refused.group(1)), {}, "", f"the proxy refused the connection: {text[:200]}")
        return Answer(None, {}, "", f"{type(e).__name__}: {text[:200]}")
    finally:
        try:
            conn.close()
        except Exception:
            pass


def proxy_address(config: Config) -> tuple[str, int]:
    if config.checks.proxy:
        u = urlsplit(config.checks.proxy)
        return u.hostname or "127.0.0.1", u.port or 8080
    host = config.proxy.listen_host
    return ("127.0.0.1" if host in ("0.0.0.0", "::", "") else host), config.proxy.listen_port


def _auth(config: Config) -> str | None:
    import base64
    c = config.checks
    if c.user is None or c.password_file is None:
        return None
    password = read_secret(config.path(c.password_file))
    return "Basic " + base64.b64encode(f"{c.user}:{password}".encode()).decode()


def _tls_context(config: Config) -> ssl.SSLContext:
    """The system's CAs plus the proxy's own: intercepted pages are signed by it."""
    context = ssl.create_default_context()
    ca = config.path(config.proxy.ca_dir) / "mitmproxy-ca-cert.pem"
    if ca.is_file():
        context.load_verify_locations(cafile=str(ca))
    return context


def live_checks(snap: Snapshot, db: Engine | None) -> list[CheckResult]:
    config = snap.config
    c = config.checks
    proxy = proxy_address(config)
    where = f"through the proxy at {proxy[0]}:{proxy[1]}"
    try:
        auth = _auth(config)
    except Exception as e:
        return [CheckResult("proxy", f"sign in to the proxy as {c.user}", "fail",
                            f"cannot read checks.password_file: {e}")]
    if c.user:
        profile, why = snap.resolver.resolve(c.user)
        who = f"as {c.user} (profile {profile})"
    else:
        profile, who = config.identity.default_profile, "without signing in"
    context = _tls_context(config)

    def get(url: str) -> Answer:
        return fetch(proxy, url, auth, context, c.timeout_seconds)

    out: list[CheckResult] = []
    # A page the profile blocks: the block page, then its record.
    what = f"{c.blocked_url} {who} {where} gets the block page"
    expected = snap.policy.decide_url(profile, c.blocked_url)
    a = get(c.blocked_url)
    if expected.action != "block":
        out.append(CheckResult("proxy-blocks", what, "fail", f"checks.blocked_url is allowed for profile {profile} "
                               f"by the config ({expected.rule}): choose a page that profile blocks"))
    elif a.status == 407:
        out.append(CheckResult("proxy-blocks", what, "fail", "the proxy asked for a sign-in (407): set checks.user "
                               "and checks.password_file to a logon kept for the checks"))
    else:
        ok = a.block_page
        out.append(CheckResult("proxy-blocks", what, "pass" if ok else "fail",
                               f"block page, reference {a.headers[REFERENCE_HEADER]}" if ok else f"got {a.said()}"))
    out.append(_record_check(config, db, a.headers.get(REFERENCE_HEADER) if a.block_page else None))

    # SafeSearch on a search.
    what = f"SafeSearch is enforced on {c.safesearch_url} {who}"
    settings = snap.policy.profiles[profile].settings.safesearch if profile in snap.policy.profiles else None
    engine = _engine(c.safesearch_url)
    if engine is None:
        out.append(CheckResult("safesearch", what, "fail", "checks.safesearch_url is not a search engine the "
                               "proxy knows (Google, Bing, DuckDuckGo, YouTube)"))
    elif settings is None or not settings.search_engines:
        out.append(CheckResult("safesearch", what, "fail", f"SafeSearch is off for profile {profile} "
                               f"(profiles.{profile}.safesearch.search_engines)"))
    else:
        a = get(c.safesearch_url)
        ok = a.headers.get(SAFESEARCH_HEADER) == "enforced"
        out.append(CheckResult("safesearch", what, "pass" if ok else "fail",
                               f"enforced ({a.said()})" if ok else f"not enforced: got {a.said()}"))

    # A help site.
    a = get(c.help_url)
    ok = a.status is not None and a.status < 400
    out.append(CheckResult("help-site", f"the help site {c.help_url} is reachable {who}", "pass" if ok else "fail",
                           a.said()))

    # An ordinary page, through the upstream filter.
    a = get(c.allowed_url)
    ok = a.status is not None and a.status < 400
    detail = a.said()
    if a.status in (403, 451) and any(m in a.body for m in config.proxy.upstream_block_markers):
        detail += ": blocked by the upstream filter"
    out.append(CheckResult("upstream", f"{c.allowed_url} comes back {who} {where}, through "
                           f"{config.proxy.upstream or 'no upstream filter'}", "pass" if ok else "fail", detail))
    out.append(_upstream_filtering(config, context))
    return out


def _engine(url: str) -> str | None:
    try:
        host, _ = normalise_host(urlsplit(url).hostname or "")
    except InvalidHost:
        return None
    return safesearch.search_engine(host)


def _record_check(config: Config, db: Engine | None, ref: str | None) -> CheckResult:
    what = "the blocked request is in the records database (every request is recorded)"
    if not config.records.enabled:
        return CheckResult("records", what, "fail", "records are off (records.enabled: false)")
    if ref is None:
        return CheckResult("records", what, "skip", "no block page came back to look for")
    if db is None:
        return CheckResult("records", what, "fail", "the records database cannot be opened")
    deadline = time.monotonic() + RECORD_WAIT
    while True:
        try:
            with db.connect() as conn:
                found = conn.execute(select(requests.c.id).where(requests.c.ref == ref)).first()
        except Exception as e:
            return CheckResult("records", what, "fail", f"cannot read the records database: {str(e)[:200]}")
        if found is not None:
            return CheckResult("records", what, "pass", f"record {ref} written")
        if time.monotonic() >= deadline:
            return CheckResult("records", what, "fail", f"record {ref} not written within {RECORD_WAIT:.0f} s")
        time.sleep(0.25)


def _upstream_filtering(config: Config, context: ssl.SSLContext) -> CheckResult:
    c = config.checks
    upstream = config.proxy.upstream
    what = "the upstream filter blocks its test page"
    if not upstream:
        return CheckResult("upstream-filtering", what, "fail", "no upstream filter is configured (proxy.upstream): "
                           "traffic is not going through the school's certified filter")
    if not c.upstream_test_url:
        return CheckResult("upstream-filtering", what, "skip", "no test page configured (checks.upstream_test_url)")
    u = urlsplit(upstream)
    a = fetch((u.hostname or "", u.port or (443 if u.scheme == "https" else 80)), c.upstream_test_url, None,
              _unverified() if c.upstream_test_url.startswith("https") else context, c.timeout_seconds)
    what = f"the upstream filter {upstream} blocks {c.upstream_test_url}"
    ok = a.status is not None and any(m in a.body for m in config.proxy.upstream_block_markers)
    return CheckResult("upstream-filtering", what, "pass" if ok else "fail",
                       f"its block page ({a.said()})" if ok else f"no block page from it: {a.said()}")


def _unverified() -> ssl.SSLContext:
    # Only the upstream filter's block page is looked for, and nothing secret is sent: the filter may
    # present its own certificate for the test page.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# -- alert delivery ---------------------------------------------------------------------------------
def delivery_check(config: Config, db: Engine | None) -> CheckResult:
    s = config.alerts
    what = "high alerts reach people at once (a delivery channel is set, and nothing is stuck in the outbox)"
    if not s.enabled:
        return CheckResult("alert-delivery", what, "fail", "alerts are off (alerts.enabled: false)")
    if s.smtp is None and s.webhook is None:
        return CheckResult("alert-delivery", what, "fail", "no alerts.smtp or alerts.webhook: alerts are kept in "
                           "the incident log only and reach nobody at once")
    if db is None:
        return CheckResult("alert-delivery", what, "fail", "the records database cannot be opened")
    stuck_before = dt.datetime.now(UTC) - dt.timedelta(minutes=config.checks.outbox_stuck_minutes)
    with db.connect() as conn:
        pending = conn.execute(select(func.count(), func.min(alert_outbox.c.created_at)).where(
            alert_outbox.c.status == "pending")).one()
        stuck = conn.execute(select(alert_outbox.c.recipient, alert_outbox.c.last_error, alert_outbox.c.attempts)
                             .where(alert_outbox.c.status == "pending", alert_outbox.c.created_at < stuck_before)
                             .order_by(alert_outbox.c.id.desc()).limit(1)).first()
        stuck_count = conn.execute(select(func.count()).where(
            alert_outbox.c.status == "pending", alert_outbox.c.created_at < stuck_before)).scalar_one()
    channels = ", ".join(n for n, on in (("email", s.smtp), ("webhook", s.webhook)) if on is not None)
    if stuck is not None:
        return CheckResult("alert-delivery", what, "fail", (
            f"{stuck_count} alert message(s) undelivered for more than {config.checks.outbox_stuck_minutes} "
            f"minutes; latest to {stuck.recipient} after {stuck.attempts} attempt(s)"
            + (f", last error: {stuck.last_error}" if stuck.last_error else "")))
    return CheckResult("alert-delivery", what, "pass", f"by {channels}; {pending[0]} waiting, none stuck")


# -- a run ------------------------------------------------------------------------------------------
def run_checks(snap: Snapshot, db: Engine | None) -> list[CheckResult]:
    return policy_tests(snap) + locked_checks(snap) + live_checks(snap, db) + [delivery_check(snap.config, db)]


def alert_addresses(config: Config) -> list[str]:
    """Where a failed check is sent: the addresses of the network manager's and the DSL's roles, and
    the email of each person holding them."""
    out: list[str] = []
    for role in ALERT_ROLES:
        out += config.alerts.recipients.get(role, [])
        out += [p.email for p in config.people.values() if role in p.roles and p.email]
    return list(dict.fromkeys(out))


def raise_failure_alert(db: Engine, config: Config, run_id: int, run_by: str,
                        results: list[CheckResult]) -> tuple[str, bool]:
    """A high alert about a failed run, to the network manager and the DSL. Returns (alert reference,
    whether it is new): a run failing the same way within a day of an open alert is counted on it."""
    failed = [r for r in results if r.failed]
    names = ", ".join(r.name for r in failed)
    evidence = (f"checks run {run_id} by {run_by}: {len(failed)} of {sum(r.outcome != 'skip' for r in results)} "
                f"checks failed — " + "; ".join(f"{r.name}: {r.detail}" for r in failed))[:4000]
    now = dt.datetime.now(UTC)
    with db.begin() as conn:
        recent = conn.execute(select(alerts.c.id, alerts.c.ref).where(
            alerts.c.theme == ALERT_THEME, alerts.c.status != "closed", alerts.c.time >= now - ALERT_THROTTLE,
            alerts.c.rule == f"checks:{names}"[:64]).order_by(alerts.c.id.desc()).limit(1)).first()
        if recent is not None:
            conn.execute(update(alerts).where(alerts.c.id == recent.id).values(repeats=alerts.c.repeats + 1))
            return recent.ref, False
        ref = new_reference()
        alert_id = conn.execute(insert(alerts).values(
            ref=ref, time=now, theme=ALERT_THEME, severity="high", username=None, person=None, profile=None,
            device=None, evidence=evidence, route=",".join(ALERT_ROLES), status="new", updated_at=now,
            rule=f"checks:{names}"[:64], repeats=0).returning(alerts.c.id)).scalar_one()
        subject = f"[HIGH] The web filter failed its checks — {config.school}"[:250]
        body = _failure_text(config, run_id, run_by, failed, ref)
        # Sent from here first (the proxy may be what is broken); the proxy's delivery thread retries what
        # is still pending after that, so the rows start a little in the future.
        later = now + dt.timedelta(minutes=2)
        rows = pending.outbox_rows(config, alert_id, "alert", alert_addresses(config), subject, body, later)
        if rows:
            conn.execute(insert(alert_outbox), rows)
    _send_now(db, config, alert_id, ref)
    return ref, True


def _failure_text(config: Config, run_id: int, run_by: str, failed: list[CheckResult], ref: str) -> str:
    lines = [f"{config.school}'s web filter failed {len(failed)} of its checks (run {run_id}, by {run_by}).",
             "Until this is fixed, pupils may not be protected as the school's policy says.", ""]
    for r in failed:
        lines += [f"FAILED  {r.what}", f"        {r.detail}", ""]
    lines += ["What to do: the network manager checks the proxy and the upstream filter, then runs",
              "  schoolproxy checks run --by NAME",
              "and records what was done in the incident log:",
              f"  schoolproxy alerts close {ref} --note \"...\" --by NAME", "",
              f"Reference: alert {ref}. This message contains no browsing content."]
    return "\n".join(lines) + "\n"


def _send_now(db: Engine, config: Config, alert_id: int, ref: str) -> None:
    with db.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(alert_outbox).where(
            and_(alert_outbox.c.alert_id == alert_id, alert_outbox.c.status == "pending"))).mappings()]
    for row in rows:
        try:
            if row["channel"] == "email" and config.alerts.smtp is not None:
                send_email(config.alerts.smtp, config.base_dir, row["recipient"], row["subject"], row["body"],
                           f"{ref}-{row['id']}")
            elif row["channel"] == "webhook" and config.alerts.webhook is not None:
                send_webhook(config.alerts.webhook, config.base_dir,
                             {"alert": ref, "kind": "alert", "subject": row["subject"], "text": row["body"]})
            else:
                continue
        except DeliveryError as e:
            store.mark_failed(db, row["id"], 1, str(e), 30.0)
            log.error("checks: alert %s to %s not sent yet (the proxy will retry): %s", ref, row["recipient"], e)
            continue
        store.mark_sent(db, row["id"])
