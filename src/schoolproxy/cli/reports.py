"""``schoolproxy report``: one user's history, what was blocked, one reference, the weekly digest."""

from __future__ import annotations

import datetime as dt
import getpass
import sys

from schoolproxy.cli.common import open_records, shared_logon_test, when


def register(sub) -> None:
    p = sub.add_parser("report", help="browsing records: a user's history, what was blocked, one reference")
    p.set_defaults(func=cmd_report)
    rsub = p.add_subparsers(dest="report_command", required=True)
    q = rsub.add_parser("weekly", help="the weekly digest of alerts not sent at the time")
    q.add_argument("--config", default=None)
    q.add_argument("--send", action="store_true", help="also queue it for delivery (the running proxy sends it)")
    for name, helptext in (("user", "one user's history"), ("blocked", "blocked requests"),
                           ("ref", "the record behind a block page's reference")):
        q = rsub.add_parser(name, help=helptext)
        q.add_argument("--config", default=None)
        q.add_argument("--csv", action="store_true", help="CSV on standard output instead of a table")
        q.add_argument("--viewer", default=None, help="who is looking (for the access audit; default: login name)")
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



def cmd_report(args) -> int:
    from zoneinfo import ZoneInfo

    from schoolproxy.records import reports
    cfg, db = open_records(args.config)
    tz = ZoneInfo(cfg.timezone)
    if args.report_command == "weekly":
        return _weekly(cfg, db, tz, args.send)
    viewer = args.viewer or getpass.getuser()
    heading = None
    if args.report_command == "ref":
        rows, subject, what = reports.by_ref(db, args.reference), args.reference, "record by reference"
        if not rows:
            reports.audit(db, viewer, subject, what)
            print(f"no record has the reference {args.reference!r} (check it against the block page or alert)",
                  file=sys.stderr)
            return 1
    else:
        if getattr(args, "around", None):
            if args.since or args.until:
                print("error: --around replaces --since and --until: give one or the other", file=sys.stderr)
                return 2
            if not 0 < args.minutes <= 24 * 60:
                print("error: --minutes must be between 1 and 1440", file=sys.stderr)
                return 2
            found = _moment(db, args.around, tz)
            if found is None:
                print(f"no alert or record has the reference {args.around!r} (check it against the alert or "
                      f"block page)", file=sys.stderr)
                return 1
            moment, about = found
            since, until = moment - dt.timedelta(minutes=args.minutes), moment + dt.timedelta(minutes=args.minutes)
            heading = (f"{args.username}: {args.minutes} minutes either side of "
                       f"{moment.astimezone(tz):%d/%m/%Y %H:%M}{about}")
        else:
            since = when(args.since or "7d", tz)
            until = when(args.until, tz) if args.until else dt.datetime.now(dt.timezone.utc)
        span = f"{since.astimezone(tz):%d/%m/%Y %H:%M} to {until.astimezone(tz):%d/%m/%Y %H:%M}"
        if args.report_command == "user":
            rows, subject, what = reports.user_history(db, args.username, since, until), args.username, f"history {span}"
        else:
            rows = reports.blocked(db, since, until, args.category)
            subject, what = "(all users)", f"blocked {args.category or 'all categories'} {span}"
    reports.audit(db, viewer, subject, what)
    rows = reports.name_people(db, rows, shared_logon_test(cfg))
    if args.csv:
        reports.write_csv(rows, sys.stdout, tz=tz)
    else:
        if heading:
            print(heading)
        print(reports.format_table(rows, tz=tz))
    return 0


def _moment(db, text: str, tz) -> tuple[dt.datetime, str] | None:
    """--around: (the moment, what it is) for an alert's or a record's reference, or a time; None for a
    reference nothing has."""
    from schoolproxy.records import reports
    if reports.REFERENCE.fullmatch(text.strip().upper()):
        found = reports.reference_time(db, text)
        if found is None:
            return None
        moment, kind = found
        return moment, f" ({kind} {text.strip().upper()})"
    return when(text, tz), ""


def _weekly(cfg, db, tz, send: bool) -> int:
    from schoolproxy.monitoring import message, pending, store
    from schoolproxy.monitoring.service import digest_time
    now = dt.datetime.now(tz)
    since = now - dt.timedelta(days=7)
    channels = pending.ways_to_tell(cfg)
    if send:
        subject, text, queued = store.queue_digest(db, cfg, since, now)
        print(text)
        if queued is None:
            print("nothing new to send")
        elif not channels:
            print(f"NOT SENT: no email or webhook is set up (alerts.smtp, alerts.webhook). It waits in the outbox"
                  f"{f' for {queued} recipient(s)' if queued else ''} until one is"
                  + (f"; a copy is in {cfg.path(cfg.alerts.mailbox)}" if cfg.alerts.mailbox is not None else "")
                  + ".")
        else:
            print(f"queued for {queued} recipient(s)" if queued else
                  "NOT SENT: no recipient has an address for these alerts (alerts.recipients)")
        return 0
    rows = [a for a in store.list_alerts(db, since, "all") if a["severity"] not in cfg.alerts.immediate]
    print(message.digest(list(reversed(rows)), cfg.school, tz, since, now, pending.undelivered(db, cfg))[1])
    if not channels:
        print("(not sent: no email or webhook is set up — alerts.smtp, alerts.webhook)")
        return 0
    nxt = digest_time(now, cfg.alerts.digest.day, cfg.alerts.digest.at)
    if nxt <= now:
        nxt += dt.timedelta(days=7)
    print(f"(sent automatically {nxt:%a %d %b %H:%M} by the running proxy)")
    return 0
