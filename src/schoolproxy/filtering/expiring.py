"""Expiring overrides on the request path: approved unblock requests and teachers' class allows.

They live in the records database (:mod:`schoolproxy.records.unblock`); the proxy loads the ones in
force every few seconds, off the request path, into an :class:`ExpiringOverrides` value, and a request
asks it only when the profile's category rules or default would block. Precedence (README "How a
decision is made"): a locked category, an invalid name and the config's own overrides are never
changed by them; each ends by itself at its expiry, checked on every request.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from schoolproxy.filtering.hostnames import InvalidHost, normalise_entry
from schoolproxy.filtering.policy import Decision, _SiteIndex
from schoolproxy.identity.profiles import Identity

#: Rules an expiring allow may change: the profile's category rules (in or out of a time window) and its
#: default. Never "locked:", "override[", "helpsite", "invalid-host", "error" or "unknown-profile".
_CHANGEABLE = ("category:", "window:", "default:")


class Grant(NamedTuple):
    id: int
    site: str
    scope: str          # profile | group | user
    scope_value: str
    expires: float      # epoch seconds
    author: str
    rationale: str

    @property
    def rule(self) -> str:
        return f"expiring[{self.id}]:{self.site}"


def group_of(identity: Identity) -> str | None:
    """The group that gave this person their profile ("group year4" → "year4"): their class."""
    return identity.rule[6:] if identity.rule.startswith("group ") else None


class ExpiringOverrides:
    """The expiring allows in force, indexed by whom they are for. Immutable once built."""

    def __init__(self, rows: list[dict], tz: dt.tzinfo = dt.timezone.utc):
        self.tz = tz
        self._index: dict[tuple[str, str], _SiteIndex] = {}
        grouped: dict[tuple[str, str, str, str], list[Grant]] = {}
        stamp = []
        for r in rows:
            if r.get("action", "allow") != "allow" or r.get("revoked_at") is not None:
                continue
            try:
                host, path = normalise_entry(r["site"])
            except InvalidHost:
                continue
            expires = r["expires_at"]
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=dt.timezone.utc)
            grant = Grant(r["id"], r["site"], r["scope"], r["scope_value"].lower(), expires.timestamp(), r["author"],
                          r["rationale"])
            grouped.setdefault((r["scope"], grant.scope_value, host, path), []).append(grant)
            stamp.append((grant.id, grant.expires))
        for (scope, value, host, path), grants in grouped.items():
            grants.sort(key=lambda g: -g.expires)  # the longest-lasting first
            self._index.setdefault((scope, value), _SiteIndex()).add(host, path, tuple(grants))
        #: What was loaded: a refresh that loads the same builds nothing new.
        self.stamp = tuple(sorted(stamp))

    def __bool__(self) -> bool:
        return bool(self._index)

    def __len__(self) -> int:
        return len(self.stamp)

    def match(self, identity: Identity, host: str, path: str, now: float) -> Grant | None:
        """The allow in force for this person at this host and path, if any."""
        keys = [("profile", identity.profile.lower())]
        group = group_of(identity)
        if group:
            keys.append(("group", group))
        if identity.username:
            keys.append(("user", identity.username.lower()))
        index = self._index
        for key in keys:
            sites = index.get(key)
            if sites is None:
                continue
            grants = sites.match(host, path)
            if grants:
                for g in grants:
                    if g.expires > now:
                        return g
        return None

    def apply(self, decision: Decision, identity: Identity, host: str, path: str, now: float,
              trace: list[str] | None = None) -> Decision:
        """``decision``, or the allow that changes it."""
        if decision.action != "block" or not decision.rule.startswith(_CHANGEABLE) or not self._index:
            return decision
        grant = self.match(identity, host, path or "/", now)
        if grant is None:
            if trace is not None:
                trace.append("   expiring allows: none in force for this person here")
            return decision
        until = dt.datetime.fromtimestamp(grant.expires, self.tz).strftime("%a %d %b %H:%M")
        if trace is not None:
            trace.append(f"   expiring allow {grant.rule}: allowed for {grant.scope} {grant.scope_value} until {until} "
                         f"— \"{grant.rationale}\" ({grant.author})")
        return Decision("allow", grant.rule, f"allowed until {until} by {grant.author}: {grant.rationale}",
                        decision.mask)


NONE = ExpiringOverrides([])
