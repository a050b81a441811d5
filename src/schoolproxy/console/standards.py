"""Pages for the standards' evidence: the queue of unblock requests (approvers), teachers' class allows,
the expiring allows in force, and the annual review pack.

An approval or a class allow is decided by the same functions as the command line
(:mod:`schoolproxy.standards.unblock`), stamped with the signed-in person; the running proxy applies it
within seconds. Opening the queue — pupils' names and words — is written to the access audit.
"""

from __future__ import annotations

import datetime as dt
import threading

from flask import Blueprint, current_app, make_response, redirect, request, url_for

from schoolproxy.console import web
from schoolproxy.console.web import Refused, audit, needs, render
from schoolproxy.monitoring import access
from schoolproxy.records import unblock as store
from schoolproxy.snapshot import Snapshot, build_snapshot
from schoolproxy.standards import reviewpack, unblock

bp = Blueprint("standards", __name__)
DECIDED_DAYS = 14
MAX_FIELD = 500
#: The review pack's own policy: its styles are inline (one self-contained file) and it has no scripts.
PACK_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")

_cached: list[tuple[object, Snapshot]] = []
_lock = threading.Lock()


def snapshot() -> Snapshot:
    """The filter's compiled policy for the console's current config: built again only when the config
    changes (the lists come from their compiled cache)."""
    config = web.state().config
    with _lock:
        if not _cached or _cached[0][0] is not config:
            _cached[:] = [(config, build_snapshot(config.source, run_tests=False))]
        return _cached[0][1]


def _label(st, logon: str) -> str:
    name = st.names.name(logon)
    return name.label if name is not None else logon


@bp.get("/unblock")
@needs("standards.unblock_queue")
def unblock_queue(error: str = "", status: int = 200, form: dict | None = None):
    st, v = web.state(), web.viewer()
    decider = access.may_decide_unblock(st.config, v)
    pending, decided = [], []
    if decider:
        since = web.now() - dt.timedelta(days=DECIDED_DAYS)
        for r in store.list_requests(st.db, dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc), "pending"):
            pending.append({**r, "who": _label(st, r["username"])})
        decided = [{**r, "who": _label(st, r["username"])}
                   for r in reversed(store.list_requests(st.db, since)) if r["status"] != "pending"]
        audit("(unblock requests)", f"unblock requests: {len(pending)} waiting, {len(decided)} decided")
    allows = store.active_overrides(st.db)
    if not decider:  # a teacher sees the allows for their own classes
        mine = {c.lower() for c in unblock.classes_of(st.config, v)}
        allows = [o for o in allows if o["scope"] == "group" and o["scope_value"].lower() in mine]
    groups = sorted(st.config.identity.groups)
    return render("unblock.html", status, pending=pending, decided=decided, allows=allows, decider=decider,
                  classes=unblock.classes_of(st.config, v), groups=groups, error=error,
                  form=form or {}, terms=bool(st.config.terms), lesson=st.config.unblock.lesson_minutes,
                  aware=store.aware)


def _done(message: str):
    console = current_app.extensions["schoolproxy_console"]
    console.notices.add(web.session().id, message)
    return redirect(url_for("standards.unblock_queue"), 303)


def _field(name: str) -> str:
    return " ".join(request.form.get(name, "")[:MAX_FIELD].split())


@bp.post("/unblock/<ref>/approve")
@needs("standards.unblock_queue")
def approve(ref: str):
    st, v = web.state(), web.viewer()
    ref = web.valid_ref(ref)
    scope = request.form.get("scope", "profile")
    if scope not in unblock.SCOPES:
        raise Refused(400, "Not understood", "Choose whom to allow it for.")
    try:
        r = unblock.approve(st.db, snapshot(), ref, v, _field("until") or "lesson", _field("why"), scope,
                            (_field("group") or None) if scope == "group" else None, _field("site") or None)
    except store.UnblockError as e:
        return unblock_queue(str(e), 400)
    return _done(f"Request {r['ref']} approved: {r['host']} is allowed, and it is in the decision log.")


@bp.post("/unblock/<ref>/refuse")
@needs("standards.unblock_queue")
def refuse(ref: str):
    st, v = web.state(), web.viewer()
    try:
        r = unblock.refuse(st.db, snapshot(), web.valid_ref(ref), v, _field("why"))
    except store.UnblockError as e:
        return unblock_queue(str(e), 400)
    return _done(f"Request {r['ref']} refused. The pupil will see why on the block page.")


@bp.post("/unblock/class")
@needs("standards.unblock_queue")
def class_allow():
    st, v = web.state(), web.viewer()
    form = {"site": _field("site"), "cls": _field("class"), "until": _field("until"), "why": _field("why")}
    try:
        oid, expires, site = unblock.class_allow(st.db, snapshot(), v, form["cls"], form["site"],
                                                 form["until"] or "lesson", form["why"])
    except store.UnblockError as e:
        return unblock_queue(str(e), 400, form)
    return _done(f"{site} is allowed for {form['cls']} until {expires.astimezone(web.tz()):%H:%M}.")


@bp.post("/unblock/allows/<int:override_id>/end")
@needs("standards.unblock_queue")
def end(override_id: int):
    st, v = web.state(), web.viewer()
    found = next((o for o in store.active_overrides(st.db) if o["id"] == override_id), None)
    if found is None:
        return unblock_queue("That allow has already ended.", 400)
    if not access.may_decide_unblock(st.config, v) and found["author"] != str(v):
        raise Refused(403, "Not yours to end", "You can end the allows you made yourself.")
    store.revoke_override(st.db, override_id, str(v), _field("why") or "Ended early from the console")
    return _done(f"The allow for {found['site']} has ended.")


# -- the review pack --------------------------------------------------------------------------------------
@bp.get("/review")
@needs("standards.review_page")
def review_page():
    today = web.today()
    return render("review.html", since=(today - dt.timedelta(days=365)).isoformat(), until=today.isoformat())


@bp.get("/review/pack")
@needs("standards.review_page")
def review_pack():
    st, v = web.state(), web.viewer()
    try:
        since = dt.datetime.combine(dt.date.fromisoformat(request.args.get("since", "")[:10]), dt.time(0), web.tz())
        until = dt.datetime.combine(dt.date.fromisoformat(request.args.get("until", "")[:10]), dt.time(23, 59, 59),
                                    web.tz())
    except ValueError:
        raise Refused(400, "Not understood", "Choose the first and last day of the period.") from None
    if until <= since or until - since > dt.timedelta(days=800):
        raise Refused(400, "Not understood", "The period must end after it starts, and be at most two years.")
    pack = reviewpack.gather(snapshot(), st.db, since, min(until, web.now()), str(v))
    audit("(review pack)", f"review pack {since:%Y-%m-%d} to {until:%Y-%m-%d} (figures only)")
    response = make_response(reviewpack.render(pack))
    response.headers["Content-Security-Policy"] = PACK_CSP
    return response
