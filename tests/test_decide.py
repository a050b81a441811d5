"""The decision function over plain request facts, without mitmproxy: what the enforce addon, explain and
the config's policy tests all call."""

import pytest
from conftest import HELP_SITE_ALSO_BLOCKED

from schoolproxy.filtering.decide import Handling, RequestFacts, Stage, decide, facts_for_url, names_of
from schoolproxy.identity.profiles import Identity

PUPIL = Identity("pupil1", "pupil", "proxy-auth", "group year4")
STAFF = Identity("teacher1", "staff", "proxy-auth", "user teacher1")


def request(host, path="/", authority=None, connect_host=None, sni=None, **kw):
    return RequestFacts(Stage.REQUEST, "192.168.0.5", host, kw.pop("port", 443 if connect_host else 80),
                        path=path, authority=authority, connect_host=connect_host, sni=sni, **kw)


def connect(host, port=443):
    return RequestFacts(Stage.CONNECT, "192.168.0.5", host, port, "CONNECT")


def clienthello(host, sni, port=443):
    return RequestFacts(Stage.TLS, "192.168.0.5", host, port, "TLS", "https", connect_host=host, sni=sni)


def test_allowed_request_is_forwarded_and_blocked_one_gets_the_block_page(snapshot):
    ok = decide(snapshot, PUPIL, request("learning.test", authority="learning.test"))
    assert (ok.handling, ok.decision.rule, ok.host) == (Handling.FORWARD, "category:education", "learning.test")
    no = decide(snapshot, PUPIL, request("WWW.SocialSite.test.", authority="WWW.SocialSite.test."))
    assert (no.handling, no.decision.rule, no.host) == (Handling.BLOCK_PAGE, "category:social-networking",
                                                        "www.socialsite.test")


def test_a_path_rule_applies_to_the_path(snapshot):
    assert decide(snapshot, PUPIL, request("learning.test", "/forum/t/1")).decision.rule.startswith("override[0]")
    assert decide(snapshot, PUPIL, request("learning.test", "/lesson")).handling is Handling.FORWARD


@pytest.mark.parametrize("facts", [
    request("learning.test", authority="socialsite.test"),                          # Host header
    request("learning.test", authority="socialsite.test:80"),
    request("learning.test", connect_host="learning.test", sni="socialsite.test"),  # TLS SNI
    request("learning.test", connect_host="socialsite.test"),                       # CONNECT name
])
def test_domain_fronting_every_name_must_pass(snapshot, facts):
    ruling = decide(snapshot, PUPIL, facts)
    assert ruling.handling is Handling.BLOCK_PAGE
    assert (ruling.host, ruling.decision.rule) == ("socialsite.test", "category:social-networking")


def test_the_same_name_in_other_spellings_is_decided_once(snapshot):
    assert names_of(request("learning.test", authority="Learning.test:80", connect_host="learning.test",
                            sni="learning.test", port=80)) == ["learning.test"]


def test_connect_ports_per_profile(snapshot):
    refused = decide(snapshot, PUPIL, connect("learning.test", 22))
    assert (refused.handling, refused.decision.rule) == (Handling.REFUSE, "connect-port")
    assert "port 22" in refused.decision.reason
    assert decide(snapshot, PUPIL, connect("learning.test", 443)).handling is Handling.TUNNEL
    assert decide(snapshot, STAFF, connect("learning.test", 22)).handling is Handling.TUNNEL  # staff: any port


def test_blocked_host_is_refused_at_connect_only_when_it_could_not_get_a_block_page(snapshot):
    # Intercepted: the tunnel opens and the block page is shown inside it.
    assert decide(snapshot, PUPIL, connect("socialsite.test")).handling is Handling.TUNNEL
    # A name that can never be valid: refused at CONNECT.
    bad = decide(snapshot, PUPIL, connect("exa mple.test"))
    assert (bad.handling, bad.decision.rule) == (Handling.REFUSE, "invalid-host")


def test_passthrough_for_staff_banking_and_interception_for_pupils(snapshot):
    staff = decide(snapshot, STAFF, clienthello("bank.test", "bank.test"))
    assert (staff.handling, staff.passthrough, staff.decision.action) == (Handling.PASSTHROUGH, True, "allow")
    assert decide(snapshot, PUPIL, clienthello("bank.test", "bank.test")).handling is Handling.INTERCEPT


def test_an_sni_that_is_blocked_is_never_passed_through(snapshot):
    # Staff pass banking through undecrypted and block nothing but names that cannot be valid.
    ruling = decide(snapshot, STAFF, clienthello("bank.test", "bad_name-.test"))
    assert ruling.handling is Handling.INTERCEPT and ruling.blocked and ruling.decision.rule == "invalid-host"


def test_transparent_mode_falls_back_to_the_subnet_then_the_default_profile(snapshot):
    ipad = RequestFacts(Stage.TLS, "10.9.3.4", "203.0.113.7", 443, "TLS", "https", sni="learning.test",
                        transparent=True)
    ruling = decide(snapshot, None, ipad)
    assert (ruling.identity.profile, ruling.identity.source, ruling.identity.rule) == ("guest", "subnet", "subnet iPads")
    assert ruling.host == "learning.test"  # the SNI names the site, not the address
    stranger = decide(snapshot, None, ipad._replace(client_ip="192.168.7.7", sni="socialsite.test"))
    assert (stranger.identity.profile, stranger.identity.source) == ("pupil", "default")
    assert stranger.blocked


def test_transparent_mode_without_sni_decides_the_address(snapshot):
    facts = RequestFacts(Stage.TLS, "192.168.7.7", "203.0.113.7", 443, "TLS", "https", transparent=True)
    ruling = decide(snapshot, None, facts)
    assert ruling.host == "203.0.113.7" and ruling.decision.rule == "category:ip-address"


@pytest.mark.parametrize("host", ["exa mple.test", "a..b", "x" * 300, "[::1", "host:port"])
def test_invalid_hosts_are_blocked_for_everyone(snapshot, host):
    for ident in (PUPIL, STAFF):
        ruling = decide(snapshot, ident, request(host))
        assert ruling.handling is Handling.BLOCK_PAGE and ruling.decision.rule == "invalid-host"
        assert len(ruling.host) <= 253


def test_an_invalid_host_header_blocks_an_allowed_target(snapshot):
    ruling = decide(snapshot, STAFF, request("learning.test", authority="bad host"))
    assert ruling.blocked and ruling.decision.rule == "invalid-host"


def test_safesearch_is_part_of_the_ruling(snapshot):
    google = decide(snapshot, PUPIL, request("www.google.co.uk", "/search?q=a"))
    assert google.safesearch_param == ("safe", "active") and google.youtube_header is None
    youtube = decide(snapshot, PUPIL, request("m.youtube.com", "/watch"))
    assert youtube.youtube_header == ("YouTube-Restrict", "Strict")
    staff = decide(snapshot, STAFF, request("www.google.co.uk", "/search?q=a"))
    assert staff.safesearch_param is None and staff.youtube_header is None


def test_an_internal_error_blocks(snapshot, monkeypatch):
    def broken(*a, **kw):
        raise RuntimeError("boom")
    monkeypatch.setattr(snapshot.policy, "decide", broken)
    ruling = decide(snapshot, STAFF, request("learning.test"))
    assert ruling.blocked and ruling.decision.rule == "error"


def test_facts_for_a_url_are_what_a_browser_sends(snapshot):
    facts = facts_for_url("https://Example.org:8443/a?b=c")
    assert (facts.stage, facts.host, facts.port, facts.path, facts.scheme) == (
        Stage.REQUEST, "Example.org:8443", 8443, "/a?b=c", "https")
    tls = facts_for_url("https://example.org/", Stage.TLS)
    assert (tls.host, tls.port, tls.sni, tls.connect_host) == ("example.org", 443, "example.org", "example.org")
    assert decide(snapshot, PUPIL, facts_for_url("http://socialsite.test/x")).blocked


@pytest.mark.parametrize("facts", [
    request("learning.test", "https://socialsite.test/", connect_host="learning.test", sni="learning.test"),
    request("learning.test", "/", names=("socialsite.test",)),            # the request line's authority
    request("learning.test", "/", authority="learning.test", names=("learning.test", "socialsite.test")),
])
def test_every_name_a_request_carries_must_pass(snapshot, facts):
    # An absolute target inside an allowed tunnel (curl --request-target https://www.tiktok.com/), an
    # HTTP/2 :path naming another site, a second Host header: blocked, and recorded as the blocked site.
    ruling = decide(snapshot, PUPIL, facts)
    assert (ruling.handling, ruling.host) == (Handling.BLOCK_PAGE, "socialsite.test")


@pytest.mark.parametrize("path", ["/forum", "/%66orum", "//forum//t", "/x/../forum", "/./forum", "/x/..%2Fforum",
                                  "/FORUM/1", "/;x/forum"])
def test_a_path_rule_holds_for_the_path_as_a_server_resolves_it(snapshot, path):
    assert decide(snapshot, PUPIL, request("learning.test", path)).decision.rule.startswith("override[0]")


@pytest.mark.parametrize("path, allowed", [
    ("/bitesize", True), ("/bitesize/maths", True), ("/bitesize/../news", False), ("/bitesize/%2e%2e/news", False),
    ("/bitesize/..%2Fnews", False), ("/bitesize%2F..%2Fnews", False), ("/bitesize\\..\\news", False),
    ("/news", False),
])
def test_an_allow_list_allows_only_what_every_reading_allows(snapshot, path, allowed):
    guest = Identity(None, "guest", "subnet", "subnet iPads")
    assert decide(snapshot, guest, request("www.bbc.co.uk", path)).decision.action == ("allow" if allowed else "block")


@pytest.mark.parametrize("host", ["localhost", "LocalHost.", "anything.localhost", "127.0.0.1", "127.1", "0x7f.1",
                                  "2130706433", "017700000001", "[::1]", "[::ffff:127.0.0.1]", "0.0.0.0",
                                  "169.254.169.254", "[fe80::1]"])
def test_the_gateway_itself_is_blocked_for_everyone(snapshot, host):
    for who in (PUPIL, STAFF):
        ruling = decide(snapshot, who, request(host, "/metrics", port=9464))
        assert (ruling.handling, ruling.decision.rule) == (Handling.BLOCK_PAGE, "gateway")
    assert decide(snapshot, STAFF, connect(host, 9465)).decision.rule == "gateway"


def test_a_name_resolving_to_the_gateway_is_blocked(snapshot):
    ruling = decide(snapshot, STAFF, request("sneaky.example", resolved=("93.184.216.34", "127.0.0.1")))
    assert (ruling.handling, ruling.decision.rule) == (Handling.BLOCK_PAGE, "gateway")
    assert decide(snapshot, STAFF, request("fine.example", resolved=("93.184.216.34",))).handling is Handling.FORWARD


def test_the_config_can_allow_a_local_destination(tmp_path):
    from conftest import make_school

    from schoolproxy.snapshot import build_snapshot
    cfg = make_school(tmp_path)
    cfg.write_text(cfg.read_text().replace("upstream: null}", "upstream: null, allow_local: [intranet.localhost]}"))
    snap = build_snapshot(cfg)
    assert decide(snap, STAFF, request("intranet.localhost")).handling is Handling.FORWARD
    assert decide(snap, STAFF, request("other.localhost")).decision.rule == "gateway"


@pytest.mark.parametrize("profile", ["pupil", "guest", "supply", "staff"])
def test_a_help_site_also_in_a_blocked_category_is_allowed_for_every_profile(snapshot, profile):
    # The help site is in social networking too, which pupils are blocked from and guests (an allow-list
    # profile) are not allowed: the help site comes first, at every stage.
    who = Identity("someone", profile, "proxy-auth", "given")
    for facts in (request(HELP_SITE_ALSO_BLOCKED, authority=HELP_SITE_ALSO_BLOCKED),
                  request("www." + HELP_SITE_ALSO_BLOCKED, "/forum/t/1", connect_host="www." + HELP_SITE_ALSO_BLOCKED)):
        ruling = decide(snapshot, who, facts)
        assert (ruling.handling, ruling.decision.rule) == (Handling.FORWARD, "helpsite")
        assert {"helpsites", "social-networking"} <= set(snapshot.policy.category_names(ruling.decision.mask))
    assert decide(snapshot, who, connect(HELP_SITE_ALSO_BLOCKED)).handling is Handling.TUNNEL
    assert decide(snapshot, who, clienthello(HELP_SITE_ALSO_BLOCKED, HELP_SITE_ALSO_BLOCKED)).handling \
        is Handling.INTERCEPT


def test_a_help_site_also_in_a_blocked_category_is_allowed_for_the_unidentified_and_in_a_window(lunchtime_school):
    import datetime as dt
    from zoneinfo import ZoneInfo

    from schoolproxy.snapshot import build_snapshot
    snapshot = build_snapshot(lunchtime_school)
    unidentified = decide(snapshot, None, request(HELP_SITE_ALSO_BLOCKED))
    assert (unidentified.identity.profile, unidentified.decision.rule) == ("pupil", "helpsite")
    lunchtime = dt.datetime(2026, 11, 25, 12, 30, tzinfo=ZoneInfo("Europe/London"))
    trace: list[str] = []
    ruling = decide(snapshot, PUPIL, request(HELP_SITE_ALSO_BLOCKED), lunchtime, trace)
    assert ruling.decision.rule == "helpsite"
    assert "1. help site: always allowed (no rule can block it)" in trace
