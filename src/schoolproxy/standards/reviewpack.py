"""The annual filtering and monitoring review pack: one self-contained HTML document, printable to PDF
from the browser, made from the live config and the records.

What governors may see and nothing more: roles by display name, profiles and rules in plain English,
every exception with who, why and until when, the decision log, checks, policy tests, and counts —
alerts by theme and outcome, blocks by category, unblock requests by outcome. No pupil's name, logon or
browsing, no search term, no alert evidence, no pupil's words.

:func:`gather` collects the facts (a plain dict); :func:`standards` judges the DfE and UKSIC items from
them; :func:`render` lays them out.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2
import markupsafe
from sqlalchemy import Engine, func, select

from schoolproxy.config import STAFF_ROLES, Config
from schoolproxy.monitoring import message
from schoolproxy.monitoring.phrases import PhraseError, load_phrase_lists
from schoolproxy.records import checks as checks_log
from schoolproxy.records import notice as notice_log
from schoolproxy.records import unblock as unblock_log
from schoolproxy.records.decisions import list_decisions
from schoolproxy.records.schema import access_audit, alert_notes, alerts, requests
from schoolproxy.snapshot import Snapshot
from schoolproxy.standards import notice

UTC = dt.timezone.utc

#: The UK Safer Internet Centre's content categories (and its illegal-content requirement).
UKSIC = {
    "illegal": "Illegal content (IWF child abuse images, police-assessed terrorist content)",
    "discrimination": "Discrimination", "drugs": "Drugs / substance abuse", "extremism": "Extremism",
    "gambling": "Gambling", "hate-speech": "Hate speech",
    "malware-hacking": "Malware / hacking (including filter-bypass tools)", "misinformation": "Mis / disinformation",
    "pornography": "Pornography", "piracy": "Piracy and copyright theft", "self-harm": "Self-harm and suicide",
    "violence": "Violence",
}
ROLE_LABELS = {
    "dsl": "Designated safeguarding lead (and deputies)", "computing_lead": "Computing lead / online-safety coordinator",
    "head": "Head teacher", "chair_of_governors": "Chair of governors", "slt": "Senior leadership team",
    "network_manager": "Network manager", "governor": "Governor", "office": "School office (supply register)",
    "teacher": "Teacher (may allow a site for their class for a lesson)",
}
ALERT_OUTCOMES = ("new", "acknowledged", "actioned", "closed")
LANGUAGES = {"en": "English", "pl": "Polish", "ro": "Romanian", "ur": "Urdu", "pa": "Punjabi", "bn": "Bengali",
             "ar": "Arabic", "pt": "Portuguese", "es": "Spanish", "so": "Somali", "gu": "Gujarati", "lt": "Lithuanian",
             "ta": "Tamil", "fr": "French", "de": "German"}
DAYS = {"mon": "Mon", "tue": "Tue", "wed": "Wed", "thu": "Thu", "fri": "Fri", "sat": "Sat", "sun": "Sun"}

_env = jinja2.Environment(loader=jinja2.PackageLoader("schoolproxy.standards", "templates"), autoescape=True,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _css_string(text: str) -> markupsafe.Markup:
    """Text for a CSS string in the style sheet (the printed page footer): everything but letters,
    digits and spaces as a CSS escape, so no quote, backslash or tag can end the string or the sheet."""
    return markupsafe.Markup("".join(c if c.isalnum() and c.isascii() or c == " " else f"\\{ord(c):x} "
                                     for c in text))


_env.filters["css_string"] = _css_string


def aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def plural(n: int, one: str, many: str | None = None) -> str:
    """'1 entry', '3 entries', '1,200 requests'."""
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def waited(hours: float | None) -> str:
    if hours is None:
        return ""
    if hours < 1:
        return "within the hour"
    if hours < 48:
        return f"within {hours:.0f} hours"
    return f"within {hours / 24:.0f} days"


# -- the facts ------------------------------------------------------------------------------------------
def gather(snap: Snapshot, db: Engine, since: dt.datetime, until: dt.datetime, prepared_by: str,
           now: dt.datetime | None = None) -> dict:
    config = snap.config
    tz = ZoneInfo(config.timezone)
    now = now or dt.datetime.now(UTC)
    pack = {
        "school": config.school, "tz": tz, "since": since, "until": until, "generated": now,
        "prepared_by": prepared_by, "config_source": config.source,
        "upstream": config.proxy.upstream,
        "roles": _roles(config),
        "profiles": [_profile(snap, name) for name in config.profiles],
        "categories": _categories(snap),
        "overrides": _config_overrides(config),
        "expiring": _expiring(db, since, now),
        "decisions": [d for d in list_decisions(db, since) if aware(d["time"]) < until],
        "tests": [{"who": _test_subject(snap, r.index), "url": r.url, "expect": r.expect,
                   "got": r.decision.action, "rule": r.decision.rule, "passed": r.passed} for r in snap.run_tests()],
        "checks": _checks(db, since, until, tz),
        "alerts": _alerts(db, since, until),
        "blocks": _blocks(db, since, until),
        "unblock": _unblock(db, since, until),
        "notice": _notice(config, db, now),
        "phrases": _phrases(config),
        "audit_views": _count(db, access_audit, access_audit.c.time, since, until),
        "retention": (config.records.retention_days, config.records.alert_retention_days),
    }
    pack["uksic"] = _uksic(pack["categories"], config.proxy.upstream)
    pack["standards"] = standards(pack, config)
    return pack


def _test_subject(snap: Snapshot, index: int) -> str:
    """Who a policy test is about, without the logon it names (it may be a pupil's)."""
    t = snap.config.tests[index]
    profile = snap.resolver.resolve(t.user)[0] if t.user else t.profile
    role = snap.config.profiles[profile].role if profile in snap.config.profiles else "user"
    return f"a {role} (profile {profile})" if t.user else f"profile {profile}"


def _roles(config: Config) -> list[dict]:
    out = []
    for role in STAFF_ROLES:
        names = sorted(p.name for p in config.people.values() if role in p.roles)
        groups = config.role_groups.get(role, [])
        if names or groups:
            out.append({"role": ROLE_LABELS.get(role, role), "names": names, "groups": groups})
    return out


def _who_gets(config: Config, name: str) -> list[str]:
    ident = config.identity
    out = []
    groups = [g for g, s in ident.groups.items() if s.profile == name]
    if groups:
        out.append(f"members of the group{'s' if len(groups) > 1 else ''} {', '.join(groups)}")
    users = sum(1 for p in ident.users.values() if p == name)
    if users:
        out.append(f"{users} logon{'s' if users > 1 else ''} named in the config")
    out += [f"shared logons matching {p.match}" for p in ident.patterns if p.profile == name]
    out += [f"devices in {s.name or s.cidr} ({s.cidr}) without a sign-in" for s in ident.subnets if s.profile == name]
    if ident.default_profile == name:
        out.append("anyone not identified (the fail-closed default)")
    return out or ["nobody at present"]


def _profile(snap: Snapshot, name: str) -> dict:
    p = snap.config.profiles[name]
    locked = sorted(c for c, i in snap.lists.info.items() if i.locked)
    windows = [f"{_days(w.days)} {w.start:%H:%M}–{w.end:%H:%M} ({w.name}): "
               + "; ".join(x for x in (f"allowed: {', '.join(w.allow_categories)}" if w.allow_categories else "",
                                        f"blocked: {', '.join(w.block_categories)}" if w.block_categories else "") if x)
               for w in p.windows]
    ss = p.safesearch
    tls = p.tls
    https = ("decrypted and filtered page by page" if tls.intercept else "not decrypted: filtered by site name only")
    if tls.intercept and (tls.passthrough_categories or tls.passthrough_sites):
        https += "; never decrypted: " + ", ".join(tls.passthrough_categories + tls.passthrough_sites)
    return {
        "name": name, "role": p.role, "description": p.description,
        "who": _who_gets(snap.config, name),
        "default": ("everything not listed is allowed" if p.default == "allow"
                    else "only what is listed is allowed (everything else is blocked)"),
        "blocked": p.block_categories, "allowed": p.allow_categories, "locked": locked, "windows": windows,
        "safesearch": "on, enforced by the filter" if ss.search_engines else "off",
        "youtube": {"strict": "Restricted Mode (strict)", "moderate": "Restricted Mode (moderate)",
                    "off": "not restricted"}[ss.youtube],
        "https": https,
        "ports": ("any port" if not p.connect_ports else "secure web (port 443) only: other tunnels, a common way "
                  "round a filter, are refused" if p.connect_ports == [443] else ", ".join(map(str, p.connect_ports))),
    }


def _days(days: list[str]) -> str:
    if days == ["mon", "tue", "wed", "thu", "fri"]:
        return "Mon–Fri"
    return ", ".join(DAYS[d] for d in days)


def _categories(snap: Snapshot) -> list[dict]:
    config, lists = snap.config, snap.lists
    out = []
    for name in lists.categories:
        info = lists.info.get(name)
        if info is None:
            continue
        entries = lists.stats.domains.get(name, 0) + lists.stats.urls.get(name, 0)
        blocked = [p for p, s in config.profiles.items() if name in s.block_categories]
        allowed = [p for p, s in config.profiles.items() if name in s.allow_categories]
        out.append({"name": name, "description": info.description, "uksic": info.uksic,
                    "uksic_label": UKSIC.get(info.uksic or "", "—"), "theme": message.label(info.theme) if info.theme else "—",
                    "severity": info.severity, "locked": info.locked, "entries": entries,
                    "blocked_for": list(config.profiles) if info.locked else blocked, "allowed_for": allowed})
    return out


def _uksic(categories: list[dict], upstream: str | None) -> list[dict]:
    out = []
    for key, label in UKSIC.items():
        local = [c["name"] for c in categories if c["uksic"] == key]
        entries = sum(c["entries"] for c in categories if c["uksic"] == key)
        if local:
            how = f"local list{'s' if len(local) > 1 else ''} {', '.join(local)} ({plural(entries, 'entry', 'entries')})"
            how += " and the upstream filter" if upstream else ""
        else:
            how = "the upstream filter only (no local list)" if upstream else "NOT FILTERED: no local list and no upstream filter"
        out.append({"key": key, "label": label, "local": local, "how": how, "covered": bool(local or upstream)})
    return out


def _config_overrides(config: Config) -> list[dict]:
    return [{"site": o.site, "action": o.action, "for": ", ".join(o.profiles).replace("*", "every profile"),
             "rationale": o.rationale, "author": o.author, "date": o.date, "until": "until the config is changed"}
            for o in config.overrides]


def _expiring(db: Engine, since: dt.datetime, now: dt.datetime) -> list[dict]:
    out = []
    for o in unblock_log.list_overrides(db, since):
        expires = aware(o["expires_at"])
        state = ("ended early by " + o["revoked_by"]) if o["revoked_at"] else ("in force" if expires > now else "expired")
        scope = {"profile": f"profile {o['scope_value']}", "group": f"class {o['scope_value']}",
                 "user": "one pupil (the requester)"}[o["scope"]]
        out.append({"site": o["site"], "action": o["action"], "for": scope, "rationale": o["rationale"],
                    "author": o["author"], "created": aware(o["created_at"]), "expires": expires, "state": state,
                    "source": {"unblock": "unblock request", "class": "teacher's class allow"}.get(o["source"], o["source"])})
    return out


def _checks(db: Engine, since: dt.datetime, until: dt.datetime, tz) -> dict:
    runs = [r for r in checks_log.list_runs(db, since, limit=100_000) if aware(r["started_at"]) < until]
    results = checks_log.results_of(db, [r["id"] for r in runs])
    months: dict[str, dict] = {}
    for r in runs:
        start = aware(r["started_at"]).astimezone(tz)
        key = f"{start:%Y-%m}"
        m = months.setdefault(key, {"key": key, "month": f"{start:%B %Y}", "runs": 0, "passed": 0, "failed": 0})
        m["runs"] += 1
        m["passed" if r["passed"] else "failed"] += 1
    failed = [{**r, "failures": [x for x in results[r["id"]] if x["outcome"] == "fail"]} for r in runs if not r["passed"]]
    latest = {**runs[0], "results": results[runs[0]["id"]]} if runs else None
    return {"runs": len(runs), "passed": sum(r["passed"] for r in runs), "months": sorted(months.values(),
            key=lambda m: m["key"]), "failed": list(reversed(failed)), "latest": latest,
            "last": aware(runs[0]["started_at"]) if runs else None,
            "safesearch_passed": any(x["name"] == "safesearch" and x["outcome"] == "pass" for v in results.values() for x in v),
            "upstream_passed": any(x["name"] == "upstream" and x["outcome"] == "pass" for v in results.values() for x in v)}


def _alerts(db: Engine, since: dt.datetime, until: dt.datetime) -> dict:
    span = (alerts.c.time >= since, alerts.c.time < until)
    with db.connect() as conn:
        rows = conn.execute(select(alerts.c.theme, alerts.c.status, func.count()).where(*span)
                            .group_by(alerts.c.theme, alerts.c.status)).all()
        severities = dict(conn.execute(select(alerts.c.severity, func.count()).where(*span)
                                       .group_by(alerts.c.severity)).all())
        with_outcome = conn.execute(select(func.count(func.distinct(alert_notes.c.alert_id))).select_from(
            alert_notes.join(alerts, alerts.c.id == alert_notes.c.alert_id)).where(
            *span, alert_notes.c.action == "close")).scalar_one()
    themes: dict[str, dict] = {}
    for theme, status, n in rows:
        t = themes.setdefault(theme, {"theme": message.label(theme), **{s: 0 for s in ALERT_OUTCOMES}, "total": 0})
        t[status] = t.get(status, 0) + n
        t["total"] += n
    table = sorted(themes.values(), key=lambda t: -t["total"])
    totals = {s: sum(t[s] for t in table) for s in (*ALERT_OUTCOMES, "total")}
    return {"themes": table, "totals": totals, "severities": [(s, severities.get(s, 0)) for s in
                                                              ("critical", "high", "medium", "low")],
            "closed_with_outcome": with_outcome}


def _blocks(db: Engine, since: dt.datetime, until: dt.datetime) -> dict:
    span = (requests.c.time >= since, requests.c.time < until)
    with db.connect() as conn:
        total = conn.execute(select(func.count()).select_from(requests).where(*span)).scalar_one()
        named = conn.execute(select(func.count()).select_from(requests).where(
            *span, requests.c.username.is_not(None))).scalar_one()
        rows = conn.execute(select(requests.c.category, requests.c.profile, func.count()).where(
            *span, requests.c.action == "block").group_by(requests.c.category, requests.c.profile)).all()
    profiles = sorted({p for _, p, _ in rows})
    cats: dict[str, dict] = {}
    for category, profile, n in rows:
        c = cats.setdefault(category, {"category": category, "total": 0, **{p: 0 for p in profiles}})
        c[profile] += n
        c["total"] += n
    return {"total": total, "named": named, "blocked": sum(c["total"] for c in cats.values()), "profiles": profiles,
            "by_category": sorted(cats.values(), key=lambda c: -c["total"])}


def _unblock(db: Engine, since: dt.datetime, until: dt.datetime) -> dict:
    rows = [r for r in unblock_log.list_requests(db, since) if aware(r["time"]) < until]
    overrides = {o["id"]: o for o in unblock_log.list_overrides(db, since)}
    out = []
    waits = []
    for r in rows:
        decided = aware(r["decided_at"]) if r["decided_at"] else None
        if decided:
            waits.append((decided - aware(r["time"])).total_seconds() / 3600)
        o = overrides.get(r["override_id"])
        category = r["rule"].split("category:")[-1] if "category:" in r["rule"] else r["rule"]
        out.append({"time": aware(r["time"]), "host": r["host"], "category": category, "profile": r["profile"],
                    "status": r["status"], "decided_by": r["decided_by"] or "", "decided": decided,
                    "until": aware(o["expires_at"]) if o else None})
    by_status = Counter(r["status"] for r in out)
    by_category = Counter(r["category"] for r in out)
    approved_by_category = Counter(r["category"] for r in out if r["status"] == "approved")
    return {"requests": out, "by_status": {s: by_status.get(s, 0) for s in ("pending", "approved", "refused")},
            "by_category": [{"category": c, "asked": n, "approved": approved_by_category.get(c, 0)}
                            for c, n in by_category.most_common()],
            "median_hours": round(statistics.median(waits), 1) if waits else None,
            "waited": waited(statistics.median(waits)) if waits else "",
            "oldest_pending": min((r["time"] for r in out if r["status"] == "pending"), default=None)}


def _notice(config: Config, db: Engine, now: dt.datetime) -> dict:
    n = config.notice
    start = notice.renewal_start(config, now)
    return {"enabled": n.enabled, "title": n.title, "blocks": notice.paragraphs(n.text), "version": notice.version(n.text),
            "by_role": {role: notice.version(text) for role, text in n.by_role.items()},
            "renew": notice.renew_every(config), "since": start, "accepted": notice_log.counts_by_profile(db, start)}


def _phrases(config: Config) -> dict:
    root = config.path(config.alerts.phrases)
    try:
        lists = load_phrase_lists(root)
    except PhraseError as e:
        return {"loaded": False, "error": str(e), "themes": [], "languages": [], "size": 0}
    languages = sorted({LANGUAGES.get(f.stem, f.stem) for d in root.iterdir() if d.is_dir() for f in d.glob("*.txt")})
    return {"loaded": True, "error": "", "themes": [message.label(t.theme) for t in lists.themes], "languages": languages,
            "size": lists.size}


def _count(db: Engine, table, column, since: dt.datetime, until: dt.datetime) -> int:
    with db.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(column >= since, column < until)).scalar_one()


# -- the standards ----------------------------------------------------------------------------------------
def _item(standard: str, text: str, status: str, evidence: str, where: str) -> dict:
    return {"standard": standard, "text": text, "status": status, "evidence": evidence, "where": where}


def standards(pack: dict, config: Config) -> list[dict]:
    """Each DfE / UKSIC / UK GDPR item: met, partly or not met, with the evidence and where it is."""
    items = []
    profiles = {p["name"]: p for p in pack["profiles"]}
    roles = {p.role for p in config.profiles.values()}
    child = [n for n, p in config.profiles.items() if p.role in ("pupil", "guest")]
    checks = pack["checks"]
    tests_failed = [t for t in pack["tests"] if not t["passed"]]
    delivery = [c for c in ("email", "webhook") if getattr(config.alerts, "smtp" if c == "email" else "webhook")]

    up = pack["upstream"]
    items.append(_item("DfE filtering", "All internet access goes through the school's certified filtering provider",
                       "met" if up and checks["upstream_passed"] else ("partly" if up else "not met"),
                       (f"chained to {up}" + ("; the checks reached it" if checks["upstream_passed"]
                                              else "; no check in this period reached it")) if up
                       else "no upstream filter is configured (proxy.upstream)", "§8 Checks; config proxy.upstream"))
    items.append(_item("DfE filtering", "Filtering is not one blanket profile: pupils and staff are filtered differently",
                       "met" if {"pupil", "staff"} <= roles else "not met",
                       f"{len(config.profiles)} profiles: " + ", ".join(f"{n} ({p.role})" for n, p in config.profiles.items()),
                       "§3 Profiles"))
    expiring = pack["expiring"]
    items.append(_item("DfE filtering", "Every block and allow decision is documented: what, why, who, when",
                       "met", f"{plural(len(pack['overrides']), 'standing exception')} in the config and "
                       f"{len(expiring)} expiring in the period, each with its rationale, author and date (and expiry); "
                       f"{plural(len(pack['decisions']), 'entry', 'entries')} in the decision log", "§5 Overrides; §6 Decision log"))
    b = pack["blocks"]
    named = (b["named"] / b["total"] * 100) if b["total"] else 0
    items.append(_item("DfE filtering", "Each attempt is identified: device or address, the individual, date and time, "
                       "what was blocked and any search term",
                       "met" if config.records.enabled and b["total"] and named >= 90 else
                       ("partly" if config.records.enabled and b["total"] else "not met"),
                       f"{plural(b['total'], 'request')} recorded in the period, {named:.0f}% against a named user; each with "
                       f"time, address, device (if known), site, category and search term" if b["total"]
                       else "no requests recorded in the period", "schoolproxy report; §10"))
    bad_ss = [n for n in child if not config.profiles[n].safesearch.search_engines
              or config.profiles[n].safesearch.youtube == "off"]
    items.append(_item("DfE filtering", "Safe search is on and cannot be turned off; YouTube Restricted Mode for pupils",
                       "not met" if bad_ss else ("met" if checks["safesearch_passed"] else "partly"),
                       (f"off for {', '.join(bad_ss)}" if bad_ss else
                        "enforced by the filter for " + ", ".join(f"{n} ({profiles[n]['youtube']})" for n in child))
                       + ("" if bad_ss or checks["safesearch_passed"] else "; not yet confirmed by a check"),
                       "§3 Profiles; §8 Checks"))
    ph = pack["phrases"]
    items.append(_item("DfE monitoring", "Multilingual content, common misspellings and abbreviations are recognised",
                       "met" if ph["loaded"] and len(ph["languages"]) > 1 else ("partly" if ph["loaded"] else "not met"),
                       (f"{ph['size']:,} phrases in {len(ph['themes'])} themes, languages: {', '.join(ph['languages'])}; "
                        f"search terms are normalised for case, accents, leetspeak, spacing and misspellings")
                       if ph["loaded"] else f"phrase lists not loaded: {ph['error']}", "alerts.phrases"))
    circumvention = [c["name"] for c in pack["categories"] if c["name"] in ("vpn-proxy", "doh")]
    gaps = [n for n in child if any(c not in config.profiles[n].block_categories for c in circumvention)
            and config.profiles[n].default == "allow"]
    items.append(_item("DfE filtering", "VPNs, proxies and encrypted-DNS bypasses are blocked and reported",
                       "met" if circumvention and not gaps else ("partly" if circumvention else "not met"),
                       (f"{', '.join(circumvention)} blocked for {', '.join(n for n in child if n not in gaps)}"
                        + (f"; NOT for {', '.join(gaps)}" if gaps else "") + "; attempts raise circumvention alerts")
                       if circumvention else "no VPN/proxy or DNS-over-HTTPS list", "§4 Categories; §9 Alerts"))
    immediate = {"high", "critical"} <= set(config.alerts.immediate)
    items.append(_item("DfE monitoring", "High-risk incidents are reported at once; others in a weekly report",
                       "met" if config.alerts.enabled and immediate and delivery else
                       ("partly" if config.alerts.enabled else "not met"),
                       (f"high and critical alerts sent at once by {', '.join(delivery)}; the rest in the weekly digest "
                        f"({config.alerts.digest.day} {config.alerts.digest.at:%H:%M})") if delivery
                       else "alerts are kept in the incident log but no email or webhook is set", "alerts.smtp / webhook; §9"))
    a = pack["alerts"]
    items.append(_item("DfE monitoring", "A documented incident process records the action taken and the outcome",
                       "met" if config.alerts.procedure else "partly",
                       f"{plural(a['totals']['total'], 'alert')} in the period: {a['totals']['closed']} closed "
                       f"({a['closed_with_outcome']} with a recorded outcome), {a['totals']['new']} not yet looked at"
                       + (f"; procedure: {config.alerts.procedure}" if config.alerts.procedure
                          else "; no procedure named (alerts.procedure)"), "schoolproxy alerts; §9"))
    n = pack["notice"]
    accepted = sum(n["accepted"].values())
    items.append(_item("DfE monitoring", "Users are told they are monitored",
                       "met" if n["enabled"] else "partly",
                       (f"acceptable-use notice shown each {n['renew']}; {plural(accepted, 'user')} accepted it since "
                        f"{n['since'].astimezone(pack['tz']):%d %b %Y}; every block page says use is monitored")
                       if n["enabled"] else "only the block page says so (notice.enabled is off)", "§11 Notice"))
    locked = [c for c in pack["categories"] if c["locked"]]
    items.append(_item("UKSIC", "Illegal content (IWF list, police-assessed terrorist content) is blocked and cannot be "
                       "switched off", "met" if up else ("partly" if locked else "not met"),
                       (f"locked categories {', '.join(c['name'] for c in locked)} are blocked for every profile and no "
                        f"setting can allow them; " if locked else "") +
                       (f"the upstream filter {up} applies the IWF and CTIRU lists" if up else
                        "no upstream filter is configured to apply the IWF and CTIRU lists"), "§4 Categories"))
    uncovered = [u["label"] for u in pack["uksic"] if not u["covered"]]
    items.append(_item("UKSIC", "The UKSIC content categories are filtered", "not met" if uncovered else "met",
                       ("not filtered: " + ", ".join(uncovered)) if uncovered else
                       f"{sum(bool(u['local']) for u in pack['uksic'])} of {len(pack['uksic'])} with local lists too",
                       "§4 UKSIC categories"))
    items.append(_item("DfE review", "Filtering and monitoring are reviewed at least once a year", "met",
                       f"this review: {pack['since'].astimezone(pack['tz']):%d %b %Y} to "
                       f"{pack['until'].astimezone(pack['tz']):%d %b %Y}, prepared by {pack['prepared_by']}", "this document"))
    recent = checks["last"] is not None and checks["last"] >= pack["generated"] - dt.timedelta(days=31)
    items.append(_item("DfE review", "Checks that filtering works are made regularly and recorded (when, who, what, result)",
                       "met" if recent else ("partly" if checks["runs"] else "not met"),
                       (f"{plural(checks['runs'], 'run')}, {checks['passed']} passed; the last on "
                        f"{checks['last'].astimezone(pack['tz']):%d %b %Y}") if checks["runs"] else "no checks recorded",
                       "§8 Checks log"))
    items.append(_item("DfE review", "The policy's own tests pass", "not met" if tests_failed else
                       ("met" if pack["tests"] else "not met"),
                       (f"{len(tests_failed)} of {len(pack['tests'])} failed" if tests_failed else
                        f"{len(pack['tests'])} of {len(pack['tests'])} passed today") if pack["tests"]
                       else "the config has no policy tests", "§7 Policy tests"))
    u = pack["unblock"]
    asked = sum(u["by_status"].values())
    stale = u["oldest_pending"] is not None and u["oldest_pending"] < pack["generated"] - dt.timedelta(days=7)
    items.append(_item("DfE review", "Filtering does not unreasonably get in the way of teaching and learning "
                       "(over-blocking is reviewed)",
                       "partly" if stale or not config.unblock.enabled else "met",
                       (f"{plural(asked, 'unblock request')}: {u['by_status']['approved']} approved, "
                        f"{u['by_status']['refused']} refused, {u['by_status']['pending']} waiting"
                        + (f"; half decided {u['waited']}" if u["waited"] else "")
                        + ("; some have waited over a week" if stale else ""))
                       if config.unblock.enabled else "unblock requests are off (unblock.enabled)", "§10 Over-blocking"))
    items.append(_item("UK GDPR", "Records are kept for a defined period and purged automatically", "met",
                       f"browsing records {pack['retention'][0]} days; alerts and the incident log "
                       f"{pack['retention'][1]} days; purged daily", "records.retention_days"))
    holders = len(config.people)
    items.append(_item("UK GDPR", "Access is limited by role and every view of someone's browsing is audited",
                       "met" if holders else "partly",
                       f"{plural(holders, 'person', 'people')} named with roles (§2); "
                       f"{plural(pack['audit_views'], 'view')} recorded in the access audit in the period", "§2 Roles; the access audit"))
    return items


# -- the document ---------------------------------------------------------------------------------------
def render(pack: dict) -> str:
    tz = pack["tz"]

    def local(t, fmt: str = "%d %b %Y %H:%M") -> str:
        if t is None:
            return ""
        return aware(t).astimezone(tz).strftime(fmt) if isinstance(t, dt.datetime) else t.strftime(fmt)
    counts = Counter(i["status"] for i in pack["standards"])
    return _env.get_template("reviewpack.html").render(p=pack, local=local, counts=counts, plural=plural,
                                                       outcomes=ALERT_OUTCOMES)


def write(pack: dict, out: Path) -> None:
    out.write_text(render(pack), encoding="utf-8")
