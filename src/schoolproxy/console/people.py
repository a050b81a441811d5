"""One person's browsing over a range of days: their searches first, then their concerns, then what they
visited, day by day.

The person and the dates are sent by POST and kept on the server under a random id (the page's address
is ``/people/v/<id>``), so no name or logon reaches the address bar, the browser's history or a log.
"""

from __future__ import annotations

import datetime as dt
from itertools import groupby

from flask import Blueprint, current_app, redirect, request, url_for

from schoolproxy.console import data, web, words
from schoolproxy.console.web import Refused, audit, needs, render
from schoolproxy.identity.directory import valid_username

bp = Blueprint("people", __name__)
DEFAULT_DAYS = 7
MAX_DAYS = 92
MAX_FIELD = 120


def _views():
    return current_app.extensions["schoolproxy_console"].views


def _form_values() -> tuple[str, str, str]:
    return (request.form.get("who", "")[:MAX_FIELD].strip(), request.form.get("from", "")[:20],
            request.form.get("to", "")[:20])


@bp.get("/people")
@needs("people.find")
def find():
    t = web.today()
    return render("people.html", who="", start=words.uk_date(t - dt.timedelta(days=DEFAULT_DAYS - 1), web.tz()),
                  end=words.uk_date(t, web.tz()), error="", choices=[])


@bp.post("/people")
@needs("people.find")
def search():
    st = web.state()
    who, raw_from, raw_to = _form_values()

    def again(error: str, status: int = 400, choices=()):
        return render("people.html", status, who=who, start=raw_from, end=raw_to, error=error, choices=list(choices))
    try:
        start, end = words.parse_uk_date(raw_from), words.parse_uk_date(raw_to)
    except ValueError as e:
        return again(str(e))
    if end < start:
        return again("The first date must be on or before the second.")
    if (end - start).days >= MAX_DAYS:
        return again(f"Choose at most {MAX_DAYS} days at a time.")
    if not who:
        return again("Type the person's logon or name.")
    logon = request.form.get("logon", "").strip().lower()
    if logon:
        candidates = [logon] if valid_username(logon) else []
    else:
        candidates = []
        if valid_username(who) and (data.known_logon(st, who) or who.lower() in st.names.mis):
            candidates.append(who.lower())
        candidates += [u for u in st.names.logons_named(who) if u not in candidates]
    if not candidates:
        return again("No one with that logon or name has any browsing records. Check the spelling, or try their "
                     "logon (e.g. jsmith).", 404)
    if len(candidates) > 1:
        return again("More than one person matches: choose one.", 200,
                     [(u, st.names.name(u).label) for u in candidates])
    view = _views().keep(web.session().id, {"logon": candidates[0], "from": start, "to": end})
    return redirect(url_for("people.person", view_id=view), 303)


@bp.get("/people/v/<view_id>")
@needs("people.find")
def person(view_id: str):
    st, v = web.state(), web.viewer()
    query = _views().get(web.session().id, view_id[:40])
    if query is None:
        raise Refused(404, "Search again", "This page was made for an earlier search and is no longer kept. Find the "
                      "person again.")
    logon, start, end = query["logon"], query["from"], query["to"]
    tz = web.tz()
    since = dt.datetime.combine(start, dt.time(), tz)
    until = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), tz)
    rows = data.history(st, logon, since, until)
    span = f"{words.uk_date(start, tz)} to {words.uk_date(end, tz)}"
    if not data.may_see_person(st, v, logon, rows):
        audit(logon, f"REFUSED: browsing {span} (not in their audience)")
        raise Refused(403, "Not available to you", "You cannot see this person's browsing: concerns about them go to "
                      "other people. Nothing about it has been shown.")
    audit(logon, f"browsing {span}")
    name = st.names.name(logon)
    searches = [r for r in rows if r.get("search_term") and not words.is_hidden(r, st.hidden_categories)]
    days = []
    for day, day_rows in groupby(rows, key=lambda r: words.aware(r["time"]).astimezone(tz).date()):
        day_rows = list(day_rows)
        days.append({"heading": words.day_heading(day), "entries": words.timeline(day_rows, st.hidden_categories),
                     "count": len(day_rows), "blocked": sum(1 for r in day_rows if r.get("action") == "block")})
    concerns = data.alerts_about(st, v, logon, since, until)
    supply = sorted({r["person"] for r in rows if r.get("person")})
    return render("person.html", name=name, logon=logon, span=span, searches=searches, days=days,
                  concerns=concerns, total=len(rows), capped=len(rows) >= data.MAX_ROWS, supply=supply,
                  blocked=sum(d["blocked"] for d in days))
