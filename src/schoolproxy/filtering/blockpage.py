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
#: Those that are the same for every block of one reason in one configuration.
_FIXED = ("kind", "categories", "rule", "reason", "profile", "school", "report_to")
_MARK = re.compile("\x00(" + "|".join(FIELDS) + ")\x00")


def render(verdict: Verdict, url: str, school: str, report_to: str = "", report_email: str = "",
           ask_href: str = "", outcome: str = "") -> bytes:
    """The page, UTF-8. ``ask_href``: the unblock request form for this block, if the person may ask;
    ``outcome``: what became of the last time they asked about this site."""
    shown = url if len(url) <= MAX_URL_SHOWN else url[:MAX_URL_SHOWN] + "…"
    report_href = ""
    if report_email:
        # The reference is letters, digits and '-': only the URL (attacker-controlled) needs quoting.
        report_href = (f"mailto:{report_email}?subject=Blocked%20page%20{verdict.ref}&body=Reference%20"
                       f"{verdict.ref}%0ABlocked%3A%20{quote(shown)}%0AWhy%20it%20should%20be%20allowed%3A%20")
    # What differs from one block to the next, escaped here on every page (the URL is attacker-controlled).
    values = {
        "ref": verdict.ref.encode(),
        "url": _utf8(escape(shown)),
        "username": _escaped(verdict.username or ""),
        "when": _when(int(verdict.time)),
        "report_href": _utf8(escape(report_href)),
        "ask_href": _utf8(escape(ask_href)),
        "outcome": _utf8(escape(outcome)),
    }
    chunks = _prepared(verdict.categories, verdict.rule, verdict.reason, verdict.profile, school, report_to,
                       bool(verdict.username), bool(report_href), bool(ask_href), bool(outcome))
    page = chunks.copy()
    page[1::2] = map(values.__getitem__, chunks[1::2])
    return b"".join(page)


def _utf8(html: str) -> bytes:
    return html.encode("utf-8", "replace")  # a URL's undecodable bytes (surrogates) shown as "?"


# A person's name repeats from one block to the next: escaped once. Bounded.
@functools.lru_cache(maxsize=4096)
def _escaped(text: str) -> bytes:
    return _utf8(escape(text))


@functools.lru_cache(maxsize=4)
def _when(second: int) -> bytes:
    return dt.datetime.fromtimestamp(second).strftime("%d/%m/%Y %H:%M:%S").encode()


@functools.lru_cache(maxsize=256)
def _prepared(categories: tuple[str, ...], rule: str, reason: str, profile: str, school: str, report_to: str,
              username: bool, report_href: bool, ask_href: bool, outcome: bool) -> list[bytes | str]:
    """The page of one reason for blocking in one configuration, as UTF-8 chunks (even indices) with the
    names of the values that differ per block between them (odd): the template rendered once with a
    marker for each value, the values that are the same for every such block filled in, escaped exactly
    as autoescape would. A block page is then a join of a few escaped values, a fraction of a Jinja
    render, which matters under a flood of blocked requests. Values are never scanned for markers, so a
    hostile URL cannot inject one."""
    fixed = {
        "kind": next((KID_WORDS[c] for c in categories if c in KID_WORDS), ""),
        "categories": ", ".join(sorted(categories)) or "none",
        "rule": rule, "reason": reason, "profile": profile, "school": school, "report_to": report_to,
    }
    present = {"ref": True, "url": True, "when": True, "username": username, "report_href": report_href,
               "ask_href": ask_href, "outcome": outcome, **{f: bool(fixed[f]) for f in _FIXED}}
    parts = _MARK.split(_template.render(**{f: f"\x00{f}\x00" if present[f] else "" for f in FIELDS}))
    chunks: list[bytes | str] = []
    text = ""
    for i, part in enumerate(parts):
        if i % 2 == 0:
            text += part
        elif part in fixed:
            text += str(escape(fixed[part]))  # (str + Markup would escape the text before it)
        else:
            chunks += [_utf8(text), part]
            text = ""
    chunks.append(_utf8(text))
    return chunks
