"""People by name and class — "Jamie Smith (Year 4)" — instead of a logon a teacher may not recognise.

Where a name comes from, the first that knows the logon wins:

1. the school's MIS export (a CSV from SIMS, Arbor, Bromcom…), which schools keep current for classes;
2. the directory's attributes (AD ``displayName`` and ``department``), through a lookup the caller gives;
3. the logon itself.

Pure apart from the injected lookup: parsing the CSV and choosing the name; the console supplies the
directory and this module remembers its answers for a while, so a page of alerts asks AD once per person.
"""

from __future__ import annotations

import csv
import io
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_FIELD = 120
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

# Column headings as MIS exports spell them (compared lower-case, spaces and underscores alike).
LOGON_COLUMNS = ("logon", "logon name", "username", "user name", "login", "network login", "network username",
                 "network logon", "samaccountname")
NAME_COLUMNS = ("display name", "displayname", "preferred name", "full name", "name")
FORENAME_COLUMNS = ("preferred forename", "forename", "first name", "legal forename", "given name")
SURNAME_COLUMNS = ("preferred surname", "surname", "last name", "legal surname", "family name")
CLASS_COLUMNS = ("class", "reg group", "registration group", "reg", "form", "tutor group", "department",
                 "year group", "year")


class NamesError(ValueError):
    """The MIS export cannot be read; the message says which file, line or column."""


@dataclass(frozen=True, slots=True)
class Name:
    display: str               # "Jamie Smith", or the logon when nothing better is known
    group: str | None = None   # "Year 4", "4B"
    source: str = "logon"      # mis | directory | logon

    @property
    def label(self) -> str:
        """'Jamie Smith (Year 4)'; 'jsmith' when only the logon is known."""
        return f"{self.display} ({self.group})" if self.group else self.display


def tidy(value: object) -> str:
    """One line of plain text: control and bidi-override characters dropped, spaces collapsed, bounded."""
    return " ".join(_CONTROL.sub(" ", str(value or "")).split())[:MAX_FIELD]


def _key(heading: str) -> str:
    return " ".join(heading.replace("_", " ").strip().lower().split())


def _column(headings: list[str], wanted: tuple[str, ...]) -> int | None:
    keys = [_key(h) for h in headings]
    for w in wanted:
        if w in keys:
            return keys.index(w)
    return None


def parse_mis_csv(text: str, source: str = "<mis csv>") -> dict[str, Name]:
    """logon (lower-case) → Name, from a CSV with a header row. Rows without a logon are skipped."""
    text = text.removeprefix("\ufeff")
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows = csv.reader(io.StringIO(text), dialect)
    headings = next(rows, None)
    if not headings:
        raise NamesError(f"{source}: empty (expected a header row such as 'Logon,Display name,Class')")
    logon = _column(headings, LOGON_COLUMNS)
    name = _column(headings, NAME_COLUMNS)
    forename, surname = _column(headings, FORENAME_COLUMNS), _column(headings, SURNAME_COLUMNS)
    group = _column(headings, CLASS_COLUMNS)
    if logon is None:
        raise NamesError(f"{source}: no logon column (one of: {', '.join(LOGON_COLUMNS)}); "
                         f"found: {', '.join(tidy(h) for h in headings)}")
    if name is None and forename is None and surname is None:
        raise NamesError(f"{source}: no name column (display name, or forename and surname)")
    people: dict[str, Name] = {}
    for row in rows:
        cell = lambda i: tidy(row[i]) if i is not None and i < len(row) else ""  # noqa: E731
        user = cell(logon).lower()
        if not user:
            continue
        display = cell(name) or " ".join(p for p in (cell(forename), cell(surname)) if p)
        if display:
            people[user] = Name(display, cell(group) or None, "mis")
    return people


def read_mis_csv(path) -> dict[str, Name]:
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
            return parse_mis_csv(f.read(), str(path))
    except OSError as e:
        raise NamesError(f"{path}: cannot read the MIS export: {e.strerror}") from None


#: (display name, class) for a logon from the directory, or None when it does not know them.
Lookup = Callable[[str], "tuple[str | None, str | None] | None"]


class NameBook:
    """Names for logons: the MIS export, then the directory (remembered for ``ttl`` seconds), then the logon."""

    def __init__(self, mis: dict[str, Name] | None = None, lookup: Lookup | None = None, ttl: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic, max_remembered: int = 50_000):
        self.mis = mis or {}
        self.lookup = lookup
        self.ttl = ttl
        self.clock = clock
        self.max_remembered = max_remembered
        self._remembered: dict[str, tuple[float, Name | None]] = {}
        self._lock = threading.Lock()

    def name(self, logon: str | None) -> Name | None:
        """None for no logon (an unidentified device)."""
        if not logon:
            return None
        key = logon.strip().lower()
        found = self.mis.get(key)
        if found is not None:
            return found
        return self._from_directory(key) or Name(tidy(logon))

    def _from_directory(self, key: str) -> Name | None:
        if self.lookup is None:
            return None
        now = self.clock()
        with self._lock:
            hit = self._remembered.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        answer = self.lookup(key)
        found = None
        if answer is not None:
            display, group = tidy(answer[0]), tidy(answer[1])
            if display or group:
                found = Name(display or key, group or None, "directory")
        with self._lock:
            if len(self._remembered) >= self.max_remembered:
                self._remembered.clear()
            self._remembered[key] = (now + self.ttl, found)
        return found

    def logons_named(self, text: str) -> list[str]:
        """Logons in the MIS export whose name contains ``text`` (case-insensitive): find a pupil by name."""
        needle = tidy(text).lower()
        if len(needle) < 2:
            return []
        return sorted(u for u, n in self.mis.items() if needle in n.display.lower())[:50]
