"""The acceptable-use notice end to end: real Chromium through a real mitmdump. A pupil's first page is
the notice; after accepting they go straight on, and never see it again this term (another browser
too); the acceptance is recorded with its version; a changed text is shown again. Requests that are not
a page navigation, and help sites, are never interrupted."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import PASSWORD, make_school
from internet import Internet
from proxyproc import ProxyProcess

from schoolproxy.records import open_database
from schoolproxy.records.notice import acceptances

pytestmark = pytest.mark.e2e
UTC = dt.timezone.utc


def school(root: Path, internet: Internet) -> Path:
    config = make_school(root, upstream=internet.proxy_url, database=f"sqlite:///{root / 'records.db'}")
    data = yaml.safe_load(config.read_text())
    today = dt.date.today()
    data["terms"] = [{"name": "This term", "from": str(today - dt.timedelta(days=30)), "to": str(today + dt.timedelta(days=30))}]
    data["notice"] = {"title": "Using the school internet",
                      "text": "Everything you do on the school internet is monitored and recorded.\n\n- Be kind online.",
                      "by_role": {"staff": "Staff code of conduct: your use of the school network is monitored."}}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


def wait_for(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return value


@pytest.fixture
def world(tmp_path):
    with Internet(tmp_path / "internet") as internet:
        config = school(tmp_path, internet)
        with ProxyProcess.mitmdump(config, tmp_path, "--mode", f"upstream:{internet.proxy_url}",
                                   "--set", f"ssl_verify_upstream_trusted_ca={internet.ca_path}",
                                   "--set", "schoolproxy_pages_refresh_ms=300") as proxy:
            db = open_database(f"sqlite:///{tmp_path / 'records.db'}")
            assert wait_for(lambda: _ready(db)), proxy.log()
            yield internet, proxy, config, db, tmp_path


def _ready(db) -> bool:
    try:
        acceptances(db, dt.datetime(2000, 1, 1, tzinfo=UTC))
        return True
    except Exception:
        return False


def browser(chromium, proxy: ProxyProcess, user: str):
    context = chromium.new_context(proxy={"server": proxy.url, "username": user, "password": PASSWORD},
                                   ignore_https_errors=True, viewport={"width": 1000, "height": 760})
    return context.new_page()


def test_the_notice_appears_once_and_its_acceptance_is_recorded(world, chromium):
    internet, proxy, config, db, root = world
    page = browser(chromium, proxy, "pupil1")
    page.goto("http://learning.test/lesson?week=3")
    assert "schoolproxy.invalid/notice" in page.url
    assert "Everything you do on the school internet is monitored and recorded." in page.inner_text("main")
    assert not internet.requests_for("learning.test")  # the page waits until the notice is accepted
    page.screenshot(path=str(root / "notice.png"))
    page.click("text=I understand and agree")
    page.wait_for_url("http://learning.test/lesson?week=3")
    assert "origin learning.test" in page.content()

    [row] = acceptances(db, dt.datetime(2000, 1, 1, tzinfo=UTC))
    assert (row["subject"], row["username"], row["profile"]) == ("pupil1", "pupil1", "pupil") and len(row["version"]) == 12

    # Once: the next page, and a new browser session for the same pupil, go straight through.
    assert page.goto("http://learning.test/next").status == 200 and "origin learning.test" in page.content()
    again = browser(chromium, proxy, "pupil1")
    again.goto("http://learning.test/")
    assert again.url == "http://learning.test/" and "origin learning.test" in again.content()
    assert len(acceptances(db, dt.datetime(2000, 1, 1, tzinfo=UTC))) == 1

    # Staff are shown their own text; over HTTPS the notice is on the proxy's name over HTTPS too.
    teacher = browser(chromium, proxy, "teacher1")
    teacher.goto("https://learning.test/staffroom")
    assert teacher.url.startswith("https://schoolproxy.invalid/notice?next=https")
    assert "Staff code of conduct" in teacher.inner_text("main")
    teacher.click("text=I understand and agree")
    teacher.wait_for_url("https://learning.test/staffroom")
    assert "origin learning.test" in teacher.content()

    # A changed text is a new version: shown again after the reload.
    config.write_text(config.read_text().replace("Be kind online.", "Be kind and polite online."))
    assert wait_for(lambda: "schoolproxy.invalid/notice" in (page.goto("http://learning.test/later") and page.url))
    assert "Be kind and polite online." in page.inner_text("main")


def test_requests_that_are_not_a_page_navigation_and_help_sites_are_never_interrupted(world, chromium):
    internet, proxy, config, db, root = world
    with httpx.Client(proxy=proxy.auth_url("visitor", PASSWORD), timeout=10) as c:
        api = c.get("http://learning.test/api/items", headers={"Accept": "application/json"})
        image = c.get("http://learning.test/logo.png", headers={"Accept": "image/avif,image/webp,*/*",
                                                                 "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"})
        xhr = c.get("http://learning.test/data", headers={"Accept": "text/html", "X-Requested-With": "XMLHttpRequest"})
        post = c.post("http://learning.test/form", data={"a": "1"}, headers={"Accept": "text/html"})
        navigation = c.get("http://learning.test/page", headers={"Accept": "text/html", "Sec-Fetch-Mode": "navigate",
                                                                  "Sec-Fetch-Dest": "document"})
    for r in (api, image, xhr, post):
        assert r.status_code == 200 and "origin learning.test" in r.text
    assert navigation.status_code == 302 and "/notice?next=" in navigation.headers["location"]
    # A pupil who has not accepted yet still reaches Childline at once.
    page = browser(chromium, proxy, "visitor")
    page.goto("http://www.childline.org.uk/get-support")
    assert page.url == "http://www.childline.org.uk/get-support" and "origin www.childline.org.uk" in page.content()
    # And a blocked page is the block page, as before.
    assert page.goto("http://socialsite.test/").status == 403
    assert acceptances(db, dt.datetime(2000, 1, 1, tzinfo=UTC)) == []
