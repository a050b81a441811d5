"""Request paths as a server resolves them (filtering/paths.py)."""

import pytest

from schoolproxy.filtering.paths import canonical, readings, split_target


@pytest.mark.parametrize("sent, resolved", [
    ("/check-desktop-phishing-page", "/check-desktop-phishing-page"),
    ("/%63heck-desktop-phishing-page", "/check-desktop-phishing-page"),   # an unreserved character encoded
    ("//check-desktop-phishing-page", "/check-desktop-phishing-page"),    # a repeated slash
    ("/bitesize/../news", "/news"), ("/bitesize/./news/", "/bitesize/news/"), ("/a/b/..", "/a/"),
    ("/..", "/"), ("/%2e%2e/x", "/x"), ("/%7Euser", "/~user"), ("/%41%42", "/AB"),
    ("/caf%c3%a9", "/caf%C3%A9"),     # not unreserved: stays encoded (hex in upper case)
    ("/x?q=/../a&b=%41", "/x?q=/../a&b=%41"),  # the query is not a path
    ("/bitesize#/../../news", "/news"),        # "#" is not special to a server in a request target
])
def test_the_rfc_reading(sent, resolved):
    assert canonical(sent) == resolved


@pytest.mark.parametrize("sent, lenient", [
    ("/bitesize/..%2Fnews", "/news"),          # nginx decodes %2F before resolving dot segments
    ("/bitesize%2F..%2Fnews", "/news"),
    ("/bitesize\\..\\news", "/news"),          # IIS reads a backslash as a slash
    ("/;jsessionid=1/check", "/check"),        # Tomcat drops ;params from segments
    ("/caf%C3%A9", "/café"),
    ("/a%252e%252e/b", "/a%2e%2e/b"),          # decoded once, as servers do
])
def test_a_path_servers_read_differently_has_both_readings(sent, lenient):
    strict, other = readings(sent)
    assert strict == canonical(sent) and other == lenient


@pytest.mark.parametrize("sent", ["/", "/news/articles/c0k4x2y?at_medium=RSS", "/search?q=caf%C3%A9", "*", ""])
def test_an_ordinary_path_has_one_reading_itself(sent):
    assert readings(sent) == (sent,)


def test_absolute_targets_name_a_site():
    assert split_target("https://www.tiktok.com/") == ("www.tiktok.com", "/")
    assert split_target("http://user@Host.test:8080?x=1") == ("Host.test:8080", "/?x=1")
    assert split_target("/plain") == (None, "/plain") and split_target("*") == (None, "*")
