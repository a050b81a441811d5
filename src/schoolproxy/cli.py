"""The ``schoolproxy`` command: run, check, explain, lists, users, report, register, purge, db."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import logging
import shutil
import signal
import sys
import tarfile
import tempfile
from pathlib import Path

from .config import ConfigError
from .engine import build_snapshot, worker_from_env
from .phrases import PhraseError, load_phrase_lists

DEFAULT_CONFIG = "config/schoolproxy.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="schoolproxy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="start the filtering proxy")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--listen-host", help="override proxy.listen_host")
    p.add_argument("--listen-port", type=int, help="override proxy.listen_port")
    p.add_argument("--verbose", action="store_true", help="log every request mitmproxy handles")
    p.add_argument("--workers", type=int, default=1,
                   help="proxy processes sharing the port (SO_REUSEPORT); about one per CPU core")

    p = sub.add_parser("check", help="validate the config and run the policy tests it declares")
    p.add_argument("--config", default=DEFAULT_CONFIG)

    p = sub.add_parser("explain", help="show how a request would be decided, rule by rule")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="logon username")
    who.add_argument("--profile", help="profile name")
    who.add_argument("--ip", help="client IP (subnet map, else the default profile)")
    p.add_argument("--at", help="date/time to decide at, e.g. '2026-11-25 12:30' (default: now)")
    p.add_argument("url")

    p = sub.add_parser("lists", help="import or inspect category lists")
    lsub = p.add_subparsers(dest="lists_command", required=True)
    q = lsub.add_parser("import", help="import a UT1 blacklist tree (directory or .tar.gz) unchanged")
    q.add_argument("source")
    q.add_argument("--dest", default="var/lists/ut1", help="where to put it (default: var/lists/ut1)")
    q = lsub.add_parser("stats", help="entries per category in the configured lists")
    q.add_argument("--config", default=DEFAULT_CONFIG)

    p = sub.add_parser("report", help="browsing records: a user's history, what was blocked, one reference")
    rsub = p.add_subparsers(dest="report_command", required=True)
    q = rsub.add_parser("weekly", help="the weekly digest of alerts not sent at the time")
    q.add_argument("--config", default=DEFAULT_CONFIG)
    q.add_argument("--send", action="store_true", help="also queue it for delivery (the running proxy sends it)")
    for name, helptext in (("user", "one user's history"), ("blocked", "blocked requests"),
                           ("ref", "the record behind a block page's reference")):
        q = rsub.add_parser(name, help=helptext)
        q.add_argument("--config", default=DEFAULT_CONFIG)
        q.add_argument("--csv", action="store_true", help="CSV on standard output instead of a table")
        q.add_argument("--viewer", default=None, help="who is looking (for the access audit; default: login name)")
        if name == "user":
            q.add_argument("username")
        if name == "ref":
            q.add_argument("reference")
        else:
            q.add_argument("--since", default="7d", help="start: a date, a date and time, or 24h / 7d ago (default 7d)")
            q.add_argument("--until", default=None, help="end (default: now)")
        if name == "blocked":
            q.add_argument("--category")

    p = sub.add_parser("register", help="the supply and student register: who holds a shared logon when")
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
        q.add_argument("--config", default=DEFAULT_CONFIG)

    p = sub.add_parser("decisions", help="the decision log: why the filtering policy changed, who, when")
    dsub_ = p.add_subparsers(dest="decisions_command", required=True)
    q = dsub_.add_parser("add", help="record a policy change and why it was made")
    q.add_argument("change", help="what changed, e.g. 'YouTube allowed for staff'")
    q.add_argument("--why", required=True, help="the rationale (who asked, the risk considered)")
    q.add_argument("--by", help="who decided (default: login name)")
    q = dsub_.add_parser("list", help="decisions since a date")
    q.add_argument("--since", default="365d", help="7d, 2026-09-01 (default: 365d)")
    for q in dsub_.choices.values():
        q.add_argument("--config", default=DEFAULT_CONFIG)

    p = sub.add_parser("alerts", help="online-safety alerts: the incident log")
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
    for q in asub.choices.values():
        q.add_argument("--config", default=DEFAULT_CONFIG)
        q.add_argument("--viewer", default=None, help=argparse.SUPPRESS)

    p = sub.add_parser("purge", help="delete records older than the retention period now")
    p.add_argument("--config", default=DEFAULT_CONFIG)

    p = sub.add_parser("db", help="records database maintenance")
    dsub = p.add_subparsers(dest="db_command", required=True)
    q = dsub.add_parser("upgrade", help="create or migrate the records database schema")
    q.add_argument("--config", default=DEFAULT_CONFIG)

    p = sub.add_parser("users", help="manage the local users file (bcrypt)")
    usub = p.add_subparsers(dest="users_command", required=True)
    q = usub.add_parser("add", help="add a user or set their password")
    q.add_argument("username")
    q.add_argument("--file", required=True, help="users file, e.g. config/users.htpasswd")
    q.add_argument("--password-stdin", action="store_true", help="read the password from standard input")

    args = parser.parse_args(argv)
    if args.command != "run":  # `run` logs through mitmproxy's own terminal log
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return {"run": cmd_run, "check": cmd_check, "explain": cmd_explain, "lists": cmd_lists,
                "users": cmd_users, "report": cmd_report, "register": cmd_register, "decisions": cmd_decisions, "alerts": cmd_alerts, "purge": cmd_purge, "db": cmd_db}[args.command](args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def cmd_check(args) -> int:
    snap = build_snapshot(args.config, run_tests=False)
    cfg = snap.config
    print(f"{cfg.source}: configuration valid — school {cfg.school!r}")
    print(f"  profiles: {', '.join(f'{n} ({p.role})' for n, p in cfg.profiles.items())}; "
          f"default for the unidentified: {cfg.identity.default_profile}")
    print(f"  lists: {len(snap.lists)} entries in {len(snap.lists.categories)} categories"
          + (f", {snap.lists.stats.invalid} invalid lines skipped" if snap.lists.stats.invalid else ""))
    print(f"  upstream filter: {cfg.proxy.upstream or 'NONE'}")
    warnings = list(snap.policy.warnings)
    if not cfg.proxy.upstream:
        warnings.append("no upstream filter (proxy.upstream) is set: traffic goes straight to the internet, "
                        "not through the school's certified filter")
    if cfg.alerts.enabled:
        try:
            load_phrase_lists(cfg.path(cfg.alerts.phrases))
        except PhraseError as e:
            warnings.append(f"phrase lists not loaded, search alerts would be off: {e}")
    for w in warnings:
        print(f"warning: {w}")
    results = snap.run_tests()
    for r in results:
        print(f"  {r}")
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def cmd_explain(args) -> int:
    snap = build_snapshot(args.config, run_tests=False)
    policy = snap.policy
    if args.user:
        ident = snap.resolver.identify(args.user)
    elif args.profile:
        if args.profile not in policy.profiles:
            print(f"error: unknown profile {args.profile!r} (profiles: {', '.join(policy.profiles)})",
                  file=sys.stderr)
            return 2
        ident = None
        profile, why = args.profile, "given"
    else:
        ident = snap.subnets.lookup(args.ip) or snap.resolver.unidentified()
    if ident is not None:
        profile, why = ident.profile, ident.rule
    at = None
    if args.at:
        try:
            at = dt.datetime.fromisoformat(args.at)
        except ValueError:
            print(f"error: --at {args.at!r}: use a date and time such as '2026-11-25 12:30'", file=sys.stderr)
            return 2
    who = args.user or args.ip or "-"
    print(f"who:      {who} → profile {profile} ({why})")
    if at:
        print(f"at:       {at:%a %d %b %Y %H:%M}")
    trace: list[str] = []
    decision = policy.decide_url(profile, args.url, at, trace)
    print(f"url:      {args.url}")
    for line in trace:
        print(f"  {line}")
    print(f"verdict:  {decision.action.upper()} — rule {decision.rule} ({decision.reason})")
    from urllib.parse import urlsplit
    parts = urlsplit(args.url if "://" in args.url else "http://" + args.url)
    if parts.scheme == "https" and decision.rule != "invalid-host":
        from .hostnames import normalise_host
        host, _ = normalise_host(parts.hostname or "")
        tls = "passed through (not decrypted)" if policy.passthrough(profile, host, decision.mask) else "intercepted"
        print(f"https:    {tls}")
    return 0


def cmd_lists(args) -> int:
    if args.lists_command == "stats":
        snap = build_snapshot(args.config, run_tests=False)
        stats = snap.lists.stats
        print(f"{'category':<24} {'domains':>10} {'urls':>8}")
        for c in snap.lists.categories:
            print(f"{c:<24} {stats.domains.get(c, 0):>10} {stats.urls.get(c, 0):>8}")
        print(f"total entries: {len(snap.lists)}; invalid lines skipped: {stats.invalid}; "
              f"expression files ignored: {stats.expressions_ignored}")
        return 0
    return import_ut1(Path(args.source), Path(args.dest))


def import_ut1(source: Path, dest: Path) -> int:
    """Put a UT1 tree (directory or tarball) at ``dest`` unchanged, after checking it compiles."""
    from .lists import load_lists
    with tempfile.TemporaryDirectory(dir=dest.parent if dest.parent.exists() else None) as tmp:
        if source.is_file():
            try:
                with tarfile.open(source) as tar:
                    tar.extractall(tmp, filter="data")
            except (tarfile.TarError, OSError) as e:
                print(f"error: {source}: not a readable tar archive: {e}", file=sys.stderr)
                return 2
            root = _category_root(Path(tmp))
        elif source.is_dir():
            root = _category_root(source)
        else:
            print(f"error: {source}: no such file or directory", file=sys.stderr)
            return 2
        if root is None:
            print(f"error: {source}: no UT1 categories found (expected <category>/domains files)", file=sys.stderr)
            return 2
        lists = load_lists([root], {})
        staged = Path(tmp) / "staged"
        shutil.copytree(root, staged, symlinks=False)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.move(staged, dest)
    print(f"imported {len(lists)} entries in {len(lists.categories) - 1} categories into {dest}")
    print("add it to lists.sources in your config, then reload (SIGHUP) — UT1 names are mapped to ours "
          "through the aliases in filterlists/categories.yaml")
    return 0


def _category_root(top: Path) -> Path | None:
    """The directory whose subdirectories hold ``domains`` files (UT1 tarballs nest it in blacklists/)."""
    for d in [top, *sorted(p for p in top.rglob("*") if p.is_dir())]:
        if any((c / "domains").is_file() for c in d.iterdir() if c.is_dir()):
            return d
    return None


def _database(config_path: str):
    from .config import load_config
    from .records import open_database, upgrade
    cfg = load_config(config_path)
    db = open_database(cfg.database_url())
    upgrade(db)
    return cfg, db


def _when(text: str, tz, day: dt.datetime | None = None) -> dt.datetime:
    """'2026-11-25', '2026-11-25 08:30', '24h'/'7d' ago, or '08:30' on ``day``'s date (default today),
    in the school's time zone."""
    text = text.strip()
    units = {"h": 3600, "d": 86400, "w": 7 * 86400}
    if text[:-1].isdigit() and text[-1:] in units:
        return dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        if len(text) <= 5 and ":" in text:
            t = dt.time.fromisoformat(text.zfill(5))
            day = day or dt.datetime.now(tz)
            return day.astimezone(tz).replace(hour=t.hour, minute=t.minute, second=0, microsecond=0)
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"cannot read the time {text!r}: use e.g. 08:30, 2026-11-25, '2026-11-25 08:30', "
                          f"24h or 7d") from None
    return when if when.tzinfo else when.replace(tzinfo=tz)


def cmd_report(args) -> int:
    from zoneinfo import ZoneInfo
    from .records import reports
    cfg, db = _database(args.config)
    tz = ZoneInfo(cfg.timezone)
    if args.report_command == "weekly":
        return _weekly(cfg, db, tz, args.send)
    viewer = args.viewer or getpass.getuser()
    if args.report_command == "ref":
        rows, subject, what = reports.by_ref(db, args.reference), args.reference, "record by reference"
    else:
        since = _when(args.since, tz)
        until = _when(args.until, tz) if args.until else dt.datetime.now(dt.timezone.utc)
        span = f"{since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M}"
        if args.report_command == "user":
            rows, subject, what = reports.user_history(db, args.username, since, until), args.username, f"history {span}"
        else:
            rows = reports.blocked(db, since, until, args.category)
            subject, what = "(all users)", f"blocked {args.category or 'all categories'} {span}"
    reports.audit(db, viewer, subject, what)
    rows = reports.name_people(db, rows, _shared_logon_test(cfg))
    if args.csv:
        reports.write_csv(rows, sys.stdout, tz=tz)
    else:
        print(reports.format_table(rows, tz=tz))
    return 0 if rows or args.report_command != "ref" else 1


def _weekly(cfg, db, tz, send: bool) -> int:
    from .alerts import message, store
    from .alerts.service import digest_time
    now = dt.datetime.now(tz)
    since = now - dt.timedelta(days=7)
    if send:
        subject, text, queued = store.queue_digest(db, cfg, since, now)
        print(text)
        print(f"queued for {queued} recipient(s)" if queued else "nothing new to send")
        return 0
    rows = [a for a in store.list_alerts(db, since, "all") if a["severity"] not in cfg.alerts.immediate]
    print(message.digest(list(reversed(rows)), cfg.school, tz, since, now)[1])
    nxt = digest_time(now, cfg.alerts.digest.day, cfg.alerts.digest.at)
    if nxt <= now:
        nxt += dt.timedelta(days=7)
    print(f"(sent automatically {nxt:%a %d %b %H:%M} by the running proxy)")
    return 0


def cmd_alerts(args) -> int:
    from zoneinfo import ZoneInfo
    from .alerts import message, store
    from .records import reports
    cfg, db = _database(args.config)
    tz = ZoneInfo(cfg.timezone)
    viewer = getattr(args, "by", None) or args.viewer or getpass.getuser()
    cmd = args.alerts_command
    try:
        if cmd == "list":
            rows = store.list_alerts(db, _when(args.since, tz), args.status)
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
            rows = store.list_alerts(db, _when(args.since, tz), args.status, limit=100_000)
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
    from .alerts import message, store
    from .records.reports import write_csv
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


def _shared_logon_test(cfg):
    """(username, profile) → is this a shared logon (Supply1)? By pattern or a supply-role profile."""
    from .identity import ProfileResolver
    from .register import is_shared_logon
    resolver = ProfileResolver(cfg)

    def shared(username: str, profile: str) -> bool:
        p = cfg.profiles.get(profile)
        return is_shared_logon(resolver.resolve(username)[1], p.role if p else None)
    return shared


def cmd_decisions(args) -> int:
    from .records.decisions import DecisionError, add_decision, list_decisions
    cfg, db = _database(args.config)
    if args.decisions_command == "add":
        try:
            n = add_decision(db, args.change, args.why, args.by or getpass.getuser())
        except DecisionError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"decision {n} recorded")
        return 0
    from zoneinfo import ZoneInfo
    rows = list_decisions(db, _when(args.since, ZoneInfo(cfg.timezone)))
    if not rows:
        print(f"no decisions recorded since {args.since}")
    for r in rows:
        print(f"{r['id']:>4}  {r['time']:%Y-%m-%d %H:%M}  {r['author']}: {r['change']}\n      why: {r['rationale']}")
    return 0


def cmd_register(args) -> int:
    from zoneinfo import ZoneInfo
    from .records.visits import RegisterError, add_visit, end_visit, list_visits, load_register
    from .register import NO_ONE
    cfg, db = _database(args.config)
    tz = ZoneInfo(cfg.timezone)
    now = dt.datetime.now(tz)
    by = getattr(args, "by", None) or getpass.getuser()
    try:
        if args.register_command == "add":
            starts = _when(args.start, tz, now) if args.start else now
            ends = _when(args.end, tz, starts) if args.end else \
                starts.replace(hour=23, minute=59, second=59, microsecond=0)
            v = add_visit(db, args.logon, args.person, starts, ends, args.class_taught, by)
            print(f"registered: {v.logon} is {v.person}"
                  f"{f' ({v.class_taught})' if v.class_taught else ''} from {v.starts.astimezone(tz):%a %d %b %H:%M} "
                  f"to {v.ends.astimezone(tz):%a %d %b %H:%M} (visit {v.id})")
        elif args.register_command == "end":
            at = _when(args.at, tz, now) if args.at else now
            v = end_visit(db, args.logon, at)
            print(f"ended: {v.logon} held by {v.person} until {at:%a %d %b %H:%M} (visit {v.id})")
        elif args.register_command == "who":
            at = _when(args.at, tz, now) if args.at else now
            v = load_register(db).who(args.logon, at)
            print(f"{args.logon} at {at:%a %d %b %H:%M}: {v.person if v else NO_ONE}")
            return 0 if v else 1
        else:
            day = _when(args.date, tz, now) if args.date else now
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



def cmd_purge(args) -> int:
    from .records.purge import purge
    cfg, db = _database(args.config)
    done = purge(db, cfg.records.retention_days, cfg.records.alert_retention_days)
    print(f"removed {done['requests']} request records older than {cfg.records.retention_days} days and "
          f"{done['alerts']} alerts older than {cfg.records.alert_retention_days} days")
    return 0


def cmd_db(args) -> int:
    from .records.database import current_revision
    cfg, db = _database(args.config)
    print(f"records database at revision {current_revision(db)} (latest)")
    return 0


def cmd_users(args) -> int:
    from .userfile import set_password
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.username}: ")
        if password != getpass.getpass("again: "):
            print("error: passwords do not match", file=sys.stderr)
            return 2
    try:
        set_password(Path(args.file), args.username, password)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.file}: password set for {args.username} (bcrypt); reload the proxy to apply")
    return 0


def _migrate_before_workers(cfg) -> None:
    """Bring the database schema up to date once, before the workers start using it."""
    if not (cfg.records.enabled or cfg.alerts.enabled):
        return
    from .records import open_database, upgrade
    try:
        upgrade(open_database(cfg.database_url()))
    except Exception as e:  # the workers spool records until the database can be used
        print(f"schoolproxy: cannot prepare the records database yet (records are spooled meanwhile): "
              f"{str(e).splitlines()[0][:300]}", file=sys.stderr, flush=True)


def cmd_run(args) -> int:
    from mitmproxy import exceptions, options

    from .proxy.master import lean_master
    from .proxy.workers import listen_with_reuse_port, supervise

    if not 1 <= args.workers <= 64:
        print("error: --workers must be between 1 and 64", file=sys.stderr)
        return 2
    snap = build_snapshot(args.config)  # fail fast, with a clear message, before starting anything
    cfg = snap.config
    worker, workers = worker_from_env()
    if args.workers > 1 and workers == 1:  # the supervisor: the lists are compiled now, once, for all
        _migrate_before_workers(cfg)
        return supervise([sys.executable, "-c", "import sys; from schoolproxy.cli import main; sys.exit(main())",
                          *sys.argv[1:]], args.workers)
    if workers > 1:
        listen_with_reuse_port()

    # mitmproxy's terminal log filters by its own verbosity option; let records reach it, line by line
    # (systemd's journal should see each line as it happens).
    logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.INFO)
    sys.stdout.reconfigure(line_buffering=True)
    if not args.verbose:  # one line per client connection is noise on a school's gateway
        logging.getLogger("mitmproxy.proxy.server").setLevel(logging.WARNING)

    async def serve() -> int:
        opts = options.Options()
        master = lean_master(opts, verbose=args.verbose)
        ca_dir = cfg.path(cfg.proxy.ca_dir)
        ca_dir.mkdir(parents=True, exist_ok=True)
        try:
            opts.update(confdir=str(ca_dir), listen_host=args.listen_host or cfg.proxy.listen_host,
                        mode=[f"upstream:{cfg.proxy.upstream}"] if cfg.proxy.upstream else ["regular"],
                        listen_port=args.listen_port or cfg.proxy.listen_port,
                        schoolproxy_config=str(args.config))
        except exceptions.OptionsError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, master.shutdown)
        ca = Path(opts.confdir).expanduser() / "mitmproxy-ca-cert.pem"
        print(f"schoolproxy{f' worker {worker}' if workers > 1 else ''}: explicit proxy on "
              f"{opts.listen_host}:{opts.listen_port}; "
              f"upstream filter: {cfg.proxy.upstream or 'none (direct)'}; CA certificate for clients: {ca}",
              flush=True)
        await master.run()
        return 0

    return asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
