"""Notice addon, with mitmproxy's test helpers: a page navigation by someone who has not accepted the
acceptable-use notice is sent to it — never one to a help site, never a request that is not a page."""

from __future__ import annotations

import pytest
from conftest import make_verdict
from mitmproxy.test import taddons, tflow, tutils

from schoolproxy.proxy.enforce import VERDICT
from schoolproxy.proxy.notice import Notice
from schoolproxy.snapshot import SnapshotHolder
from schoolproxy.standards.live import LiveState

PAGE = {"Accept": "text/html,application/xhtml+xml", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}


@pytest.fixture
def addon(school):
    snapshots = SnapshotHolder()
    snapshots.load(school)
    live = LiveState()
    live.loaded = True    # as the pages addon leaves it once it has read the acceptances: none yet
    return Notice(snapshots, live)


def navigation(url: str, verdict, headers: dict[str, str] = PAGE):
    f = tflow.tflow(req=tutils.treq())
    f.request.url = url
    f.request.headers.clear()
    f.request.headers.update(headers)
    f.metadata[VERDICT] = verdict
    return f


def test_a_page_before_the_notice_is_accepted_goes_to_the_notice(addon):
    f = navigation("http://learning.test/lesson", make_verdict(action="allow", rule="category:education",
                                                              host="learning.test", username="pupil1"))
    with taddons.context(addon):
        addon.requestheaders(f)
    assert f.response is not None and f.response.status_code == 302
    assert "/notice?next=http%3A%2F%2Flearning.test%2Flesson" in f.response.headers["Location"]


@pytest.mark.parametrize("host", ["www.childline.org.uk", "talkhelp.test"])
def test_a_help_site_is_never_interrupted_by_the_notice(addon, host):
    f = navigation(f"http://{host}/get-support", make_verdict(action="allow", rule="helpsite", host=host,
                                                               username="pupil1", categories=("helpsites",)))
    with taddons.context(addon):
        addon.requestheaders(f)
    assert f.response is None


def test_a_request_that_is_not_a_page_is_never_interrupted(addon):
    f = navigation("http://learning.test/app.js", make_verdict(action="allow", rule="category:education",
                                                              host="learning.test", username="pupil1"),
                   {"Accept": "*/*"})
    with taddons.context(addon):
        addon.requestheaders(f)
    assert f.response is None
