"""What every page of the console shares: who is signed in, the checks a page makes before it shows
anything, the access audit, and rendering with the navigation and the delivery warning."""

from __future__ import annotations

import datetime as dt
import functools
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from flask import abort, current_app, g, render_template
from markupsafe import Markup
from sqlalchemy.exc import SQLAlchemyError

from schoolproxy.console.sessions import Session
from schoolproxy.console.state import State
from schoolproxy.monitoring import access
from schoolproxy.monitoring.access import Viewer
from schoolproxy.records import reports

UTC = dt.timezone.utc
REF = re.compile(r"^[0-9A-Za-z]{4}-[0-9A-Za-z]{4}-[0-9A-Za-z]{4}$")


class Refused(Exception):
    """A request refused with a page saying why (status and plain words); nothing was changed."""

    def __init__(self, status: int, title: str, message: str):
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


@dataclass(frozen=True, slots=True)
class Page:
    endpoint: str
    title: str
    allowed: Callable[[State, Viewer], bool]


#: The navigation, in order; a page is listed (and opens) only for those it is allowed to.
PAGES = (
    Page("alerts.inbox", "Inbox", lambda s, v: access.has_inbox(s.config, v)),
    Page("people.find", "Find a person", lambda s, v: access.has_inbox(s.config, v)),
    Page("alerts.exports_page", "Export", lambda s, v: access.has_inbox(s.config, v)),
    Page("school.weekly", "Weekly report", lambda s, v: access.may_see_figures(v)),
    Page("office.register", "Supply register", lambda s, v: access.may_keep_register(v)),
    Page("school.decisions", "Decision log",
         lambda s, v: access.may_see_figures(v) or access.may_record_decisions(v)),
    Page("standards.unblock_queue", "Unblock requests",
         lambda s, v: access.may_decide_unblock(s.config, v) or access.may_allow_for_class(v)),
    Page("standards.review_page", "Review pack", lambda s, v: access.may_make_review_pack(v)),
    Page("school.health_page", "Health", lambda s, v: access.may_see_health(v)),
    Page("school.audit_page", "Access audit", lambda s, v: access.may_read_audit(v)),
)


def state() -> State:
    return g.state


def viewer() -> Viewer:
    return g.viewer


def session() -> Session:
    return g.session


def tz() -> ZoneInfo:
    return ZoneInfo(g.state.config.timezone)


def now() -> dt.datetime:
    return dt.datetime.now(UTC)


def today() -> dt.date:
    return now().astimezone(tz()).date()


def page_allowed(endpoint: str) -> bool:
    page = next(p for p in PAGES if p.endpoint == endpoint)
    return page.allowed(g.state, g.viewer)


def needs(endpoint_page: str):
    """Refuse the view (403) unless the signed-in person may open ``endpoint_page``."""
    def wrap(view):
        @functools.wraps(view)
        def checked(*args, **kwargs):
            if not page_allowed(endpoint_page):
                raise Refused(403, "Not available to you", "This page is not part of your role in the console.")
            return view(*args, **kwargs)
        return checked
    return wrap


def audit(subject: str, what: str) -> None:
    """Write to the access audit: who looked at whose browsing or which alert, and when."""
    reports.audit(g.state.db, str(g.viewer), subject or "(unknown)", what)


def valid_ref(ref: str) -> str:
    if not REF.match(ref or ""):
        abort(404)
    return ref.upper()


def csrf_field() -> Markup:
    token = g.session.csrf if getattr(g, "session", None) is not None else ""
    return Markup('<input type="hidden" name="csrf" value="%s">') % token


def render(template: str, status: int = 200, **values):
    from schoolproxy.console.health import delivery_warning, search_alerts_warning
    st, v = g.state, g.get("viewer")
    nav = [(p.endpoint, p.title) for p in PAGES if v is not None and p.allowed(st, v)]
    warning = searches_off = None
    try:
        if v is not None:
            warning, searches_off = delivery_warning(st), search_alerts_warning(st)
    except SQLAlchemyError:
        warning = "The records database is not answering, so alerts cannot be shown or checked. Tell the network manager."
    notices = current_app.extensions["schoolproxy_console"].notices.take(g.session.id) \
        if g.get("session") is not None else []
    return render_template(template, nav=nav, viewer=v, school=st.config.school, warning=warning,
                           searches_off=searches_off,
                           notices=notices, idle_seconds=st.config.console.idle_minutes * 60, **values), status


class Notices:
    """One-off messages shown on the next page ("Acknowledged."), per session, bounded."""

    def __init__(self, per_session: int = 5, sessions: int = 1000):
        self._by_session: OrderedDict[str, list[str]] = OrderedDict()
        self._lock = threading.Lock()
        self.per_session, self.sessions = per_session, sessions

    def add(self, session_id: str, text: str) -> None:
        with self._lock:
            items = self._by_session.setdefault(session_id, [])
            items.append(text)
            del items[:-self.per_session]
            self._by_session.move_to_end(session_id)
            while len(self._by_session) > self.sessions:
                self._by_session.popitem(last=False)

    def take(self, session_id: str) -> list[str]:
        with self._lock:
            return self._by_session.pop(session_id, [])


class Views:
    """What a person asked to see (a logon and dates), kept on the server under a random id, so the
    address bar and the server's logs never hold a name or a search."""

    def __init__(self, per_session: int = 50, sessions: int = 1000):
        self._by_session: OrderedDict[str, OrderedDict[str, dict]] = OrderedDict()
        self._lock = threading.Lock()
        self.per_session, self.sessions = per_session, sessions

    def keep(self, session_id: str, query: dict) -> str:
        view_id = secrets.token_urlsafe(12)
        with self._lock:
            views = self._by_session.setdefault(session_id, OrderedDict())
            views[view_id] = query
            while len(views) > self.per_session:
                views.popitem(last=False)
            self._by_session.move_to_end(session_id)
            while len(self._by_session) > self.sessions:
                self._by_session.popitem(last=False)
        return view_id

    def get(self, session_id: str, view_id: str) -> dict | None:
        with self._lock:
            return self._by_session.get(session_id, {}).get(view_id)
