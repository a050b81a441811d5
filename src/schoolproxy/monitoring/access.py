"""Who may see what (SPEC 5.8): pure rules over the config's ``people`` and an alert's audience.

- A concern about a pupil or a guest goes to the roles in ``alerts.routes`` (the DSL and the computing
  lead by default); about a supply or student teacher, as routed (SLT by default).
- A concern about a member of staff goes to the head teacher only; about the head, to the chair of
  governors.
- Nobody sees a concern about themselves, whatever their roles.
- The network manager sees health, never browsing; governors see figures, never a named pupil; the
  office keeps the supply register. None of them is in any audience unless routed there.

The console and the CLI both ask these functions; neither decides on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from schoolproxy.config import Config


@dataclass(frozen=True, slots=True)
class Viewer:
    """A person acting on what the filter sees: stamped on every change they make."""

    username: str           # logon, lower-case
    name: str               # display name, e.g. "Mrs C Lawrence"
    roles: frozenset[str]

    def __str__(self) -> str:
        return f"{self.name} ({self.username})"


def viewer_for(config: Config, username: str, groups: frozenset[str] = frozenset()) -> Viewer | None:
    """The person with this logon and their roles (from ``people`` and ``role_groups``); None if they
    hold no role. ``groups``: the user's directory groups, any case."""
    key = username.strip().lower()
    person = next((p for u, p in config.people.items() if u.lower() == key), None)
    roles = set(person.roles) if person is not None else set()
    lowered = {g.lower() for g in groups}
    for role, names in config.role_groups.items():
        if any(n.lower() in lowered for n in names):
            roles.add(role)
    if not roles:
        return None
    return Viewer(key, person.name if person is not None else username.strip(), frozenset(roles))


def holds(config: Config, username: str | None, role: str) -> bool:
    """Does the person with this logon hold ``role`` in ``people``? (Directory groups are not asked:
    this runs where no directory answer is to hand, such as when an alert is raised.)"""
    if not username:
        return False
    key = username.lower()
    return any(u.lower() == key and role in p.roles for u, p in config.people.items())


def audience(config: Config, subject_role: str, subject_username: str | None) -> tuple[str, ...]:
    """The roles a concern about this person goes to."""
    if subject_role == "staff":
        return ("chair_of_governors",) if holds(config, subject_username, "head") else ("head",)
    routes = config.alerts.routes
    return tuple(routes.get(subject_role, routes.get("pupil", ("dsl", "computing_lead"))))


def role_of_alert(config: Config, alert: Mapping) -> str:
    """The subject's role when the alert was raised: by its profile, else by where it was routed (a
    profile since renamed). Exports are split by it: a pupils' file never holds a member of staff."""
    profile = config.profiles.get(alert.get("profile") or "")
    if profile is not None:
        return profile.role
    route = set((alert.get("route") or "").split(","))
    return "staff" if route & {"head", "chair_of_governors"} else "pupil"


def for_the_head_alone(config: Config, alert: Mapping) -> bool:
    """A concern about a member of staff: the head's alone (the chair's, about the head), by the school's
    policy. Never in a copy someone else can read — such as the mailbox folder on the gateway, which
    whoever is root there (the network manager) can open."""
    return role_of_alert(config, alert) == "staff"


def may_see_alert(viewer: Viewer, alert: Mapping) -> bool:
    """An alert (a row with ``route`` and ``username``) is seen by its audience, never by its subject."""
    subject = (alert.get("username") or "").lower()
    if subject and subject == viewer.username:
        return False
    route = {r for r in (alert.get("route") or "").split(",") if r}
    return bool(route & viewer.roles)


def may_see_browsing(config: Config, viewer: Viewer, subject_role: str, subject_username: str | None) -> bool:
    """May ``viewer`` look at this person's browsing? Only the audience of their concerns may."""
    if subject_username and subject_username.lower() == viewer.username:
        return False
    return bool(set(audience(config, subject_role, subject_username)) & viewer.roles)


# -- the parts of the console --------------------------------------------------------------------------
# Which pages a role opens; what is on them is still decided per concern and per person by the rules above.
AUDIT_READERS = frozenset({"dsl", "head"})
HEALTH_READERS = frozenset({"network_manager", "computing_lead"})
REGISTER_KEEPERS = frozenset({"office", "head", "slt"})
DECISION_MAKERS = frozenset({"network_manager", "computing_lead", "dsl", "head"})
#: Aggregate figures only (counts by theme, category and outcome): never a name.
FIGURE_READERS = frozenset({"governor", "chair_of_governors", "dsl", "computing_lead", "head", "slt",
                            "network_manager"})


def concern_roles(config: Config) -> frozenset[str]:
    """Every role a concern can be routed to: who has an inbox."""
    routed = {r for targets in config.alerts.routes.values() for r in targets}
    return frozenset(routed | {"head", "chair_of_governors"})


def has_inbox(config: Config, viewer: Viewer) -> bool:
    return bool(viewer.roles & concern_roles(config))


def may_read_audit(viewer: Viewer) -> bool:
    return bool(viewer.roles & AUDIT_READERS)


def may_see_audit_entry(config: Config, viewer: Viewer, subject_role: str | None, subject_username: str | None) -> bool:
    """An access-audit line names whose browsing was looked at: shown to an audit reader only if they may
    see that person's browsing themselves (the DSL never learns that the head looked into a teacher).
    ``subject_role`` None: the line is about no one in particular (a list of alerts)."""
    if not may_read_audit(viewer):
        return False
    if subject_role is None:
        return True
    return may_see_browsing(config, viewer, subject_role, subject_username)


def may_see_health(viewer: Viewer) -> bool:
    return bool(viewer.roles & HEALTH_READERS)


def may_keep_register(viewer: Viewer) -> bool:
    return bool(viewer.roles & REGISTER_KEEPERS)


def may_record_decisions(viewer: Viewer) -> bool:
    return bool(viewer.roles & DECISION_MAKERS)


def may_see_figures(viewer: Viewer) -> bool:
    return bool(viewer.roles & FIGURE_READERS)


def may_decide_unblock(config: Config, viewer: Viewer | None) -> bool:
    """Approve or refuse unblock requests (they name the pupil and carry their words): ``unblock.approvers``."""
    return viewer is not None and bool(viewer.roles & set(config.unblock.approvers))


def may_allow_for_class(viewer: Viewer) -> bool:
    """A teacher may allow a site for their own classes for a lesson (which classes: ``people:``)."""
    return "teacher" in viewer.roles


def may_make_review_pack(viewer: Viewer) -> bool:
    """The annual review pack holds figures and staff names only: whoever sees figures or decides policy."""
    return may_see_figures(viewer) or may_record_decisions(viewer)
