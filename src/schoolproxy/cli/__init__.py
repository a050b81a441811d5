"""The ``schoolproxy`` command. One module per command group; each adds its parsers in ``register``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from schoolproxy.cli import (admin, alerts, checks, console, decisions, doctor, firewall, install, lists, policy,
                             register, reports, reviewpack, run, unblock)
from schoolproxy.cli.common import find_config
from schoolproxy.config import ConfigError
from schoolproxy.private import private_umask

#: The order commands are listed in ``schoolproxy --help``.
COMMANDS = (run, policy, lists, reports, register, decisions, alerts, unblock, checks, reviewpack, console, admin,
            firewall, doctor, install)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="schoolproxy", description="Web filtering and safeguarding "
                                     "monitoring for schools.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    args = parser.parse_args(argv)
    if args.command != "run":  # `run` logs through mitmproxy's own terminal log
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        if hasattr(args, "config"):
            args.config = find_config(args.config)
        if args.command == "install":  # sets the mode of every file it lays out itself
            return args.func(args)
        with private_umask():  # the database, spool, CA and list cache are the service's alone
            status = args.func(args)
        sys.stdout.flush()  # here, so that a reader gone away (| head -1) is met below, not at exit
        return status
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader stopped reading (| head): nothing is wrong. Point stdout at /dev/null so Python's own
        # flush at exit does not complain either, and exit as a command killed by SIGPIPE does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
