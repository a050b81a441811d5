"""Files under the state directory are private to the service user (0600 files, 0700 directories).

The records database holds every pupil's browsing and the safeguarding text of alerts; the CA key can
impersonate any website to every school device; the users file and secret files are credentials. Any
local account on the gateway must not be able to read them. Three layers:

- the process umask (:data:`UMASK`), set where the service starts, so nothing is created readable by others;
- explicit modes where a file or directory is created (the database before SQLite creates it: its
  ``-wal`` and ``-shm`` files take the database file's mode), so a caller's umask does not matter;
- :func:`exposed` for ``schoolproxy check`` and start-up: secrets and state that others can read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

UMASK = 0o077


@contextmanager
def private_umask() -> Iterator[None]:
    """Create files without group or other permissions for the duration (the whole life of ``run``)."""
    old = os.umask(UMASK)
    try:
        yield
    finally:
        os.umask(old)


def private_dir(path: Path, tighten: bool = False) -> Path:
    """Create ``path`` (and missing parents) as 0700. ``tighten``: also take group and other permissions
    off an existing directory of ours (for directories that hold nothing but our state)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if tighten:
        _tighten(path, 0o700)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty as 0600 if missing (a missing directory as 0700); an existing file of ours
    is tightened."""
    private_dir(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        _tighten(path, 0o600)
    return path


def _tighten(path: Path, mode: int) -> None:
    try:
        st = path.stat()
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, stat.S_IMODE(st.st_mode) & mode)
    except OSError:
        pass  # not ours, or gone: exposed() reports what is still readable


def readable_by_others(path: Path) -> bool:
    """Can accounts other than the owner read (or, for a directory, enter) ``path``? Read access for
    the service's own group (``root:schoolproxy 0640`` on a config secret) does not count."""
    try:
        st = path.stat()
    except OSError:
        return False
    others = st.st_mode & 0o007
    group = st.st_mode & 0o070 if st.st_gid != os.getegid() else 0
    return bool(others or group)


def exposed(config) -> list[str]:
    """Secrets and state files of ``config`` that other local accounts can read, one warning each."""
    ident = config.identity
    secrets: list[tuple[str, Path]] = []
    if ident.proxy_auth is not None and ident.proxy_auth.users_file is not None:
        secrets.append(("users file (password hashes)", config.path(ident.proxy_auth.users_file)))
    if ident.logon_feed is not None:
        secrets.append(("logon feed secret", config.path(ident.logon_feed.secret_file)))
        secrets.append(("live logons", config.path(ident.logon_feed.state_file)))
    if ident.directory is not None and ident.directory.service_password_file is not None:
        secrets.append(("directory service password", config.path(ident.directory.service_password_file)))
    smtp, hook = config.alerts.smtp, config.alerts.webhook
    if smtp is not None and smtp.password_file is not None:
        secrets.append(("SMTP password", config.path(smtp.password_file)))
    if hook is not None and hook.secret_file is not None:
        secrets.append(("webhook secret", config.path(hook.secret_file)))
    if config.alerts.mailbox is not None:
        secrets.append(("alert mailbox", config.path(config.alerts.mailbox)))
    ca = config.path(config.proxy.ca_dir)
    secrets += [("CA private key", ca / "mitmproxy-ca.pem"), ("CA private key", ca / "mitmproxy-ca.p12"),
                ("CA directory", ca)]
    secrets.append(("records spool", config.path(config.records.spool_dir)))
    db = sqlite_path(config.records.database, config)
    if db is not None:
        secrets += [("records database", db), ("records database", Path(f"{db}-wal")),
                    ("records database", Path(f"{db}-shm"))]
    if config.lists.cache_dir is not None:
        secrets.append(("compiled list cache", config.path(config.lists.cache_dir)))
    out = []
    for what, path in secrets:
        if readable_by_others(path):
            mode = stat.S_IMODE(path.stat().st_mode)
            fix = "chmod 700" if path.is_dir() else "chmod 600"
            out.append(f"{what} {path} can be read by other local accounts (mode {mode:04o}): {fix} {path}")
    return out


def sqlite_path(url: str, config) -> Path | None:
    """The database file of a ``sqlite:///`` URL (relative to the config file), else None."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == prefix + ":memory:":
        return None
    rest = url[len(prefix):].split("?", 1)[0]
    return Path(rest) if rest.startswith("/") else config.path(Path(rest))
