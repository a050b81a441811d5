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
    q.add_argument("--file", required=True, help="users file, e.g. config/users.htpasswd")
    q.add_argument("--password-stdin", action="store_true", help="read the password from standard input")



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
    from schoolproxy.identity.userfile import set_password
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
