"""What the console reads from the records database, and whether the person asking may see it.

Every decision about who may see an alert or a person's browsing is made by
:mod:`schoolproxy.monitoring.access`; this module only gathers what those rules need to know — above all
every role the subject has had (their profile now, by the config and the directory, and in the records
being shown), so that a teacher whose records say "staff" is never shown to the DSL because the config
alone would have taken them for a pupil.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

from sqlalchemy import and_, func, select

from schoolproxy.console import words
from schoolproxy.console.state import State
from schoolproxy.monitoring import evidence as alert_evidence
from schoolproxy.monitoring import store
from schoolproxy.monitoring.access import Viewer, may_see_alert, may_see_browsing
from schoolproxy.records.reports import name_people
from schoolproxy.records.schema import alerts, requests
from schoolproxy.records.visits import load_register

UTC = dt.timezone.utc
MAX_ROWS = 20_000          # records shown on one page at most
MAX_WINDOW_MINUTES = 240


# -- who is this ----------------------------------------------------------------------------------------
def subject_roles(state: State, username: str | None, rows: list[dict] = (), profile: str | None = None) -> set[str]:
    """Every role this person has had: by the config and directory now, on the alert, and in ``rows``."""
    roles: set[str] = set()
    for p in {profile, *(r.get("profile") for r in rows)}:
        role = state.role_of_profile(p)
        if role is not None:
            roles.add(role)
    if username:
        groups = frozenset()
        directory = state.accounts.directory
        if directory is not None:
            groups = directory.groups(username) or frozenset()
        role = state.role_of_profile(state.resolver.resolve(username, groups)[0])
        if role is not None:
            roles.add(role)
    return roles or {state.role_of_profile(state.config.identity.default_profile) or "pupil"}


def may_see_person(state: State, viewer: Viewer, username: str | None, rows: list[dict] = (),
                   profile: str | None = None) -> bool:
    """The viewer must be in the audience for every role the person has had."""
    return all(may_see_browsing(state.config, viewer, role, username)
               for role in subject_roles(state, username, rows, profile))


def who(state: State, alert_or_row: dict) -> str:
    """'Jamie Smith (Year 4)'; 'Ms A Khan (supply, on Supply1)'; 'an unidentified computer (10.0.20.15)'."""
    user, person = alert_or_row.get("username"), alert_or_row.get("person")
    if not user:
        return f"an unidentified computer ({alert_or_row.get('client_ip') or 'address not known'})"
    if person and not person.startswith("("):
        return f"{person} (on the shared logon {user})"
    name = state.names.name(user)
    if person:  # "(no one registered)"
        return f"{name.label} — shared logon, no one registered at the time"
    return name.label


# -- alerts ---------------------------------------------------------------------------------------------
def visible_alerts(state: State, viewer: Viewer, since: dt.datetime, status: str = "open",
                   limit: int = 2000) -> list[dict]:
    return [a for a in store.list_alerts(state.db, since, status, limit) if may_see_alert(viewer, a)]


def alert_by_ref(state: State, ref: str) -> tuple[dict, list[dict], list[dict]] | None:
    try:
        return store.get_alert(state.db, ref)
    except store.AlertError:
        return None


def records_by_refs(state: State, refs: list[str]) -> dict[str, dict]:
    refs = [r for r in set(refs) if r]
    out: dict[str, dict] = {}
    with state.db.connect() as conn:
        for i in range(0, len(refs), 500):
            for row in conn.execute(select(requests).where(requests.c.ref.in_(refs[i:i + 500]))).mappings():
                out[row["ref"]] = dict(row)
    return out


def evidence_rows(state: State, alert: dict) -> list[dict]:
    """The alert's evidence rows (monitoring.evidence), oldest first; adult sites by their host alone."""
    hidden = {f"category:{c}" for c in state.hidden_categories}
    return [{**r, "url": None} if r["rule"] in hidden else r for r in alert_evidence.of_alert(state.db, alert["id"])]


def evidence(state: State, alert: dict, record: dict | None) -> tuple[list[dict], int]:
    """Everything that raised or repeated the alert, oldest first, and how many more were counted on it
    than were kept. A search is what the person typed; a site its address, or the host alone for adult and
    possibly illegal content."""
    rows = evidence_rows(state, alert)
    if not rows:  # raised before evidence was kept, or by the filter's own checks
        host = (record or {}).get("host")
        term = alert.get("search_term") if alert.get("rule") == "search-phrases" else None
        # A search is shown as what the person typed; the rule's own evidence text (which names the phrases
        # matched, not all of them typed) only for the other rules.
        return [{"time": alert["time"], "search_term": term, "engine": words.engine_name(host) or host,
                 "text": None if term else alert["evidence"], "ref": alert.get("request_ref"), "raised": True}], 0
    items = []
    for i, r in enumerate(rows):
        term = r["words"] if r["kind"] == "search" else None
        items.append({"time": r["time"], "search_term": term, "engine": words.engine_name(r["host"]) or r["host"],
                      "matched": alert_evidence.shown_matched(r), "text": None if term else alert_evidence.describe(r),
                      "ref": r["request_ref"], "raised": i == 0})
    return items, alert_evidence.not_listed(alert, rows)


def around(state: State, alert: dict, minutes: int) -> list[dict]:
    """The subject's records ``minutes`` either side of the alert, oldest first."""
    t = alert["time"] if alert["time"].tzinfo else alert["time"].replace(tzinfo=UTC)
    span = (requests.c.time >= t - dt.timedelta(minutes=minutes), requests.c.time <= t + dt.timedelta(minutes=minutes))
    if alert.get("username"):
        who_ = func.lower(requests.c.username) == alert["username"].lower()
    else:
        who_ = and_(requests.c.username.is_(None), requests.c.client_ip == alert.get("client_ip"))
    with state.db.connect() as conn:
        rows = conn.execute(select(requests).where(who_, *span).order_by(requests.c.time).limit(MAX_ROWS)).mappings()
        return [dict(r) for r in rows]


def history(state: State, username: str, since: dt.datetime, until: dt.datetime) -> list[dict]:
    span = (requests.c.time >= since, requests.c.time < until)
    with state.db.connect() as conn:
        rows = conn.execute(select(requests).where(func.lower(requests.c.username) == username.lower(), *span)
                            .order_by(requests.c.time).limit(MAX_ROWS)).mappings()
        rows = [dict(r) for r in rows]
    return name_people(state.db, rows, lambda u, p: state.role_of_profile(p) == "supply") if rows else []


def alerts_about(state: State, viewer: Viewer, username: str, since: dt.datetime, until: dt.datetime) -> list[dict]:
    with state.db.connect() as conn:
        rows = conn.execute(select(alerts).where(func.lower(alerts.c.username) == username.lower(),
                                                 alerts.c.time >= since, alerts.c.time < until)
                            .order_by(alerts.c.time.desc()).limit(500)).mappings()
        return [dict(r) for r in rows if may_see_alert(viewer, r)]


def known_logon(state: State, username: str) -> bool:
    with state.db.connect() as conn:
        return conn.execute(select(requests.c.id).where(func.lower(requests.c.username) == username.lower())
                            .limit(1)).first() is not None


# -- the supply register ----------------------------------------------------------------------------------
def register_visits(state: State, since: dt.datetime, until: dt.datetime):
    from schoolproxy.records.visits import list_visits
    return list_visits(state.db, since, until)


def who_held(state: State, logon: str, at: dt.datetime):
    return load_register(state.db, at - dt.timedelta(days=1)).who(logon, at)


# -- figures (no names) -----------------------------------------------------------------------------------
def figures(state: State, since: dt.datetime, until: dt.datetime) -> dict:
    """Counts for the weekly report and governors: alerts by theme, severity and state; blocked requests by
    category; requests in all. Never a name."""
    a, r = alerts.c, requests.c
    with state.db.connect() as conn:
        by_theme = conn.execute(select(a.theme, a.severity, a.status, func.count()).where(
            a.time >= since, a.time < until).group_by(a.theme, a.severity, a.status)).all()
        blocked = conn.execute(select(r.category, func.count()).where(
            r.action == "block", r.time >= since, r.time < until).group_by(r.category)
            .order_by(func.count().desc())).all()
        total = conn.execute(select(func.count()).select_from(requests).where(
            r.time >= since, r.time < until)).scalar_one()
        people = conn.execute(select(func.count(func.distinct(func.lower(r.username)))).where(
            r.time >= since, r.time < until, r.username.is_not(None))).scalar_one()
    themes: dict[str, Counter] = {}
    for theme, severity, status, n in by_theme:
        c = themes.setdefault(theme, Counter())
        c[severity] += n
        c["closed" if status == "closed" else "open"] += n
        c["all"] += n
    return {"themes": dict(sorted(themes.items(), key=lambda kv: -kv[1]["all"])),
            "alerts": sum(c["all"] for c in themes.values()),
            "open": sum(c["open"] for c in themes.values()),
            "blocked": [(cat, n) for cat, n in blocked], "blocked_total": sum(n for _, n in blocked),
            "requests": total, "people": people}
