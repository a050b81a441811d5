"""``schoolproxy purge``, ``db`` and ``users``: retention, the schema, the local users file."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

from schoolproxy.cli.common import open_records


def register(sub) -> None:
    p = sub.add_parser("purge", help="delete records older than the retention period now")
    p.set_defaults(func=cmd_purge)
    p.add_argument("--config", default=None)

    p = sub.add_parser("db", help="records database maintenance")

    p.set_defaults(func=cmd_db)
    dsub = p.add_subparsers(dest="db_command", required=True)
    q = dsub.add_parser("upgrade", help="create or migrate the records database schema")
    q.add_argument("--config", default=None)

    p = sub.add_parser("users", help="manage the local users file (bcrypt)")

    p.set_defaults(func=cmd_users)
    usub = p.add_subparsers(dest="users_command", required=True)
    q = usub.add_parser("add", help="add a user or set their password")
    q.add_argument("username")
    q.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of standard input (scripts, no terminal)")
    q = usub.add_parser("remove", help="take a user out of the users file")
    q.add_argument("username")
    usub.add_parser("list", help="the users in the users file (names only)")
    for q in usub.choices.values():
        q.add_argument("--file", help="the users file (default: identity.proxy_auth.users_file of the config)")
        # Not --config's usual "config": with --file, no config need be found.
        q.add_argument("--config", dest="users_config", default=None)



def cmd_purge(args) -> int:
    from schoolproxy.records.purge import purge
    cfg, db = open_records(args.config)
    done = purge(db, cfg.records.retention_days, cfg.records.alert_retention_days)
    print(f"removed {done['requests']} request records older than {cfg.records.retention_days} days and "
          f"{done['alerts']} alerts older than {cfg.records.alert_retention_days} days")
    return 0


def cmd_db(args) -> int:
    from schoolproxy.records.database import current_revision
    cfg, db = open_records(args.config)
    print(f"records database at revision {current_revision(db)} (latest)")
    return 0


def cmd_users(args) -> int:
    from schoolproxy.identity.userfile import read_users, remove_user, set_password
    path = _users_file(args)
    if args.users_command == "list":
        for name in read_users(path):  # names only: never a hash
            print(name)
        return 0
    if args.users_command == "remove":
        if not remove_user(path, args.username):
            print(f"error: {path} has no user {args.username!r}", file=sys.stderr)
            return 1
        print(f"{path}: {args.username} removed; reload the proxy to apply")
        return 0
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif not sys.stdin.isatty():
        print("error: no terminal to ask for the password on: give it on standard input with --password-stdin",
              file=sys.stderr)
        return 2
    else:
        password = getpass.getpass(f"password for {args.username}: ")
        if password != getpass.getpass("again: "):
            print("error: passwords do not match", file=sys.stderr)
            return 2
    try:
        set_password(path, args.username, password)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{path}: password set for {args.username} (bcrypt); reload the proxy to apply")
    return 0


def _users_file(args) -> Path:
    """--file, else the users file the config (--config, or found as every command finds it) names."""
    from schoolproxy.cli.common import find_config
    from schoolproxy.config import ConfigError, load_config
    if args.file:
        return Path(args.file)
    cfg = load_config(find_config(args.users_config))
    pa = cfg.identity.proxy_auth
    if pa is None or pa.users_file is None:
        raise ConfigError(f"{cfg.source} names no users file (identity.proxy_auth.users_file): give --file")
    return cfg.path(pa.users_file)
