"""The acceptable-use notice: which text a user is shown, its version, and from when an acceptance
counts (the start of this term, of this school year, or ever)."""

from __future__ import annotations

import datetime as dt
import hashlib
from zoneinfo import ZoneInfo

from schoolproxy.config import Config

UTC = dt.timezone.utc
EVER = dt.datetime(2000, 1, 1, tzinfo=UTC)


def text_for(config: Config, role: str) -> str:
    return config.notice.by_role.get(role, config.notice.text)


def version(text: str) -> str:
    """A short hash of the text (whitespace aside): a changed text is a new version, accepted afresh."""
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()[:12]


def renew_every(config: Config) -> str:
    return config.notice.renew or ("term" if config.terms else "year")


def renewal_start(config: Config, now: dt.datetime) -> dt.datetime:
    """Acceptances from this moment on count: the start of the current term (the last one begun, in a
    holiday), else of the school year (1 September), or ever for ``renew: once``."""
    tz = ZoneInfo(config.timezone)
    today = now.astimezone(tz).date()
    every = renew_every(config)
    if every == "once":
        return EVER
    if every == "term":
        begun = [t.start for t in config.terms if t.start <= today]
        if begun:
            return dt.datetime.combine(max(begun), dt.time(0, 0), tz)
    year = today.year if today >= dt.date(today.year, 9, 1) else today.year - 1
    return dt.datetime.combine(dt.date(year, 9, 1), dt.time(0, 0), tz)


def paragraphs(text: str) -> list[tuple[str, list[str]]]:
    """The text as blocks: ("p", [text]) for a paragraph, ("ul", [items]) for "- " lines."""
    blocks: list[tuple[str, list[str]]] = []
    for chunk in text.replace("\r\n", "\n").split("\n\n"):
        lines = [line.strip() for line in chunk.split("\n") if line.strip()]
        if not lines:
            continue
        if all(line.startswith("- ") for line in lines):
            blocks.append(("ul", [line[2:].strip() for line in lines]))
        else:
            blocks.append(("p", [" ".join(lines)]))
    return blocks


def is_navigation(method: str, fields) -> bool:
    """A browser opening a page (typing an address, following a link), not a script, an image or an app:
    only these are answered with the notice. Fetch metadata says so where the browser sends it.
    ``fields``: the raw header fields, (name, value) byte pairs, read in one pass."""
    if method != "GET":
        return False
    mode = dest = None
    accept = b""
    for name, value in fields:
        name = name.lower()
        if name == b"sec-fetch-mode":
            mode = value
        elif name == b"sec-fetch-dest":
            dest = value
        elif name == b"accept":
            accept = value
        elif name == b"x-requested-with":
            return False
    if mode is not None:
        return mode == b"navigate" and dest in (None, b"document")
    return b"text/html" in accept
