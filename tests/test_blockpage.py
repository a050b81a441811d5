from schoolproxy.blockpage import render
from conftest import make_verdict as verdict
from schoolproxy.verdict import new_reference


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
