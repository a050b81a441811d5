"""The local users file: ``username:bcrypt-hash`` lines, as written by ``htpasswd -B`` or
``schoolproxy users add``. Passwords are never stored: only their bcrypt hashes."""

from __future__ import annotations

import collections
import functools
import os
import stat
import tempfile
from pathlib import Path

import bcrypt

from schoolproxy.config import ConfigError

_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
MAX_CREDENTIAL = 1024


@functools.lru_cache(maxsize=8)
def stand_in_hash(cost: int) -> bytes:
    """Checked when the user is unknown, at the cost of the file's own hashes: a wrong username then
    takes as long as a wrong password, and timing does not tell which usernames exist."""
    return bcrypt.hashpw(b"not-a-password", bcrypt.gensalt(rounds=cost))


def hash_cost(hashed: bytes) -> int:
    """The cost factor of ``$2b$12$...``."""
    try:
        return min(31, max(4, int(hashed[4:6])))
    except ValueError:
        return 12


class UsersFile:
    """A bcrypt users file as an :class:`identity.Authenticator` (blocking: run off the event loop)."""

    def __init__(self, path: Path):
        self.path = path
        self._hashes = read_users(path)
        self._names = {name.lower(): name for name in self._hashes}
        self._hashes = {name.lower(): hashed for name, hashed in self._hashes.items()}
        costs = collections.Counter(hash_cost(h) for h in self._hashes.values())
        self._stand_in = stand_in_hash(costs.most_common(1)[0][0] if costs else 12)

    def check(self, username: str, password: str) -> bool:
        if len(username) > MAX_CREDENTIAL or len(password) > MAX_CREDENTIAL:
            return False
        hashed = self._hashes.get(username.lower())
        try:
            ok = bcrypt.checkpw(password.encode("utf-8", "surrogatepass"), hashed or self._stand_in)
        except ValueError:
            return False
        return ok and hashed is not None

    def groups(self, username: str) -> frozenset[str]:
        return frozenset()

    def version(self, username: str) -> bytes | None:
        """What an answer for ``username`` depends on (its hash): a cached sign-in is checked again
        when this changes at a reload, and refused if the user was removed."""
        return self._hashes.get(username.lower())

    def canonical(self, username: str) -> str | None:
        """The name as the users file spells it (``JSmith`` signs in as ``jsmith``)."""
        return self._names.get(username.lower())

    def __contains__(self, username: str) -> bool:
        return username.lower() in self._hashes

    def __len__(self) -> int:
        return len(self._hashes)


def read_users(path: Path) -> dict[str, bytes]:
    """``{name as written: hash}``; a name given twice (in any case) is refused."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read users file: {e.strerror}") from None
    users: dict[str, bytes] = {}
    seen: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        if not sep or not name:
            raise ConfigError(f"{path}:{n}: expected 'username:bcrypt-hash'")
        if not hashed.startswith(_BCRYPT_PREFIXES):
            raise ConfigError(f"{path}:{n}: user {name!r}: only bcrypt hashes are accepted "
                              f"(create with 'htpasswd -B' or 'schoolproxy users add')")
        if name.lower() in seen:
            raise ConfigError(f"{path}:{n}: user {name!r} appears twice (names are not case-sensitive)")
        seen.add(name.lower())
        users[name] = hashed.encode("ascii")
    return users


def set_password(path: Path, username: str, password: str, rounds: int = 12) -> None:
    """Add or replace a user's hash. The file is replaced atomically, keeping its owner and mode (0600 for
    a new file)."""
    if not username or ":" in username or any(c.isspace() for c in username):
        raise ValueError("username must be non-empty, without ':' or spaces")
    if not password:
        raise ValueError("empty password")
    hashed = bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds=rounds)).decode("ascii")
    path = Path(os.path.realpath(path))  # a link (from /etc, say) stays a link to the file it names
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    out = [l for l in lines if l.partition(":")[0].lower() != username.lower()]
    out.append(f"{username}:{hashed}")
    _replace(path, out)


def remove_user(path: Path, username: str) -> bool:
    """Take a user out of the file (any case of the name); False if they were not in it."""
    path = Path(os.path.realpath(path))
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read users file: {e.strerror}") from None
    out = [l for l in lines if l.partition(":")[0].strip().lower() != username.strip().lower()]
    if len(out) == len(lines):
        return False
    _replace(path, out)
    return True


def _replace(path: Path, lines: list[str]) -> None:
    """Write the file anew beside itself and move it into place, with the old file's owner, group and mode:
    the proxy's service account may read it through its group, and must still be able to."""
    try:
        old = path.stat()
    except FileNotFoundError:
        old = None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".users.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
            if old is not None and (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(f.fileno(), old.st_uid, old.st_gid)
                except PermissionError:
                    raise ValueError(f"{path} belongs to another account: run this as root or as its owner, "
                                     f"so that it keeps its owner") from None
            os.fchmod(f.fileno(), stat.S_IMODE(old.st_mode) if old is not None else 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
