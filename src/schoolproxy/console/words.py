"""The console's words: an alert in one plain-English line, why it fired, browsing as a short timeline,
UK dates. Pure functions over rows from the database; no HTML here (templates escape everything).

Search terms, hostnames and paths are typed by pupils and web pages: :func:`plain` keeps them to one
line of printable text (control characters, terminal escapes and bidi overrides become ``?``).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from schoolproxy.monitoring.message import label as theme_label
from schoolproxy.monitoring.searchterms import engine_of

UTC = dt.timezone.utc
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200b-\u200f\ufeff]")
ENGINES = {"google": "Google", "bing": "Bing", "duckduckgo": "DuckDuckGo", "yahoo": "Yahoo", "youtube": "YouTube",
           "wikipedia": "Wikipedia"}
SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}
_SHORT_THEME = {"upstream-block": "possibly illegal content", "repeated-blocks": "repeated blocked attempts",
                "circumvention": "getting round the filter"}
_VISIT = re.compile(r"^(visited|tried to visit) (\S+) \(category ([\w.-]+)\)")
GROUP_GAP = dt.timedelta(minutes=2)


def plain(value: object, limit: int = 200) -> str:
    """One line of printable text, at most ``limit`` characters (an ellipsis says it was cut)."""
    text = _CONTROL.sub("?", str(value if value is not None else ""))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)  # SQLite gives back naive UTC


# -- UK dates ---------------------------------------------------------------------------------------------
def uk_date(t: dt.datetime | dt.date, tz: ZoneInfo) -> str:
    if isinstance(t, dt.datetime):
        t = aware(t).astimezone(tz)
    return f"{t:%d/%m/%Y}"


def uk_time(t: dt.datetime, tz: ZoneInfo, seconds: bool = False) -> str:
    return f"{aware(t).astimezone(tz):%H:%M:%S}" if seconds else f"{aware(t).astimezone(tz):%H:%M}"


def uk_datetime(t: dt.datetime, tz: ZoneInfo) -> str:
    return f"{aware(t).astimezone(tz):%d/%m/%Y %H:%M}"


def day_heading(d: dt.date) -> str:
    return f"{d:%A} {d:%d/%m/%Y}"


def moment(t: dt.datetime, tz: ZoneInfo, today: dt.date | None) -> str:
    """'10:42' today, '10:42 yesterday', else '10:42 on 25/11/2026' (always, without ``today``: for text
    read later, such as an export)."""
    local = aware(t).astimezone(tz)
    if today is None:
        return f"{local:%H:%M} on {local:%d/%m/%Y}"
    if local.date() == today:
        return f"{local:%H:%M}"
    if local.date() == today - dt.timedelta(days=1):
        return f"{local:%H:%M} yesterday"
    return f"{local:%H:%M} on {local:%d/%m/%Y}"


def parse_uk_date(text: str) -> dt.date:
    """'02/12/2026', '2/12/26', '02-12-2026' or '2026-12-02'; ValueError with a plain message."""
    text = text.strip()
    m = re.fullmatch(r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{2}|\d{4})", text)
    try:
        if m:
            day, month, year = int(m[1]), int(m[2]), int(m[3])
            return dt.date(year + 2000 if year < 100 else year, month, day)
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return dt.date.fromisoformat(text)
    except ValueError:
        pass
    raise ValueError(f"'{plain(text, 20)}' is not a date: write it as dd/mm/yyyy, e.g. 02/12/2026")


# -- alerts -----------------------------------------------------------------------------------------------
def short_theme(theme: str) -> str:
    return _SHORT_THEME.get(theme, theme.replace("-", " ") if theme != "self-harm" else theme)


_CATEGORY_WORDS = {"helpsites": "help site", "vpn-proxy": "VPN or proxy", "doh": "encrypted DNS (DoH)",
                   "ip-address": "bare IP address", "adult": "adult content"}


def category_words(category: str | None) -> str:
    category = category or ""
    return _CATEGORY_WORDS.get(category, category.replace("-", " ").replace("_", " "))


def engine_name(host: str | None) -> str | None:
    e = engine_of((host or "").lower())
    return ENGINES.get(e, e.capitalize()) if e else None


def alert_host(alert: dict, record: dict | None) -> str | None:
    if record is not None and record.get("host"):
        return record["host"]
    m = _VISIT.match(alert.get("evidence") or "")
    if m:
        return m[2]
    m = re.search(r"blocked (\S+) \(record", alert.get("evidence") or "")
    return m[1] if m else None


def what_happened(alert: dict, record: dict | None) -> str:
    """'searched 'how to kill myself' on Google' — the verb phrase of the inbox line."""
    rule = alert.get("rule") or ""
    host = alert_host(alert, record)
    if rule == "search-phrases":
        where = engine_name(host) or plain(host or "a website", 60)
        if not alert.get("search_term"):
            return f"searched for words on the watch list on {where}"
        return f"searched '{plain(alert['search_term'], 120)}' on {where}"
    if rule.startswith("category:"):
        m = _VISIT.match(alert.get("evidence") or "")
        verb = m[1] if m else ("tried to visit" if (record or {}).get("action") == "block" else "visited")
        return f"{verb} {plain(host, 80)} ({category_words(rule.partition(':')[2])})"
    if rule == "upstream-block":
        return f"was stopped by the school's upstream filter at {plain(host or 'a website', 80)}"
    evidence = plain(alert.get("evidence"), 160)
    return evidence if evidence[:1].islower() else f"— {evidence}"


def alert_sentence(alert: dict, who: str, record: dict | None, tz: ZoneInfo, today: dt.date | None) -> str:
    """"Jamie Smith (Year 4) searched 'how to kill myself' on Google at 10:42, PC ICT-07"."""
    device = f", PC {plain(alert['device'], 40)}" if alert.get("device") else ""
    return f"{who} {what_happened(alert, record)} at {moment(alert['time'], tz, today)}{device}"


def alert_line(alert: dict, who: str, record: dict | None, tz: ZoneInfo, today: dt.date) -> str:
    """"Jamie Smith (Year 4) searched 'how to kill myself' on Google at 10:42, PC ICT-07 — self-harm, high"."""
    return f"{alert_sentence(alert, who, record, tz, today)} — {short_theme(alert['theme'])}, {alert['severity']}"


def why(alert: dict, threshold: int | None, throttle_minutes: int, sent_at_once: bool) -> list[str]:
    """Why it fired, in plain sentences (never the phrases matched: only what the person did)."""
    rule = alert.get("rule") or ""
    out: list[str] = []
    label = theme_label(alert["theme"]).lower()
    if rule == "search-phrases":
        score = alert.get("score")
        out.append(f"The words searched for are on the school's watch list for {label}.")
        if score is not None and threshold:
            out.append(f"They scored {score}; an alert is raised at {threshold} for this person's profile "
                       f"({plain(alert.get('profile'), 30)}). The more and the stronger the matching words, the higher "
                       f"the score.")
    elif rule.startswith("category:"):
        out.append(f"The site is listed in the category '{category_words(rule.partition(':')[2])}', which the "
                   f"school watches for {label}.")
    elif rule == "repeated-blocks":
        out.append("Many blocked attempts in a short time: someone may be trying to get round the filter, or "
                   "looking hard for something.")
    elif rule == "bare-ip":
        out.append("This is how VPN apps and proxy tools get round the school's filter and monitoring.")
    elif rule == "interception-refused":
        out.append("The device itself refused the school's security certificate, again and again. VPN apps and "
                   "proxy tools do this to get round the filter and monitoring; so does a device the school's "
                   "certificate was never installed on. Check the device before drawing conclusions.")
    elif rule == "upstream-block":
        out.append("The school's certified upstream filter (Smoothwall / SWGfL) refused the site with its own "
                   "block page. That filter carries the IWF and police lists of illegal content, so the site may "
                   "be illegal. Do not visit it or try to see what it shows: follow the procedure for possibly "
                   "illegal content.")
    if alert.get("repeats"):
        n = alert["repeats"]
        out.append(f"It happened {n} more time{'s' if n != 1 else ''} within {throttle_minutes} minutes; "
                   f"those are counted on this alert rather than raising new ones.")
    out.append(f"Severity {alert['severity']}: " + ("alerts like this are sent to the people responsible at once "
                                                   "(see 'Who was told')." if sent_at_once
                                                   else "alerts like this wait for the weekly report."))
    return out


def sort_inbox(alerts: list[dict]) -> list[dict]:
    """Newest first, and on the same day the most severe first (a critical at 09:00 above a low at 11:00)."""
    return sorted(alerts, key=lambda a: (-aware(a["time"]).date().toordinal(),
                                         SEVERITY_ORDER.get(a["severity"], 9), -aware(a["time"]).timestamp()))


# -- browsing ---------------------------------------------------------------------------------------------
@dataclass
class Entry:
    """One line of a timeline: a search, or one site visited (or blocked) — consecutive requests merged."""
    start: dt.datetime
    end: dt.datetime
    kind: str                    # search | visit | blocked
    host: str
    detail: str = ""             # the path of a single visit, the search engine
    term: str = ""
    category: str = ""
    count: int = 1
    hidden: bool = False         # adult or possibly illegal: host and time only
    raised: bool = False         # this is what raised the alert
    refs: list[str] = field(default_factory=list)


def is_hidden(row: dict, hidden_categories: frozenset[str]) -> bool:
    """Adult or possibly illegal content: the console shows the host and the time, never more."""
    if row.get("rule") == "upstream-block":
        return True
    cats = {c for c in (row.get("categories") or "").split(",") if c} | {row.get("category") or ""}
    return bool(cats & hidden_categories)


def timeline(rows: list[dict], hidden_categories: frozenset[str], raised_ref: str | None = None) -> list[Entry]:
    """Records (oldest first) as entries: every search on its own line, repeated requests to one site
    within two minutes merged into one."""
    out: list[Entry] = []
    for r in rows:
        t = aware(r["time"])
        hidden = is_hidden(r, hidden_categories)
        kind = "blocked" if r.get("action") == "block" else "visit"
        host = plain(r.get("host"), 100)
        term = r.get("search_term")
        raised = bool(raised_ref) and r.get("ref") == raised_ref
        category = "" if r.get("category") in (None, "", "none", "-") else category_words(r["category"])
        if term and not hidden:
            out.append(Entry(t, t, "search", host, engine_name(host) or host, plain(term, 200), category,
                             raised=raised, refs=[r.get("ref") or ""]))
            continue
        last = out[-1] if out else None
        if last is not None and last.kind == kind and last.host == host and last.hidden == hidden \
                and t - last.end <= GROUP_GAP:
            last.end, last.count = t, last.count + 1
            last.raised = last.raised or raised
            last.refs.append(r.get("ref") or "")
            if last.count == 2:
                last.detail = ""
            continue
        detail = "" if hidden else plain((r.get("path") or "").split("?", 1)[0], 80)
        out.append(Entry(t, t, kind, host, "" if detail in ("", "/") else detail, "", category,
                         hidden=hidden, raised=raised, refs=[r.get("ref") or ""]))
    return out
