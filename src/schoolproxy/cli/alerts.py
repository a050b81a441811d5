"""``schoolproxy alerts``: the incident log (list, show, acknowledge, action, close, export)."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import sys

from schoolproxy.cli.common import open_records, when


def register(sub) -> None:
    p = sub.add_parser("alerts", help="online-safety alerts: the incident log")
    p.set_defaults(func=cmd_alerts)
    asub = p.add_subparsers(dest="alerts_command", required=True)
    q = asub.add_parser("list", help="alerts, newest first (default: not yet closed, last 30 days)")
    q.add_argument("--status", default="open", choices=["open", "all", "new", "acknowledged", "actioned", "closed"])
    q.add_argument("--since", default="30d")
    q = asub.add_parser("show", help="one alert, its notes and its deliveries")
    q.add_argument("ref")
    for name, helptext in (("ack", "acknowledge: you have seen it"), ("action", "record what was done"),
                           ("close", "close with the outcome"), ("note", "add a note"), ("reopen", "reopen")):
        q = asub.add_parser(name, help=helptext)
        q.add_argument("ref")
        q.add_argument("--note", default="")
        q.add_argument("--by", help="who (default: login name)")
    q = asub.add_parser("export", help="CSV for entering concerns on CPOMS (or any incident system)")
    q.add_argument("--since", default="7d")
    q.add_argument("--status", default="all", choices=["open", "all", "new", "acknowledged", "actioned", "closed"])
    _register_try(asub)
    for q in asub.choices.values():
        q.add_argument("--config", default=None)
        q.add_argument("--viewer", default=None, help=argparse.SUPPRESS)



def cmd_alerts(args) -> int:
    from zoneinfo import ZoneInfo

    from schoolproxy.monitoring import message, store
    from schoolproxy.records import reports
    cfg, db = open_records(args.config)
    tz = ZoneInfo(cfg.timezone)
    viewer = getattr(args, "by", None) or args.viewer or getpass.getuser()
    cmd = args.alerts_command
    try:
        if cmd == "list":
            rows = store.list_alerts(db, when(args.since, tz), args.status)
            reports.audit(db, viewer, "(alerts)", f"alerts list {args.status} since {args.since}")
            print(reports.format_table(rows, ("time", "ref", "severity", "theme", "status", "username", "person",
                                              "profile", "evidence"), tz=tz))
        elif cmd == "show":
            alert, notes, sent = store.get_alert(db, args.ref)
            reports.audit(db, viewer, alert["username"] or alert["client_ip"] or "", f"alert {alert['ref']}")
            print(message.body(alert, cfg.school, tz, cfg.alerts.procedure))
            print(f"Status:    {alert['status']}")
            for n in notes:
                print(f"  {reports._text(n['time'], tz)}  {n['action']:<7} {reports._text(n['author'], tz)}: "
                      f"{reports._text(n['note'], tz)}")
            for o in sent:
                print(f"  delivery {o['channel']} to {reports._text(o['recipient'], tz)}: {o['status']}"
                      f" after {o['attempts']} failed attempt(s)" + (f" (last error: {o['last_error']})" if o["last_error"] else ""))
        elif cmd == "export":
            rows = store.list_alerts(db, when(args.since, tz), args.status, limit=100_000)
            reports.audit(db, viewer, "(alerts)", f"alerts export since {args.since}")
            _cpoms_csv(db, list(reversed(rows)), tz)
        else:
            alert = store.transition(db, args.ref, cmd, viewer, args.note)
            print(f"alert {alert['ref']}: {alert['status']} ({cmd} by {viewer})")
    except store.AlertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _cpoms_csv(db, rows, tz) -> None:
    """One row per alert, laid out as a CPOMS concern is entered: the pupil, when, category, the
    incident in words, action taken and status."""
    from schoolproxy.monitoring import message, store
    from schoolproxy.records.reports import write_csv
    out = []
    for a in rows:
        _, notes, _ = store.get_alert(db, a["ref"])
        t = a["time"] if a["time"].tzinfo else a["time"].replace(tzinfo=dt.timezone.utc)
        out.append({
            "Student": a["person"] or a["username"] or f"unidentified ({a['client_ip']})",
            "Logon": a["username"] or "", "Date": f"{t.astimezone(tz):%d/%m/%Y}", "Time": f"{t.astimezone(tz):%H:%M}",
            "Category": f"Online safety - {message.label(a['theme'])}", "Severity": a["severity"],
            "Incident": f"Web filter alert: {a['evidence']}" + (f" (+{a['repeats']} repeats)" if a["repeats"] else ""),
            "Device": a["device"] or a["client_ip"] or "", "Action taken": " | ".join(
                f"{n['action']} by {n['author']}: {n['note']}" for n in notes),
            "Status": a["status"], "Reference": a["ref"],
        })
    cols = ("Student", "Logon", "Date", "Time", "Category", "Severity", "Incident", "Device", "Action taken",
            "Status", "Reference")
    write_csv(out, sys.stdout, cols, tz=tz)


# -- alerts try: what a typed text would raise ---------------------------------------------------------
def _register_try(asub) -> None:
    q = asub.add_parser("try", help="show the alerts a search or message would raise for a profile")
    q.add_argument("text", help="what the person typed, in quotes")
    q.add_argument("--profile", default=None, help="profile to judge it for (default: pupil, else the "
                   "config's default profile)")
    q.set_defaults(func=cmd_try)


def cmd_try(args) -> int:
    """One line per alert, ``theme severity score: the words as typed that matched``, or ``no alert``.
    Runs the real alert rules on a search for the text; nothing is stored or sent."""
    from urllib.parse import quote_plus

    from schoolproxy.config import load_config
    from schoolproxy.monitoring.phrases import PhraseError, load_phrase_lists
    from schoolproxy.monitoring.rules import AlertRules
    from schoolproxy.monitoring.searchterms import clean
    from schoolproxy.verdict import Verdict, new_reference
    cfg = load_config(args.config)
    profile = args.profile or ("pupil" if "pupil" in cfg.profiles else cfg.identity.default_profile)
    if profile not in cfg.profiles:
        print(f"error: unknown profile {profile!r} (profiles: {', '.join(cfg.profiles)})", file=sys.stderr)
        return 2
    try:
        phrases = load_phrase_lists(cfg.path(cfg.alerts.phrases))
    except PhraseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = clean(args.text)
    rules = AlertRules(cfg.alerts, phrases, {}, {n: p.role for n, p in cfg.profiles.items()})
    verdict = Verdict(new_reference(), 0.0, "127.0.0.1", "alerts-try", profile, "cli", "alerts try", "GET", "https",
                      "www.google.com", 443, f"/search?q={quote_plus(text)}", "allow", "default", "", ())
    words = {s.theme: s.matched for s in phrases.score(text)}
    found = [c for c in rules.evaluate(verdict) if c.rule == "search-phrases"]
    for c in found:
        print(f"{c.theme} {c.severity} {c.score}: {' / '.join(words.get(c.theme, ()))}")
    if not found:
        print("no alert")
    return 0
