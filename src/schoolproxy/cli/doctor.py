"""``schoolproxy doctor``: is everything the proxy depends on working? One line per check, OK or PROBLEM."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("doctor", help="check the gateway: ports, certificates, database, directory, mail, "
                                      "upstream, lists, disk, firewall — in plain words")
    p.set_defaults(func=cmd_doctor)
    p.add_argument("--config", default=None)
    p.add_argument("--probe", default="www.gov.uk",
                   help="an HTTPS site the upstream allows, used to check certificates verify (default: www.gov.uk)")


def cmd_doctor(args) -> int:
    from schoolproxy.gateway.doctor import report, run_checks
    print(f"schoolproxy doctor — {args.config}")
    checks = []
    for check in run_checks(args.config, args.probe):  # printed as they finish: some wait on the network
        checks.append(check)
        for line in check.lines():
            print(line, flush=True)
    return report(checks, write=lambda line: print(line) if line.endswith(("found.", "passed.")) else None)
