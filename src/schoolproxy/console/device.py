"""Signing a device in (``/device``): a pupil's own tablet on the Wi-Fi, an iPad in transparent mode, a
visitor's laptop — devices with no school logon behind them. A person signs in with their school account
and the device's address is attached to them for ``identity.logon_feed.sign_in_hours``; until then the
device gets the fail-closed profile (SPEC 1: unidentified devices are filtered as strictly as any pupil).

The page needs no console session and is open to anyone who can reach the console. It checks the password
with the console's own accounts (school accounts only, never a local console account the proxy would not
know) behind the console's sign-in throttle, and then asks the proxy to attach the name through the logon
feed (:func:`schoolproxy.identity.signin.post_sign_in`). The address attached is the one the page's
request came from, never one typed into the form, so nobody can put their name on someone else's device.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import secrets
from zoneinfo import ZoneInfo

from flask import Blueprint, current_app, g, make_response, request

from schoolproxy.config import Config, ConfigError
from schoolproxy.console import web
from schoolproxy.console.signin import account_key
from schoolproxy.identity.directory import read_secret
from schoolproxy.identity.signin import SignInError, post_sign_in, sign_out_remote

log = logging.getLogger("schoolproxy.console")
bp = Blueprint("device", __name__)
MAX_USERNAME_FIELD = 256
MAX_PASSWORD_FIELD = 1024


def feed_url(config: Config) -> str | None:
    """Where the proxy's logon feed answers (its ``listen`` address), or None when there is none."""
    feed = config.identity.logon_feed
    if feed is None:
        return None
    host, _, port = feed.listen.rpartition(":")
    host = host.strip("[]")
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@bp.route("/device", methods=["GET", "POST"])
def sign_in():
    config = g.state.config
    if feed_url(config) is None:
        return _page("This school has not turned on signing devices in (it needs the logon feed: "
                     "identity.logon_feed in the config). Ask the network manager.", 404, available=False)
    if request.method == "GET":
        return _page("", 200)
    console = current_app.extensions["schoolproxy_console"]
    nonce = request.cookies.get(_COOKIE, "")
    if not nonce or not hmac.compare_digest(_token(nonce), request.form.get("csrf", "")):
        return _page("The form was out of date. Please try again.", 403)
    address = request.remote_addr or ""
    if request.form.get("action") == "signout":
        return _sign_out(config, request.form.get("username", "")[:MAX_USERNAME_FIELD].strip(), address)
    username = request.form.get("username", "")[:MAX_USERNAME_FIELD].strip()
    password = request.form.get("password", "")
    if not username or not password or len(password) > MAX_PASSWORD_FIELD:
        return _page("Type your username and password.", 400, username=username)
    console.throttle.s = config.console.signin
    attempt = console.throttle.begin(address, username)
    if not attempt.allowed:
        until = attempt.retry_at.astimezone(ZoneInfo(config.timezone))
        return _page(f"Too many sign-in attempts for this account or from this device. Try again after {until:%H:%M}.",
                     429, username=username)
    checked = g.state.accounts.check(username, password, school_only=True)
    if checked.outcome == "unavailable":
        console.throttle.unanswered(attempt)
        return _page("The school directory is not answering, so your password cannot be checked. Try again in a "
                     "few minutes.", 503, username=username)
    if checked.outcome == "wrong":
        console.throttle.failed(attempt, address, username)
        return _page("That username and password do not match. Check them and try again.", 401, username=username)
    console.throttle.succeeded(attempt, username)
    hours = config.identity.logon_feed.sign_in_hours
    try:
        done = post_sign_in(feed_url(config), read_secret(config.path(config.identity.logon_feed.secret_file)),
                            checked.username, address, hours=hours)
    except (SignInError, ConfigError, KeyError) as e:  # said, never a half sign-in
        log.error("console: device sign-in of %s from %s failed: %s", account_key(username), address, e)
        return _page("Your password is right, but the filter did not accept the sign-in, so this device is not "
                     "signed in. Tell the network manager.", 502, username=username)
    until = dt.datetime.fromtimestamp(done.expires, ZoneInfo(config.timezone))
    log.info("console: device %s signed in as %s until %s", address, done.user, f"{until:%d/%m/%Y %H:%M}")
    return _page("", 200, signed_in=done.user, until=until)


def _sign_out(config: Config, username: str, address: str):
    if not username:
        return _page("Type the username this device is signed in as.", 400)
    try:
        cleared = sign_out_remote(feed_url(config), read_secret(config.path(config.identity.logon_feed.secret_file)),
                                  account_key(username), address)
    except (SignInError, ConfigError, KeyError) as e:
        log.error("console: device sign-out of %s from %s failed: %s", account_key(username), address, e)
        return _page("The filter did not answer, so this device may still be signed in. Tell the network manager.",
                     502)
    if not cleared:
        return _page(f"This device was not signed in as {username}.", 200)
    log.info("console: device %s signed out (%s)", address, account_key(username))
    return _page("This device is signed out. Close the browser if it is shared.", 200, signed_out=True)


_COOKIE = "__Host-schoolproxy-device"


def _token(nonce: str) -> str:
    secret = current_app.extensions["schoolproxy_console"].secret
    return hmac.new(secret, b"device\0" + nonce.encode("ascii", "replace"), hashlib.sha256).hexdigest()


def _page(message: str, status: int, username: str = "", available: bool = True, **values):
    nonce = secrets.token_urlsafe(24)
    hours = g.state.config.identity.logon_feed.sign_in_hours if available else 0
    body, code = web.render("device.html", status, message=message, username=username[:100], csrf=_token(nonce),
                            address=request.remote_addr or "", hours=hours, available=available, **values)
    response = make_response(body, code)
    response.set_cookie(_COOKIE, nonce, secure=True, httponly=True, samesite="Strict", path="/")
    return response
