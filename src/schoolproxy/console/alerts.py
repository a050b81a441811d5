"""The inbox, one alert in full (with the person's browsing around it), the incident log's actions, and
exports for CPOMS and for the head teacher."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, Response, redirect, request, url_for

from schoolproxy.console import data, exports, web, words
from schoolproxy.console.web import Refused, audit, needs, render
from schoolproxy.monitoring import evidence as alert_evidence
from schoolproxy.monitoring import store
from schoolproxy.monitoring.access import may_see_alert, role_of_alert

bp = Blueprint("alerts", __name__)
MAX_NOTE = 4000
MIN_MINUTES, MAX_MINUTES = 5, data.MAX_WINDOW_MINUTES
ACTION_WORDS = {"ack": "Acknowledged", "action": "Action recorded", "close": "Closed", "note": "Note added",
                "reopen": "Reopened"}
NOTE_NEEDED = {"action": "Write what was done before recording the action.",
               "close": "Write the outcome before closing the concern.",
               "note": "Write the note first."}
EXPORT_DAYS = 30
MAX_EXPORT_DAYS = 3660


def alert_role(state, alert: dict) -> str:
    """The subject's role when the alert was raised (the rule the CLI's exports follow too)."""
    return role_of_alert(state.config, alert)


def _line(state, alert: dict, record: dict | None) -> tuple[str, str]:
    who = data.who(state, alert)
    return who, words.alert_line(alert, who, record, web.tz(), web.today())


def _open(ref: str) -> tuple[dict, list[dict], list[dict]]:
    """The alert, if the signed-in person is in its audience; the same refusal whether it exists or not."""
    ref = web.valid_ref(ref)
    st, v = web.state(), web.viewer()
    found = data.alert_by_ref(st, ref)
    if found is None or not may_see_alert(v, found[0]):
        subject = (found[0].get("username") or found[0].get("client_ip") or "") if found else "(no such alert)"
        audit(subject, f"REFUSED: alert {ref} (not in their audience)")
        raise Refused(403, "Not in your inbox", "This alert is not one you can open: either there is no alert with "
                      "this reference, or it is about someone whose concerns go to other people. Nothing about it "
                      "has been shown.")
    return found


@bp.get("/inbox")
@needs("alerts.inbox")
def inbox():
    st, v = web.state(), web.viewer()
    closed = request.args.get("show") == "closed"
    since = web.now() - (dt.timedelta(days=30) if closed else dt.timedelta(days=st.config.records.alert_retention_days))
    found = data.visible_alerts(st, v, since, "closed" if closed else "open")
    records = data.records_by_refs(st, [a.get("request_ref") for a in found])
    items = []
    for a in words.sort_inbox(found):
        who, line = _line(st, a, records.get(a.get("request_ref") or ""))
        items.append({"alert": a, "who": who, "line": line})
    audit("(alerts)", f"inbox: {'closed in the last 30 days' if closed else 'open'} ({len(items)} alerts)")
    return render("inbox.html", items=items, closed=closed)


def _minutes() -> int:
    raw = request.args.get("minutes")
    if raw is None:
        return web.state().config.console.timeline_minutes
    if not raw.isdigit() or not MIN_MINUTES <= int(raw) <= MAX_MINUTES:
        raise Refused(400, "Not understood", f"The browsing shown either side of an alert must be a number of "
                      f"minutes from {MIN_MINUTES} to {MAX_MINUTES}.")
    return int(raw)


def _detail(ref: str, error: str = "", status: int = 200):
    st, v = web.state(), web.viewer()
    alert, notes, sent = _open(ref)
    minutes = _minutes()
    record = data.records_by_refs(st, [alert.get("request_ref")]).get(alert.get("request_ref") or "")
    who, line = _line(st, alert, record)
    rows = data.around(st, alert, minutes)
    may_see = data.may_see_person(st, v, alert.get("username"), rows, alert.get("profile"))
    entries = words.timeline(rows, st.hidden_categories, alert.get("request_ref")) if may_see else None
    s = st.config.alerts
    role = alert_role(st, alert)
    threshold = s.thresholds.get(alert.get("profile") or "") or s.thresholds.get(role)
    reasons = words.why(alert, threshold, s.throttle_minutes, alert["severity"] in s.immediate)
    found_evidence, not_listed = data.evidence(st, alert, record)
    summary = exports.cpoms_summary(alert, who, words.alert_sentence(alert, who, record, web.tz(), None), notes,
                                    web.tz(), st.config.school, _evidence_lines(st, alert))
    audit(alert.get("username") or alert.get("client_ip") or "",
          f"alert {alert['ref']}" + (f" with browsing {minutes} minutes either side" if may_see else ""))
    return render("alert.html", status, alert=alert, who=who, line=line, notes=notes, sent=sent, minutes=minutes,
                  entries=entries, may_see=may_see, reasons=reasons, evidence=found_evidence, not_listed=not_listed,
                  summary=summary, role=role, group_title=exports.GROUPS.get(role, ""), error=error,
                  choices=(15, 30, 60, 120), record=record, immediate=s.immediate,
                  no_channel=s.smtp is None and s.webhook is None)


@bp.get("/alerts/<ref>")
@needs("alerts.inbox")
def alert(ref: str):
    return _detail(ref)


@bp.post("/alerts/<ref>/<action>")
@needs("alerts.inbox")
def change(ref: str, action: str):
    if action not in store.TRANSITIONS:
        raise Refused(404, "Not found", "There is no such action.")
    alert_row, _, _ = _open(ref)
    note = request.form.get("note", "")
    if len(note) > MAX_NOTE:
        return _detail(ref, f"The note is too long ({len(note)} characters; at most {MAX_NOTE}). Nothing was saved.", 400)
    if action in NOTE_NEEDED and not note.strip():
        return _detail(ref, NOTE_NEEDED[action] + " Nothing was saved.", 400)
    v = web.viewer()
    try:
        store.transition(web.state().db, alert_row["ref"], action, str(v), note)
    except store.AlertError:
        return _detail(ref, f"This concern is {alert_row['status']} now, so it cannot be "
                       f"{ACTION_WORDS[action].lower()}. Nothing was saved.", 409)
    app_console().notices.add(web.session().id, f"{ACTION_WORDS[action]} — recorded as {v.name}.")
    return redirect(url_for("alerts.alert", ref=alert_row["ref"]) + "#log", 303)


def _evidence_lines(st, alert: dict) -> list[str]:
    """Every search and visit behind the alert, one a line with its UK time (for summaries and exports);
    adult and possibly illegal sites by host only."""
    return alert_evidence.lines(alert, data.evidence_rows(st, alert), web.tz())


def app_console():
    from flask import current_app
    return current_app.extensions["schoolproxy_console"]


# -- exports ----------------------------------------------------------------------------------------------
def _range() -> tuple[dt.date, dt.date]:
    today = web.today()
    raw_from, raw_to = request.values.get("from", ""), request.values.get("to", "")
    try:
        start = words.parse_uk_date(raw_from) if raw_from.strip() else today - dt.timedelta(days=EXPORT_DAYS)
        end = words.parse_uk_date(raw_to) if raw_to.strip() else today
    except ValueError as e:
        raise Refused(400, "Not a date", str(e)) from None
    if end < start or (end - start).days > MAX_EXPORT_DAYS:
        raise Refused(400, "Not a date range", "The first date must come before the second, at most ten years apart.")
    return start, end


def _bounds(start: dt.date, end: dt.date) -> tuple[dt.datetime, dt.datetime]:
    tz = web.tz()
    return (dt.datetime.combine(start, dt.time(), tz),
            dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), tz))


def _by_group(start: dt.date, end: dt.date) -> dict[str, list[dict]]:
    st, v = web.state(), web.viewer()
    since, until = _bounds(start, end)
    groups: dict[str, list[dict]] = {}
    for a in data.visible_alerts(st, v, since, "all", limit=100_000):
        if words.aware(a["time"]) < until:
            groups.setdefault(alert_role(st, a), []).append(a)
    return groups


@bp.route("/export", methods=["GET"])
@needs("alerts.exports_page")
def exports_page():
    start, end = _range()
    groups = _by_group(start, end)
    offered = [(role, title, len(groups.get(role, []))) for role, title in exports.GROUPS.items() if role in groups]
    return render("export.html", offered=offered, start=start, end=end)


@bp.post("/export")
@needs("alerts.exports_page")
def export():
    st = web.state()
    role = request.form.get("group", "")
    if role not in exports.GROUPS:
        raise Refused(400, "Not understood", "Choose which concerns to export.")
    start, end = _range()
    found = sorted(_by_group(start, end).get(role, []), key=lambda a: words.aware(a["time"]))
    records = data.records_by_refs(st, [a.get("request_ref") for a in found])
    items = []
    for a in found:
        _, notes, _ = store.get_alert(st.db, a["ref"])
        who = data.who(st, a)
        line = words.alert_sentence(a, who, records.get(a.get("request_ref") or ""), web.tz(), None)
        name = st.names.name(a.get("username")) if a.get("username") else None
        display = a["person"] if a.get("person") and not a["person"].startswith("(") else \
            (name.display if name else who)
        items.append((a, display, (name.group or "") if name else "", line, notes, _evidence_lines(st, a)))
    audit(f"({exports.GROUPS[role]})", f"export of {len(items)} concerns {words.uk_date(start, web.tz())} to "
          f"{words.uk_date(end, web.tz())}")
    body = exports.concerns_csv(items, role, web.tz())
    return Response(body, mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{exports.filename(role, start, end)}"'})
