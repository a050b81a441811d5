"""``schoolproxy unblock``: the queue of unblock requests from the block page, approvals as expiring
overrides, and teachers' class allows."""

from __future__ import annotations

import sys

from schoolproxy.cli.common import open_records, viewer_of, when
from schoolproxy.monitoring.access import may_allow_for_class, may_decide_unblock


def register(sub) -> None:
    p = sub.add_parser("unblock", help="unblock requests from the block page, and expiring allows")
    p.set_defaults(func=cmd_unblock)
    usub = p.add_subparsers(dest="unblock_command", required=True)
    q = usub.add_parser("list", help="requests waiting for a decision (or --status all)")
    q.add_argument("--status", default="pending", choices=["pending", "approved", "refused", "all"])
    q.add_argument("--since", default="90d")
    q.add_argument("--by", help="your logon, with an approver role (unblock.approvers; in people: or role_groups): "
                   "the requests name pupils and carry their words, so only approvers see them, as in the console")
    q = usub.add_parser("approve", help="allow the site, until the end of a lesson, the day, the term or a date")
    q.add_argument("ref")
    q.add_argument("--by", required=True, help="the approver's logon (with an approver role: people:, or "
                   "role_groups)")
    q.add_argument("--until", required=True, help="lesson, day, term, or a date such as 18/12/2026")
    q.add_argument("--why", required=True, help="the rationale, for the decision log")
    q.add_argument("--for", dest="scope", default="profile", choices=["profile", "group", "user"],
                   help="whom it is allowed for: the requester's profile (default), a class (--group), or only them")
    q.add_argument("--group", help="with --for group: the class, e.g. year4")
    q.add_argument("--site", help="allow this site instead of the one asked for (e.g. the whole domain)")
    q = usub.add_parser("refuse", help="refuse a request; the requester sees why on the block page")
    q.add_argument("ref")
    q.add_argument("--by", required=True)
    q.add_argument("--why", required=True)
    q = usub.add_parser("class", help="a teacher allows a site for one of their classes for a lesson")
    q.add_argument("site")
    q.add_argument("--class", dest="cls", required=True, help="a class in people.<you>.classes, e.g. year4")
    q.add_argument("--by", required=True, help="the teacher's logon (role teacher: people: or role_groups)")
    q.add_argument("--until", default="lesson", choices=["lesson", "day"])
    q.add_argument("--why", required=True, help="what the lesson needs it for")
    q = usub.add_parser("overrides", help="expiring allows in force now (approvers: all; a teacher: their classes')")
    q.add_argument("--by", required=True, help="your logon (people: or role_groups)")
    q = usub.add_parser("end", help="end an expiring allow early")
    q.add_argument("id", type=int)
    q.add_argument("--by", required=True)
    q.add_argument("--why", required=True)
    for q in usub.choices.values():
        q.add_argument("--config", default=None)


def cmd_unblock(args) -> int:
    from zoneinfo import ZoneInfo

    from schoolproxy.records import reports
    from schoolproxy.records import unblock as store
    from schoolproxy.snapshot import build_snapshot
    from schoolproxy.standards import unblock
    cfg, db = open_records(args.config)
    tz = ZoneInfo(cfg.timezone)
    cmd = args.unblock_command

    def local(t) -> str:
        return f"{store.aware(t).astimezone(tz):%a %d %b %H:%M}"
    try:
        if cmd == "list":
            viewer = viewer_of(cfg, args.by)
            if not may_decide_unblock(cfg, viewer):   # the console's rule for its queue of requests
                return _not_an_approver(cfg, db, viewer, args.status)
            rows = store.list_requests(db, when(args.since, tz), args.status)
            reports.audit(db, str(viewer), "(unblock requests)", f"unblock list {args.status} since {args.since}")
            if not rows:
                print(f"no {'' if args.status == 'all' else args.status + ' '}unblock requests since {args.since}")
            for r in rows:
                print(f"{r['ref']}  {local(r['time'])}  {r['status']:<8} {reports._text(r['username'], tz)} "
                      f"({r['profile']}) asked for {reports._text(r['url'], tz)}\n"
                      f"      blocked by {r['rule']}; reason: \"{reports._text(r['reason'], tz)}\""
                      + (f"\n      {r['status']} by {r['decided_by']}: {reports._text(r['note'], tz)}"
                         if r["status"] != "pending" else ""))
            return 0
        if cmd == "overrides":
            # As on the console's page: approvers see every allow (a per-pupil one names the pupil), a
            # teacher the allows for their own classes, anyone else none.
            viewer = viewer_of(cfg, args.by)
            allows = store.active_overrides(db)
            if not may_decide_unblock(cfg, viewer):
                if not may_allow_for_class(viewer):
                    reports.audit(db, str(viewer), "(expiring allows)", "REFUSED: unblock overrides")
                    print(f"error: {viewer} cannot see the expiring allows: a pupil's own allow names them, so only "
                          f"{' and '.join(cfg.unblock.approvers)} (unblock.approvers) see them all, and a teacher "
                          f"the allows for their own classes, as in the console. Nothing has been shown.",
                          file=sys.stderr)
                    return 2
                mine = {c.lower() for c in unblock.classes_of(cfg, viewer)}
                allows = [o for o in allows if o["scope"] == "group" and o["scope_value"].lower() in mine]
            reports.audit(db, str(viewer), "(expiring allows)", f"unblock overrides: {len(allows)} shown")
            if not allows:
                print("no expiring allows in force" + ("" if may_decide_unblock(cfg, viewer) else " for your classes"))
            for o in allows:
                print(f"{o['id']:>5}  {o['action']} {o['site']} for {o['scope']} {o['scope_value']} until "
                      f"{local(o['expires_at'])}  [{o['source']}, by {o['author']}] — {o['rationale']}")
            return 0
        if cmd == "end":
            # As in the console: an approver may end any allow; anyone else only the allows they made.
            viewer = viewer_of(cfg, args.by)
            found = next((o for o in store.active_overrides(db) if o["id"] == args.id), None)
            if found is not None and not may_decide_unblock(cfg, viewer) and found["author"] != str(viewer):
                print(f"error: allow {args.id} was made by {found['author']}: {viewer} may end only the allows they "
                      f"made themselves ({' and '.join(cfg.unblock.approvers)} may end any).", file=sys.stderr)
                return 2
            o = store.revoke_override(db, args.id, str(viewer), args.why)
            print(f"override {args.id} ({o['site']} for {o['scope']} {o['scope_value']}) ended by {viewer}")
            return 0
        snap = build_snapshot(args.config, run_tests=False)
        if cmd == "approve":
            scope_value = args.group if args.scope == "group" else None
            if args.scope == "group" and not args.group:
                print("error: --for group needs --group CLASS", file=sys.stderr)
                return 2
            r = unblock.approve(db, snap, args.ref, viewer_of(cfg, args.by), _until(args.until), args.why, args.scope,
                                scope_value, args.site)
            o = next(o for o in store.active_overrides(db) if o["id"] == r["override_id"])
            print(f"approved {r['ref']}: {o['site']} allowed for {o['scope']} {o['scope_value']} until "
                  f"{local(o['expires_at'])} (override {o['id']}; in the decision log). The running proxy applies "
                  f"it within a few seconds.")
        elif cmd == "refuse":
            r = unblock.refuse(db, snap, args.ref, viewer_of(cfg, args.by), args.why)
            print(f"refused {r['ref']} ({r['host']}); the requester sees why on the block page")
        elif cmd == "class":
            # The teacher's role as the console gives it (people: or role_groups); their classes, as there, from
            # people: alone.
            oid, expires, site = unblock.class_allow(db, snap, viewer_of(cfg, args.by), args.cls, args.site,
                                                     args.until, args.why)
            print(f"{site} allowed for {args.cls} until {expires.astimezone(tz):%H:%M %a %d %b} (override {oid}; "
                  f"in the decision log)")
    except store.UnblockError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _not_an_approver(cfg, db, viewer, status: str) -> int:
    """Refused, said plainly and in the access audit; a teacher is told what is theirs instead (as on the
    console's page: their own class allows, never the pupils' requests)."""
    from schoolproxy.monitoring.access import may_allow_for_class
    from schoolproxy.records import reports
    reports.audit(db, str(viewer), "(unblock requests)", f"REFUSED: unblock list {status} (not an approver)")
    print(f"error: {viewer} cannot see unblock requests: they name the pupil and carry their words, so only "
          f"{' and '.join(cfg.unblock.approvers)} (unblock.approvers) see them, as in the console. Nothing has been "
          f"shown.", file=sys.stderr)
    if may_allow_for_class(viewer):
        print(f"As a teacher you may allow a site for your own classes for a lesson: schoolproxy unblock class SITE "
              f"--class CLASS --by {viewer.username} --why ...", file=sys.stderr)
    return 2


def _until(text: str) -> str:
    """A UK date ('18/12/2026', '18/12/2026 15:30') as the ISO text the approval reads; lesson, day, term
    and ISO dates as given."""
    from schoolproxy.cli.common import read_datetime
    if "/" not in text:
        return text
    try:
        moment, timed = read_datetime(text)
    except ValueError:
        return text  # the approval says plainly what it cannot read
    return moment.isoformat(sep=" ", timespec="minutes") if timed else moment.date().isoformat()
