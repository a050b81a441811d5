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
    q.add_argument("--from", dest="start", help="start: 08:30 (today) or '25/11/2026 08:30' (default: now)")
    q.add_argument("--to", dest="end", help="end: 15:30 or '26/11/2026 15:30' (default: end of the day)")
    q.add_argument("--by", help="who is registering (default: login name)")
    q = gsub.add_parser("end", help="end the visit on a logon now (or --at)")
    q.add_argument("--logon", required=True)
    q.add_argument("--at")
    q = gsub.add_parser("cancel", help="cancel a visit that has not started (booked by mistake, or not coming)")
    which = q.add_mutually_exclusive_group(required=True)
    which.add_argument("--visit", type=int, help="the visit's number (register list shows it)")
    which.add_argument("--logon", help="the next visit on this logon that has not started")
    q.add_argument("--on", help="with --logon: the visit starting on this day (02/12/2026)")
    q.add_argument("--by", required=True, help="who is cancelling: their logon, with a role that keeps the register "
                   "(office, head, slt; in people: or role_groups)")
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
    from schoolproxy.records.visits import (RegisterError, add_visit, cancel_visit, end_visit, list_visits,
                                            load_register)
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
        elif args.register_command == "cancel":
            by = _person(cfg, args.by)
            visit_id = args.visit if args.visit is not None else _next_visit(db, args.logon, args.on, tz, now)
            v = cancel_visit(db, visit_id, now, by)
            print(f"cancelled: {v.person} on {v.logon}, {v.starts.astimezone(tz):%d/%m/%Y %H:%M} (visit {v.id}), "
                  f"by {by}")
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


def _person(cfg, given: str) -> str:
    """--by for a cancellation: someone who keeps the register, as the console's register page asks (their
    role from people: or a directory group in role_groups), stamped as 'Name (logon)'."""
    from schoolproxy.cli.common import viewer_of
    from schoolproxy.monitoring.access import REGISTER_KEEPERS, may_keep_register
    from schoolproxy.records.visits import RegisterError
    viewer = viewer_of(cfg, given)
    if not may_keep_register(viewer):
        raise RegisterError(f"{viewer} does not keep the supply register: only {', '.join(sorted(REGISTER_KEEPERS))} "
                            f"may cancel a visit, as in the console")
    return str(viewer)


def _next_visit(db, logon: str, on: str | None, tz, now: dt.datetime) -> int:
    """The one visit on ``logon`` not yet started (starting on the day ``on``, if given)."""
    from schoolproxy.records.visits import RegisterError, load_register
    upcoming = [v for v in load_register(db, now).visits(logon) if v.starts > now]
    if on:
        day = when(on, tz, now).astimezone(tz).date()
        upcoming = [v for v in upcoming if v.starts.astimezone(tz).date() == day]
    if not upcoming:
        raise RegisterError(f"no visit on {logon} that has not started{f' on {on}' if on else ''}")
    if len(upcoming) > 1:
        listed = "; ".join(f"visit {v.id}: {v.person} {v.starts.astimezone(tz):%d/%m/%Y %H:%M}" for v in upcoming)
        raise RegisterError(f"{len(upcoming)} visits on {logon} have not started ({listed}): say which with "
                            f"--visit")
    return upcoming[0].id
