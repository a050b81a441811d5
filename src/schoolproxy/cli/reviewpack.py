"""``schoolproxy review-pack``: the annual filtering and monitoring review, as one HTML document."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from schoolproxy.cli.common import actor, open_records, when


def register(sub) -> None:
    p = sub.add_parser("review-pack", help="the annual filtering and monitoring review as one printable HTML document")
    p.set_defaults(func=cmd_review_pack)
    p.add_argument("--since", required=True, help="start of the period, e.g. 2025-12-01 or 365d")
    p.add_argument("--until", help="end of the period (default: now)")
    p.add_argument("--out", help="file to write (default: standard output)")
    p.add_argument("--by", help="who is preparing it (default: login name)")
    p.add_argument("--config", default=None)


def cmd_review_pack(args) -> int:
    from zoneinfo import ZoneInfo

    from schoolproxy.records import reports
    from schoolproxy.snapshot import build_snapshot
    from schoolproxy.standards import reviewpack
    cfg, db = open_records(args.config)
    tz = ZoneInfo(cfg.timezone)
    by = actor(cfg, args.by)
    since = when(args.since, tz)
    until = when(args.until, tz) if args.until else dt.datetime.now(dt.timezone.utc)
    if until <= since:
        print("error: --until must be after --since", file=sys.stderr)
        return 2
    snap = build_snapshot(args.config, run_tests=False)
    pack = reviewpack.gather(snap, db, since, until, by)
    reports.audit(db, by, "(review pack)", f"review pack {since:%Y-%m-%d} to {until:%Y-%m-%d} (figures only)")
    html = reviewpack.render(pack)
    if args.out:
        Path(args.out).write_text(html, encoding="utf-8")
        met = sum(i["status"] == "met" for i in pack["standards"])
        print(f"{args.out}: review pack for {cfg.school}, {since.astimezone(tz):%d %b %Y} to "
              f"{until.astimezone(tz):%d %b %Y}; {met} of {len(pack['standards'])} items met. Open it in a browser "
              f"and print to PDF.")
    else:
        sys.stdout.write(html)
    return 0
