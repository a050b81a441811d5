"""The acceptable-use notice's rules: which text, which version, from when an acceptance counts, and
which requests are a page navigation."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from schoolproxy.config import parse_config
from schoolproxy.standards import notice

LONDON = ZoneInfo("Europe/London")
BASE = """\
school: S
identity: {default_profile: pupil}
profiles: {pupil: {role: pupil}, staff: {role: staff}}
"""
TERMS = """\
terms:
  - {name: Autumn, from: 2026-09-03, to: 2026-12-18}
  - {name: Spring, from: 2027-01-05, to: 2027-03-26}
"""


def config(extra: str = ""):
    return parse_config(BASE + extra)


@pytest.mark.parametrize("extra, now, start", [
    (TERMS, dt.datetime(2026, 11, 25, 10, 0, tzinfo=LONDON), dt.datetime(2026, 9, 3, tzinfo=LONDON)),
    (TERMS, dt.datetime(2026, 12, 28, 10, 0, tzinfo=LONDON), dt.datetime(2026, 9, 3, tzinfo=LONDON)),  # holiday
    (TERMS, dt.datetime(2027, 1, 6, 10, 0, tzinfo=LONDON), dt.datetime(2027, 1, 5, tzinfo=LONDON)),
    ("", dt.datetime(2026, 11, 25, 10, 0, tzinfo=LONDON), dt.datetime(2026, 9, 1, tzinfo=LONDON)),    # each year
    ("", dt.datetime(2027, 3, 1, 10, 0, tzinfo=LONDON), dt.datetime(2026, 9, 1, tzinfo=LONDON)),
    ("notice: {renew: once}\n", dt.datetime(2027, 3, 1, tzinfo=LONDON), notice.EVER),
])
def test_renewal_start(extra, now, start):
    assert notice.renewal_start(config(extra), now) == start


def test_renew_each_term_needs_the_terms():
    from schoolproxy.config import ConfigError
    with pytest.raises(ConfigError, match="notice.renew: term needs the school's term dates"):
        config("notice: {renew: term}\n")


def test_version_follows_the_words_not_the_spacing():
    assert notice.version("Be kind\n online.") == notice.version("Be  kind online.  ")
    assert notice.version("Be kind online.") != notice.version("Be kind online!")


def test_text_by_role():
    c = config("notice: {text: For pupils., by_role: {staff: For staff.}}\n")
    assert (notice.text_for(c, "pupil"), notice.text_for(c, "staff")) == ("For pupils.", "For staff.")


def test_paragraphs_and_lists():
    assert notice.paragraphs("Hello\nthere.\n\n- one\n- two\n\nBye.") == [
        ("p", ["Hello there."]), ("ul", ["one", "two"]), ("p", ["Bye."])]


def fields(**headers) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((k.replace("_", "-").encode(), v.encode()) for k, v in headers.items())


@pytest.mark.parametrize("method, headers, navigation", [
    ("GET", fields(Accept="text/html,application/xhtml+xml", Sec_Fetch_Mode="navigate", Sec_Fetch_Dest="document"), True),
    ("GET", fields(accept="text/html", sec_fetch_mode="navigate"), True),
    ("GET", fields(Accept="text/html"), True),                                     # an older browser
    ("GET", fields(Accept="text/html", Sec_Fetch_Mode="navigate", Sec_Fetch_Dest="iframe"), False),
    ("GET", fields(Accept="text/html", Sec_Fetch_Mode="cors", Sec_Fetch_Dest="empty"), False),
    ("GET", fields(Accept="*/*"), False),                                          # curl, apps
    ("GET", fields(Accept="application/json"), False),
    ("GET", fields(Accept="text/html", X_Requested_With="XMLHttpRequest"), False),
    ("POST", fields(Accept="text/html", Sec_Fetch_Mode="navigate", Sec_Fetch_Dest="document"), False),
])
def test_is_navigation(method, headers, navigation):
    assert notice.is_navigation(method, headers) is navigation
