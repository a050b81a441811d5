"""The block page: HTML a seven-year-old understands, with the details staff need underneath.

Everything shown that came from the request (URL, username) is attacker-controlled: the template is
rendered with autoescaping on, and URLs are shortened so a hostile one cannot flood the page.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote

import jinja2

from .verdict import Verdict

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("schoolproxy", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_template = _env.get_template("blockpage.html")
MAX_URL_SHOWN = 300

#: Child-friendly words for a category, used in "It looks like …".
KID_WORDS = {
    "adult": "a grown-ups only site",
    "gambling": "a gambling site",
    "social-networking": "a social networking site",
    "chat": "a chat site",
    "forums": "a forum or chat room",
    "games": "a games site",
    "dating": "a dating site",
    "drugs": "a site about drugs",
    "violence": "a site with violence or weapons",
    "hate": "a site with hateful content",
    "malware": "a site that could harm the computer",
    "phishing": "a site that tries to trick people",
    "vpn-proxy": "a way to get around the school filter",
    "doh": "a way to get around the school filter",
    "piracy": "a site for copying things illegally",
    "ip-address": "a web address without a name",
}


def render(verdict: Verdict, url: str, school: str, report_to: str = "", report_email: str = "") -> str:
    shown = url if len(url) <= MAX_URL_SHOWN else url[:MAX_URL_SHOWN] + "…"
    kind = next((KID_WORDS[c] for c in verdict.categories if c in KID_WORDS), "")
    report_href = ""
    if report_email:
        subject = quote(f"Blocked page {verdict.ref}")
        body = quote(f"Reference {verdict.ref}\nBlocked: {shown}\nWhy it should be allowed: ")
        report_href = f"mailto:{report_email}?subject={subject}&body={body}"
    return _template.render(
        ref=verdict.ref,
        url=shown,
        kind=kind,
        categories=", ".join(sorted(verdict.categories)) or "none",
        rule=verdict.rule,
        reason=verdict.reason,
        profile=verdict.profile,
        username=verdict.username,
        when=dt.datetime.fromtimestamp(verdict.time).strftime("%d/%m/%Y %H:%M:%S"),
        school=school,
        report_to=report_to,
        report_href=report_href,
    )
