"""``schoolproxy decisions``: the decision log (why the filtering policy changed, who, when)."""

from __future__ import annotations

import getpass
import sys

from schoolproxy.cli.common import open_records, when


def register(sub) -> None:
    p = sub.add_parser("decisions", help="the decision log: why the filtering policy changed, who, when")
    p.set_defaults(func=cmd_decisions)
    dsub_ = p.add_subparsers(dest="decisions_command", required=True)
    q = dsub_.add_parser("add", help="record a policy change and why it was made")
    q.add_argument("change", help="what changed, e.g. 'YouTube allowed for staff'")
    q.add_argument("--why", required=True, help="the rationale (who asked, the risk considered)")
    q.add_argument("--by", help="who decided (default: login name)")
    q = dsub_.add_parser("list", help="decisions since a date")
    q.add_argument("--since", default="365d", help="7d, 2026-09-01 (default: 365d)")
    for q in dsub_.choices.values():
        q.add_argument("--config", default=None)



def cmd_decisions(args) -> int:
    from schoolproxy.records.decisions import DecisionError, add_decision, list_decisions
    cfg, db = open_records(args.config)
    if args.decisions_command == "add":
        try:
            n = add_decision(db, args.change, args.why, args.by or getpass.getuser())
        except DecisionError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"decision {n} recorded")
        return 0
    from zoneinfo import ZoneInfo
    rows = list_decisions(db, when(args.since, ZoneInfo(cfg.timezone)))
    if not rows:
        print(f"no decisions recorded since {args.since}")
    for r in rows:
        print(f"{r['id']:>4}  {r['time']:%Y-%m-%d %H:%M}  {r['author']}: {r['change']}\n      why: {r['rationale']}")
    return 0
