import datetime as dt
import time
from urllib.parse import quote

import pytest
from conftest import make_verdict as verdict

from schoolproxy.filtering import blockpage
from schoolproxy.filtering.blockpage import render as render_bytes
from schoolproxy.verdict import new_reference


def render(*args, **kw) -> str:
    return render_bytes(*args, **kw).decode()


def test_block_page_says_why_what_to_do_and_monitoring():
    v = verdict()
    html = render(v, "http://socialsite.test/", "Test Primary", "Mrs Lawrence", "esafety@school.test")
    assert "This page is blocked" in html and "tell your teacher" in html
    assert "a social networking site" in html and "category:social-networking" in html
    assert v.ref in html and "monitored" in html and "Test Primary" in html
    assert "mailto:esafety@school.test?subject=Blocked%20page%20" in html
    assert "0800 1111" in html  # Childline


def test_attacker_controlled_text_is_escaped_and_shortened():
    evil = "http://x.test/<script>alert(1)</script>?q=\"><img src=x onerror=alert(1)>" + "A" * 5000
    html = render(verdict(username="<b>kid</b>"), evil, "School")
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>kid</b>" not in html
    assert "&lt;script&gt;" in html and len(html) < 12000


def test_references_are_unique_and_readable():
    refs = {new_reference() for _ in range(300_000)}  # far more than a proxy serves in a second
    assert len(refs) == 300_000
    assert all(len(r) == 14 and r[4] == r[9] == "-" and set(r) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ-") for r in refs)


def render_with_jinja(verdict, url: str, school: str, report_to: str = "", report_email: str = "", ask_href: str = "",
                      outcome: str = "") -> str:
    """The block page as the template alone renders it (autoescape on): what render() must produce."""
    shown = url if len(url) <= blockpage.MAX_URL_SHOWN else url[:blockpage.MAX_URL_SHOWN] + "…"
    report_href = ""
    if report_email:
        subject = quote(f"Blocked page {verdict.ref}")
        body = quote(f"Reference {verdict.ref}\nBlocked: {shown}\nWhy it should be allowed: ")
        report_href = f"mailto:{report_email}?subject={subject}&body={body}"
    return blockpage._template.render(
        ref=verdict.ref, url=shown,
        kind=next((blockpage.KID_WORDS[c] for c in verdict.categories if c in blockpage.KID_WORDS), ""),
        categories=", ".join(sorted(verdict.categories)) or "none", rule=verdict.rule, reason=verdict.reason,
        profile=verdict.profile, username=verdict.username,
        when=dt.datetime.fromtimestamp(verdict.time).strftime("%d/%m/%Y %H:%M:%S"),
        school=school, report_to=report_to, report_href=report_href, ask_href=ask_href, outcome=outcome,
    )


@pytest.mark.parametrize("url, kw, school, report", [
    ("http://socialsite.test/", {}, "Test Primary", ("Mrs Lawrence", "esafety@school.test")),
    ("http://x.test/<script>alert(1)</script>?q=\"'&amp;" + "A" * 400, {}, "St Mary's & St John's", ("", "")),
    ("http://x.test/\x00ref\x00\x00url\x00", {"username": "\x00school\x00"}, "S", ("\x00kind\x00", "a@b.test")),
    ("http://unlisted.test/", {"categories": (), "username": None, "rule": "default", "reason": "a <b>"}, "S", ("", "")),
    ("https://x.test/é/ü?q=テスト", {"categories": ("games", "adult"), "profile": "guest"}, "Ysgol Gymraeg", ("", "x@y.test")),
    ("http://socialsite.test/", {}, "S", ("Mrs L", "", "http://schoolproxy.invalid/unblock?ref=2QVC-0000-0001",
                                          "You asked on Tue: not allowed — \"<b>use the blog</b>\" \x00outcome\x00")),
])
def test_the_fast_page_is_the_template_rendered_by_jinja(url, kw, school, report):
    # render() fills a skeleton of the template; it must be exactly what Jinja (autoescape on) renders,
    # markers in hostile input included.
    v = verdict(**kw)
    assert render(v, url, school, *report) == render_with_jinja(v, url, school, *report)


def test_a_reference_reads_back_as_its_time_process_tag_and_counter(monkeypatch):
    from schoolproxy import verdict as vmod
    monkeypatch.setattr(vmod, "_tag", vmod._tag)
    monkeypatch.setattr(vmod, "_prefix", vmod._prefix)
    new_reference()  # this second's digits are now cached for the old tag…
    vmod.set_process_tag(0x2A5)  # …and a worker's tag, set later, must still show
    before = int(time.time())
    a, b = new_reference(), new_reference()
    digits = {c: i for i, c in enumerate("0123456789ABCDEFGHJKMNPQRSTVWXYZ")}
    values = [int("".join(format(digits[c], "05b") for c in r.replace("-", "")), 2) for r in (a, b)]
    for n in values:
        assert before - 1 <= (n >> 30) + vmod._EPOCH <= int(time.time())
        assert (n >> 20) & 0x3FF == 0x2A5
    assert (values[1] - values[0]) & 0xFFFFF == 1  # the counter, in the last digits


def test_a_url_with_undecodable_bytes_still_gets_its_page():
    # mitmproxy keeps a path's invalid UTF-8 as surrogates: the page shows them as '?', never fails.
    html = render(verdict(), "http://x.test/a\udcff<b>", "School")
    assert "http://x.test/a?&lt;b&gt;" in html
