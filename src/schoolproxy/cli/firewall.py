"""``schoolproxy firewall``: the nftables rules of transparent mode — show, apply, check, remove."""

from __future__ import annotations

import sys

from schoolproxy.config import load_config


def register(sub) -> None:
    p = sub.add_parser("firewall", help="the gateway's nftables rules for transparent mode")
    p.set_defaults(func=cmd_firewall)
    fsub = p.add_subparsers(dest="firewall_command", required=True)
    for name, text in (("show", "print the rules for this config (nft -f can load them)"),
                       ("apply", "apply the rules (replaces only schoolproxy's own table; safe to repeat)"),
                       ("status", "are the rules in force, and the same as this config's?"),
                       ("remove", "remove the rules (devices without proxy settings are then not filtered)")):
        q = fsub.add_parser(name, help=text)
        q.add_argument("--config", default=None)


def cmd_firewall(args) -> int:
    from schoolproxy.gateway import firewall
    cfg = load_config(args.config)
    try:
        if args.firewall_command == "remove":
            removed = firewall.remove()
            print("removed the schoolproxy firewall rules" if removed else "no schoolproxy firewall rules were in force")
            return 0
        rules = firewall.ruleset(cfg)
        if args.firewall_command == "show":
            sys.stdout.write(rules)
            return 0
        if args.firewall_command == "apply":
            firewall.apply(rules)
            t = cfg.proxy.transparent
            where = ", ".join([*t.lan_interfaces, *(str(n) for n in t.lan_subnets)])
            print(f"applied: web traffic from {where} goes to the proxy on port {t.port}; "
                  "QUIC, DNS over TLS and IPv6 web traffic from there are refused")
            return 0
        return _status(firewall, rules)
    except firewall.FirewallError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _status(firewall, rules: str) -> int:
    now = firewall.current()
    if now is None:
        print("NOT APPLIED: no schoolproxy rules are in force — devices without proxy settings are not "
              "filtered (schoolproxy firewall apply)")
        return 1
    if not firewall.same_as_config(now, rules):
        print("DIFFERENT: the rules in force are not this config's (schoolproxy firewall apply)")
        return 1
    print("applied, and the same as this config's")
    return 0
