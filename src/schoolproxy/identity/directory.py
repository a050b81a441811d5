"""The school's directory (Active Directory or OpenLDAP) as an :class:`identity.Authenticator`.

Two ways to check a password, as schools set AD up:

- ``bind: search`` — bind with a read-only service account, find the user's entry with
  ``user_filter`` (which also excludes disabled accounts), then bind as that DN with the password;
- ``bind: direct`` — bind straight away as ``direct_bind_template`` (``{username}@school.local``).

Group names (the ``group_name_attribute`` of every group the user is in, nested groups followed when
``nested_groups`` is on) map to profiles through ``identity.groups`` in the YAML.

Everything here blocks: callers run it in a worker thread, never on the event loop. Each call opens its
own connection, so calls from several threads never share one. Usernames are escaped for LDAP filters
and DNs, and anything that does not look like a logon name is refused before the directory is asked.
"""

from __future__ import annotations

import logging
import re
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import ldap3
from ldap3.core import exceptions as ldap_exc
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from schoolproxy.config import ConfigError, DirectorySettings

log = logging.getLogger(__name__)

#: sAMAccountName is at most 20 characters; UPNs and OpenLDAP uids are longer but never this long.
MAX_USERNAME = 128
MAX_PASSWORD = 1024
# A logon name: letters, digits and . _ - @ (UPN) and a single backslash-free form. Anything else — LDAP
# filter metacharacters, control characters, DN separators — is refused before the directory is asked.
_USERNAME = re.compile(r"[\w.@-]{1,128}", re.UNICODE)  # fullmatch: "$" would let a trailing newline in
_MAX_NESTING = 8


class DirectoryUnavailable(Exception):
    """The directory could not be reached or answered with an error other than 'wrong password'."""


@dataclass(frozen=True, slots=True)
class _Cached:
    expires: float
    groups: frozenset[str] | None  # None: no such (enabled) user


def valid_username(username: str) -> bool:
    return bool(_USERNAME.fullmatch(username))


class Directory:
    """AD/LDAP authenticator with a per-user TTL cache of group membership."""

    def __init__(self, settings: DirectorySettings, base_dir: Path = Path(".")):
        self.settings = settings
        self.base_dir = base_dir
        self._service_password = read_secret(_resolve(settings.service_password_file, base_dir)) \
            if settings.service_password_file else None
        tls = None
        if any(u.startswith("ldaps://") for u in settings.urls) or settings.start_tls:
            ca = _resolve(settings.ca_file, base_dir) if settings.ca_file is not None else None
            if ca is not None and not ca.is_file():
                raise ConfigError(f"identity.directory.ca_file: {ca} does not exist")
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED if settings.verify_certificate else ssl.CERT_NONE,
                            ca_certs_file=str(ca) if ca else None, version=ssl.PROTOCOL_TLS_CLIENT)
        self._tls = tls
        # The attribute user_filter matches the logon name against (sAMAccountName, uid): its value is
        # the user's canonical spelling.
        named = re.search(r"\(([A-Za-z][\w-]*)=\{username\}\)", settings.user_filter)
        self._name_attribute = named.group(1) if named else None
        self._spelling: dict[str, str] = {}  # lower case → as the directory spells it
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()
        #: Health as last seen, for the metrics and the "directory down" log line.
        self.up = True
        self.errors = 0
        self.last_error = ""

    def canonical(self, username: str) -> str | None:
        """The name as the directory spells it, as last seen (never asks the directory: no I/O)."""
        return self._spelling.get(username.lower())

    def same_as(self, other: "Directory") -> bool:
        return (self.settings, self.base_dir, self._service_password) == \
            (other.settings, other.base_dir, other._service_password)

    # -- Authenticator --------------------------------------------------------------------------------
    def check(self, username: str, password: str) -> bool | None:
        """True/False, or None if the directory cannot answer (down, timeout, service account refused)."""
        if not valid_username(username) or not password or len(password) > MAX_PASSWORD:
            return False  # never send an empty password: LDAP treats it as an anonymous bind that "succeeds"
        try:
            if self.settings.bind == "direct":
                found = self._direct(username, password)
            else:
                found = self._search_then_bind(username, password)
        except DirectoryUnavailable as e:
            self._failed(e)
            return None
        self._healthy()
        if found is None:
            return False
        self._remember(username, found)
        return True

    def groups(self, username: str) -> frozenset[str] | None:
        """Cached group names; looked up with the service account when not cached. None if unknown."""
        return self.known(username)[1]

    def known(self, username: str) -> tuple[bool | None, frozenset[str] | None]:
        """(True, groups) for an enabled user, (False, None) when there is no such (enabled) user, and
        (None, None) when the directory cannot say (down, or no service account to search with)."""
        if not valid_username(username):
            return False, None
        hit = self._cache.get(username.lower())
        if hit is not None and hit.expires > time.monotonic():
            return hit.groups is not None, hit.groups
        if self.settings.bind == "direct":  # nothing to search with: only what a login told us
            return (True, hit.groups) if hit and hit.groups is not None else (None, None)
        try:
            with self._service() as conn:
                dn = self._find(conn, username)
                found = None if dn is None else self._groups_of(conn, dn[0], dn[1])
        except DirectoryUnavailable as e:
            self._failed(e)
            if hit is not None:  # stale beats nothing while the directory is down
                return hit.groups is not None, hit.groups
            return None, None
        self._healthy()
        self._remember(username, found)
        return found is not None, found

    def attributes(self, username: str, names: list[str]) -> dict[str, str] | None:
        """The first value of each attribute in ``names`` on the user's entry (e.g. displayName,
        department), read with the service account. None if the user is unknown, or there is no service
        account (``bind: direct``), or the directory cannot be asked. Not cached: callers keep what they need."""
        if self.settings.bind == "direct" or not valid_username(username):
            return None
        flt = self.settings.user_filter.format(username=escape_filter_chars(username))
        try:
            with self._service() as conn:
                entries = self._search(conn, self.settings.user_base, flt, names)
        except DirectoryUnavailable as e:
            self._failed(e)
            return None
        self._healthy()
        if len(entries) != 1:
            return None
        found = {}
        for name, value in (entries[0].get("attributes") or {}).items():
            if isinstance(value, list):
                value = value[0] if value else None
            if value not in (None, ""):
                found[name] = str(value)
        return found

    # -- the two bind styles --------------------------------------------------------------------------
    def _search_then_bind(self, username: str, password: str) -> frozenset[str] | None:
        with self._service() as conn:
            found = self._find(conn, username)
            if found is None:
                return None
            dn, member_of = found
            if not self._bind_ok(dn, password):
                return None
            return self._groups_of(conn, dn, member_of)

    def _direct(self, username: str, password: str) -> frozenset[str] | None:
        template = self.settings.direct_bind_template or ""
        who = template.format(username=escape_rdn(username) if "=" in template else username)
        conn, ok = self._open(who, password)
        try:
            if not ok:
                return None
            found = self._find(conn, username)
            if found is None:  # bound, but the filter says disabled or not a person
                return None
            return self._groups_of(conn, *found)
        finally:
            conn.unbind()

    # -- LDAP operations ------------------------------------------------------------------------------
    def _find(self, conn: ldap3.Connection, username: str) -> tuple[str, list[str]] | None:
        flt = self.settings.user_filter.format(username=escape_filter_chars(username))
        attrs = ["memberOf"] + ([self._name_attribute] if self._name_attribute else [])
        entries = self._search(conn, self.settings.user_base, flt, attrs)
        if len(entries) != 1:  # none, or ambiguous: never guess which account is meant
            return None
        entry = entries[0]
        attributes = entry.get("attributes", {})
        member_of = attributes.get("memberOf", []) or []
        name = attributes.get(self._name_attribute) if self._name_attribute else None
        if isinstance(name, list):
            name = name[0] if name else None
        if isinstance(name, str) and name.lower() == username.lower():
            if len(self._spelling) > 100_000:
                self._spelling.clear()
            self._spelling[username.lower()] = name
        return entry["dn"], [str(m) for m in member_of]

    def _groups_of(self, conn: ldap3.Connection, dn: str, member_of: list[str]) -> frozenset[str]:
        """Group names of ``dn``: its memberOf values, plus groups found by ``group_filter``, nested."""
        s = self.settings
        names: set[str] = set()
        seen: set[str] = set()
        frontier = [dn]
        for m in member_of:  # AD lists direct groups on the user; their names are in the DN
            seen.add(m.lower())
            names.add(_rdn_value(m).lower())
            if s.nested_groups:
                frontier.append(m)
        depth = 0
        while frontier and depth < _MAX_NESTING:
            next_frontier = []
            for member in frontier:
                flt = s.group_filter.format(dn=escape_filter_chars(member))
                for g in self._search(conn, s.group_base or s.user_base, flt, [s.group_name_attribute]):
                    gdn = g["dn"].lower()
                    if gdn in seen:
                        continue
                    seen.add(gdn)
                    value = g.get("attributes", {}).get(s.group_name_attribute)
                    if isinstance(value, list):
                        value = value[0] if value else None
                    names.add(str(value or _rdn_value(g["dn"])).lower())
                    next_frontier.append(g["dn"])
            if not s.nested_groups:
                break
            frontier = next_frontier
            depth += 1
        return frozenset(names)

    def _search(self, conn: ldap3.Connection, base: str, flt: str, attrs: list[str]) -> list[dict]:
        try:
            ok = conn.search(base, flt, ldap3.SUBTREE, attributes=attrs, size_limit=1000,
                             time_limit=int(self.settings.timeout_seconds) or 1)
        except ldap_exc.LDAPException as e:
            raise DirectoryUnavailable(f"search failed: {e}") from None
        result = conn.result or {}
        if not ok and result.get("result") not in (0, 32):  # 32: no such object (empty base) is an answer
            raise DirectoryUnavailable(f"search failed: {result.get('description')} {result.get('message', '')}")
        return [e for e in (conn.response or []) if e.get("type") == "searchResEntry"]

    def _service(self) -> "_Bound":
        conn, ok = self._open(self.settings.service_dn, self._service_password)
        if not ok:
            conn.unbind()
            raise DirectoryUnavailable("the service account was refused (check service_dn and its password)")
        return _Bound(conn)

    def _bind_ok(self, dn: str, password: str) -> bool:
        conn, ok = self._open(dn, password)
        conn.unbind()
        return ok

    def _open(self, user: str | None, password: str | None) -> tuple[ldap3.Connection, bool]:
        """Connect to the first server that answers and bind; (connection, False) for invalid
        credentials; DirectoryUnavailable if no server answers."""
        errors = []
        # Tried in order on every call: a second domain controller is a fallback, not a balance. Server
        # objects are made afresh each time because ldap3 remembers a refused address for a while, and a
        # directory that comes back must be used at once.
        for url in self.settings.urls:
            server = ldap3.Server(url, get_info=ldap3.NONE, connect_timeout=self.settings.timeout_seconds,
                                  tls=self._tls)
            conn = ldap3.Connection(server, user=user, password=password, auto_bind=ldap3.AUTO_BIND_NONE,
                                    receive_timeout=max(1, round(self.settings.timeout_seconds)),
                                    raise_exceptions=False, read_only=True)
            try:
                conn.open()
                if self.settings.start_tls and not server.ssl and not conn.start_tls():
                    raise DirectoryUnavailable(f"StartTLS refused: {(conn.result or {}).get('description')}")
                if conn.bind():
                    return conn, True
            except (ldap_exc.LDAPException, OSError, ssl.SSLError, DirectoryUnavailable) as e:
                errors.append(f"{server.host}: {_reason(e)}")
                conn.unbind()
                continue
            code = (conn.result or {}).get("result")
            if code in (49, 50, 53):  # invalidCredentials, insufficientAccessRights, unwillingToPerform
                return conn, False
            errors.append(f"{server.host}: bind failed: {(conn.result or {}).get('description')}")
            conn.unbind()
        raise DirectoryUnavailable("; ".join(errors))

    # -- health and cache -----------------------------------------------------------------------------
    def _remember(self, username: str, groups: frozenset[str] | None) -> None:
        with self._lock:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[username.lower()] = _Cached(time.monotonic() + self.settings.cache_seconds, groups)

    def _failed(self, e: Exception) -> None:
        self.errors += 1
        self.last_error = str(e)
        if self.up:
            log.error("directory unreachable (%s): %s — users already signed in keep their profile; "
                      "new sign-ins get the default profile until it answers again",
                      ", ".join(self.settings.urls), e)
        self.up = False

    def _healthy(self) -> None:
        if not self.up:
            log.warning("directory reachable again (%s)", ", ".join(self.settings.urls))
        self.up = True


class _Bound:
    def __init__(self, conn: ldap3.Connection):
        self.conn = conn

    def __enter__(self) -> ldap3.Connection:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.unbind()


def _reason(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, ldap_exc.LDAPSocketOpenError) and "certificate" in text.lower():
        return "TLS certificate not trusted (check ca_file): " + text[:200]
    return text[:300]


def _rdn_value(dn: str) -> str:
    """``CN=Year 4,OU=Groups,DC=school`` → ``Year 4``."""
    first = dn.split(",", 1)[0]
    return first.split("=", 1)[1] if "=" in first else first


def _resolve(path: Path, base_dir: Path) -> Path:
    return path if path.is_absolute() else (base_dir / path).resolve()


def read_secret(path: Path) -> str:
    """A password or shared secret kept in its own file (so the YAML can be shared without it)."""
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read secret file: {e.strerror}") from None
    if not secret:
        raise ConfigError(f"{path}: secret file is empty")
    return secret
