"""``schoolproxy register``: the supply and student register (who held a shared logon when)."""

from __future__ import annotations

import datetime as dt
import getpass
import sys

from schoolproxy.cli.common import open_records, when


def register(sub) -> None:
    p = sub.add_parser("register", help="the supply and student register: who holds a shared logon when")
    p.set_defaults(func=cmd_register)
    gsub = p.add_subparsers(dest="register_command", required=True)
    q = gsub.add_parser("add", help="register a visit: Supply1 is Ms Khan today")
    q.add_argument("--logon", required=True, help="the shared logon, e.g. Supply1")
    q.add_argument("--person", required=True, help="the visitor's full name")
    q.add_argument("--class", dest="class_taught", help="the class they are covering")
    q.add_argument("--from", dest="start", help="start: 08:30 (today) or '2026-11-25 08:30' (default: now)")
    q.add_argument("--to", dest="end", help="end: 15:30 or '2026-11-26 15:30' (default: end of the day)")
    q.add_argument("--by", help="who is registering (default: login name)")
    q = gsub.add_parser("end", help="end the visit on a logon now (or --at)")
    q.add_argument("--logon", required=True)
    q.add_argument("--at")
    q = gsub.add_parser("who", help="who held a logon at a moment")
    q.add_argument("--logon", required=True)
    q.add_argument("--at")
    q = gsub.add_parser("list", help="visits on a day")
    q.add_argument("--date", help="a date (default: today)")
    q.add_argument("--days", type=int, default=1)
    for q in gsub.choices.values():
        q.add_argument("--config", default=None)



def cmd_register(args) -> int:
    from zoneinfo import ZoneInfo

    from schoolproxy.identity.register import NO_ONE
    from schoolproxy.records.visits import RegisterError, add_visit, end_visit, list_visits, load_register
    cfg, db = open_records(args.config)
    tz = ZoneInfo(cfg.timezone)
    now = dt.datetime.now(tz)
    by = getattr(args, "by", None) or getpass.getuser()
    try:
        if args.register_command == "add":
            starts = when(args.start, tz, now) if args.start else now
            ends = when(args.end, tz, starts) if args.end else \
                starts.replace(hour=23, minute=59, second=59, microsecond=0)
            v = add_visit(db, args.logon, args.person, starts, ends, args.class_taught, by)
            print(f"registered: {v.logon} is {v.person}"
                  f"{f' ({v.class_taught})' if v.class_taught else ''} from {v.starts.astimezone(tz):%a %d %b %H:%M} "
                  f"to {v.ends.astimezone(tz):%a %d %b %H:%M} (visit {v.id})")
        elif args.register_command == "end":
            at = when(args.at, tz, now) if args.at else now
            v = end_visit(db, args.logon, at)
            print(f"ended: {v.logon} held by {v.person} until {at:%a %d %b %H:%M} (visit {v.id})")
        elif args.register_command == "who":
            at = when(args.at, tz, now) if args.at else now
            v = load_register(db).who(args.logon, at)
            print(f"{args.logon} at {at:%a %d %b %H:%M}: {v.person if v else NO_ONE}")
            return 0 if v else 1
        else:
            day = when(args.date, tz, now) if args.date else now
            start = day.replace(hour=0, minute=0, second=0, microsecond=0)
            visits = list_visits(db, start, start + dt.timedelta(days=args.days))
            if not visits:
                print(f"no visits registered from {start:%a %d %b %Y} for {args.days} day(s)")
            for v in visits:
                end = f"{v.ends.astimezone(tz):%H:%M}" if v.ends else "open"
                print(f"{v.id:>5}  {v.starts.astimezone(tz):%a %d %b %H:%M}-{end}  {v.logon:<12} {v.person}"
                      f"{f'  ({v.class_taught})' if v.class_taught else ''}  [by {v.created_by}]")
    except RegisterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
