"""``schoolproxy check`` and ``explain``: validate the config, run its policy tests, trace one decision."""

from __future__ import annotations

import datetime as dt
import sys
from zoneinfo import ZoneInfo

from schoolproxy.cli.common import read_datetime
from schoolproxy.filtering.decide import Stage, decide, facts_for_url
from schoolproxy.gateway.modes import identity_warnings
from schoolproxy.identity.profiles import Identity
from schoolproxy.monitoring.pending import nowhere_to_go
from schoolproxy.monitoring.phrases import PhraseError, load_phrase_lists
from schoolproxy.private import exposed
from schoolproxy.snapshot import build_snapshot


def register(sub) -> None:
    p = sub.add_parser("check", help="validate the config and run the policy tests it declares")
    p.set_defaults(func=cmd_check)
    p.add_argument("--config", default=None)

    p = sub.add_parser("explain", help="show how a request would be decided, rule by rule")

    p.set_defaults(func=cmd_explain)
    p.add_argument("--config", default=None)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="logon username")
    who.add_argument("--profile", help="profile name")
    who.add_argument("--ip", help="client IP (subnet map, else the default profile)")
    p.add_argument("--at", help="date/time to decide at, e.g. '25/11/2026 12:30' (default: now)")
    p.add_argument("url")



def cmd_check(args) -> int:
    snap = build_snapshot(args.config, run_tests=False)
    cfg = snap.config
    print(f"{cfg.source}: configuration valid — school {cfg.school!r}")
    print(f"  profiles: {', '.join(f'{n} ({p.role})' for n, p in cfg.profiles.items())}; "
          f"default for the unidentified: {cfg.identity.default_profile}")
    print(f"  lists: {len(snap.lists)} entries in {len(snap.lists.categories)} categories"
          + (f", {snap.lists.stats.invalid} invalid lines skipped" if snap.lists.stats.invalid else ""))
    print(f"  upstream filter: {cfg.proxy.upstream or 'NONE'}")
    warnings = list(snap.policy.warnings) + identity_warnings(cfg)
    if not cfg.proxy.upstream:
        warnings.append("no upstream filter (proxy.upstream) is set: traffic goes straight to the internet, "
                        "not through the school's certified filter")
    scoring = [n for n, p in cfg.profiles.items() if p.content.scan]
    if cfg.alerts.enabled or scoring:
        try:
            load_phrase_lists(cfg.path(cfg.alerts.phrases))
        except PhraseError as e:
            if cfg.alerts.enabled:
                warnings.append(f"phrase lists not loaded, search alerts would be off: {e}")
            if scoring:
                warnings.append(f"phrase lists not loaded: every page for profiles that score content "
                                f"({', '.join(scoring)}) would be blocked, to be safe: {e}")
    warnings += exposed(cfg) + nowhere_to_go(cfg) + undelivered_now(cfg)
    for w in warnings:
        print(f"warning: {w}")
    results = snap.run_tests()
    for r in results:
        print(f"  {r}")
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def undelivered_now(cfg) -> list[str]:
    """High alerts in the records that have reached no one, in one line (none if there are no records yet)."""
    from pathlib import Path

    from schoolproxy.monitoring.pending import undelivered
    from schoolproxy.records import open_database
    if not cfg.alerts.enabled:
        return []
    url = cfg.database_url()
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        return []  # no records yet (and check should not create the file)
    try:
        db = open_database(url)
        try:
            found = undelivered(db, cfg)
        finally:
            db.dispose()
    except Exception as e:
        from schoolproxy.records.database import unreachable
        return [f"alerts: {unreachable(url, e)}, so whether high alerts have reached anyone is not known"]
    if not found:
        return []
    tz = ZoneInfo(cfg.timezone)
    oldest = found[0]["time"] if found[0]["time"].tzinfo else found[0]["time"].replace(tzinfo=dt.timezone.utc)
    return [f"alerts: {len(found)} high or critical alert{'s have' if len(found) != 1 else ' has'} reached no one "
            f"(the oldest from {oldest.astimezone(tz):%d/%m/%Y %H:%M}; {found[-1]['why']}): see them with "
            f"'schoolproxy report weekly --by YOUR-LOGON' and acknowledge each once someone has it in hand"]


def cmd_explain(args) -> int:
    snap = with_expiring_allows(build_snapshot(args.config, run_tests=False))
    policy = snap.policy
    if args.user:
        ident = snap.resolver.identify(args.user)
    elif args.profile:
        if args.profile not in policy.profiles:
            print(f"error: unknown profile {args.profile!r} (profiles: {', '.join(policy.profiles)})",
                  file=sys.stderr)
            return 2
        ident = Identity(None, args.profile, "given", "given")
    else:
        ident = snap.subnets.identity_of(args.ip)
    at = None
    if args.at:
        try:
            at, _ = read_datetime(args.at)
        except ValueError:
            print(f"error: --at {args.at!r}: use a date and time such as '25/11/2026 12:30'", file=sys.stderr)
            return 2
        if at.tzinfo is None:
            at = at.replace(tzinfo=policy.tz)
    who = ident.username or args.ip or "-"  # a user by the one spelling records use (JSmith → jsmith)
    print(f"who:      {who} → profile {ident.profile} ({ident.rule})")
    if at:
        print(f"at:       {at:%a %d %b %Y %H:%M}")
    trace: list[str] = []
    # The same function the proxy calls, on the facts of a browser asking for this URL.
    ruling = decide(snap, ident, facts_for_url(args.url), at, trace)
    decision = ruling.decision
    print(f"url:      {args.url}")
    for line in trace:
        print(f"  {line}")
    print(f"verdict:  {decision.action.upper()} — rule {decision.rule} ({decision.reason})")
    if args.url.lower().startswith("https://") and decision.rule != "invalid-host":
        tunnel = decide(snap, ident, facts_for_url(args.url, Stage.TLS), at)
        print(f"https:    {'passed through (not decrypted)' if tunnel.passthrough else 'intercepted'}")
    _explain_content(snap, ident.profile, args.url, decision)
    return 0


def _explain_content(snap, profile: str, url: str, decision) -> None:
    """The real-time content rule for this profile and site (what happens to an allowed page's text)."""
    from urllib.parse import urlsplit

    from schoolproxy.filtering.hostnames import InvalidHost, normalise_host
    from schoolproxy.monitoring.content import content_rule
    if decision.action != "allow":
        return
    try:
        host, _ = normalise_host(urlsplit(url if "://" in url else "http://" + url).hostname or "")
    except InvalidHost:
        return
    rule = content_rule(snap.config, profile, host, snap.policy.category_names(decision.mask), decision.rule)
    what = {"off": "not scored", "scan": "scored", "no-block": "scored for alerts, never blocked"}[rule.mode]
    print(f"content:  {what} — {rule.why}")


def with_expiring_allows(snap):
    """The snapshot with the expiring allows in force in the records (as the running proxy has them), so
    explain answers for an approved unblock request too. Without the database, the config alone."""
    from dataclasses import replace
    from pathlib import Path
    from zoneinfo import ZoneInfo

    from schoolproxy.filtering.expiring import ExpiringOverrides
    from schoolproxy.records import open_database
    from schoolproxy.records.unblock import active_overrides
    url = snap.config.database_url()
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        return snap  # no records yet (and explain should not create the file)
    try:
        rows = active_overrides(open_database(url))
    except Exception:  # no records database yet, or not reachable from here
        return snap
    return replace(snap, expiring=ExpiringOverrides(rows, ZoneInfo(snap.config.timezone))) if rows else snap
