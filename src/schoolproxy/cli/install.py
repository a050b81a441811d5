"""``schoolproxy install``: lay out (or bring up to date) the installation on the gateway. ``make install``
runs it after putting the program into /opt/schoolproxy/venv; see docs/install.md."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("install", help="install or upgrade on this gateway (make install runs it): config in "
                                       "/etc/schoolproxy, state in /var/lib/schoolproxy, systemd units, system user")
    p.set_defaults(func=cmd_install)
    p.add_argument("--root", default="/", help="install into this tree instead of / (an image, or a test)")
    p.add_argument("--from", dest="source", default=".", help="the schoolproxy checkout (default: here)")


def cmd_install(args) -> int:
    from schoolproxy.gateway.install import InstallError, Installer
    if os.geteuid() != 0:
        print("error: installing needs root (sudo make install)", file=sys.stderr)
        return 2
    root = Path(args.root).resolve()
    try:
        Installer(root, Path(args.source).resolve()).run()
    except InstallError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    where = "" if root == Path("/") else f" into {root}"
    print(f"schoolproxy installed{where}. Next (docs/install.md):\n"
          "  1. edit /etc/schoolproxy/schoolproxy.yaml (listen_host, upstream, identity, profiles), then: schoolproxy check\n"
          "  2. add local users if you use them: schoolproxy users add NAME --file /etc/schoolproxy/users.htpasswd\n"
          "  3. systemctl enable --now schoolproxy schoolproxy-lists-update.timer\n"
          "     (transparent mode: also schoolproxy-firewall; the console: schoolproxy-console)\n"
          "  4. schoolproxy doctor\n"
          "An upgrade keeps your config and records: restart to use the new version: systemctl restart schoolproxy")
    return 0
