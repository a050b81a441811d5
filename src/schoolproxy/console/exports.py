"""Concerns written out for the school's other records: a CPOMS-ready summary of one pupil concern (to
copy and paste), and CSV files of concerns — pupils' for CPOMS, staff's separately for the head teacher's
LADO referral. A pupils' file never holds a member of staff, and the other way round.

CSV cells a spreadsheet would run as a formula are neutralised (search terms are typed by pupils).
"""

from __future__ import annotations

import datetime as dt
import io
from zoneinfo import ZoneInfo

from schoolproxy.console.words import aware, plain, uk_date, uk_datetime, uk_time
from schoolproxy.monitoring.message import label
from schoolproxy.records.reports import write_csv

#: The groups concerns are exported in: the subject's role → the file's title.
GROUPS = {"pupil": "Pupils (for CPOMS)", "guest": "Visitors and unidentified devices",
          "supply": "Supply and student teachers", "staff": "Staff (for the head teacher: LADO)"}
ACTIONS = {"ack": "Acknowledged", "action": "Action taken", "close": "Closed", "note": "Note", "reopen": "Reopened"}

PUPIL_COLUMNS = ("Student", "Class", "Logon", "Date", "Time", "Category", "Severity", "Incident", "Evidence",
                 "Device", "Action taken", "Outcome", "Status", "Reference")
ADULT_COLUMNS = ("Name", "Logon", "Date", "Time", "Concern", "Severity", "What happened", "Evidence", "Device",
                 "Action taken", "Outcome", "Status", "Reference")
MAX_EVIDENCE_CELL = 30_000   # a spreadsheet cell holds 32,767 characters


def note_line(n: dict, tz: ZoneInfo) -> str:
    text = "" if n["note"] == "(no note)" else f": {plain(n['note'], 1000)}"
    return f"{uk_datetime(n['time'], tz)} {ACTIONS.get(n['action'], n['action'])} by {plain(n['author'], 100)}{text}"


def outcome(alert: dict, notes: list[dict], tz: ZoneInfo) -> str:
    closing = [n for n in notes if n["action"] == "close"]
    if alert["status"] != "closed" or not closing:
        return "Open"
    return plain(closing[-1]["note"], 1000)


def cpoms_summary(alert: dict, who: str, line: str, notes: list[dict], tz: ZoneInfo, school: str,
                  evidence: list[str] = ()) -> str:
    """The concern as text to paste into a CPOMS incident (category: online safety). ``line``: what
    happened, as a sentence (words.alert_sentence); ``evidence``: every search and visit behind it, one a
    line (monitoring.evidence.lines)."""
    t = aware(alert["time"])
    actions = [note_line(n, tz) for n in notes if n["action"] != "close"]
    lines = [
        f"Online safety concern: {who}",
        f"Date and time: {uk_datetime(t, tz)}",
        f"Category: Online safety - {label(alert['theme'])} (severity: {alert['severity']})",
        f"What happened: {line}."
        + (f" Repeated {alert['repeats']} more time(s) soon after." if alert.get("repeats") else ""),
    ]
    if evidence:
        lines.append("Searches and visits:" + "".join(f"\n  {plain(e, 400)}" for e in evidence))
    lines += [
        "Action taken:" + ("".join(f"\n  {a}" for a in actions) if actions else " none recorded yet"),
        f"Outcome: {outcome(alert, notes, tz)}",
        f"Source: {school} web filter (schoolproxy), alert {alert['ref']}"
        + (f", record {alert['request_ref']}" if alert.get("request_ref") else ""),
    ]
    return "\n".join(lines) + "\n"


def concerns_csv(items: list[tuple[dict, str, str, str, list[dict], list[str]]], role: str, tz: ZoneInfo) -> str:
    """``items``: (alert, display name, class, what happened as a sentence, notes, evidence lines), oldest
    first — all of the one ``role``."""
    out = io.StringIO()
    rows = []
    for a, name, group, line, notes, evidence in items:
        t = aware(a["time"])
        actions = " | ".join(note_line(n, tz) for n in notes if n["action"] != "close")
        if a.get("repeats"):
            line = f"{line}. Repeated {a['repeats']} more time(s) soon after"
        found = " | ".join(plain(e, 400) for e in evidence)
        if len(found) > MAX_EVIDENCE_CELL:
            found = found[:MAX_EVIDENCE_CELL - 1] + "…"
        common = {"Logon": a.get("username") or "", "Date": uk_date(t, tz), "Time": uk_time(t, tz),
                  "Evidence": found,
                  "Severity": a["severity"], "Device": a.get("device") or a.get("client_ip") or "",
                  "Action taken": actions, "Outcome": outcome(a, notes, tz), "Status": a["status"],
                  "Reference": a["ref"]}
        if role == "pupil":
            rows.append({**common, "Student": name, "Class": group, "Category": f"Online safety - {label(a['theme'])}",
                         "Incident": line})
        else:
            rows.append({**common, "Name": name, "Concern": label(a["theme"]), "What happened": line})
    write_csv(rows, out, PUPIL_COLUMNS if role == "pupil" else ADULT_COLUMNS, tz=tz)
    return out.getvalue()


def filename(role: str, since: dt.date, until: dt.date) -> str:
    kind = {"pupil": "pupil-concerns", "staff": "staff-concerns-LADO", "supply": "supply-concerns",
            "guest": "visitor-concerns"}[role]
    return f"{kind}-{since:%Y%m%d}-{until:%Y%m%d}.csv"
