"""The block page: HTML a seven-year-old understands, with the details staff need underneath.

Everything shown that came from the request (URL, username) is attacker-controlled: the template is
rendered with autoescaping on, and URLs are shortened so a hostile one cannot flood the page.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from urllib.parse import quote

import jinja2
from markupsafe import escape

from schoolproxy.verdict import Verdict

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("schoolproxy.filtering", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_template = _env.get_template("blockpage.html")
MAX_URL_SHOWN = 300

#: Child-friendly words for a category, used in "It looks like …".
KID_WORDS = {
    "child-abuse": "a site with illegal content",
    "terrorism": "a site with illegal content",
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


#: The template's variables, in the order of a page's "shape" (which of them are empty).
FIELDS = ("ref", "url", "kind", "categories", "rule", "reason", "profile", "username", "when", "school",
          "report_to", "report_href", "ask_href", "outcome")
_MARK = re.compile("\x00(" + "|".join(FIELDS) + ")\x00")


def render(verdict: Verdict, url: str, school: str, report_to: str = "", report_email: str = "",
           ask_href: str = "", outcome: str = "") -> str:
    """The page. ``ask_href``: the unblock request form for this block, if the person may ask;
    ``outcome``: what became of the last time they asked about this site."""
    shown = url if len(url) <= MAX_URL_SHOWN else url[:MAX_URL_SHOWN] + "…"
    kind = next((KID_WORDS[c] for c in verdict.categories if c in KID_WORDS), "")
    report_href = ""
    if report_email:
        # The reference is letters, digits and '-': only the URL (attacker-controlled) needs quoting.
        report_href = (f"mailto:{report_email}?subject=Blocked%20page%20{verdict.ref}&body=Reference%20"
                       f"{verdict.ref}%0ABlocked%3A%20{quote(shown)}%0AWhy%20it%20should%20be%20allowed%3A%20")
    values = {
        "ref": verdict.ref,
        "url": escape(shown),
        "kind": _escaped(kind),
        "categories": _escaped(", ".join(sorted(verdict.categories)) or "none"),
        "rule": _escaped(verdict.rule),
        "reason": _escaped(verdict.reason),
        "profile": _escaped(verdict.profile),
        "username": _escaped(verdict.username or ""),
        "when": _when(int(verdict.time)),
        "school": _escaped(school),
        "report_to": _escaped(report_to),
        "report_href": escape(report_href),
        "ask_href": escape(ask_href),
        "outcome": escape(outcome),
    }
    parts = _skeleton(tuple(map(bool, map(values.__getitem__, FIELDS))))
    page = parts.copy()
    page[1::2] = map(values.__getitem__, parts[1::2])
    return "".join(page)


# Values from the configuration and the verdict's rule repeat from one block to the next: escaped once.
# The URL (attacker-controlled, different every time) is escaped on each page. Bounded, either way.
@functools.lru_cache(maxsize=4096)
def _escaped(text: str) -> str:
    return escape(text)


@functools.lru_cache(maxsize=4)
def _when(second: int) -> str:
    return dt.datetime.fromtimestamp(second).strftime("%d/%m/%Y %H:%M:%S")


@functools.lru_cache(maxsize=64)
def _skeleton(shape: tuple[bool, ...]) -> list[str]:
    """The template rendered once per shape with a marker for each value, split into static text (even
    indices) and field names (odd): a block page is then a join of escaped values, a fraction of a Jinja
    render, which matters under a flood of blocked requests. Each value is escaped exactly as
    autoescape would, and never scanned for markers, so a hostile URL cannot inject one."""
    marked = {f: f"\x00{f}\x00" if present else "" for f, present in zip(FIELDS, shape)}
    return _MARK.split(_template.render(**marked))

