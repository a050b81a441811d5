"""HeaderCheck addon: request heads a server could read two ways are refused, never passed on."""

import pytest
from mitmproxy.test import taddons, tflow

from schoolproxy.proxy.headercheck import HeaderCheck, problem


def with_header(value: bytes):
    f = tflow.tflow()
    f.request.headers.fields = ((b"Host", b"a.test"), (b"X-A", value))
    return f


@pytest.mark.parametrize("value, why", [
    (b"a\rb", "control character in header 'X-A'"),
    (b"a\x00b", "control character in header 'X-A'"),
    (b"a\r\n b", "folded (obs-fold) header line in 'X-A'"),   # what mitmproxy makes of a folded line
    (b"a\r\n\tb", "folded (obs-fold) header line in 'X-A'"),
    (b"a\nb", "control character in header 'X-A'"),
    (b"a\x7fb", "control character in header 'X-A'"),
])
def test_ambiguous_header_values_are_refused(value, why):
    f = with_header(value)
    with taddons.context(HeaderCheck()) as tctx:
        tctx.master.addons.get("headercheck").requestheaders(f)
    assert f.response.status_code == 400 and why in f.response.get_text()


@pytest.mark.parametrize("value", [b"plain", b"tab\tinside", b"caf\xc3\xa9", b"\xff latin-1 obs-text"])
def test_ordinary_values_pass(value):
    assert problem(with_header(value).request) is None


def test_a_control_character_in_the_target_is_refused():
    f = tflow.tflow()
    f.request.path = "/a\x00b"
    assert "request target" in problem(f.request)


def test_connect_is_checked_too():
    f = with_header(b"a\rb")
    f.request.method = "CONNECT"
    HeaderCheck().http_connect(f)
    assert f.response.status_code == 400
