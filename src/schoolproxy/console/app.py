"""The console as a Flask app: signing in and out, and what every request goes through before a page
sees it — the session, the person's roles, CSRF on every change, and the security headers.

Pages are blueprints (alerts, people, office, school). A page for people who are not console users —
the Wi-Fi / BYOD sign-in that ties a person to a device's address (``console/device.py``), or one passed
to :func:`create_app` in ``public`` — needs no console session (they keep the security headers and the limits), and it
checks passwords with ``state.accounts`` (``live.current()``) and the same ``throttle``, both on
``current_app.extensions["schoolproxy_console"]``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable
from zoneinfo import ZoneInfo

from flask import Blueprint, Flask, g, make_response, redirect, request, url_for
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from schoolproxy.console import web, words
from schoolproxy.console.sessions import COOKIE, Sessions
from schoolproxy.console.signin import Throttle, account_key
from schoolproxy.console.state import Live
from schoolproxy.monitoring.access import Viewer, viewer_for
from schoolproxy.monitoring.message import label as theme_label

log = logging.getLogger("schoolproxy.console")
SIGNIN_COOKIE = "__Host-schoolproxy-signin"
MAX_QUERY = 2048              # bytes of query string: nothing the console offers needs more
MAX_USERNAME_FIELD = 256
MAX_PASSWORD_FIELD = 1024
_NEXT = re.compile(r"^/(alerts/[0-9A-Za-z-]{1,20}|inbox|people|register|weekly|decisions|health|audit|export|unblock|"
                   r"review)?$")
OPEN = frozenset({"signin", "signout", "static"})   # endpoints that need no session
#: Where each person starts: the first of these their role opens.
HOME_ORDER = ("alerts.inbox", "office.register", "school.health_page", "school.weekly", "school.decisions",
              "standards.unblock_queue")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
    # (no-referrer would make Chromium send "Origin: null" with the console's own forms)
    "Referrer-Policy": "same-origin", "Cache-Control": "no-store", "Pragma": "no-cache",
    "Strict-Transport-Security": "max-age=31536000",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Resource-Policy": "same-origin",
    "Server": "schoolproxy-console",
}
REASONS = {
    "idle": "You were signed out because the console was not used for a while. Sign in again to carry on.",
    "expired": "You were signed out: sessions last a school day at most. Sign in again to carry on.",
    "out": "You have signed out.",
    "none": "",
}


@dataclass
class Console:
    """The app's shared parts (``current_app.extensions["schoolproxy_console"]``)."""
    live: Live
    db: Engine
    throttle: Throttle
    console_cert: Path | None = None
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    views: web.Views = field(default_factory=web.Views)
    notices: web.Notices = field(default_factory=web.Notices)

    def sessions(self) -> Sessions:
        c = self.live.current().config.console
        return Sessions(self.db, dt.timedelta(minutes=c.idle_minutes), dt.timedelta(hours=c.session_hours))


def create_app(config_path: str | Path, db: Engine, console_cert: Path | None = None,
               blueprints: Iterable[Blueprint] = (), public: Iterable[Blueprint] = ()) -> Flask:
    from schoolproxy.console import alerts, device, office, people, school, standards
    live = Live(config_path, db)
    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024, MAX_FORM_MEMORY_SIZE=64 * 1024, MAX_FORM_PARTS=50,
                      TEMPLATES_AUTO_RELOAD=False, SEND_FILE_MAX_AGE_DEFAULT=300)
    console = Console(live, db, Throttle(db, live.current().config.console.signin), console_cert)
    app.extensions["schoolproxy_console"] = console
    app.jinja_env.globals.update(csrf_field=web.csrf_field)
    _filters(app)
    public = (device.bp, *public)   # signing a device in needs no console session
    for bp in (alerts.bp, people.bp, office.bp, school.bp, standards.bp, *blueprints, *public):
        app.register_blueprint(bp)
    open_blueprints = frozenset(bp.name for bp in public)

    @app.before_request
    def signed_in():
        g.state = live.current()
        g.session = g.viewer = None
        if len(request.query_string) > MAX_QUERY:
            raise web.Refused(414, "Address too long", "That address is far longer than any page of the console "
                              "uses, so it was refused. Nothing was changed.")
        if request.endpoint in OPEN or request.endpoint is None or request.blueprint in open_blueprints:
            return None
        s, status = console.sessions().find(request.cookies.get(COOKIE))
        if s is None:
            if request.method not in ("GET", "HEAD"):
                log.warning("console: %s %s refused: not signed in (%s) from %s", request.method, request.path,
                            status, request.remote_addr)
            target = request.path if request.method == "GET" and _NEXT.match(request.path) else None
            return redirect(url_for("signin", why=status if status != "none" else None, next=target), 303)
        v = _with_name(viewer_for(g.state.config, s.username, s.groups))
        if v is None:
            console.sessions().end(request.cookies.get(COOKIE, ""))
            raise web.Refused(403, "No role in the console", "Your account no longer has a role in the console. "
                              "Ask the head teacher or the network manager if you need one.")
        g.session, g.viewer = s, v
        if request.method not in ("GET", "HEAD") and not _change_allowed(s):
            log.warning("console: %s %s by %s refused: no valid CSRF token", request.method, request.path, v.username)
            raise web.Refused(403, "Change refused", "This change was refused because the form was out of date or "
                              "did not come from this console. Nothing was changed. Go back, reload the page and "
                              "try again.")
        return None

    @app.after_request
    def headers(response):
        for k, v in HEADERS.items():
            if k == "Content-Security-Policy" and k in response.headers:
                continue  # a page with a policy of its own (the review pack: inline styles, no scripts at all)
            response.headers[k] = v
        # The path only: a query string never reaches the log (the console puts no names or searches there).
        log.info("console: %s %s %s %s", response.status_code, request.method, request.path[:200],
                 g.viewer.username if g.get("viewer") is not None else "-")
        return response

    @app.errorhandler(web.Refused)
    def refused(e: web.Refused):
        return web.render("error.html", e.status, title=e.title, message=e.message)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        messages = {404: ("Not found", "There is no such page in the console."),
                    405: ("Not allowed", "That page cannot be used like that."),
                    413: ("Too large", "That was far more than any form of the console sends. Nothing was changed."),
                    400: ("Not understood", "The console could not read that request. Nothing was changed.")}
        title, message = messages.get(e.code or 500, ("Refused", "The console refused that request."))
        if not hasattr(g, "state"):
            g.state = live.current()
        return web.render("error.html", e.code or 500, title=title, message=message)

    @app.errorhandler(Exception)
    def crashed(e: Exception):
        if not hasattr(g, "state"):
            g.state = live.current()
        if isinstance(e, SQLAlchemyError):
            log.error("console: the records database is not answering (%s %s): %s", request.method, request.path,
                      str(e).splitlines()[0][:300])
            g.viewer = None   # nothing that needs the database on this page
            return web.render("error.html", 503, title="The database is not answering",
                              message="The records database is not answering, so nothing can be shown or saved "
                                      "just now. Nothing was changed. Try again in a few minutes, and tell the "
                                      "network manager if it goes on.")
        log.exception("console: error on %s %s", request.method, request.path)
        return web.render("error.html", 500, title="Something went wrong",
                          message="The console hit a problem and did not finish. Nothing more was changed. Try "
                                  "again; if it keeps happening, tell the network manager.")

    @app.get("/")
    def home():
        for endpoint in HOME_ORDER:
            if web.page_allowed(endpoint):
                return redirect(url_for(endpoint), 303)
        raise web.Refused(403, "No pages", "Your role has no pages in the console.")

    @app.route("/signin", methods=["GET", "POST"])
    def signin():
        nonce = request.cookies.get(SIGNIN_COOKIE, "")
        if request.method == "GET" or not nonce:
            return _signin_page(console, REASONS.get(request.args.get("why", ""), ""), 200)
        if not hmac.compare_digest(_signin_token(console, nonce), request.form.get("csrf", "")):
            return _signin_page(console, "The sign-in form was out of date. Please try again.", 403)
        username = request.form.get("username", "")[:MAX_USERNAME_FIELD].strip()
        password = request.form.get("password", "")
        address = request.remote_addr or "unknown"
        if not username or not password or len(password) > MAX_PASSWORD_FIELD:
            return _signin_page(console, "Type your username and password.", 400, username)
        console.throttle.s = g.state.config.console.signin
        attempt = console.throttle.begin(address, username)
        if not attempt.allowed:
            until = attempt.retry_at.astimezone(ZoneInfo(g.state.config.timezone))
            return _signin_page(console, f"Too many sign-in attempts for this account or from this computer. Try "
                                f"again after {until:%H:%M}.", 429, username)
        checked = g.state.accounts.check(username, password)
        if checked.outcome == "unavailable":
            console.throttle.unanswered(attempt)
            return _signin_page(console, "The school directory is not answering, so your password cannot be "
                                "checked. Try again in a few minutes, or use a local console account.", 503, username)
        if checked.outcome == "wrong":
            console.throttle.failed(attempt, address, username)
            return _signin_page(console, "That username and password do not match. Check them and try again.",
                                401, username)
        console.throttle.succeeded(attempt, username)
        v = viewer_for(g.state.config, checked.username, checked.groups)
        if v is None:
            log.warning("console: %s signed in from %s but has no role in the console", account_key(username), address)
            return _signin_page(console, "Your password is right, but your account has no role in the console. "
                                "Ask the head teacher or the network manager if you need one.", 403)
        token, _ = console.sessions().create(checked.username, checked.groups, address)
        log.info("console: %s signed in from %s (roles: %s)", v.username, address, ", ".join(sorted(v.roles)))
        target = request.form.get("next", "")
        response = redirect(target if _NEXT.match(target) else url_for("home"), 303)
        response.set_cookie(COOKIE, token, secure=True, httponly=True, samesite="Strict", path="/")
        response.delete_cookie(SIGNIN_COOKIE, secure=True, httponly=True, samesite="Strict", path="/")
        return response

    @app.post("/signout")
    def signout():
        token = request.cookies.get(COOKIE, "")
        s, _ = console.sessions().find(token)
        if s is not None and s.csrf_ok(request.form.get("csrf")):
            console.sessions().end(token)
            log.info("console: %s signed out", s.username)
        response = redirect(url_for("signin", why="out"), 303)
        response.delete_cookie(COOKIE, secure=True, httponly=True, samesite="Strict", path="/")
        return response

    return app


def _with_name(v: Viewer | None) -> Viewer | None:
    """Someone given a role by a directory group has no name in ``people:``: their directory display name
    is stamped on what they do instead of their logon."""
    if v is None or v.name.lower() != v.username:
        return v
    name = g.state.names.name(v.username)
    return dataclasses.replace(v, name=name.display) if name.source != "logon" else v


def _change_allowed(s) -> bool:
    """A change must carry the session's CSRF token, and come from this console if the browser says where
    it came from (Origin)."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != request.host_url.rstrip("/"):
        return False
    return s.csrf_ok(request.form.get("csrf"))


def _signin_token(console: Console, nonce: str) -> str:
    return hmac.new(console.secret, nonce.encode("ascii", "replace"), hashlib.sha256).hexdigest()


def _signin_page(console: Console, message: str, status: int, username: str = ""):
    nonce = secrets.token_urlsafe(24)
    target = request.values.get("next", "")
    body, code = web.render("signin.html", status, message=message, username=username[:100],
                            csrf=_signin_token(console, nonce), next=target if _NEXT.match(target) else "")
    response = make_response(body, code)
    response.set_cookie(SIGNIN_COOKIE, nonce, secure=True, httponly=True, samesite="Strict", path="/")
    return response


def _filters(app: Flask) -> None:
    def local(name):
        def f(t, *a):
            return getattr(words, name)(t, web.tz(), *a) if t is not None else ""
        return f
    app.jinja_env.filters.update(uk_date=local("uk_date"), uk_time=local("uk_time"),
                                 uk_datetime=local("uk_datetime"), plain=words.plain, theme=theme_label,
                                 engine=lambda host: words.engine_name(host) or words.plain(host, 80),
                                 category=words.category_words)
