"""``schoolproxy checks``: test the running filter now and keep the record (the checks log)."""

from __future__ import annotations

import datetime as dt

from schoolproxy.cli.common import actor, open_records, when


def register(sub) -> None:
    p = sub.add_parser("checks", help="test the running filter (policy tests and live self-tests) and keep the record")
    p.set_defaults(func=cmd_checks)
    csub = p.add_subparsers(dest="checks_command", required=True)
    q = csub.add_parser("run", help="run every check now, record it, and alert if one fails")
    q.add_argument("--by", help="who is running it, e.g. a logon in people: (default: login name); "
                                "the timer says 'weekly timer'")
    q = csub.add_parser("list", help="the checks log: runs since a date, with what failed")
    q.add_argument("--since", default="90d", help="7d, 2026-09-01 (default: 90d)")
    q.add_argument("--all", action="store_true", help="show every check of each run, not only failures")
    for q in csub.choices.values():
        q.add_argument("--config", default=None)


def cmd_checks(args) -> int:
    from zoneinfo import ZoneInfo

    from schoolproxy.records import checks as log
    from schoolproxy.snapshot import build_snapshot
    from schoolproxy.standards import checks
    cfg, db = open_records(args.config)
    tz = ZoneInfo(cfg.timezone)
    if args.checks_command == "run":
        by = actor(cfg, args.by)
        started = dt.datetime.now(dt.timezone.utc)
        snap = build_snapshot(args.config, run_tests=False)
        results = checks.run_checks(snap, db)
        run_id = log.record_run(db, by, started, results)
        for r in results:
            print(f"  {r.outcome.upper():<4}  {r.what}\n        {r.detail}")
        failed = [r for r in results if r.failed]
        tested = sum(r.outcome != "skip" for r in results)
        print(f"checks run {run_id} by {by}: {tested - len(failed)} of {tested} passed"
              + (f", {len(failed)} FAILED" if failed else "")
              + (f", {len(results) - tested} not tested" if len(results) > tested else ""))
        if failed:
            ref, new = checks.raise_failure_alert(db, cfg, run_id, by, results)
            log.set_alert(db, run_id, ref)
            print(f"alert {ref} {'raised' if new else 'already open, repeat counted'} for the network manager "
                  f"and the DSL")
            return 1
        return 0
    runs = log.list_runs(db, when(args.since, tz))
    if not runs:
        print(f"no checks recorded since {args.since}")
    results = log.results_of(db, [r["id"] for r in runs])
    for run in runs:
        t = run["started_at"] if run["started_at"].tzinfo else run["started_at"].replace(tzinfo=dt.timezone.utc)
        status = "passed" if run["passed"] else f"FAILED ({run['failed']})"
        alert = f"  alert {run['alert_ref']}" if run["alert_ref"] else ""
        print(f"{run['id']:>5}  {t.astimezone(tz):%Y-%m-%d %H:%M}  {status:<12} {run['tested']:>3} tested  "
              f"by {run['run_by']}{alert}")
        for r in results[run["id"]]:
            if args.all or r["outcome"] == "fail":
                print(f"         {r['outcome'].upper():<4}  {r['what']}: {r['detail']}")
    return 0
