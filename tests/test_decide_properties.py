"""Property tests of the decision (Hypothesis): any spelling of a blocked host or URL that a standard
server resolves to the blocked resource is blocked, and spelling an allowed one differently does not
block it. Each spelling is built from the canonical form by transformations that, by construction,
resolve to it again (RFC 3986, UTS 46, inet_aton), so the tests do not use the code under test as the
oracle."""

from __future__ import annotations

import ipaddress

import idna
import pytest
from conftest import make_school
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schoolproxy.filtering.decide import RequestFacts, Stage, decide
from schoolproxy.identity.profiles import Identity
from schoolproxy.snapshot import build_snapshot

PUPIL = Identity("pupil1", "pupil", "proxy-auth", "group year4")
GUEST = Identity(None, "guest", "subnet", "subnet iPads")
STAFF = Identity("teacher1", "staff", "proxy-auth", "user teacher1")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
UNRESERVED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"


@pytest.fixture(scope="module")
def snap(tmp_path_factory):
    root = tmp_path_factory.mktemp("school")
    make_school(root)
    (root / "lists" / "adult" / "urls").write_text("example.org/private-page\n")
    (root / "lists" / "social-networking" / "domains").write_text("socialsite.test\nbücher.test\n")
    return build_snapshot(root / "schoolproxy.yaml")


def facts(host: str, path: str = "/", port: int = 80) -> RequestFacts:
    return RequestFacts(Stage.REQUEST, "192.168.0.5", host, port, path=path, authority=host)


# -- host spellings ----------------------------------------------------------------------------------
_FULLWIDTH = {c: chr(ord(c) - 0x21 + 0xFF01) for c in "abcdefghijklmnopqrstuvwxyz0123456789"}


@st.composite
def host_spelling(draw, host: str) -> str:
    """Case, fullwidth letters (UTS 46 maps them back), a trailing dot, a port."""
    out = []
    for c in host:
        form = draw(st.sampled_from(["lower", "upper", "fullwidth"]))
        out.append(c.upper() if form == "upper" else _FULLWIDTH.get(c, c) if form == "fullwidth" else c)
    spelled = "".join(out)
    if draw(st.booleans()):
        spelled += "."
    if draw(st.booleans()):
        spelled += ":80"
    return spelled


@st.composite
def ipv4_spelling(draw, address: str) -> str:
    """Any form inet_aton reads as ``address``: 1 to 4 parts, each decimal, octal or hex."""
    value = int(ipaddress.IPv4Address(address))
    parts = draw(st.integers(1, 4))
    octets = list(value.to_bytes(4, "big"))
    nums = octets[:parts - 1] + [int.from_bytes(bytes(octets[parts - 1:]), "big")]
    out = []
    for n in nums:
        form = draw(st.sampled_from(["dec", "oct", "hex", "HEX"]))
        out.append(str(n) if form == "dec" else f"0{n:o}" if form == "oct" else f"0x{n:x}" if form == "hex"
                   else f"0X{n:X}".replace("0X", "0x"))
    return ".".join(out)


@st.composite
def ip_spelling(draw, address: str) -> str:
    if draw(st.booleans()):
        return draw(ipv4_spelling(address))
    v6 = ipaddress.IPv6Address(f"::ffff:{address}")
    return "[" + draw(st.sampled_from([str(v6), v6.exploded, f"::ffff:{address}", v6.exploded.upper()])) + "]"


# -- path spellings ----------------------------------------------------------------------------------
@st.composite
def path_spelling(draw, path: str) -> str:
    """Segments of ``path`` with unreserved characters percent-encoded at random, "." and "x/.." segments
    and repeated slashes inserted: RFC 3986 resolution (5.2.4, 6.2.2) gives ``path`` back."""
    segments = path.strip("/").split("/")
    out = []
    for seg in segments:
        for _ in range(draw(st.integers(0, 2))):
            extra = draw(st.sampled_from([".", "%2e", "%2E", "x/..", "seg/%2e%2e", "a/b/../.."]))
            out.append(extra)
        chars = []
        for c in seg:
            enc = draw(st.booleans()) and c in UNRESERVED
            chars.append(f"%{ord(c):02{draw(st.sampled_from(['x', 'X']))}}" if enc else c)
        out.append("".join(chars))
    spelled = "/" + "/".join(out)
    if draw(st.booleans()):
        spelled = spelled.replace("/", "//", draw(st.integers(1, 3)))
    if draw(st.booleans()):
        spelled += "?" + draw(st.sampled_from(["a=1", "q=/../x", "x=%41"]))
    return spelled


# -- the properties -----------------------------------------------------------------------------------
@SETTINGS
@given(data=st.data())
def test_every_spelling_of_a_blocked_host_is_blocked(snap, data):
    host = data.draw(host_spelling(data.draw(st.sampled_from(["socialsite.test", "www.socialsite.test"]))))
    assert decide(snap, PUPIL, facts(host)).blocked, host


@SETTINGS
@given(data=st.data())
def test_every_spelling_of_a_blocked_idn_is_blocked(snap, data):
    unicode_name = data.draw(st.sampled_from(["bücher.test", "www.bücher.test", "BÜCHER.test"]))
    host = data.draw(st.sampled_from([unicode_name, idna.encode(unicode_name.lower(), uts46=True).decode(),
                                      idna.encode(unicode_name.lower(), uts46=True).decode().upper() + "."]))
    assert decide(snap, PUPIL, facts(host)).blocked, host


@SETTINGS
@given(data=st.data())
def test_every_spelling_of_a_blocked_address_is_blocked(snap, data):
    host = data.draw(ip_spelling("1.1.1.1"))  # listed as DNS over HTTPS, blocked for pupils
    ruling = decide(snap, PUPIL, facts(host, port=443))
    assert ruling.blocked and ruling.host == "1.1.1.1", host


@SETTINGS
@given(data=st.data())
def test_every_spelling_of_the_gateway_is_blocked_for_everyone(snap, data):
    address = data.draw(st.sampled_from(["127.0.0.1", "127.0.0.53", "169.254.169.254"]))
    host = data.draw(st.one_of(ip_spelling(address), host_spelling("localhost"), host_spelling("app.localhost")))
    for who in (PUPIL, STAFF):
        assert decide(snap, who, facts(host, "/metrics", 9464)).decision.rule == "gateway", host


@SETTINGS
@given(data=st.data())
def test_every_spelling_of_a_blocked_url_is_blocked(snap, data):
    path = data.draw(path_spelling(data.draw(st.sampled_from(["/private-page", "/private-page/x/y.html"]))))
    host = data.draw(host_spelling("example.org"))
    ruling = decide(snap, PUPIL, facts(host, path))
    assert ruling.blocked and ruling.decision.rule == "category:adult", (host, path)


@SETTINGS
@given(data=st.data())
def test_a_guest_allow_list_never_reaches_past_its_prefix(snap, data):
    # Spelled so that it starts inside the allowed /bitesize, and resolves to /news.
    path = "/bitesize" + data.draw(st.sampled_from(["/..", "/x/../..", "/%2e%2e", "/.%2e", "/..%2F..%2Fbitesize/.."])) \
        + data.draw(path_spelling("/news"))
    assert decide(snap, GUEST, facts("www.bbc.co.uk", path)).blocked, path


@SETTINGS
@given(data=st.data())
def test_spelling_an_allowed_url_differently_does_not_block_it(snap, data):
    path = data.draw(path_spelling(data.draw(st.sampled_from(["/lesson", "/lesson/week/3", "/bitesize/maths"]))))
    host = data.draw(host_spelling(data.draw(st.sampled_from(["learning.test", "www.bbc.co.uk"]))))
    assert not decide(snap, PUPIL, facts(host, path)).blocked, (host, path)


@SETTINGS
@given(data=st.data())
def test_spelling_a_guests_allowed_page_differently_does_not_block_it(snap, data):
    path = data.draw(path_spelling(data.draw(st.sampled_from(["/bitesize", "/bitesize/maths/fractions"]))))
    host = data.draw(host_spelling("www.bbc.co.uk"))
    assert not decide(snap, GUEST, facts(host, path)).blocked, (host, path)
