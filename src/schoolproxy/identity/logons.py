"""The logon table: which user is signed in at which client address, as told by the logon feed.

A scheduled task on each Windows PC (``deploy/logon-feed/``, run as SYSTEM at logon and logoff) calls
the feed endpoint; the table answers ``ip → (user, device)`` on the request path with one dict lookup.
The latest logon on an address wins; a logoff clears it (only the user who holds it can be logged off,
so a late logoff from the previous user cannot clear the next one); entries expire after a TTL in case
no logoff ever comes.

Writers (the feed's HTTP thread) replace whole entries; readers (the event loop) only ``get``: a dict
item assignment is atomic under the GIL, so no lock is needed on the hot path.

:func:`admit` decides whether a logon the feed was told about may be believed. The secret alone is not
enough (it may leak to a pupil): a caller may only report its own address (the gateway and configured
relays excepted), the user must exist, and a staff, supply or unfiltered account is accepted only for an
address in ``staff_subnets`` — so a pupil who learns the secret cannot browse as a teacher.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from schoolproxy.config import Config, LogonFeedSettings, ProfileSettings

log = logging.getLogger(__name__)

MAX_ENTRIES = 200_000
MAX_TTL = 7 * 24 * 3600
SOURCES = ("logon-feed", "sign-in")
# Matched with fullmatch: "$" alone would also accept a trailing newline.
_DEVICE = re.compile(r"[\w.-]{1,64}", re.UNICODE)
_USER = re.compile(r"[\w.@\\-]{1,128}", re.UNICODE)


class LogonError(ValueError):
    """A logon-feed call that cannot be applied; the message is safe to send back to the caller."""


#: Why the feed refused a call it could read: the label of its refusal metric (never a user or address).
REFUSALS = ("not-own-address", "sign-in-not-from-gateway", "unknown-user", "staff-elsewhere", "directory-down")


class Refused(LogonError):
    """A well-formed call the feed will not believe. ``str()`` is what the caller is told (nothing that
    would tell a pupil which accounts exist or are staff); ``why`` is for the gateway's log."""

    def __init__(self, reason: str, why: str, answer: str = "refused (the gateway's log says why)",
                 status: int = 403):
        super().__init__(answer)
        assert reason in REFUSALS
        self.reason, self.why, self.status = reason, why, status


@dataclass(frozen=True, slots=True)
class Logon:
    user: str
    ip: str
    device: str | None
    since: float        # epoch seconds
    expires: float      # epoch seconds
    groups: tuple[str, ...] | None = None  # directory groups, looked up when the logon arrived
    #: Who told us: "logon-feed" (a logon script), or "sign-in" (the user signed in on a page for this device).
    source: str = "logon-feed"


def normalise_ip(text: str) -> str:
    """The canonical text of an address (IPv4-mapped IPv6 as IPv4), as mitmproxy reports peers."""
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        raise LogonError(f"not an IP address: {text[:64]!r}") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return str(addr)


def clean_user(user: str) -> str:
    """A Windows logon name (``DOMAIN\\user`` → ``user``), validated; LogonError if it is not one."""
    user = user.strip()
    if not _USER.fullmatch(user):
        raise LogonError("user must be a logon name (letters, digits, . _ - @), at most 128 characters")
    return user.rsplit("\\", 1)[-1]


def clean_device(device: str | None) -> str | None:
    if device is None or device == "":
        return None
    if not _DEVICE.fullmatch(device):
        raise LogonError("device must be a computer name (letters, digits, . _ -), at most 64 characters")
    return device


class LogonTable:
    def __init__(self, ttl_seconds: float, state_file: Path | None = None):
        self.ttl = ttl_seconds
        self.state_file = state_file
        self._by_ip: dict[str, Logon] = {}
        self._write_lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None  # the state file as last read by refresh()

    def lookup(self, ip: str, now: float | None = None) -> Logon | None:
        """The live logon at ``ip`` (hot path: one dict lookup and a comparison)."""
        entry = self._by_ip.get(ip)
        if entry is None:
            return None
        if entry.expires <= (time.time() if now is None else now):
            return None
        return entry

    def logon(self, user: str, ip: str, device: str | None = None, now: float | None = None,
              groups: frozenset[str] | None = None, source: str = "logon-feed",
              ttl_seconds: float | None = None) -> Logon:
        """Attach ``user`` to ``ip`` until ``ttl_seconds`` (default: the table's TTL) have passed."""
        now = time.time() if now is None else now
        if source not in SOURCES:
            raise LogonError(f"source must be one of {', '.join(SOURCES)}")
        ttl = self.ttl if ttl_seconds is None else ttl_seconds
        if not 0 < ttl <= MAX_TTL:
            raise LogonError(f"a logon lasts between 1 second and {MAX_TTL // 3600} hours")
        entry = Logon(clean_user(user), normalise_ip(ip), clean_device(device), now, now + ttl,
                      tuple(sorted(groups)) if groups is not None else None, source)
        with self._write_lock:
            if len(self._by_ip) >= MAX_ENTRIES and entry.ip not in self._by_ip:
                self._expire(now)
                if len(self._by_ip) >= MAX_ENTRIES:
                    raise LogonError("logon table full")
            self._by_ip[entry.ip] = entry
            self._save()
        return entry

    def logoff(self, user: str, ip: str) -> bool:
        """Clear ``ip`` if ``user`` holds it; False if someone else (or no one) does."""
        user, ip = clean_user(user), normalise_ip(ip)
        with self._write_lock:
            entry = self._by_ip.get(ip)
            if entry is None or entry.user.lower() != user.lower():
                return False
            del self._by_ip[ip]
            self._save()
            return True

    def live(self, now: float | None = None) -> list[Logon]:
        now = time.time() if now is None else now
        return sorted((e for e in list(self._by_ip.values()) if e.expires > now), key=lambda e: e.ip)

    def _expire(self, now: float) -> None:
        for ip, e in list(self._by_ip.items()):
            if e.expires <= now:
                del self._by_ip[ip]

    def refresh(self) -> bool:
        """Follow the saved table written by the process that runs the feed (worker 0 of several):
        replace ours with it when the file changed. Returns True if it did."""
        if self.state_file is None:
            return False
        try:
            st = self.state_file.stat()
            seen = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            seen = None
        if seen == self._seen:
            return False
        self._seen = seen
        entries = self._read() if seen is not None else []
        if entries is None:
            return False
        now = time.time()
        self._by_ip = {e.ip: e for e in entries if e.expires > now}  # one reference swap: lookups never lock
        return True

    def _read(self) -> list[Logon] | None:
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
            return [Logon(**{**d, "groups": tuple(d["groups"]) if d.get("groups") is not None else None})
                    for d in data]
        except (OSError, ValueError, TypeError, KeyError) as e:
            log.warning("ignoring saved logons in %s: %s", self.state_file, e)
            return None

    # -- persistence across restarts --------------------------------------------------------------------
    def _save(self) -> None:
        if self.state_file is None:
            return
        self._expire(time.time())
        data = [asdict(e) for e in self._by_ip.values()]
        try:
            self.state_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.state_file.parent, prefix=".logons.")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.state_file)
        except OSError as e:
            log.warning("cannot save live logons to %s: %s (they still work until a restart)", self.state_file, e)

    def load(self) -> int:
        """Restore live logons saved before a restart; a damaged file is reported and ignored."""
        if self.state_file is None or not self.state_file.exists():
            return 0
        now = time.time()
        entries = self._read()
        if entries is None:
            return 0
        with self._write_lock:
            for e in entries:
                if e.expires > now:
                    self._by_ip[e.ip] = e
        return len(self._by_ip)


# -- who may report what (the logon feed's rules) -------------------------------------------------------
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class FeedSources:
    """Where logons may come from: the gateway's own addresses, relays that report for other addresses,
    and the staff PCs' subnets."""

    gateway: frozenset[str]
    relays: tuple[IPNetwork, ...] = ()
    staff: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(cls, feed: LogonFeedSettings) -> "FeedSources":
        host = feed.listen.rpartition(":")[0].strip("[]")
        return cls(frozenset({normalise_ip(host), "127.0.0.1", "::1"}), tuple(feed.relays), tuple(feed.staff_subnets))

    def is_gateway(self, ip: str) -> bool:
        """The gateway itself (the console's sign-in page calls from the feed's own address): a pupil's PC
        cannot send from it."""
        return ip in self.gateway

    def is_relay(self, ip: str) -> bool:
        return self.is_gateway(ip) or _within(ip, self.relays)

    def is_staff_pc(self, ip: str) -> bool:
        return _within(ip, self.staff)


def _within(ip: str, nets: Iterable[IPNetwork]) -> bool:
    addr = ipaddress.ip_address(ip)
    return any(addr.version == n.version and addr in n for n in nets)


def needs_staff_pc(profile: ProfileSettings) -> bool:
    """A profile worth impersonating: staff, supply (a supply teacher's name on the records), or one that
    blocks nothing."""
    return profile.role in ("staff", "supply") or (profile.default == "allow" and not profile.block_categories)


#: ``known(user)`` → (exists: True/False/None when it cannot be told, directory groups or None).
Known = Callable[[str], tuple[bool | None, frozenset[str] | None]]


def admit(user: str, ip: str, caller: str, source: str, sources: FeedSources, known: Known,
          profile_of: Callable[[str, frozenset[str] | None], ProfileSettings]) -> frozenset[str] | None:
    """Check a logon of ``user`` at ``ip`` reported by ``caller`` (the call's own address); the user's
    directory groups if it may be believed, else :class:`Refused`. ``user`` and both addresses are
    already clean (:func:`clean_user`, :func:`normalise_ip`). Blocking (``known`` may ask the directory)."""
    check_address(ip, caller, source, sources)
    exists, groups = known(user)
    if exists is None:
        raise Refused("directory-down", f"cannot check that {user} exists: the directory is not answering",
                      "the directory is not answering: try again later", status=503)
    if not exists:
        raise Refused("unknown-user", f"there is no account {user}")
    if needs_staff_pc(profile_of(user, groups)) and not (source == "sign-in" and sources.is_gateway(caller)):
        # A sign-in from the gateway's console page had its password checked; anything else is only as
        # good as the secret, so a staff account is believed only at a staff PC, reported from itself.
        if not sources.is_staff_pc(ip) or not (caller == ip or sources.is_relay(caller)):
            raise Refused("staff-elsewhere", f"{user} is a staff, supply or unfiltered account and {ip} is not "
                          f"in identity.logon_feed.staff_subnets")
    return groups


def check_address(ip: str, caller: str, source: str, sources: FeedSources) -> None:
    """A caller reports its own address only, unless it is the gateway or a relay; sign-ins come only
    from the gateway (the console's sign-in page)."""
    if source == "sign-in" and not sources.is_gateway(caller):
        raise Refused("sign-in-not-from-gateway", "a sign-in must come from the gateway's console",
                      "sign-ins come only from the gateway's console")
    if ip != caller and not sources.is_relay(caller):
        raise Refused("not-own-address", f"it named another address ({ip}) and {caller} is not a relay "
                      f"(identity.logon_feed.relays)", "a PC may report only its own address")


def who_exists(config: Config, directory, users) -> Known:
    """``known`` for :func:`admit`: the local users file, then the directory when there is one, else the
    names the config gives profiles to (identity.users, group members, people)."""
    ident = config.identity
    named = {u.lower() for u in ident.users} | {m.lower() for g in ident.groups.values() for m in g.members} \
        | {p.lower() for p in config.people}

    def known(user: str) -> tuple[bool | None, frozenset[str] | None]:
        if users is not None and user in users:
            return True, frozenset()
        if directory is not None:
            return directory.known(user)
        return user.lower() in named, None
    return known
