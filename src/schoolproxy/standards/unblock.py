"""Unblock requests and teachers' class allows: the rules around them.

- A request carries the requester's reason, cleaned and bounded; it is stamped with the identity the
  proxy established, never with anything the form says about who is asking.
- Approving needs an approver role (``unblock.approvers``); it creates an expiring override — until the
  end of a lesson, the day, the term or a date — for the requester's profile (or only them, or a
  class), written to the decision log with the approver's rationale. The log names the request by its
  reference, never the pupil.
- A teacher may allow a site for one of their own classes (``people.<logon>.classes``) for a lesson or
  the rest of the day.
- Nothing can allow a site in a locked category, nor one the config's own override blocks (change the
  config for that: it is the network manager's decision, with its rationale).
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from schoolproxy.config import Config
from schoolproxy.filtering.hostnames import InvalidHost, normalise_entry
from schoolproxy.monitoring.access import Viewer, may_decide_unblock, viewer_for
from schoolproxy.records import unblock as store
from schoolproxy.records.unblock import UnblockError
from schoolproxy.snapshot import Snapshot

UTC = dt.timezone.utc
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
MIN_REASON = 5
SCOPES = ("profile", "group", "user")


def clean_reason(text: str, limit: int) -> str:
    """The requester's reason as stored and shown: no control or direction characters, whitespace
    collapsed, at most ``limit`` characters."""
    text = " ".join(_CONTROL.sub(" ", text or "").split())
    if len(text) < MIN_REASON:
        raise UnblockError("Please say why you need this page for your work.")
    if len(text) > limit:
        raise UnblockError(f"Please keep your reason under {limit} characters.")
    return text


def current_term(config: Config, day: dt.date):
    """The term ``day`` is in, else the next one (in a holiday), else None."""
    upcoming = [t for t in config.terms if t.end >= day]
    return min(upcoming, key=lambda t: t.start) if upcoming else None


def expiry(config: Config, until: str, now: dt.datetime) -> dt.datetime:
    """``lesson``, ``day`` (the end of today), ``term`` (the end of this term) or a date / date and time,
    in the school's time zone; always in the future."""
    tz = ZoneInfo(config.timezone)
    local = now.astimezone(tz)
    until = until.strip().lower()
    if until == "lesson":
        return now + dt.timedelta(minutes=config.unblock.lesson_minutes)
    if until == "day":
        return local.replace(hour=23, minute=59, second=59, microsecond=0)
    if until == "term":
        term = current_term(config, local.date())
        if term is None:
            raise UnblockError("'until the end of term' needs the school's term dates in the config (terms:)")
        return dt.datetime.combine(term.end, dt.time(23, 59, 59), tz)
    try:
        moment = dt.datetime.fromisoformat(until)
    except ValueError:
        raise UnblockError(f"until {until!r}: say lesson, day, term, a date (2026-12-18) or a date and time") from None
    if len(until) <= 10:  # a date: to the end of it
        moment = moment.replace(hour=23, minute=59, second=59)
    moment = moment if moment.tzinfo else moment.replace(tzinfo=tz)
    if moment <= now:
        raise UnblockError(f"until {until!r} is not in the future")
    if moment > now + dt.timedelta(days=366):
        raise UnblockError("an approval lasts at most a year: change the config for a lasting decision")
    return moment


def _site(raw: str) -> tuple[str, str]:
    try:
        host, path = normalise_entry(raw)
    except InvalidHost as e:
        raise UnblockError(f"site {raw!r}: {e}") from None
    return host, path


def _allowable(snap: Snapshot, site: str, profiles: list[str]) -> str:
    """The normalised site, if it may be allowed for these profiles; else :class:`UnblockError`."""
    host, path = _site(site)
    policy = snap.policy
    mask = policy.lists.classify(host, path or "/")
    if mask & policy.locked:
        names = ", ".join(sorted(policy.lists.names(mask & policy.locked)))
        raise UnblockError(f"{host}{path} is in the locked category {names} (illegal content): it can never be allowed")
    for p in profiles:
        compiled = policy.profiles.get(p)
        if compiled is None:
            raise UnblockError(f"unknown profile {p!r}")
        ov = compiled.overrides.match(host, path or "/")
        if ov is not None and ov.settings.action == "block":
            raise UnblockError(f"the config's own rule {ov.rule} blocks {host}{path} for {p} "
                               f"(\"{ov.settings.rationale}\"): change the config to allow it")
    return host + path


def _scope_profiles(config: Config, scope: str, value: str, request: dict | None) -> list[str]:
    if scope == "profile":
        if value not in config.profiles:
            raise UnblockError(f"unknown profile {value!r} (profiles: {', '.join(config.profiles)})")
        return [value]
    if scope == "group":
        group = next((s for g, s in config.identity.groups.items() if g.lower() == value.lower()), None)
        if group is None:
            raise UnblockError(f"unknown group {value!r} (groups in identity.groups: "
                               f"{', '.join(config.identity.groups) or 'none'})")
        return [group.profile]
    if scope == "user":
        return [request["profile"]] if request else list(config.profiles)
    raise UnblockError(f"scope must be one of {', '.join(SCOPES)}")


def _describe(scope: str, value: str) -> str:
    return {"profile": f"profile {value}", "group": f"class {value}", "user": "the requester only"}[scope]


def approve(db: Engine, snap: Snapshot, ref: str, by: str | Viewer, until: str, why: str, scope: str = "profile",
            scope_value: str | None = None, site: str | None = None, now: dt.datetime | None = None) -> dict:
    config = snap.config
    approver = _approver(config, by)
    why = " ".join((why or "").split())
    if len(why) < 3:
        raise UnblockError("say why it is allowed (--why): the decision log keeps it")
    request = store.get_request(db, ref)
    if request["status"] != "pending":
        raise UnblockError(f"request {request['ref']} was already {request['status']} by {request['decided_by']}")
    now = now or dt.datetime.now(UTC)
    expires = expiry(config, until, now)
    if scope == "user":
        scope_value = request["username"]
    value = scope_value or request["profile"]
    allowed = _allowable(snap, site or request["host"], _scope_profiles(config, scope, value, request))
    tz = ZoneInfo(config.timezone)
    change = (f"Allowed {allowed} for {_describe(scope, value)} until {expires.astimezone(tz):%a %d %b %Y %H:%M} "
              f"(unblock request {request['ref']})")
    override = {"site": allowed, "scope": scope, "scope_value": value.lower() if scope == "user" else value,
                "rationale": why, "author": str(approver), "expires_at": expires, "source": "unblock"}
    return store.decide(db, ref, "approved", str(approver), why, override, (change, why))


def refuse(db: Engine, snap: Snapshot, ref: str, by: str | Viewer, why: str) -> dict:
    approver = _approver(snap.config, by)
    why = " ".join((why or "").split())
    if len(why) < 3:
        raise UnblockError("say why (--why): the requester is shown it on the block page")
    request = store.get_request(db, ref)
    change = f"Refused unblock request {request['ref']} for {request['host']}"
    return store.decide(db, ref, "refused", str(approver), why[:500], None, (change, why))


def class_allow(db: Engine, snap: Snapshot, by: str | Viewer, cls: str, site: str, until: str, why: str,
                now: dt.datetime | None = None) -> tuple[int, dt.datetime, str]:
    """A teacher allows a site for one of their classes for a lesson (or the rest of the day)."""
    config = snap.config
    teacher = by if isinstance(by, Viewer) else viewer_for(config, by)
    if teacher is None or "teacher" not in teacher.roles:
        raise UnblockError(f"{by} is not a teacher in the config (people: with role teacher)")
    classes = classes_of(config, teacher)
    mine = {c.lower(): c for c in classes}
    if cls.lower() not in mine:
        raise UnblockError(f"{teacher.name} may allow sites for their own classes only "
                           f"({', '.join(classes) or 'none in the config'})")
    cls = mine[cls.lower()]
    if until not in ("lesson", "day"):
        raise UnblockError("a class allow lasts a lesson or the rest of the day; ask the computing lead for longer")
    why = " ".join((why or "").split())
    if len(why) < 3:
        raise UnblockError("say what it is for (--why): the decision log keeps it")
    scope = "group" if cls in config.identity.groups else "profile"
    allowed = _allowable(snap, site, _scope_profiles(config, scope, cls, None))
    now = now or dt.datetime.now(UTC)
    expires = expiry(config, until, now)
    tz = ZoneInfo(config.timezone)
    change = f"Allowed {allowed} for {_describe(scope, cls)} until {expires.astimezone(tz):%a %d %b %Y %H:%M} (class allow)"
    oid = store.add_override(db, {"site": allowed, "scope": scope, "scope_value": cls, "rationale": why,
                                  "author": str(teacher), "expires_at": expires, "source": "class"}, (change, why))
    return oid, expires, allowed


def classes_of(config: Config, teacher: Viewer) -> list[str]:
    """The classes a teacher may allow a site for (``people.<logon>.classes``)."""
    person = next((p for u, p in config.people.items() if u.lower() == teacher.username), None)
    return list(person.classes) if person is not None and "teacher" in teacher.roles else []


def _approver(config: Config, by: str | Viewer) -> Viewer:
    """The person deciding: a console viewer (roles from people: and directory groups) or a logon."""
    viewer = by if isinstance(by, Viewer) else viewer_for(config, by or "")
    allowed = set(config.unblock.approvers)
    if not may_decide_unblock(config, viewer):
        raise UnblockError(f"{getattr(by, 'username', by) or 'you'}: only {', '.join(sorted(allowed))} (people: in the config) may decide "
                           f"unblock requests")
    return viewer
