"""``schoolproxy alerts``: the incident log (list, show, acknowledge, action, close, export).

Whoever runs it says who they are with ``--by`` (their logon in the config's ``people:``, or one a
directory group in ``role_groups`` gives a role — the role the console would give them): the command
then shows only the concerns that person may see (:mod:`schoolproxy.monitoring.access` — staff concerns
to the head alone), and every look and every change is recorded against their name, never ``root``."""

from __future__ import annotations

import argparse
import sys

from schoolproxy.cli.common import BY_HELP, open_records, viewer_of, when

STATUSES = ["open", "all", "new", "acknowledged", "actioned", "closed"]
GROUPS = ("pupil", "staff", "supply", "guest")


def register(sub) -> None:
    p = sub.add_parser("alerts", help="online-safety alerts: the incident log")
    p.set_defaults(func=cmd_alerts)
    asub = p.add_subparsers(dest="alerts_command", required=True)
    q = asub.add_parser("list", help="alerts you may see, newest first (default: not yet closed, last 30 days)")
    q.add_argument("--status", default="open", choices=STATUSES)
    q.add_argument("--since", default="30d")
    q = asub.add_parser("show", help="one alert: every search and visit behind it, its notes and deliveries")
    q.add_argument("ref")
    for name, helptext in (("ack", "acknowledge: you have seen it"), ("action", "record what was done"),
                           ("close", "close with the outcome"), ("note", "add a note"), ("reopen", "reopen")):
        q = asub.add_parser(name, help=helptext)
        q.add_argument("ref")
        q.add_argument("--note", default="")
    q = asub.add_parser("export", help="CSV of concerns: pupils' for CPOMS (the default), or staff, supply or "
                        "visitors' separately")
    q.add_argument("--since", default="7d")
    q.add_argument("--status", default="all", choices=STATUSES)
    q.add_argument("--group", default="pupil", choices=GROUPS,
                   help="whose concerns: pupil (for CPOMS), staff (the head's, for the LADO), supply, guest")
    _register_try(asub)
    for name, q in asub.choices.items():
        q.add_argument("--config", default=None)
        if name != "try":
            q.add_argument("--by", default=None, help=BY_HELP)
            q.add_argument("--viewer", default=None, help=argparse.SUPPRESS)   # the older name of --by


def cmd_alerts(args) -> int:
    from zoneinfo import ZoneInfo

    from schoolproxy.monitoring import evidence, message, store
    from schoolproxy.monitoring.access import may_see_alert
    from schoolproxy.records import reports
    cfg, db = open_records(args.config)
    tz = ZoneInfo(cfg.timezone)
    viewer = viewer_of(cfg, args.by or args.viewer)
    who = str(viewer)
    cmd = args.alerts_command
    try:
        if cmd == "list":
            rows = [a for a in store.list_alerts(db, when(args.since, tz), args.status) if may_see_alert(viewer, a)]
            reports.audit(db, who, "(alerts)", f"alerts list {args.status} since {args.since}")
            print(reports.format_table(rows, ("time", "ref", "severity", "theme", "status", "username", "person",
                                              "profile", "evidence"), tz=tz))
        elif cmd == "show":
            alert, notes, sent = _open(db, viewer, args.ref)
            reports.audit(db, who, alert["username"] or alert["client_ip"] or "", f"alert {alert['ref']}")
            print(message.body(alert, cfg.school, tz, cfg.alerts.procedure))
            found = evidence.of_alert(db, alert["id"])
            if found:
                print(f"Every search and visit behind this alert ({len(found) + evidence.not_listed(alert, found)}, "
                      f"UK time):")
                for line in evidence.lines(alert, found, tz):
                    print(f"  {reports._text(line, tz)}")
                print()
            print(f"Status:    {alert['status']}")
            for n in notes:
                print(f"  {reports._text(n['time'], tz)}  {n['action']:<7} {reports._text(n['author'], tz)}: "
                      f"{reports._text(n['note'], tz)}")
            for o in sent:
                if o["channel"] == "mailbox":   # a copy on the gateway, never a way of telling anyone
                    print(f"  copy in the gateway's mailbox: {o['status']}")
                    continue
                failed = f" after {o['attempts']} failed attempt(s)" if o["attempts"] else ""
                print(f"  delivery {o['channel']} to {reports._text(o['recipient'], tz)}: {o['status']}{failed}"
                      + (f" (last error: {reports._text(o['last_error'], tz)})" if o["last_error"] else ""))
        elif cmd == "export":
            from schoolproxy.monitoring.access import role_of_alert
            rows = [a for a in store.list_alerts(db, when(args.since, tz), args.status, limit=100_000)
                    if may_see_alert(viewer, a) and role_of_alert(cfg, a) == args.group]
            reports.audit(db, who, f"({args.group} concerns)", f"alerts export {args.group} since {args.since}")
            _export_csv(cfg, db, list(reversed(rows)), args.group, tz)
        else:
            alert, _, _ = _open(db, viewer, args.ref)
            alert = store.transition(db, alert["ref"], cmd, who, args.note)
            print(f"alert {alert['ref']}: {alert['status']} ({cmd} by {who})")
    except store.AlertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _open(db, viewer, ref: str):
    """The alert, if ``viewer`` is in its audience; the same refusal whether it exists or not."""
    from schoolproxy.monitoring import store
    from schoolproxy.monitoring.access import may_see_alert
    from schoolproxy.records import reports
    try:
        found = store.get_alert(db, ref)
    except store.AlertError:
        found = None
    if found is None or not may_see_alert(viewer, found[0]):
        subject = (found[0]["username"] or found[0]["client_ip"] or "") if found else "(no such alert)"
        reports.audit(db, str(viewer), subject, f"REFUSED: alert {ref.strip().upper()[:16]} (not in their audience)")
        raise store.AlertError(f"no alert {ref.strip()[:16]!r} that you can see: either there is none, or it is "
                               f"about someone whose concerns go to other people")
    return found


def _export_csv(cfg, db, rows, group: str, tz) -> None:
    """The console's layout (console/exports.py): pupils under ``Student`` for CPOMS; adults under ``Name``."""
    from schoolproxy.console import exports, words
    from schoolproxy.identity.names import NameBook, read_mis_csv
    from schoolproxy.monitoring import evidence, store
    names_cfg = cfg.console.names
    names = NameBook(read_mis_csv(cfg.path(names_cfg.mis_csv)) if names_cfg.mis_csv is not None else {})
    items = []
    for a in rows:
        _, notes, _ = store.get_alert(db, a["ref"])
        name = names.name(a.get("username"))
        if a.get("person") and not a["person"].startswith("("):
            display, who = a["person"], f"{a['person']} (on the shared logon {a['username']})"
        elif name is not None:
            display, who = name.display, name.label
        else:
            display = who = f"an unidentified computer ({a.get('client_ip') or 'address not known'})"
        found = evidence.of_alert(db, a["id"])
        line = words.alert_sentence(a, who, {"host": found[0]["host"]} if found else None, tz, None)
        items.append((a, display, (name.group or "") if name else "", line, notes, evidence.lines(a, found, tz)))
    sys.stdout.write(exports.concerns_csv(items, group, tz))


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
