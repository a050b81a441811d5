"""``schoolproxy install``: the layout on the gateway, made or brought up to date (``make install`` runs it
after putting the program in its virtualenv).

    /opt/schoolproxy/venv/                  the program (a virtualenv; replaced on upgrade)
    /opt/schoolproxy/share/                 shipped lists, phrase lists, deploy kit, docs, config example
    /usr/local/bin/schoolproxy              the command
    /etc/schoolproxy/schoolproxy.yaml       the config: copied once from the example, never overwritten
    /etc/schoolproxy/users.htpasswd         local users (empty at first), feed-secret: private
    /etc/default/schoolproxy                service settings (workers), kept
    /etc/systemd/system/schoolproxy*        units (replaced on upgrade; change them with systemctl edit)
    /etc/logrotate.d/schoolproxy
    /var/lib/schoolproxy/                   state: database, spool, CA, lists, list cache (the service's own)
    /var/log/schoolproxy/                   the list-update history

The config is the example (``config/schoolproxy.yaml``) with its relative paths pointed at these places.
Secrets (``/etc/schoolproxy`` files, the CA key) are readable by root and the service user only. An
upgrade keeps the config and all state, refreshes the program, the units and the shipped lists, makes
every file under the state directory the service's own again, and migrates the records database.

``root`` installs into another tree (``make install DESTDIR=...``): the service user is added to that
tree's /etc/passwd and files there get its uid, so a test (or an image build) can check the result.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

PREFIX = Path("/opt/schoolproxy")
CONFIG_DIR = Path("/etc/schoolproxy")
STATE_DIR = Path("/var/lib/schoolproxy")
LOG_DIR = Path("/var/log/schoolproxy")
USER = "schoolproxy"
UNITS = ("schoolproxy.service", "schoolproxy-console.service", "schoolproxy-lists-update.service",
         "schoolproxy-lists-update.timer", "schoolproxy-firewall.service")
STATE_SUBDIRS = ("ca", "spool", "lists", "lists/ut1", "lists-cache")


class InstallError(Exception):
    """The installation cannot go on; the message says why and what to do."""


def installed_config(example: str) -> str:
    """The example config with its relative paths pointed at the installed layout."""
    share = PREFIX / "share"
    text = example
    replacements = [
        ("sqlite:///../var/", f"sqlite:///{STATE_DIR}/"),
        ("../var/log/", f"{LOG_DIR}/"),
        ("../var/", f"{STATE_DIR}/"),
        ("../filterlists", f"{share}/filterlists"),
        ("--file config/users.htpasswd", f"--file {CONFIG_DIR}/users.htpasswd"),
        ("--config config/schoolproxy.yaml", ""),
    ]
    for old, new in replacements:
        text = text.replace(old, new)
    # Daily list updates are on in an installation: the update's destination joins the list sources.
    text, n = re.subn(r"^(\s*)# (update: \{dest: " + re.escape(str(STATE_DIR)) + r"/lists/ut1.*)$", r"\1\2",
                      text, count=1, flags=re.M)
    text, m = re.subn(r"^(\s*sources: \[)([^\]]*)\]", lambda mo: f"{mo[1]}{mo[2]}, {STATE_DIR}/lists/ut1]",
                      text, count=1, flags=re.M)
    if n != 1 or m != 1:
        raise InstallError("the example config has no lists.sources / commented lists.update line to enable "
                           "(config/schoolproxy.yaml changed shape): fix gateway/install.py")
    header = ("# Installed by `make install`: the program in /opt/schoolproxy, state in /var/lib/schoolproxy.\n"
              "# This file is yours: upgrades never change it (the current example is\n"
              "# /opt/schoolproxy/share/schoolproxy.yaml.example). Check it with: schoolproxy check\n")
    return header + text


class Installer:
    def __init__(self, root: Path, source: Path, log: Callable[[str], None] = print):
        self.root = root
        self.source = source
        self.log = log
        self.uid = self.gid = 0

    def at(self, path: Path) -> Path:
        """``path`` inside the tree being installed into."""
        return self.root / path.relative_to("/")

    # -- the whole thing --------------------------------------------------------------------------------
    def run(self) -> None:
        self._check_source()
        self._check_python()
        self.uid, self.gid = self._service_user()
        self._shared_files()
        self._config()
        self._state()
        self._system_files()
        self._migrate()
        self._finish()

    def _check_source(self) -> None:
        for need in ("config/schoolproxy.yaml", "filterlists/categories.yaml", "deploy/systemd/schoolproxy.service"):
            if not (self.source / need).is_file():
                raise InstallError(f"{self.source} is not a schoolproxy checkout ({need} missing): run "
                                   "`make install` in the checkout, or give --from")

    def _check_python(self) -> None:
        """The service user must be able to run the virtualenv's Python: not one under /root or /home."""
        base = Path(sys.base_prefix)
        private = [p for p in (Path("/root"), Path("/home"), Path("/run/user")) if base.is_relative_to(p)]
        if private and self.root == Path("/"):
            raise InstallError(f"the virtualenv's Python lives in {base}, which the service user cannot read "
                               "(and the units' ProtectHome hides): install Python 3.12+ outside /root and /home, "
                               "e.g. UV_PYTHON_INSTALL_DIR=/opt/python uv python install 3.12 (docs/install.md)")
        if private:
            self.log(f"note: the virtualenv's Python is in {base}; on a real gateway it must be outside /root and /home")

    # -- the service user -------------------------------------------------------------------------------
    def _service_user(self) -> tuple[int, int]:
        found = self._lookup()
        if found is None:
            useradd = shutil.which("useradd")
            if useradd is None:
                raise InstallError("useradd is not installed (apt-get install passwd)")
            argv = [useradd, "--system", "--user-group", "--home-dir", str(STATE_DIR), "--no-create-home",
                    "--shell", "/usr/sbin/nologin", "--comment", "schoolproxy web filter", USER]
            if self.root != Path("/"):
                argv[1:1] = ["--root", str(self.root)]
            r = subprocess.run(argv, capture_output=True, text=True)
            if r.returncode != 0:
                raise InstallError(f"cannot create the system user {USER}: {r.stderr.strip()}")
            self.log(f"created the system user {USER}")
            found = self._lookup()
            if found is None:
                raise InstallError(f"useradd said it created {USER}, but it is not in {self.at(Path('/etc/passwd'))}")
        return found

    def _lookup(self) -> tuple[int, int] | None:
        if self.root == Path("/"):
            try:
                user = pwd.getpwnam(USER)
                return user.pw_uid, grp.getgrnam(USER).gr_gid
            except KeyError:
                return None
        uid = gid = None
        for line in _lines(self.at(Path("/etc/passwd"))):
            f = line.split(":")
            if len(f) > 3 and f[0] == USER:
                uid = int(f[2])
        for line in _lines(self.at(Path("/etc/group"))):
            f = line.split(":")
            if len(f) > 2 and f[0] == USER:
                gid = int(f[2])
        return (uid, gid) if uid is not None and gid is not None else None

    # -- what ships -------------------------------------------------------------------------------------
    def _shared_files(self) -> None:
        share = self.at(PREFIX / "share")
        share.mkdir(parents=True, exist_ok=True)
        for name, target in (("filterlists", share / "filterlists"), ("deploy", share / "deploy")):
            staged = target.with_name(f".{target.name}.new")
            shutil.rmtree(staged, ignore_errors=True)
            shutil.copytree(self.source / name, staged, symlinks=False)
            _tree_mode(staged, 0o755, 0o644)
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            if target.exists():
                target.rename(old)
            staged.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        docs = share / "doc"
        docs.mkdir(exist_ok=True)
        for doc in ("docs/install.md", "README.md"):
            if (self.source / doc).is_file():
                shutil.copyfile(self.source / doc, docs / Path(doc).name)
        example = installed_config((self.source / "config" / "schoolproxy.yaml").read_text(encoding="utf-8"))
        (share / "schoolproxy.yaml.example").write_text(example, encoding="utf-8")
        _tree_mode(share, 0o755, 0o644)
        self._link_command()

    def _link_command(self) -> None:
        link = self.at(Path("/usr/local/bin/schoolproxy"))
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(PREFIX / "venv" / "bin" / "schoolproxy")

    # -- the config (copied once) -----------------------------------------------------------------------
    def _config(self) -> None:
        etc = self.at(CONFIG_DIR)
        etc.mkdir(parents=True, exist_ok=True)
        self._own(etc, 0o750, group_only=True)
        config = etc / "schoolproxy.yaml"
        if config.exists():
            self.log(f"kept your config {CONFIG_DIR / 'schoolproxy.yaml'} (the current example: "
                     f"{PREFIX / 'share' / 'schoolproxy.yaml.example'})")
        else:
            config.write_text((self.at(PREFIX / "share") / "schoolproxy.yaml.example").read_text(encoding="utf-8"),
                              encoding="utf-8")
            self.log(f"wrote the config {CONFIG_DIR / 'schoolproxy.yaml'} — edit it for this school (docs/install.md)")
        users = etc / "users.htpasswd"
        if not users.exists():
            users.write_text("")  # no demo accounts on a gateway: add users with `schoolproxy users add`
        secret = etc / "feed-secret"
        if not secret.exists():
            secret.write_text(secrets.token_hex(24) + "\n")
        # Everything in /etc/schoolproxy is the school's settings and secrets: root writes, the service reads.
        for f in etc.iterdir():
            if f.is_file() and not f.is_symlink():
                self._own(f, 0o640, group_only=True)
        defaults = self.at(Path("/etc/default/schoolproxy"))
        if not defaults.exists():
            defaults.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.source / "deploy" / "default" / "schoolproxy", defaults)
            defaults.chmod(0o644)

    # -- state (the service's own) ----------------------------------------------------------------------
    def _state(self) -> None:
        state = self.at(STATE_DIR)
        state.mkdir(parents=True, exist_ok=True)
        for sub in STATE_SUBDIRS:
            d = state / sub
            if not d.exists() and not d.is_symlink():
                d.mkdir(parents=True)
        # Whatever root left there (a report run by hand, an old install) becomes the service's again.
        for dirpath, dirnames, filenames in os.walk(state):
            os.chown(dirpath, self.uid, self.gid)
            os.chmod(dirpath, 0o700)
            for name in filenames:
                path = os.path.join(dirpath, name)
                if not os.path.islink(path):
                    os.chown(path, self.uid, self.gid)
                    os.chmod(path, 0o600)
            for name in dirnames:
                path = os.path.join(dirpath, name)
                if os.path.islink(path):
                    os.lchown(path, self.uid, self.gid)
        logs = self.at(LOG_DIR)
        logs.mkdir(parents=True, exist_ok=True)
        self._own(logs, 0o750)

    def _own(self, path: Path, mode: int, group_only: bool = False) -> None:
        """root:schoolproxy for the school's settings (``group_only``), schoolproxy:schoolproxy otherwise."""
        os.chown(path, 0 if group_only else self.uid, self.gid)
        os.chmod(path, mode)

    # -- systemd, logrotate -----------------------------------------------------------------------------
    def _system_files(self) -> None:
        units = self.at(Path("/etc/systemd/system"))
        units.mkdir(parents=True, exist_ok=True)
        for unit in UNITS:
            shutil.copyfile(self.source / "deploy" / "systemd" / unit, units / unit)
            (units / unit).chmod(0o644)
        rotate = self.at(Path("/etc/logrotate.d/schoolproxy"))
        rotate.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.source / "deploy" / "logrotate" / "schoolproxy", rotate)
        rotate.chmod(0o644)

    # -- the records database ---------------------------------------------------------------------------
    def _migrate(self) -> None:
        from schoolproxy.config import ConfigError, load_config
        from schoolproxy.records.database import current_revision, open_database, upgrade
        config_path = self.at(CONFIG_DIR / "schoolproxy.yaml")
        try:
            cfg = load_config(config_path)
        except ConfigError as e:
            self.log(f"warning: the config does not load, so the database was not migrated (the proxy does it "
                     f"when it starts): {str(e).splitlines()[0]}")
            return
        url = cfg.records.database
        if url.startswith("sqlite:////"):  # an absolute SQLite path: inside the tree being installed into
            db_file = Path(url[len("sqlite:///"):])
            url = f"sqlite:///{self.at(db_file)}"
        elif url.startswith("sqlite:///"):
            db_file = cfg.path(Path(url[len("sqlite:///"):]))
            url = f"sqlite:///{db_file}"
        try:
            engine = open_database(url)
            before = current_revision(engine)
            upgrade(engine)
            after = current_revision(engine)
            engine.dispose()
        except Exception as e:
            self.log(f"warning: the records database was not migrated ({str(e).splitlines()[0][:200]}); "
                     "the proxy migrates it when it starts, and `schoolproxy doctor` checks it")
            return
        if url.startswith("sqlite:///"):
            path = Path(url[len("sqlite:///"):])
            for f in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                if f.exists():
                    os.chown(f, self.uid, self.gid)
                    os.chmod(f, 0o600)
        self.log(f"records database at schema {after}" + (f" (was {before})" if before != after else ""))

    def _finish(self) -> None:
        if self.root != Path("/"):
            return
        if shutil.which("systemctl") and Path("/run/systemd/system").is_dir():
            subprocess.run(["systemctl", "daemon-reload"], check=False)


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []


def _tree_mode(top: Path, dir_mode: int, file_mode: int) -> None:
    for dirpath, _, filenames in os.walk(top):
        os.chmod(dirpath, dir_mode)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, file_mode)
