"""UpstreamIdentity addon: who is browsing, told to the upstream filter only, never forged by a device."""

import pytest
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow

from schoolproxy.config import UpstreamIdentitySettings
from schoolproxy.identity.profiles import Identity
from schoolproxy.proxy.identify import IDENTITY
from schoolproxy.proxy.upstreamidentity import UpstreamIdentity, identity_headers
from schoolproxy.snapshot import SnapshotHolder

PUPIL = Identity("jsmith", "pupil", "logon-feed", "group year4", "ICT-07")


def addon_for(school, upstream: str | None = "http://10.0.0.2:800", settings: str = "{}"):
    text = school.read_text()
    if upstream:
        text = text.replace("upstream: null", f"upstream: {upstream}, upstream_identity: {settings}")
    school.write_text(text)
    engine = SnapshotHolder()
    engine.load(school)
    return UpstreamIdentity(engine)


def plain(url="http://learning.test/", ident=PUPIL, spoof: str | None = None):
    f = tflow.tflow()
    f.client_conn.proxy_mode = ProxyMode.parse("upstream:http://10.0.0.2:800")
    f.client_conn.peername = ("10.0.5.7", 50000)
    f.request.url = url
    if spoof:
        f.request.headers["X-Authenticated-User"] = spoof
        f.request.headers["X-Forwarded-For"] = "10.0.0.1"
    if ident is not None:
        f.metadata[IDENTITY] = ident
    return f


def through(addon, f):
    with taddons.context(addon):
        addon.requestheaders(f)
        addon.request(f)
    return f.request.headers


def test_plain_http_to_the_upstream_names_the_device_and_user_not_what_the_device_claims(school):
    headers = through(addon_for(school), plain(spoof="head"))
    assert headers.get_all("X-Forwarded-For") == ["10.0.5.7"]
    assert headers.get_all("X-Authenticated-User") == ["jsmith"]


def test_the_connect_to_the_upstream_carries_it_and_the_tunnel_does_not(school):
    addon = addon_for(school, settings='{username_format: "SCHOOL\\\\{username}", client_address_header: null}')
    connect = plain("https://learning.test:443/")
    connect.request.method = "CONNECT"
    inner = plain("https://learning.test/page", ident=None, spoof="head")
    inner.client_conn = connect.client_conn
    upstream_connect = tflow.tflow()
    upstream_connect.client_conn = connect.client_conn
    with taddons.context(addon):
        addon.http_connect(connect)
        addon.requestheaders(inner)
        addon.request(inner)
        addon.http_connect_upstream(upstream_connect)
    assert "X-Authenticated-User" not in inner.request.headers  # stripped, and never added inside TLS
    assert upstream_connect.request.headers["X-Authenticated-User"] == "SCHOOL\\jsmith"
    assert "X-Forwarded-For" not in upstream_connect.request.headers


def test_without_an_upstream_nothing_is_added(school):
    headers = through(addon_for(school, upstream=None), plain())
    assert "X-Authenticated-User" not in headers and "X-Forwarded-For" not in headers


@pytest.mark.parametrize("ident, named", [
    (PUPIL, True), (Identity("jsmith", "pupil", "proxy-auth", "x"), True), (Identity("jsmith", "pupil", "sign-in", "x"), True),
    (Identity("jsmith", "pupil", "unverified", "x"), False), (Identity(None, "pupil", "default", "x"), False),
    (Identity(None, "guest", "subnet", "x"), False), (None, False)])
def test_only_checked_names_are_sent(ident, named):
    headers = dict(identity_headers(UpstreamIdentitySettings(), "10.0.5.7", ident))
    assert headers["X-Forwarded-For"] == "10.0.5.7"
    assert ("X-Authenticated-User" in headers) is named


@pytest.mark.parametrize("proxy, why", [
    ("upstream: null, upstream_identity: {}", "upstream_identity: needs proxy.upstream — these headers are only ever sent"),
    ('upstream: "http://10.0.0.2:800", upstream_identity: {username_header: Proxy-Authorization}', "a header HTTP itself uses"),
    ('upstream: "http://10.0.0.2:800", upstream_identity: {username_header: "X Bad"}', "not an HTTP header name"),
    ('upstream: "http://10.0.0.2:800", upstream_identity: {username_format: SCHOOL}', "must contain {username}"),
])
def test_settings_are_checked(school, proxy, why):
    from schoolproxy.config import ConfigError, load_config
    school.write_text(school.read_text().replace("upstream: null", proxy))
    with pytest.raises(ConfigError, match=why.replace("{", "\\{").replace("}", "\\}")):
        load_config(school)
