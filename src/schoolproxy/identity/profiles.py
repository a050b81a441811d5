"""Who is this request? Pure mapping from what we know of a client to a profile.

Sources in order of precedence (SPEC §5.1): proxy authentication (local users file now; the directory
issue adds AD/LDAP as another :class:`Authenticator`), the logon feed (a later seam: anything that can
answer ``ip → username``), the static subnet map, then the fail-closed default profile.

A username maps to a profile by, in this order: an explicit ``identity.users`` entry, the first
``identity.groups`` entry (config order) the user belongs to, the first matching ``identity.patterns``
entry (``Supply*``), else the default profile. Matching is case-insensitive, as Windows logons are.

Every identity carries one canonical username per person, however it was typed (``JSmith`` signs in
as ``jsmith`` and is recorded as ``jsmith``): the spelling of the users file or the directory, else of
the config, else lower case — so a pupil cannot hide from their own history by changing case.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from dataclasses import dataclass
from typing import Protocol

from schoolproxy.config import Config


@dataclass(frozen=True, slots=True)
class Identity:
    """The subject of a request, carried on every Verdict."""

    username: str | None
    profile: str
    #: How we know: "proxy-auth", "logon-feed", "sign-in" (a sign-in page for this device), "subnet",
    #: "default", or "unverified" (directory down: the name as given, the profile the fail-closed default).
    source: str
    #: Why this profile: "user jsmith", "group year4", "pattern Supply*", "subnet Pupil iPads", "default".
    rule: str
    device: str | None = None


class Authenticator(Protocol):
    """A credential check. Implementations may block (bcrypt, LDAP): callers run them off the loop."""

    def check(self, username: str, password: str) -> bool | None:
        """True/False for a known answer; None if the backend cannot answer (e.g. directory down)."""

    def groups(self, username: str) -> frozenset[str] | None:
        """Directory groups of the user (lower-case), None if unknown; config groups are added by the
        resolver."""

    # Optional: ``canonical(username) -> str | None``, the name as the back-end spells it (without I/O:
    # called on the event loop), and ``version(username)``, what a cached answer depends on.


class LocalThenDirectory:
    """Users in the local file (guests, break-glass accounts) are checked there; everyone else in AD."""

    def __init__(self, local, directory: Authenticator):
        self.local = local
        self.directory = directory

    def check(self, username: str, password: str) -> bool | None:
        if username in self.local:
            return self.local.check(username, password)
        return self.directory.check(username, password)

    def groups(self, username: str) -> frozenset[str] | None:
        if username in self.local:
            return frozenset()
        return self.directory.groups(username)

    def version(self, username: str) -> object:
        return self.local.version(username) if username in self.local else None

    def canonical(self, username: str) -> str | None:
        if username in self.local:
            return self.local.canonical(username)
        return getattr(self.directory, "canonical", lambda _: None)(username)


class ProfileResolver:
    """username (+ directory groups) → (profile, rule)."""

    def __init__(self, config: Config, authenticator: Authenticator | None = None):
        ident = config.identity
        self.default = ident.default_profile
        self._spelled_by = getattr(authenticator, "canonical", None)
        #: Names as the config spells them (users, group members, people), by lower case.
        self._spellings = {m.lower(): m for g in ident.groups.values() for m in g.members}
        self._spellings.update({p.lower(): p for p in config.people})
        self._spellings.update({u.lower(): u for u in ident.users})
        self._users = {u.lower(): p for u, p in ident.users.items()}
        self._groups = [(g.lower(), s.profile) for g, s in ident.groups.items()]
        self._members: dict[str, set[str]] = {}
        for g, s in ident.groups.items():
            for m in s.members:
                self._members.setdefault(m.lower(), set()).add(g.lower())
        self._patterns = [(re.compile(fnmatch.translate(p.match.lower())), p.match, p.profile)
                          for p in ident.patterns]

    def canonical(self, username: str) -> str:
        """The one spelling of this person's name on every record: the users file's or directory's,
        else the config's, else lower case."""
        spelled = self._spelled_by(username) if self._spelled_by is not None else None
        return spelled or self._spellings.get(username.lower()) or username.lower()

    def resolve(self, username: str, directory_groups: frozenset[str] = frozenset()) -> tuple[str, str]:
        name = username.lower()
        profile = self._users.get(name)
        if profile:
            return profile, f"user {username}"
        groups = self._members.get(name, set()) | directory_groups
        for group, profile in self._groups:
            if group in groups:
                return profile, f"group {group}"
        for rx, text, profile in self._patterns:
            if rx.match(name):
                return profile, f"pattern {text}"
        return self.default, "default (no user, group or pattern matched)"

    def identify(self, username: str, source: str = "proxy-auth",
                 directory_groups: frozenset[str] | None = frozenset(), device: str | None = None) -> Identity:
        username = self.canonical(username)
        profile, rule = self.resolve(username, directory_groups or frozenset())
        return Identity(username, profile, source, rule, device)

    def unverified(self, username: str, why: str, device: str | None = None) -> Identity:
        """A name we could not check (directory down): filtered as the default profile."""
        return Identity(self.canonical(username), self.default, "unverified", f"default ({why})", device)

    def unidentified(self) -> Identity:
        return unidentified(self.default)


def unidentified(default_profile: str) -> Identity:
    """Nobody we know of: the fail-closed default profile."""
    return Identity(None, default_profile, "default", "default (unidentified)")


class SubnetMap:
    """Static client-subnet → profile map; the most specific subnet wins."""

    def __init__(self, config: Config):
        nets = [(s.cidr, s.profile, s.name or str(s.cidr)) for s in config.identity.subnets]
        self._nets = sorted(nets, key=lambda n: -n[0].prefixlen)
        self._cache: dict[str, Identity | None] = {}
        self._nobody = unidentified(config.identity.default_profile)

    def identity_of(self, ip: str) -> Identity:
        """Who is at ``ip`` when no sign-in or logon says: its subnet's profile, else the fail-closed default."""
        found = self.lookup(ip)
        return found if found is not None else self._nobody

    def lookup(self, ip: str) -> Identity | None:
        hit = self._cache.get(ip, False)
        if hit is not False:
            return hit
        found = None
        try:
            addr = ipaddress.ip_address(ip)
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
                addr = addr.ipv4_mapped
            for net, profile, name in self._nets:
                if addr.version == net.version and addr in net:
                    found = Identity(None, profile, "subnet", f"subnet {name}")
                    break
        except ValueError:
            found = None
        if len(self._cache) < 65536:  # bounded: a school has a few thousand client addresses
            self._cache[ip] = found
        return found
