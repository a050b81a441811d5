"""The supply register, kept by the office: who holds a shared logon (Supply1, Student1) when. Records
and alerts of a shared logon then name the person who held it."""

from __future__ import annotations

import datetime as dt
import re

from flask import Blueprint, current_app, redirect, request, url_for

from schoolproxy.console import web, words
from schoolproxy.console.web import Refused, needs, render
from schoolproxy.records.visits import RegisterError, add_visit, cancel_visit, end_visit, list_visits

bp = Blueprint("office", __name__)
PAST_DAYS, AHEAD_DAYS = 7, 28
_TIME = re.compile(r"^(\d{1,2})[:.](\d{2})$")


def _time(text: str, what: str) -> dt.time:
    m = _TIME.match(text.strip())
    if not m or int(m[1]) > 23 or int(m[2]) > 59:
        raise ValueError(f"The {what} time must be like 08:30.")
    return dt.time(int(m[1]), int(m[2]))


def _page(error: str = "", status: int = 200, form: dict | None = None):
    tz, now = web.tz(), web.now()
    today = now.astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    visits = list_visits(web.state().db, today - dt.timedelta(days=PAST_DAYS), today + dt.timedelta(days=AHEAD_DAYS))
    rows = []
    for v in reversed(visits):
        state = "upcoming" if v.starts > now else ("now" if v.covers(now) else "ended")
        rows.append({"visit": v, "state": state, "day": words.day_heading(v.starts.astimezone(tz).date()),
                     "starts": words.uk_time(v.starts, tz), "ends": words.uk_time(v.ends, tz) if v.ends else "open"})
    defaults = {"logon": "", "person": "", "class": "", "date": words.uk_date(now, tz), "from": "08:30",
                "to": "15:30"}
    return render("register.html", status, rows=rows, error=error, form={**defaults, **(form or {})})


@bp.get("/register")
@needs("office.register")
def register():
    return _page()


@bp.post("/register/add")
@needs("office.register")
def add():
    form = {k: request.form.get(k, "")[:256] for k in ("logon", "person", "class", "date", "from", "to")}
    tz = web.tz()
    try:
        day = words.parse_uk_date(form["date"])
        starts = dt.datetime.combine(day, _time(form["from"], "start"), tz)
        ends = dt.datetime.combine(day, _time(form["to"], "finish"), tz)
        visit = add_visit(web.state().db, form["logon"], form["person"], starts, ends, form["class"].strip() or None,
                          str(web.viewer()))
    except (ValueError, RegisterError) as e:
        message = str(e).replace("--logon", "the logon").replace("--person", "the person's name")
        message = re.sub(r"; end that visit first.*$", ": end or cancel that visit first.", message)
        return _page(message[:1].upper() + message[1:].rstrip(".") + ".", 400, form)
    current_app.extensions["schoolproxy_console"].notices.add(
        web.session().id, f"Registered: {visit.logon} is {visit.person} on {words.uk_date(visit.starts, tz)} from "
        f"{words.uk_time(visit.starts, tz)} to {words.uk_time(visit.ends, tz)}.")
    return redirect(url_for("office.register"), 303)


def _visit_id(raw: str) -> int:
    if not raw.isdigit() or len(raw) > 18:
        raise Refused(404, "Not found", "There is no such visit.")
    return int(raw)


@bp.post("/register/<visit_id>/end")
@needs("office.register")
def end(visit_id: str):
    vid = _visit_id(visit_id)
    now = web.now()
    visit = next((v for v in list_visits(web.state().db, now - dt.timedelta(days=1), now + dt.timedelta(seconds=1))
                  if v.id == vid and v.covers(now)), None)
    if visit is None:
        return _page("That visit is not going on now, so it cannot be ended.", 409)
    end_visit(web.state().db, visit.logon, now)
    current_app.extensions["schoolproxy_console"].notices.add(
        web.session().id, f"Ended: {visit.person} no longer holds {visit.logon}.")
    return redirect(url_for("office.register"), 303)


@bp.post("/register/<visit_id>/cancel")
@needs("office.register")
def cancel(visit_id: str):
    try:
        visit = cancel_visit(web.state().db, _visit_id(visit_id), web.now(), str(web.viewer()))
    except RegisterError as e:
        return _page(str(e).capitalize() + ".", 409)
    current_app.extensions["schoolproxy_console"].notices.add(
        web.session().id, f"Cancelled: {visit.person} on {visit.logon}, {words.uk_date(visit.starts, web.tz())}.")
    return redirect(url_for("office.register"), 303)
