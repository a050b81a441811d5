"""Pages about the school as a whole: the weekly report, the decision log, the health of the system, and
the access audit (who looked at whose browsing)."""

from __future__ import annotations

import datetime as dt
import ipaddress

from flask import Blueprint, current_app, redirect, request, url_for

from schoolproxy.console import data, health, web, words
from schoolproxy.console.alerts import alert_role
from schoolproxy.console.web import Refused, audit, needs, render
from schoolproxy.monitoring import access
from schoolproxy.records.decisions import DecisionError, add_decision, list_decisions
from schoolproxy.records.schema import access_audit

bp = Blueprint("school", __name__)
MAX_WEEKS_AGO = 52
AUDIT_DAYS = 30
AUDIT_ROWS = 2000


@bp.get("/weekly")
@needs("school.weekly")
def weekly():
    st, v = web.state(), web.viewer()
    raw = request.args.get("weeks_ago", "0")
    if not raw.isdigit() or int(raw) > MAX_WEEKS_AGO:
        raise Refused(400, "Not understood", f"Choose a week from this one back to {MAX_WEEKS_AGO} weeks ago.")
    weeks_ago = int(raw)
    until = web.now() - dt.timedelta(weeks=weeks_ago)
    since = until - dt.timedelta(days=7)
    figures = data.figures(st, since, until)
    items = []
    if access.has_inbox(st.config, v):
        found = [a for a in data.visible_alerts(st, v, since, "all", 5000) if words.aware(a["time"]) < until]
        records = data.records_by_refs(st, [a.get("request_ref") for a in found])
        for a in words.sort_inbox(found):
            who = data.who(st, a)
            items.append({"alert": a, "line": words.alert_line(a, who, records.get(a.get("request_ref") or ""),
                                                               web.tz(), web.today()),
                          "role": alert_role(st, a)})
        audit("(alerts)", f"weekly report {words.uk_date(since, web.tz())} to {words.uk_date(until, web.tz())} "
              f"({len(items)} alerts)")
    return render("weekly.html", figures=figures, items=items, since=since, until=until, weeks_ago=weeks_ago,
                  max_weeks=MAX_WEEKS_AGO, names=access.has_inbox(st.config, v), category_text=st.category_text)


@bp.get("/decisions")
@needs("school.decisions")
def decisions(error: str = "", status: int = 200, form: dict | None = None):
    rows = list(reversed(list_decisions(web.state().db, dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))))
    return render("decisions.html", status, rows=rows, error=error, form=form or {"change": "", "why": ""},
                  may_add=access.may_record_decisions(web.viewer()))


@bp.post("/decisions")
@needs("school.decisions")
def add():
    if not access.may_record_decisions(web.viewer()):
        raise Refused(403, "Not available to you", "Your role can read the decision log but not add to it.")
    form = {"change": request.form.get("change", "")[:2000], "why": request.form.get("why", "")[:4000]}
    if len(form["why"].strip()) < 3 or not form["change"].strip():
        return decisions("Write what changed and why: a decision without its reason is no use to a review.", 400, form)
    try:
        n = add_decision(web.state().db, form["change"], form["why"], str(web.viewer()))
    except DecisionError as e:
        return decisions(str(e), 400, form)
    current_app.extensions["schoolproxy_console"].notices.add(web.session().id, f"Decision {n} recorded.")
    return redirect(url_for("school.decisions"), 303)


@bp.get("/health")
@needs("school.health_page")
def health_page():
    st = web.state()
    console = current_app.extensions["schoolproxy_console"]
    return render("health.html", checks=health.checks(st, console.console_cert))


def _subject_person(subject: str) -> tuple[str | None, bool]:
    """(logon or None, is this line about a person at all)."""
    if subject.startswith("("):
        return None, False
    try:
        ipaddress.ip_address(subject)
        return None, True
    except ValueError:
        return subject, True


@bp.get("/audit")
@needs("school.audit_page")
def audit_page():
    from sqlalchemy import select
    st, v = web.state(), web.viewer()
    since = web.now() - dt.timedelta(days=AUDIT_DAYS)
    with st.db.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(access_audit).where(access_audit.c.time >= since)
                                              .order_by(access_audit.c.id.desc()).limit(AUDIT_ROWS)).mappings()]
    allowed: dict[str, bool] = {}
    shown = []
    for r in rows:
        logon, is_person = _subject_person(r["subject"])
        key = r["subject"].lower()
        if key not in allowed:
            roles = data.subject_roles(st, logon) if is_person else {None}
            allowed[key] = all(access.may_see_audit_entry(st.config, v, role, logon) for role in roles)
        if allowed[key]:
            label = st.names.name(logon).label if logon else r["subject"]
            shown.append({**r, "label": label})
    audit("(access audit)", f"access audit, last {AUDIT_DAYS} days")
    return render("audit.html", rows=shown, days=AUDIT_DAYS)
