"""``schoolproxy report``: one user's history, what was blocked, one reference, the weekly digest.

Whoever runs a report of browsing says who they are with ``--by``, and sees only the people whose
browsing the console would show them (pupils' to the DSL and the computing lead, staff's to the head
alone, never their own); every look, and every refusal, is in the access audit against their name."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from schoolproxy.cli.common import BY_HELP, open_records, shared_logon_test, viewer_of, when


def register(sub) -> None:
    p = sub.add_parser("report", help="browsing records: a user's history, what was blocked, one reference")
    p.set_defaults(func=cmd_report)
    rsub = p.add_subparsers(dest="report_command", required=True)
    q = rsub.add_parser("weekly", help="the weekly digest of alerts not sent at the time: the ones you may see")
    q.add_argument("--config", default=None)
    q.add_argument("--by", default=None, help=BY_HELP + " (not needed with --send alone)")
    q.add_argument("--send", action="store_true", help="queue it for delivery now (the running proxy sends it): "
                   "each address gets the alerts routed to it; only the counts are printed")
    for name, helptext in (("user", "one user's history"), ("blocked", "blocked requests"),
                           ("ref", "the record behind a block page's reference")):
        q = rsub.add_parser(name, help=helptext)
        q.add_argument("--config", default=None)
        q.add_argument("--csv", action="store_true", help="CSV on standard output instead of a table")
        q.add_argument("--by", default=None, help=BY_HELP)
        q.add_argument("--viewer", default=None, help=argparse.SUPPRESS)   # the older name of --by
        if name == "user":
            q.add_argument("username")
        if name == "ref":
            q.add_argument("reference")
        else:
            q.add_argument("--since", default=None, help="start: 02/12/2026, '02/12/2026 10:42', or 24h / 7d ago "
                                                          "(default 7d)")
            q.add_argument("--until", default=None, help="end (default: now)")
        if name == "user":
            q.add_argument("--around", metavar="REF|TIME", help="only the minutes either side of an alert or "
                           "block page's reference, or of a time ('02/12/2026 10:42'); instead of --since/--until")
            q.add_argument("--minutes", type=int, default=30, help="either side of --around (default 30)")
        if name == "blocked":
            q.add_argument("--category")
            q.add_argument("--counts", action="store_true", help="how many were blocked, by category: no names "
                           "(the console's weekly figures; for the network manager and governors too)")



def cmd_report(args) -> int:
    from zoneinfo import ZoneInfo

    from schoolproxy.console.state import build_state
    cfg, db = open_records(args.config)
    tz = ZoneInfo(cfg.timezone)
    if args.report_command == "weekly":
        return _weekly(cfg, db, tz, args)
    # The console's own view of the school (names, the directory, profiles): whose browsing someone may see
    # is decided by the same function as on its Find a person page (console/data.py, monitoring/access.py).
    state = build_state(cfg, db)
    viewer = viewer_of(cfg, args.by or args.viewer, state.accounts.directory)
    if args.report_command == "ref":
        return _by_ref(state, viewer, args.reference, args.csv, tz)
    if args.report_command == "blocked":
        return _blocked(state, viewer, args, tz)
    return _history(state, viewer, args, tz)


def _history(state, viewer, args, tz) -> int:
    from schoolproxy.console import data
    from schoolproxy.records import reports
    db, username = state.db, " ".join(args.username.split())
    heading = None
    if not data.may_see_person(state, viewer, username):  # by their profile now: before anything is read
        return _refused(state, viewer, username, "history")
    if args.around:
        if args.since or args.until:
            print("error: --around replaces --since and --until: give one or the other", file=sys.stderr)
            return 2
        if not 0 < args.minutes <= 24 * 60:
            print("error: --minutes must be between 1 and 1440", file=sys.stderr)
            return 2
        found = _moment(db, args.around, tz, username)
        if found is None:
            print(f"no alert or record has the reference {args.around!r} for {username} (check it against the "
                  f"alert or block page)", file=sys.stderr)
            return 1
        moment, about = found
        since, until = moment - dt.timedelta(minutes=args.minutes), moment + dt.timedelta(minutes=args.minutes)
        heading = (f"{username}: {args.minutes} minutes either side of "
                   f"{moment.astimezone(tz):%d/%m/%Y %H:%M}{about}")
    else:
        since = when(args.since or "7d", tz)
        until = when(args.until, tz) if args.until else dt.datetime.now(dt.timezone.utc)
    what = f"history {_span(since, until, tz)}"
    rows = reports.user_history(db, username, since, until)
    if not data.may_see_person(state, viewer, username, rows):  # and every role their records show
        return _refused(state, viewer, username, what)
    reports.audit(db, str(viewer), username, what)
    return _show(state, rows, args.csv, tz, heading)


def _by_ref(state, viewer, reference: str, as_csv: bool, tz) -> int:
    """The record behind a block page's reference, if it is about someone whose browsing the viewer may
    see; the same answer whether there is no such record or it is not theirs to see."""
    from schoolproxy.console import data
    from schoolproxy.records import reports
    rows = reports.by_ref(state.db, reference)
    ref = reference.strip().upper()[:16]
    hidden = [r for r in rows if not data.may_see_person(state, viewer, r["username"], [r])]
    if not rows or hidden:
        subject = (hidden[0]["username"] or hidden[0]["client_ip"] or "") if hidden else "(no such record)"
        reports.audit(state.db, str(viewer), subject,
                      f"REFUSED: record {ref} (not in their audience)" if hidden else f"record {ref} (none)")
        print(f"no record with the reference {reference.strip()[:16]!r} that you can see: either there is none "
              f"(check it against the block page or alert), or it is about someone whose browsing goes to other "
              f"people", file=sys.stderr)
        _no_browsing_hint(state, viewer)
        return 1
    reports.audit(state.db, str(viewer), rows[0]["username"] or rows[0]["client_ip"] or "", f"record {ref}")
    return _show(state, rows, as_csv, tz)


def _blocked(state, viewer, args, tz) -> int:
    """Blocked requests of the people whose browsing the viewer may see (the rest left out, and said so);
    ``--counts``: by category only, never a name — the console's weekly figures, for whoever sees figures."""
    from schoolproxy.console import data
    from schoolproxy.monitoring import access
    from schoolproxy.records import reports
    since = when(args.since or "7d", tz)
    until = when(args.until, tz) if args.until else dt.datetime.now(dt.timezone.utc)
    span = _span(since, until, tz)
    if args.counts:
        if not (access.may_see_figures(viewer) or access.has_inbox(state.config, viewer)):
            return _refused(state, viewer, "(figures)", f"blocked counts {span}")
        counts = [{"category": c or "(none)", "blocked": n} for c, n in data.figures(state, since, until)["blocked"]
                  if args.category is None or c == args.category]
        reports.audit(state.db, str(viewer), "(figures)", f"blocked counts {args.category or 'all categories'} {span}")
        if args.csv:
            reports.write_csv(counts, sys.stdout, ("category", "blocked"), tz=tz)
        else:
            print(reports.format_table(counts, ("category", "blocked"), tz=tz).rsplit("\n", 1)[0])
            print(f"({sum(c['blocked'] for c in counts)} blocked requests, {span})")
        return 0
    if not access.has_inbox(state.config, viewer):
        return _refused(state, viewer, "(all users)", f"blocked {span}")
    rows = reports.blocked(state.db, since, until, args.category)
    by_person: dict[str, list] = {}
    for r in rows:
        by_person.setdefault((r["username"] or "").lower(), []).append(r)
    theirs = {u for u, own in by_person.items() if data.may_see_person(state, viewer, u or None, own)}
    shown = [r for r in rows if (r["username"] or "").lower() in theirs]
    reports.audit(state.db, str(viewer), "(all users)", f"blocked {args.category or 'all categories'} {span}")
    if len(shown) < len(rows):
        left_out = len(rows) - len(shown)
        print(f"({left_out} blocked request{'s' if left_out != 1 else ''} by people whose browsing goes to other "
              f"people {'are' if left_out != 1 else 'is'} left out)", file=sys.stderr)
    return _show(state, shown, args.csv, tz)


def _show(state, rows, as_csv: bool, tz, heading: str | None = None) -> int:
    from schoolproxy.records import reports
    rows = reports.name_people(state.db, rows, shared_logon_test(state.config))
    if as_csv:
        reports.write_csv(rows, sys.stdout, tz=tz)
    else:
        if heading:
            print(heading)
        print(reports.format_table(rows, tz=tz))
    return 0


def _refused(state, viewer, subject: str, what: str) -> int:
    """Nothing shown: said plainly, and the attempt is in the access audit."""
    from schoolproxy.records import reports
    reports.audit(state.db, str(viewer), subject, f"REFUSED: {what} (not in their audience)")
    print(f"error: {viewer} cannot see this: browsing reports show only the people whose concerns go to you "
          f"(pupils' to the DSL and the computing lead, staff's to the head alone). Nothing has been shown.",
          file=sys.stderr)
    _no_browsing_hint(state, viewer)
    return 2


def _no_browsing_hint(state, viewer) -> None:
    """Someone whose role never shows anyone's browsing (the network manager, as in the console): what
    they can use instead."""
    from schoolproxy.monitoring import access
    if access.has_inbox(state.config, viewer):
        return
    hint = "your role never shows anyone's browsing, as in the console. "
    if access.may_see_figures(viewer):
        hint += f"What was blocked, by category: schoolproxy report blocked --counts --by {viewer.username}. "
    print(f"{hint}Why a page is blocked for someone: schoolproxy explain --user LOGON URL.", file=sys.stderr)


def _span(since: dt.datetime, until: dt.datetime, tz) -> str:
    return f"{since.astimezone(tz):%d/%m/%Y %H:%M} to {until.astimezone(tz):%d/%m/%Y %H:%M}"


def _moment(db, text: str, tz, username: str) -> tuple[dt.datetime, str] | None:
    """--around: (the moment, what it is) for the reference of an alert or a record about ``username``, or
    a time; None for a reference nothing about them has."""
    from schoolproxy.records import reports
    if reports.REFERENCE.fullmatch(text.strip().upper()):
        found = reports.reference_time(db, text, username)
        if found is None:
            return None
        moment, kind = found
        return moment, f" ({kind} {text.strip().upper()})"
    return when(text, tz), ""


def _weekly(cfg, db, tz, args) -> int:
    """The digest as whoever asks (``--by``) may see it — the concerns routed to them, never their own; the
    figures alone to governors and the network manager — and, with ``--send``, queued for every address
    (each gets its own share; nothing named is printed, so it can run unattended)."""
    from schoolproxy.monitoring import access, message, pending, store
    from schoolproxy.monitoring.service import digest_time
    from schoolproxy.records import reports
    now = dt.datetime.now(tz)
    since = now - dt.timedelta(days=7)
    channels = pending.ways_to_tell(cfg)
    # Who is asking, before anything is queued; --send alone names no one (it prints no names).
    viewer = viewer_of(cfg, args.by) if args.by or not args.send else None
    if args.send:
        subject, _, queued = store.queue_digest(db, cfg, since, now)
        if queued is None:
            print("nothing new to send")
        else:
            print(subject)
        if queued is not None and not channels:
            print(f"NOT SENT: no email or webhook is set up (alerts.smtp, alerts.webhook). It waits in the outbox"
                  f"{f' for {queued} recipient(s)' if queued else ''} until one is"
                  + (f"; a copy is in {cfg.path(cfg.alerts.mailbox)}" if cfg.alerts.mailbox is not None else "")
                  + ".")
        elif queued is not None:
            print(f"queued for {queued} recipient(s), each with the alerts routed to them" if queued else
                  "NOT SENT: no recipient has an address for these alerts (alerts.recipients)")
        if viewer is None:
            return 0
    span = _span(since, now, tz)
    if access.has_inbox(cfg, viewer):
        rows = [a for a in store.list_alerts(db, since, "all")
                if a["severity"] not in cfg.alerts.immediate and access.may_see_alert(viewer, a)]
        unseen = [a for a in pending.undelivered(db, cfg) if access.may_see_alert(viewer, a)]
        reports.audit(db, str(viewer), "(alerts)", f"weekly digest {span} ({len(rows)} alerts)")
        print(message.digest(list(reversed(rows)), cfg.school, tz, since, now, unseen)[1])
    elif access.may_see_figures(viewer):
        reports.audit(db, str(viewer), "(figures)", f"weekly figures {span}")
        _weekly_figures(cfg, db, since, now, span)
    else:
        reports.audit(db, str(viewer), "(alerts)", f"REFUSED: weekly digest {span} (not in their audience)")
        print(f"error: {viewer} cannot see the weekly digest: it lists concerns to the people they are routed to "
              f"(pupils' to the DSL and the computing lead, staff's to the head alone), and its figures to governors "
              f"and the network manager, as the console's weekly report does. Nothing has been shown.",
              file=sys.stderr)
        return 2
    if args.send:
        return 0
    if not channels:
        print("(not sent: no email or webhook is set up — alerts.smtp, alerts.webhook)")
        return 0
    nxt = digest_time(now, cfg.alerts.digest.day, cfg.alerts.digest.at)
    if nxt <= now:
        nxt += dt.timedelta(days=7)
    print(f"(sent automatically {nxt:%a %d %b %H:%M} by the running proxy)")
    return 0


def _weekly_figures(cfg, db, since: dt.datetime, until: dt.datetime, span: str) -> None:
    """The week in figures, never a name: the console's weekly report as governors and the network manager
    see it."""
    from schoolproxy.console import data
    from schoolproxy.console.state import build_state
    from schoolproxy.monitoring import message, pending
    state = build_state(cfg, db)
    figures = data.figures(state, since, until)
    print(f"Online safety at {cfg.school}, {span}: figures only, no names.")
    unseen = pending.count_undelivered(db, cfg)
    if unseen:
        print(f"NOT SEEN BY ANYONE YET: {unseen} high or critical alert(s) reached no one at the time: tell the DSL "
              f"(and set up or fix alerts.smtp / alerts.webhook).")
    print(f"Alerts: {figures['alerts']} ({figures['open']} still open)")
    for theme, c in figures["themes"].items():
        levels = ", ".join(f"{c[s]} {s}" for s in ("critical", "high", "medium", "low") if c[s])
        print(f"  {message.label(theme)}: {c['all']} ({levels})")
    print(f"Blocked requests: {figures['blocked_total']} of {figures['requests']} requests, by "
          f"{figures['people']} people")
    for category, n in figures["blocked"]:
        print(f"  {state.category_text.get(category, category) if category else '(none)'}: {n}")
