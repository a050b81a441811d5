"""The words of an alert: plain English for a DSL or head teacher reading on a phone.

Everything that came from a request (search terms, hostnames) is attacker-controlled: control
characters and line breaks are removed so it cannot forge a line of the message or a mail header, and
emails are plain text (nothing is rendered as HTML).
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from schoolproxy.identity.register import NO_ONE
from schoolproxy.monitoring.searchterms import clean

THEME_LABELS = {
    "self-harm": "Self-harm and suicide", "grooming": "Grooming and sexual exploitation",
    "extremism": "Extremism and radicalisation", "bullying": "Bullying", "pornography": "Pornography",
    "drugs": "Drugs", "weapons": "Weapons and violence", "violence": "Weapons and violence", "hate": "Hate",
    "circumvention": "Getting round the filter", "gambling": "Gambling", "repeated-blocks": "Repeated blocked attempts",
    "upstream-block": "Blocked by the upstream filter (possibly illegal content)",
    "filter-check": "The web filter failed its checks",
}


def label(theme: str) -> str:
    return THEME_LABELS.get(theme, theme.replace("-", " ").capitalize())


def _one_line(text: object, limit: int = 300) -> str:
    return clean(str(text or ""))[:limit]


def who(alert: dict) -> str:
    """'Ms Aisha Khan (logon Supply1)' / 'jsmith' / 'an unidentified user at 10.0.0.7'."""
    if alert.get("theme") == "filter-check":
        return "the web filter itself (schoolproxy checks)"
    user, person = alert.get("username"), alert.get("person")
    if user and person and person != NO_ONE:
        return f"{_one_line(person, 100)} (logon {_one_line(user, 100)})"
    if user and person == NO_ONE:
        return f"{_one_line(user, 100)} — a shared logon with no one registered at the time"
    if user:
        return _one_line(user, 100)
    return f"an unidentified user at {_one_line(alert.get('client_ip'), 64)}"


def subject(alert: dict, school: str) -> str:
    return _one_line(f"[{alert['severity'].upper()}] {label(alert['theme'])} — {who(alert)} — {school}", 250)


def body(alert: dict, school: str, tz: ZoneInfo, procedure: str = "") -> str:
    t = alert["time"]
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    lines = [
        f"An online-safety alert from {school}'s web filter.",
        "",
        f"Who:       {who(alert)}",
        f"Profile:   {_one_line(alert.get('profile'), 64)}",
        f"Device:    {_one_line(alert.get('device') or 'not known', 128)} (address {_one_line(alert.get('client_ip'), 64)})",
        f"When:      {t.astimezone(tz):%A %d %B %Y at %H:%M}",
        f"Concern:   {label(alert['theme'])}",
        f"Severity:  {alert['severity']}",
        f"What:      {_one_line(alert.get('evidence'), 600)}",
    ]
    if alert.get("repeats"):
        lines.append(f"Repeats:   {alert['repeats']} more time(s) since")
    lines += [
        f"Reference: alert {alert['ref']}" + (f", request record {alert['request_ref']}" if alert.get("request_ref") else ""),
        "",
        "What to do: follow the school's online-safety procedure. Record what you do in the incident log:",
        f"  schoolproxy alerts ack {alert['ref']} --note \"...\" --by YOUR-LOGON",
        f"  schoolproxy alerts close {alert['ref']} --note \"outcome ...\" --by YOUR-LOGON",
    ]
    if procedure:
        lines.append(f"Procedure: {_one_line(procedure, 300)}")
    lines += ["", "This message contains no browsing content. Treat it as confidential safeguarding information."]
    return "\n".join(lines) + "\n"


def _digest_line(a: dict, tz: ZoneInfo) -> str:
    t = a["time"] if a["time"].tzinfo else a["time"].replace(tzinfo=dt.timezone.utc)
    rep = f" (+{a['repeats']} repeats)" if a.get("repeats") else ""
    return (f"  {t.astimezone(tz):%a %d %b %H:%M}  {a['severity']:<8} {who(a)} — "
            f"{_one_line(a.get('evidence'), 200)}{rep}  [{a['ref']}, {a['status']}]")


def digest(alerts: list[dict], school: str, tz: ZoneInfo, since: dt.datetime, until: dt.datetime,
           undelivered: list[dict] = ()) -> tuple[str, str]:
    """The weekly digest: first, the high and critical alerts that have reached no one (``undelivered``,
    in every digest until they are sent or acknowledged, whenever they were raised); then the alerts that
    are not sent at once."""
    unseen = f" — {len(undelivered)} HIGH ALERT(S) NOT SEEN BY ANYONE" if undelivered else ""
    subj = _one_line(f"Weekly online-safety digest — {school} — {len(alerts)} alert(s){unseen}", 250)
    lines = [f"Online-safety alerts at {school} from {since.astimezone(tz):%a %d %b} to {until.astimezone(tz):%a %d %b %Y}.",
             ""]
    if undelivered:
        lines.append(f"NOT SEEN BY ANYONE YET: {len(undelivered)} high or critical alert(s) that reached no one "
                     f"at the time. Open each now, and acknowledge it once someone has it in hand.")
        for a in undelivered:
            lines += [_digest_line(a, tz), f"      not sent: {_one_line(a.get('why'), 200)}"]
        lines.append("")
    lines += ["High and critical alerts that reached someone at the time are not repeated here; this lists "
              "the rest.", ""]
    if not alerts:
        lines.append("No other alerts this week.")
    by_theme: dict[str, list[dict]] = {}
    for a in alerts:
        by_theme.setdefault(a["theme"], []).append(a)
    for theme, items in sorted(by_theme.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"{label(theme)} ({len(items)})")
        lines += [_digest_line(a, tz) for a in items]
        lines.append("")
    lines.append("Open an alert with: schoolproxy alerts show REF --by YOUR-LOGON")
    return subj, "\n".join(lines) + "\n"
