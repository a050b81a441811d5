"""The decision: a pure function of (request facts, profile, time, config + lists).

Precedence, highest first (README "How a decision is made"):

0. **Locked categories** (``locked: true`` in the category metadata: illegal content such as child
   abuse and terrorism, from lists the school's provider supplies) are blocked for every profile, staff
   included. Nothing can allow them: a config whose profile, time window, override or help site tries
   is refused at load.
1. **Help sites** (the ``helpsites`` category plus ``help_sites`` in the config) are always allowed.
   No rule can block them: a config whose override or category rule tries is refused at load.
2. **Local overrides** (``overrides:``), each with rationale, author and date. The most specific
   host wins, then the longest path prefix.
3. **Category rules** of the profile, as modified by any time window in force: a blocked category wins
   over an allowed one (fail closed); use an override for a deliberate exception.
4. The profile's **default** (allow, or block for an allow-list profile).

Hostnames that cannot be valid are blocked for everyone. :meth:`Policy.decide` takes an optional
``trace`` list which, when given, receives one line per step — ``schoolproxy explain`` prints it.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from schoolproxy.config import Config, ConfigError, OverrideSettings, ProfileSettings
from schoolproxy.filtering.hostnames import InvalidHost, normalise_entry, normalise_host
from schoolproxy.filtering.lists import HELPSITES, CategoryLists

Action = Literal["allow", "block"]
_SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}
_DAY_INDEX = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    #: Stable rule id shown on the block page and recorded: "category:social-networking",
    #: "override[2]:scratch.mit.edu", "helpsite", "default:pupil", "invalid-host", ...
    rule: str
    #: Plain-English reason.
    reason: str
    #: Category mask of the request (see :class:`lists.CategoryLists`).
    mask: int = 0


@dataclass(frozen=True, slots=True)
class _Window:
    name: str
    days: frozenset[int]
    start: int  # minutes since midnight
    end: int
    block: int
    allow: int

    def active(self, now: dt.datetime) -> bool:
        minute = now.hour * 60 + now.minute
        if self.start < self.end:
            return now.weekday() in self.days and self.start <= minute < self.end
        # Crosses midnight: the part after midnight belongs to the previous day's window.
        if minute >= self.start:
            return now.weekday() in self.days
        return minute < self.end and (now.weekday() - 1) % 7 in self.days


class _SiteIndex:
    """host[/path] entries → value, matched on the host or a parent domain, longest path first."""

    def __init__(self) -> None:
        self._by_host: dict[str, list[tuple[str, object]]] = {}

    def add(self, host: str, path: str, value: object) -> None:
        entries = self._by_host.setdefault(host, [])
        entries.append((path, value))
        entries.sort(key=lambda e: -len(e[0]))

    def __bool__(self) -> bool:
        return bool(self._by_host)

    def match(self, host: str, path: str) -> object | None:
        by_host = self._by_host
        h = host
        while True:
            entries = by_host.get(h)
            if entries:
                p = path.lower()
                for prefix, value in entries:
                    if not prefix or (p.startswith(prefix) and (
                            len(p) == len(prefix) or prefix[-1] == "/" or p[len(prefix)] in "/?#;")):
                        return value
            i = h.find(".")
            if i < 0:
                return None
            h = h[i + 1:]


@dataclass(frozen=True, slots=True)
class _Override:
    index: int
    settings: OverrideSettings

    @property
    def rule(self) -> str:
        return f"override[{self.index}]:{self.settings.site}"


@dataclass(slots=True)
class CompiledProfile:
    name: str
    settings: ProfileSettings
    default_block: bool
    block: int
    allow: int
    windows: tuple[_Window, ...]
    overrides: _SiteIndex
    passthrough: int
    passthrough_sites: _SiteIndex
    connect_ports: frozenset[int]


class Policy:
    """The compiled policy for one (config, lists) pair. Immutable once built; reload builds a new one."""

    def __init__(self, config: Config, lists: CategoryLists):
        self.config = config
        self.lists = lists
        self.tz = ZoneInfo(config.timezone)
        self.warnings: list[str] = []
        self._now_minute = -1
        self._now_local = dt.datetime.now(self.tz)
        src = config.source
        for site in config.help_sites:
            try:
                lists.add_entry(site, HELPSITES)
            except InvalidHost as e:
                raise ConfigError(f"{src}: help_sites: {e}") from None
        self.help_bit = lists.bits[HELPSITES]
        #: Every locked category's bit: blocked before anything else is asked.
        self.locked = 0
        for name, info in lists.info.items():
            if info.locked and name in lists.bits:
                self.locked |= lists.bits[name]
        if self.locked & self.help_bit:
            raise ConfigError(f"{src}: lists: the '{HELPSITES}' category cannot be locked")
        self._check_help_sites_not_locked(config)
        self._severity = sorted(
            ((name, bit) for name, bit in lists.bits.items()),
            key=lambda nb: _SEVERITY_ORDER.get(lists.info[nb[0]].severity if nb[0] in lists.info else "medium", 2),
        )
        self._help_domains = lists.helpsite_domains()
        overrides = self._compile_overrides(config)
        self.profiles = {name: self._compile_profile(name, p, overrides) for name, p in config.profiles.items()}
        self._check_default_fails_closed()

    # -- compile ----------------------------------------------------------------------------------
    def _mask(self, names: list[str], where: str) -> int:
        mask = 0
        for i, name in enumerate(names):
            bit = self.lists.bits.get(name)
            if bit is None:
                known = ", ".join(sorted(self.lists.bits))
                raise ConfigError(f"{self.config.source}: {where}[{i}]: unknown category {name!r} (known: {known})")
            mask |= bit
        return mask

    def _no_helpsites(self, mask: int, where: str) -> None:
        if mask & self.help_bit:
            raise ConfigError(f"{self.config.source}: {where}: help sites ('{HELPSITES}') can never be blocked")

    def _not_locked(self, mask: int, where: str) -> None:
        """Refuse a config that would allow a locked category, naming it and saying why."""
        if mask & self.locked:
            names = ", ".join(sorted(self.lists.names(mask & self.locked)))
            raise ConfigError(f"{self.config.source}: {where}: {names} is a locked category (illegal content): "
                              f"it is blocked for everyone and nothing can allow it — remove it from this list")

    def _check_help_sites_not_locked(self, config: Config) -> None:
        """A help site is always allowed, so a locked one would be a way round the locked tier: a config
        help site in a locked list is refused; a listed help site that a provider's list also locks stays
        blocked (locked comes first) and is reported."""
        for i, site in enumerate(config.help_sites):
            try:
                host, path = normalise_entry(site)
            except InvalidHost:
                continue  # reported when help sites are added
            if self.lists.classify(host, path or "/") & self.locked:
                self._not_locked(self.lists.classify(host, path or "/"), f"help_sites[{i}] ({site})")
        if self.locked:
            for domain in self._locked_help_domains():
                self.warnings.append(f"help site {domain} is also in a locked list: it stays blocked (a locked "
                                     f"category comes before help sites); ask the list's provider")

    def _locked_help_domains(self) -> list[str]:
        return sorted(d for d in self.lists.helpsite_domains() if self.lists.classify(d, "/") & self.locked)

    def _compile_profile(self, name: str, p: ProfileSettings,
                         overrides: dict[str, list[tuple[str, str, _Override]]]) -> CompiledProfile:
        where = f"profiles.{name}"
        block = self._mask(p.block_categories, f"{where}.block_categories")
        allow = self._mask(p.allow_categories, f"{where}.allow_categories")
        self._no_helpsites(block, f"{where}.block_categories")
        self._not_locked(allow, f"{where}.allow_categories")
        both = block & allow
        if both:
            raise ConfigError(f"{self.config.source}: {where}: {sorted(self.lists.names(both))} both blocked "
                              f"and allowed — contradictory; use an override for an exception")
        windows = []
        for i, w in enumerate(p.windows):
            ww = f"{where}.windows[{i}]"
            wb = self._mask(w.block_categories, f"{ww}.block_categories")
            wa = self._mask(w.allow_categories, f"{ww}.allow_categories")
            self._no_helpsites(wb, f"{ww}.block_categories")
            self._not_locked(wa, f"{ww}.allow_categories")
            if wb & wa:
                raise ConfigError(f"{self.config.source}: {ww}: {sorted(self.lists.names(wb & wa))} both blocked "
                                  f"and allowed in the same window")
            windows.append(_Window(w.name, frozenset(_DAY_INDEX[d] for d in w.days),
                                   w.start.hour * 60 + w.start.minute, w.end.hour * 60 + w.end.minute,
                                   (block | wb) & ~wa, (allow | wa) & ~wb))
        index = _SiteIndex()
        for host, path, ov in overrides.get(name, []) + overrides.get("*", []):
            index.add(host, path, ov)
        passthrough_sites = _SiteIndex()
        for i, site in enumerate(p.tls.passthrough_sites):
            try:
                host, _ = normalise_entry(site)
            except InvalidHost as e:
                raise ConfigError(f"{self.config.source}: {where}.tls.passthrough_sites[{i}]: {e}") from None
            passthrough_sites.add(host, "", True)
        passthrough = self._mask(p.tls.passthrough_categories, f"{where}.tls.passthrough_categories")
        if p.role in ("pupil", "guest"):
            restricted = [c for c, info in self.lists.info.items() if info.child_restricted and c in self.lists.bits]
            missing = [c for c in restricted if not (block | self.locked) & self.lists.bits[c]]
            if missing and p.default == "allow":
                self.warnings.append(f"profile {name} ({p.role}) does not block child-restricted categories: "
                                     f"{', '.join(missing)}")
        return CompiledProfile(name, p, p.default == "block", block, allow, tuple(windows), index,
                               passthrough, passthrough_sites, frozenset(p.connect_ports))

    def _compile_overrides(self, config: Config) -> dict[str, list[tuple[str, str, _Override]]]:
        by_profile: dict[str, list[tuple[str, str, _Override]]] = {}
        seen: dict[tuple[str, str, str], str] = {}
        for i, o in enumerate(config.overrides):
            where = f"{config.source}: overrides[{i}] ({o.site})"
            try:
                host, path = normalise_entry(o.site)
            except InvalidHost as e:
                raise ConfigError(f"{where}: {e}") from None
            if o.action == "allow":
                self._not_locked(self.lists.classify(host, path or "/"), where)
            if o.action == "block":
                if self.lists.classify(host, path or "/") & self.help_bit:
                    raise ConfigError(f"{where}: blocks a help site — help sites can never be blocked")
                under = [d for d in self._help_domains if d == host or d.endswith("." + host)]
                if under:
                    raise ConfigError(f"{where}: would block help site(s) {', '.join(sorted(under)[:5])} — "
                                      f"help sites can never be blocked")
            ov = _Override(i, o)
            for prof in o.profiles:
                targets = list(config.profiles) if prof == "*" else [prof]
                for t in targets:
                    key = (t, host, path)
                    if key in seen and seen[key] != o.action:
                        raise ConfigError(f"{where}: contradicts another override for the same site and "
                                          f"profile {t!r} (one allows, one blocks)")
                    seen[key] = o.action
                by_profile.setdefault(prof, []).append((host, path, ov))
        return by_profile

    def _check_default_fails_closed(self) -> None:
        name = self.config.identity.default_profile
        prof = self.profiles[name]
        if prof.default_block:
            return
        restricted = [c for c, info in self.lists.info.items() if info.child_restricted and c in self.lists.bits]
        missing = [c for c in restricted if not (prof.block | self.locked) & self.lists.bits[c]]
        if missing:
            raise ConfigError(f"{self.config.source}: identity.default_profile: profile {name!r} is given to "
                              f"anyone unidentified, so it must fail closed, but it does not block: "
                              f"{', '.join(missing)}")

    # -- decide (hot path) ------------------------------------------------------------------------
    def decide(self, profile: str, host: str, path: str = "/", is_ip: bool = False,
               now: dt.datetime | None = None, trace: list[str] | None = None) -> Decision:
        prof = self.profiles.get(profile)
        if prof is None:  # cannot happen with a validated config; fail closed regardless
            return Decision("block", "unknown-profile", f"unknown profile {profile!r}")
        mask = self.lists.classify(host, path, is_ip)
        if trace is not None:
            trace.append(f"categories of {host}{path if path != '/' else ''}: "
                         f"{', '.join(sorted(self.lists.names(mask))) or 'none'}")
        hit = mask & self.locked
        if hit:
            name = self._most_severe(hit)
            if trace is not None:
                trace.append(f"0. locked: {name} is a locked category (illegal content) — blocked for everyone; "
                             f"no profile, override, time window or approval can allow it")
            return Decision("block", f"locked:{name}", f"{name} is illegal content — blocked for everyone", mask)
        if trace is not None:
            trace.append("0. locked category (illegal content): no")
        if mask & self.help_bit:
            if trace is not None:
                trace.append("1. help site: always allowed (no rule can block it)")
            return Decision("allow", "helpsite", "help site — always allowed", mask)
        if trace is not None:
            trace.append("1. help site: no")
        if prof.overrides:
            ov = prof.overrides.match(host, path)
            if ov is not None:
                s = ov.settings
                if trace is not None:
                    trace.append(f"2. override: {ov.rule} → {s.action} — \"{s.rationale}\" ({s.author}, {s.date})")
                return Decision(s.action, ov.rule, f"local {s.action} rule: {s.rationale}", mask)
        if trace is not None:
            trace.append(f"2. override: none for profile {profile}")
        block, allow, window = prof.block, prof.allow, None
        if prof.windows:
            local = now.astimezone(self.tz) if now is not None else self._local_now()
            for w in prof.windows:
                if w.active(local):
                    block, allow, window = w.block, w.allow, w
                    if trace is not None:
                        trace.append(f"   time window {w.name!r} is in force at {local:%a %H:%M}")
                    break
        hit = mask & block
        if hit:
            name = self._most_severe(hit)
            if trace is not None:
                trace.append(f"3. category rule: {name} is blocked for {profile}")
            # The window is named only where it made the difference (a site blocked all day is not blocked
            # "by lunchtime").
            prefix = f"window:{window.name}:" if window and not hit & prof.block else ""
            return Decision("block", f"{prefix}category:{name}", f"{name} is blocked for {profile}", mask)
        hit = mask & allow
        if hit:
            name = self._most_severe(hit)
            if trace is not None:
                trace.append(f"3. category rule: {name} is allowed for {profile}")
            prefix = f"window:{window.name}:" if window and (mask & prof.block or not hit & prof.allow) else ""
            return Decision("allow", f"{prefix}category:{name}", f"{name} is allowed for {profile}", mask)
        action: Action = "block" if prof.default_block else "allow"
        if trace is not None:
            trace.append("3. category rule: none")
            trace.append(f"4. profile default for {profile}: {action}")
        return Decision(action, f"default:{profile}", f"default for {profile}: {action}", mask)

    def _local_now(self) -> dt.datetime:
        # Windows have minute resolution: compute the local time once a minute, not per request.
        minute = int(time.time() // 60)
        if minute != self._now_minute:
            self._now_local = dt.datetime.fromtimestamp(minute * 60, self.tz)
            self._now_minute = minute
        return self._now_local

    def _most_severe(self, mask: int) -> str:
        for name, bit in self._severity:
            if mask & bit:
                return name
        return "unknown"

    def passthrough(self, profile: str, host: str, mask: int) -> bool:
        """Should this profile's TLS to ``host`` be relayed without decryption?"""
        prof = self.profiles.get(profile)
        if prof is None:
            return False
        if not prof.settings.tls.intercept:
            return True
        if mask & self.help_bit:
            return False
        return bool(mask & prof.passthrough) or (bool(prof.passthrough_sites)
                                                 and prof.passthrough_sites.match(host, "") is not None)

    def connect_port_allowed(self, profile: str, port: int) -> bool:
        prof = self.profiles.get(profile)
        return prof is not None and (not prof.connect_ports or port in prof.connect_ports)

    def category_names(self, mask: int) -> tuple[str, ...]:
        return self.lists.sorted_names(mask)

    # -- convenience for check/explain ----------------------------------------------------------------
    def decide_url(self, profile: str, url: str, now: dt.datetime | None = None,
                   trace: list[str] | None = None) -> Decision:
        if "://" not in url:
            url = "http://" + url
        parts = urlsplit(url)
        try:
            host, is_ip = normalise_host(parts.netloc.rpartition("@")[2])
        except InvalidHost as e:
            if trace is not None:
                trace.append(f"invalid host: {e}")
            return Decision("block", "invalid-host", "not a valid hostname")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if now is not None and now.tzinfo is None:
            now = now.replace(tzinfo=self.tz)
        return self.decide(profile, host, path, is_ip, now, trace)


INVALID_HOST = Decision("block", "invalid-host", "not a valid hostname")
