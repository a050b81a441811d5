"""The proxy's own pages, on a reserved name (``block_page.pages_host``, ``schoolproxy.invalid`` by
default) that no website can own: the unblock request form and the acceptable-use notice.

Who is asking is the identity the proxy established for the request (its sign-in, logon feed or
subnet), never anything the form says. The forms are protected against cross-site requests — a page
elsewhere making a pupil's browser post here — by a token tied to the person, the purpose and the day
(an HMAC with a key every worker shares) and by the browser's ``Origin`` header. Bodies are small and
bounded; everything shown is escaped.

:func:`handle` is synchronous and may touch the database: the addon runs it in a worker thread.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple
from urllib.parse import parse_qs, quote, urlsplit

import jinja2
from sqlalchemy import Engine, func, select

from schoolproxy.config import Config
from schoolproxy.identity.profiles import Identity
from schoolproxy.records import notice as notice_log
from schoolproxy.records import unblock as unblock_log
from schoolproxy.records.redact import redact_path
from schoolproxy.records.schema import requests
from schoolproxy.standards import notice
from schoolproxy.standards.unblock import clean_reason

UTC = dt.timezone.utc
#: Largest form body accepted, in bytes (a reason of a few hundred characters needs far less).
MAX_BODY = 8 * 1024
_REF = re.compile(r"^[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}$")
_HTML = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store",
         "X-Frame-Options": "DENY", "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                                                "form-action 'self'; frame-ancestors 'none'",
         "Referrer-Policy": "same-origin"}

_env = jinja2.Environment(loader=jinja2.PackageLoader("schoolproxy.standards", "templates"), autoescape=True,
                          undefined=jinja2.StrictUndefined)


class Page(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


class PageRequest(NamedTuple):
    method: str
    scheme: str
    path: str                   # path and query
    headers: dict[str, str]     # lower-case names
    body: bytes
    identity: Identity
    client_ip: str


class Blocked(NamedTuple):
    """A block page shown to someone: what an unblock request is about."""
    ref: str
    username: str | None
    profile: str
    host: str
    url: str                    # as shown to staff: query values redacted
    rule: str
    categories: str
    device: str | None = None


# -- the forms' key and tokens ----------------------------------------------------------------------
def load_key(path: Path) -> bytes:
    """The forms' secret, shared by every worker: created once (0600), then read."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(20):  # another worker may be writing it this moment
            key = path.read_bytes()
            if len(key) >= 32:
                return key
            time.sleep(0.1)
        raise ValueError(f"{path}: the forms' secret is too short; delete it and restart") from None
    with os.fdopen(fd, "wb") as f:
        key = os.urandom(32)
        f.write(key)
    return key


def token(key: bytes, purpose: str, subject: str, about: str, day: dt.date | None = None) -> str:
    day = day or dt.datetime.now(UTC).date()
    msg = f"{purpose}\x00{subject}\x00{about}\x00{day.isoformat()}".encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()[:32]


def token_ok(key: bytes, given: str, purpose: str, subject: str, about: str) -> bool:
    today = dt.datetime.now(UTC).date()
    return any(hmac.compare_digest(given, token(key, purpose, subject, about, d))
               for d in (today, today - dt.timedelta(days=1)))


def subject(username: str | None, client_ip: str) -> str:
    """Whose acceptance or request this is: the logon, else the device's address."""
    return username.lower() if username else f"ip:{client_ip}"


def subject_of(identity: Identity, client_ip: str) -> str:
    return subject(identity.username, client_ip)


def safe_next(url: str | None) -> str | None:
    """Where to go after accepting the notice: an http(s) URL, nothing else (no javascript:, no data:)."""
    if not url or len(url) > 4096 or any(ord(c) < 32 or ord(c) == 127 for c in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme in ("http", "https") and parts.hostname else None


# -- what the pages need from the running proxy ----------------------------------------------------------
@dataclass
class PagesContext:
    config: Config
    db: Engine | None
    key: bytes
    #: Recent block pages by reference, filled by the proxy as it shows them (this process only).
    recent: Callable[[str], Blocked | None] = lambda ref: None
    #: Called when someone accepts the notice, so this process stops showing it at once.
    accepted: Callable[[str, str], None] = lambda subject, version: None
    now: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(UTC))


def handle(ctx: PagesContext, req: PageRequest) -> Page:
    path = urlsplit(req.path).path.rstrip("/") or "/"
    if path == "/unblock" and ctx.config.unblock.enabled:
        return _unblock_post(ctx, req) if req.method == "POST" else _unblock_form(ctx, req)
    if path == "/notice" and ctx.config.notice.enabled:
        return _notice_post(ctx, req) if req.method == "POST" else _notice_page(ctx, req)
    if path == "/" and req.method in ("GET", "HEAD"):
        return message(ctx.config, 200, "The school's internet filter",
                       ["This is the school's internet filter. If a page was blocked, the block page says why and "
                        "what to do."])
    return message(ctx.config, 404, "Page not found", ["There is no such page here."])


def render(name: str, config: Config, status: int = 200, form_to_anywhere: bool = False, **values) -> Page:
    body = _env.get_template(name).render(school=config.school, **values).encode()
    headers = dict(_HTML)
    if form_to_anywhere:  # the notice's form ends in a redirect to the page the person asked for
        headers["Content-Security-Policy"] = headers["Content-Security-Policy"].replace(
            "form-action 'self'", "form-action 'self' http: https:")
    return Page(status, headers, body)


def message(config: Config, status: int, title: str, lines: list[str], kind: str = "", back: str = "") -> Page:
    return render("message.html", config, status, title=title, lines=lines, kind=kind, back=back)


def _cross_site(ctx: PagesContext, req: PageRequest) -> bool:
    """A post another site's page made this browser send: its Origin is not ours."""
    origin = req.headers.get("origin")
    if origin is None:
        return req.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none")
    host = ctx.config.block_page.pages_host
    return origin not in (f"http://{host}", f"https://{host}")


def _form(req: PageRequest) -> dict[str, str]:
    try:
        fields = parse_qs(req.body.decode("utf-8"), max_num_fields=10, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in fields.items() if v}


# -- unblock requests ------------------------------------------------------------------------------------
def find_block(ctx: PagesContext, ref: str, identity: Identity) -> Blocked | None:
    """The block page ``ref``, if it was shown to this person: from this process's memory, else from the
    records (another worker showed it)."""
    if not _REF.match(ref):
        return None
    found = ctx.recent(ref)
    if found is None and ctx.db is not None:
        with ctx.db.connect() as conn:
            row = conn.execute(select(requests).where(requests.c.ref == ref, requests.c.action == "block")
                               ).mappings().first()
        if row is not None:
            found = Blocked(ref, row["username"], row["profile"], row["host"],
                            _url(row["scheme"], row["host"], row["port"], row["path"]), row["rule"], row["categories"],
                            row["device"])
    if found is None or not found.username or not identity.username \
            or found.username.lower() != identity.username.lower():
        return None
    return found


def _url(scheme: str, host: str, port: int, path: str) -> str:
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}{'' if port == default else f':{port}'}{path}"


def shown_url(url: str) -> str:
    """A blocked address as the request keeps it: query values redacted, bounded."""
    parts = urlsplit(url)
    path = parts.path or "/"
    return f"{parts.scheme}://{parts.netloc}" + redact_path(path + (f"?{parts.query}" if parts.query else ""))


def _not_found(ctx: PagesContext, ref: str) -> Page:
    who = ctx.config.block_page.report_to or "your teacher"
    return message(ctx.config, 404, "We could not find that blocked page",
                   ["Ask for a page to be checked from its block page, while you are signed in.",
                    f"Or tell {who}, and give them the number on the block page{f' ({ref})' if _REF.match(ref) else ''}."])


def _unblock_form(ctx: PagesContext, req: PageRequest, error: str = "", reason: str = "") -> Page:
    ref = (parse_qs(urlsplit(req.path).query).get("ref") or [""])[0].strip().upper()[:20]
    if not req.identity.username:
        return message(ctx.config, 403, "Please ask your teacher",
                       ["This computer is not signed in, so the filter cannot tell who is asking.",
                        f"Tell your teacher and give them the number on the block page{f' ({ref})' if _REF.match(ref) else ''}."])
    block = find_block(ctx, ref, req.identity)
    if block is None:
        return _not_found(ctx, ref)
    if block.rule.startswith("locked:"):
        return message(ctx.config, 403, "This page cannot be unblocked",
                       ["This page is blocked for everyone, and the school cannot change that.",
                        "If something online has worried you, tell a grown-up you trust."])
    return render("unblock.html", ctx.config, 400 if error else 200, title="Ask for this page to be checked",
                  url=block.url, ref=ref, error=error, reason=reason, max_reason=ctx.config.unblock.max_reason,
                  report_to=ctx.config.block_page.report_to,
                  token=token(ctx.key, "unblock", subject_of(req.identity, req.client_ip), ref))


def _unblock_post(ctx: PagesContext, req: PageRequest) -> Page:
    form = _form(req)
    ref = form.get("ref", "").strip().upper()[:20]
    subject = subject_of(req.identity, req.client_ip)
    if _cross_site(ctx, req) or not token_ok(ctx.key, form.get("token", ""), "unblock", subject, ref):
        return message(ctx.config, 403, "Please try again",
                       ["This request did not come from the form on this page. Go back to the blocked page and ask "
                        "again from there."])
    if not req.identity.username:
        return _unblock_form(ctx, req._replace(path=f"/unblock?ref={quote(ref)}"))
    block = find_block(ctx, ref, req.identity)
    if block is None:
        return _not_found(ctx, ref)
    if block.rule.startswith("locked:"):
        return _unblock_form(ctx, req._replace(path=f"/unblock?ref={quote(ref)}"))
    raw = form.get("reason", "")
    with_ref = req._replace(path=f"/unblock?ref={quote(ref)}")
    try:
        reason = clean_reason(raw, ctx.config.unblock.max_reason)
        if ctx.db is None:
            raise unblock_log.UnblockError("Requests cannot be taken just now. Please tell your teacher.")
        made = unblock_log.add_request(
            ctx.db, username=req.identity.username, profile=req.identity.profile, client_ip=req.client_ip,
            device=req.identity.device, host=block.host, url=block.url, block_ref=block.ref, rule=block.rule,
            categories=block.categories, reason=reason, per_user_per_day=ctx.config.unblock.per_user_per_day,
            now=ctx.now())
    except unblock_log.UnblockError as e:
        return _unblock_form(ctx, with_ref, error=str(e), reason=raw[:ctx.config.unblock.max_reason])
    who = ctx.config.block_page.report_to or "a member of staff"
    return message(ctx.config, 200, "Thank you — your request has been sent",
                   [f"{who} will check {block.host} and decide.",
                    "You will see the answer on the block page the next time you try to visit it.",
                    f"Your request number is {made['ref']}."], kind="ok")


# -- the acceptable-use notice -----------------------------------------------------------------------------
def role_of(config: Config, identity: Identity) -> str:
    p = config.profiles.get(identity.profile)
    return p.role if p is not None else "pupil"


def _again(config: Config) -> str:
    return {"term": "at the start of each term", "year": "at the start of each school year",
            "once": "only if the text changes"}[notice.renew_every(config)]


def has_accepted(ctx: PagesContext, subject: str, version: str) -> bool:
    if ctx.db is None:
        return False
    since = notice.renewal_start(ctx.config, ctx.now())
    from schoolproxy.records.schema import notice_acceptances as na
    with ctx.db.connect() as conn:
        return conn.execute(select(func.count()).select_from(na).where(
            na.c.subject == subject, na.c.version == version, na.c.time >= since)).scalar_one() > 0


def _notice_page(ctx: PagesContext, req: PageRequest, status: int = 200) -> Page:
    config = ctx.config
    nxt = safe_next((parse_qs(urlsplit(req.path).query).get("next") or [""])[0]) or ""
    text = notice.text_for(config, role_of(config, req.identity))
    version = notice.version(text)
    subject = subject_of(req.identity, req.client_ip)
    if nxt and has_accepted(ctx, subject, version):  # accepted through another worker a moment ago
        ctx.accepted(subject, version)
        return Page(303, {"Location": nxt, "Cache-Control": "no-store"}, b"")
    who = req.identity.username or ""
    return render("notice.html", config, status, form_to_anywhere=True, title=config.notice.title, blocks=notice.paragraphs(text),
                  accept_label=config.notice.accept_label, version=version, next=nxt, who=who, again=_again(config),
                  token=token(ctx.key, "notice", subject, version))


def _notice_post(ctx: PagesContext, req: PageRequest) -> Page:
    config = ctx.config
    form = _form(req)
    subject = subject_of(req.identity, req.client_ip)
    version = notice.version(notice.text_for(config, role_of(config, req.identity)))
    nxt = safe_next(form.get("next")) or ""
    again = req._replace(method="GET", path="/notice?next=" + quote(nxt, safe=""))
    if _cross_site(ctx, req) or not token_ok(ctx.key, form.get("token", ""), "notice", subject, version) \
            or form.get("version") != version:
        return _notice_page(ctx, again, 400)  # a stale or forged form: show the current text again
    if ctx.db is not None:
        notice_log.record_acceptance(ctx.db, subject, req.identity.username, req.identity.profile, req.client_ip,
                                     version, ctx.now())
    ctx.accepted(subject, version)
    if nxt:
        return Page(303, {"Location": nxt, "Cache-Control": "no-store"}, b"")
    return message(config, 200, "Thank you", ["You can now use the school internet."], kind="ok")
