"""End to end: a real mitmdump with the project's addons, real clients (curl, httpx), chained to a
stand-in upstream filter on 127.0.0.1 that answers for every hostname (tests/internet.py)."""

from __future__ import annotations

import contextlib
import shutil
import ssl
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import HELP_SITE_ALSO_BLOCKED, PASSWORD, make_school, metrics_url, require
from internet import Internet
from proxyproc import BIN, ROOT, ProxyProcess, free_port
from waits import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One stand-in internet and one proxy for the read-only tests of this module."""
    root = tmp_path_factory.mktemp("e2e")
    with Internet(root / "internet") as internet:
        config = make_school(root, upstream=internet.proxy_url)
        proxy = ProxyProcess.mitmdump(config, root, "--mode", f"upstream:{internet.proxy_url}",
                                      "--set", f"ssl_verify_upstream_trusted_ca={internet.ca_path}")
        try:
            yield internet, proxy, root
        finally:
            proxy.stop()


def curl(*args: str) -> subprocess.CompletedProcess:
    if not shutil.which("curl"):
        require("curl is not installed")
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True, text=True)


def client(proxy: ProxyProcess, user: str | None, verify: object = False) -> httpx.Client:
    url = proxy.auth_url(user, PASSWORD) if user else proxy.url
    return httpx.Client(proxy=url, verify=verify, timeout=10)


def mitm_ca(root: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(root / "ca" / "mitmproxy-ca-cert.pem"))


def test_pupil_gets_block_page_on_social_network_and_upstream_never_sees_it(world):
    internet, proxy, _ = world
    internet.clear()  # the stand-in internet is shared by this file's tests: read only what this one sent
    r = curl("-x", proxy.auth_url("pupil1", PASSWORD), "-w", "\n%{http_code}", "http://www.socialsite.test/feed")
    body, status = r.stdout.rsplit("\n", 1)
    assert status == "403"
    assert "This page is blocked" in body and "tell your teacher" in body
    assert "social-networking" in body and "monitored" in body
    assert "http://www.socialsite.test/feed" in body   # the address the pupil asked for is shown
    assert not internet.requests_for("www.socialsite.test")


def test_pupil_gets_real_page_on_education_site(world):
    internet, proxy, _ = world
    internet.clear()
    with client(proxy, "pupil1") as c:
        r = c.get("http://learning.test/lesson?week=3")
    assert r.status_code == 200
    assert "origin learning.test" in r.text
    seen = internet.wait_for(lambda s: s.host == "learning.test" and s.path.startswith("/lesson"))
    assert seen.query == {"week": ["3"]}
    # The school's credentials are never passed on to the upstream filter.
    assert seen.header("Proxy-Authorization") is None


def test_block_page_reference_matches_header(world):
    _, proxy, _ = world
    with client(proxy, "pupil1") as c:
        r = c.get("http://socialsite.test/")
    ref = r.headers["X-Schoolproxy-Reference"]
    assert r.status_code == 403 and ref in r.text


def test_staff_pass(world):
    internet, proxy, _ = world
    with client(proxy, "teacher1") as c:
        r = c.get("http://socialsite.test/staffroom")
    assert r.status_code == 200 and "origin socialsite.test" in r.text


def test_shared_supply_logon_maps_to_supply_profile(world):
    _, proxy, _ = world
    with client(proxy, "Supply3") as c:
        social = c.get("http://socialsite.test/")   # allowed for supply, blocked for pupils
        adult = c.get("http://adultsite.test/")     # blocked for supply
    assert social.status_code == 200
    assert adult.status_code == 403 and "supply" in adult.text and "Supply3" in adult.text


@pytest.mark.parametrize("creds", ["pupil1:wrong", "nobody:" + PASSWORD, None])
def test_wrong_or_missing_password_gets_407(world, creds):
    _, proxy, _ = world
    url = f"http://{creds}@127.0.0.1:{proxy.port}" if creds else proxy.url
    with httpx.Client(proxy=url, timeout=10) as c:
        r = c.get("http://learning.test/")
    assert r.status_code == 407
    assert r.headers["Proxy-Authenticate"] == 'Basic realm="Test School"'


def test_wrong_password_over_https_connect_gets_407(world):
    _, proxy, _ = world
    r = curl("-x", f"http://pupil1:wrong@127.0.0.1:{proxy.port}", "https://learning.test/")
    assert "407" in r.stderr


@pytest.mark.parametrize("host", ["www.childline.org.uk", HELP_SITE_ALSO_BLOCKED])
@pytest.mark.parametrize("user", ["pupil1", "visitor", "teacher1"])
def test_help_site_always_passes(world, user, host):
    # HELP_SITE_ALSO_BLOCKED is in social networking too, which pupils are blocked from: the help site wins.
    internet, proxy, _ = world
    path = f"/get-support/{user}"
    with client(proxy, user) as c:
        r = c.get(f"http://{host}{path}")
    assert r.status_code == 200 and f"origin {host}" in r.text
    assert internet.wait_for(lambda s: s.host == host and s.path == path)


def test_a_help_site_also_in_a_blocked_category_passes_for_a_pupil_over_https(world):
    internet, proxy, root = world
    with client(proxy, "pupil1", verify=mitm_ca(root)) as c:
        r = c.get(f"https://{HELP_SITE_ALSO_BLOCKED}/chat")
        assert c.get("https://socialsite.test/chat").status_code == 403   # the category is blocked for pupils
    assert r.status_code == 200 and f"origin {HELP_SITE_ALSO_BLOCKED}" in r.text
    assert internet.wait_for(lambda s: s.host == HELP_SITE_ALSO_BLOCKED and s.path == "/chat").via_connect


def test_intercepted_https_shows_block_page(world):
    _, proxy, root = world
    r = curl("-x", proxy.auth_url("pupil1", PASSWORD), "--cacert", str(root / "ca" / "mitmproxy-ca-cert.pem"), "-w", "\n%{http_code}",
             "https://socialsite.test/")
    body, status = r.stdout.rsplit("\n", 1)
    assert status == "403", r.stderr
    assert "This page is blocked" in body and "https://socialsite.test/" in body


def test_intercepted_https_allowed_reaches_origin(world):
    internet, proxy, root = world
    with client(proxy, "pupil1", verify=mitm_ca(root)) as c:
        r = c.get("https://learning.test/secure")
    assert r.status_code == 200 and "origin learning.test" in r.text
    assert internet.wait_for(lambda s: s.host == "learning.test" and s.path == "/secure").via_connect


def test_passthrough_host_presents_the_origin_certificate(world):
    internet, proxy, root = world
    origin_only = ssl.create_default_context(cafile=str(internet.ca_path))
    with client(proxy, "teacher1", verify=origin_only) as c:  # banking is passed through for staff
        r = c.get("https://bank.test/account")
    assert r.status_code == 200 and "origin bank.test" in r.text
    # The same client trusting only the origin's CA fails where the proxy intercepts.
    with client(proxy, "teacher1", verify=origin_only) as c, pytest.raises(httpx.ConnectError):
        c.get("https://learning.test/")


def test_blocked_port_refused_at_connect(world):
    _, proxy, _ = world
    r = curl("-p", "-x", proxy.auth_url("pupil1", PASSWORD), "telnet://learning.test:22")
    assert "403" in r.stderr


@pytest.mark.parametrize("url, param, value", [
    ("http://www.google.com/search?q=cats&safe=off", "safe", "active"),
    ("http://www.google.co.uk/search?q=cats", "safe", "active"),
    ("http://www.bing.com/search?q=cats&adlt=off", "adlt", "strict"),
    ("http://duckduckgo.com/?q=cats&kp=-2", "kp", "1"),
])
def test_safesearch_enforced_and_not_removable(world, url, param, value):
    internet, proxy, _ = world
    host = httpx.URL(url).host
    internet.clear()
    with client(proxy, "pupil1") as c:
        assert c.get(url).status_code == 200
    seen = internet.wait_for(lambda s: s.host == host)
    assert seen.query[param] == [value]
    assert seen.query["q"] == ["cats"]


def test_safesearch_over_intercepted_https_and_youtube_restricted(world):
    internet, proxy, root = world
    internet.clear()
    with client(proxy, "pupil1", verify=mitm_ca(root)) as c:
        assert c.get("https://www.google.com/search?q=x&safe=images").status_code == 200
        assert c.get("https://www.youtube.com/watch?v=abc", headers={"YouTube-Restrict": "Off"}).status_code == 200
    assert internet.wait_for(lambda s: s.host == "www.google.com").query["safe"] == ["active"]
    assert internet.wait_for(lambda s: s.host == "www.youtube.com").header("YouTube-Restrict") == "Strict"


def test_staff_search_is_not_rewritten(world):
    internet, proxy, _ = world
    internet.clear()
    with client(proxy, "teacher1") as c:
        c.get("http://www.google.com/search?q=lesson")
    assert "safe" not in internet.wait_for(lambda s: s.host == "www.google.com").query


@pytest.mark.parametrize("method", ["HEAD", "POST", "PUT", "DELETE"])
def test_block_is_correct_http_for_every_method(world, method):
    internet, proxy, _ = world
    with client(proxy, "pupil1") as c:
        r = c.request(method, "http://socialsite.test/post", content=b"x" * 100_000 if method in ("POST", "PUT") else None)
    assert r.status_code == 403
    assert (r.content == b"") if method == "HEAD" else (b"This page is blocked" in r.content)
    # The connection is still usable afterwards (correct framing).
    with client(proxy, "pupil1") as c:
        assert c.get("http://learning.test/").status_code == 200


@pytest.mark.parametrize("host", ["0x01010101", "1.1.1.1", "16843009"])
def test_ip_literal_doh_blocked_for_pupils_in_any_spelling(world, host):
    _, proxy, _ = world
    with client(proxy, "pupil1") as c:
        r = c.get(f"http://{host}/dns-query")
    assert r.status_code == 403


def test_hostile_host_header_does_not_crash_or_pass(world):
    internet, proxy, _ = world
    # Domain fronting: allowed URL host, blocked Host header.
    with client(proxy, "pupil1") as c:
        r = c.get("http://learning.test/", headers={"Host": "socialsite.test"})
        assert r.status_code == 403
        long_host = "a" * 70 + ".test"
        r = c.get(f"http://{long_host}/")
        assert r.status_code in (400, 403, 502)
        assert c.get("http://learning.test/").status_code == 200


def test_mitmdump_refuses_to_start_without_the_configured_upstream(tmp_path):
    config = make_school(tmp_path, upstream="http://127.0.0.1:9")
    r = subprocess.run([str(BIN / "mitmdump"), "-s", str(ROOT / "addons" / "schoolproxy_addons.py"),
                        "--listen-port", str(free_port()), "--set", f"schoolproxy_config={config}"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "start it with --mode upstream:http://127.0.0.1:9" in r.stdout + r.stderr


def test_schoolproxy_run_serves_the_same_policy(tmp_path):
    with Internet(tmp_path / "internet") as internet:
        config = make_school(tmp_path, upstream=internet.proxy_url)
        with ProxyProcess.schoolproxy_run(config, tmp_path) as proxy:
            with client(proxy, "pupil1") as c:
                assert c.get("http://socialsite.test/").status_code == 403
                assert c.get("http://learning.test/").status_code == 200


@pytest.mark.parametrize("protocol", ["--http2", "--http1.1"])
@pytest.mark.parametrize("route", ["mitmdump", "schoolproxy run"])
def test_https_requests_share_one_upstream_connection_per_tunnel(tmp_path, route, protocol):
    # Browsers offer HTTP/2. Against an HTTP/1.1 site, mitmproxy's lazy connections opened a new
    # upstream connection (a full TLS handshake at the site and the upstream filter) for every request.
    # A blocked site inside the same run must still never be contacted.
    with Internet(tmp_path / "internet") as internet:
        config = make_school(tmp_path, upstream=internet.proxy_url)
        config.write_text(config.read_text().replace("ca_dir: ca,", f"ca_dir: ca, upstream_ca: {internet.ca_path},"))
        if route == "mitmdump":
            proxy = ProxyProcess.mitmdump(config, tmp_path, "--mode", f"upstream:{internet.proxy_url}")
        else:
            proxy = ProxyProcess.schoolproxy_run(config, tmp_path)
        with proxy:
            sites = ["learning.test", "example.org", "news.test"]
            urls = [f"https://{site}/page{i}" for site in sites for i in range(4)] + ["https://socialsite.test/"]
            r = curl(protocol, "--cacert", str(tmp_path / "ca" / "mitmproxy-ca-cert.pem"),
                     "-x", proxy.auth_url("pupil1", PASSWORD), "-w", "%{http_code}\n",
                     *(arg for url in urls for arg in ("-o", "/dev/null", url)))
            assert r.stdout.split() == ["200"] * 12 + ["403"], r.stderr
            assert len(internet.seen) == 12
            assert internet.connections == len(sites)  # one per tunnel, not one per request
            assert not internet.connects_for("socialsite.test")


@pytest.fixture
def own_school(tmp_path):
    """For tests that change the school's files: a school, stand-in internet and mitmdump of their own.
    Call it (``quiet=False`` for warnings in the log) to get the proxy and the config path."""
    with contextlib.ExitStack() as stack:
        def start(quiet: bool = True) -> tuple[ProxyProcess, Path]:
            internet = stack.enter_context(Internet(tmp_path / "internet"))
            config = make_school(tmp_path, upstream=internet.proxy_url)
            proxy = stack.enter_context(ProxyProcess.mitmdump(
                config, tmp_path, "--mode", f"upstream:{internet.proxy_url}", quiet=quiet))
            return proxy, config
        yield start


def test_missing_phrase_lists_warn_at_start_up_and_the_proxy_serves(own_school):
    # The test school has no phrase list directory. That is reported once at start-up as a warning;
    # as an error (or raced from a thread) mitmdump's start-up check stopped the proxy under load.
    proxy, config = own_school(quiet=False)
    with client(proxy, "pupil1") as c:
        assert c.get("http://learning.test/").status_code == 200
        assert c.get("http://vpnsite.test/").status_code == 403   # a circumvention alert, from its category
    # The alert rules thread has evaluated the visit (and so loaded its rules) when its alert is counted.
    wait_until(lambda: 'theme="circumvention"' in httpx.get(metrics_url(config), timeout=5).text,
               what="the alert rules' first evaluation", detail=proxy.log)
    assert proxy.proc.poll() is None, proxy.log()
    log = proxy.log()
    assert log.count("phrase lists not loaded, search alerts are off") == 1, log
    assert "phrase list directory not found" in log
    assert "Error logged during startup" not in log


def test_an_in_place_edit_of_a_list_file_is_applied_without_a_restart(own_school):
    # The network manager appends a site to a category file (no directory changes): the watcher reloads.
    proxy, config = own_school()
    with client(proxy, "pupil1") as c:
        assert c.get("http://funsite.test/").status_code == 200
        with open(config.parent / "lists" / "adult" / "domains", "a") as f:
            f.write("funsite.test\n")
        deadline = time.monotonic() + 10
        while c.get("http://funsite.test/").status_code != 403:
            assert time.monotonic() < deadline, proxy.log()
            time.sleep(0.2)


def test_reload_under_load_fails_no_request_and_applies(own_school):
    proxy, config = own_school()
    failures: list[str] = []
    statuses: dict[int, int] = {}
    stop = threading.Event()

    def load():
        with client(proxy, "pupil1") as c:
            while not stop.is_set():
                try:
                    r = c.get("http://learning.test/")
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                except httpx.HTTPError as e:
                    failures.append(repr(e))

    threads = [threading.Thread(target=load) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: statuses.get(200, 0) > 10, what="the load under way",
                   detail=lambda: f"{failures[:3]}\n{proxy.log()}")
        # 1) A valid change, picked up by the file watcher: pupils now blocked from learning.test.
        text = config.read_text()
        config.write_text(text.replace(
            "overrides:\n",
            "overrides:\n  - {site: learning.test, action: block, profiles: [pupil], rationale: Test reload, "
            "author: CI, date: 2026-11-25}\n", 1))
        deadline = time.monotonic() + 10
        while statuses.get(403, 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert statuses.get(403, 0) > 0, proxy.log()
        # 2) A broken config and SIGHUP: refused, the running policy keeps serving.
        config.write_text(text + "\nprofiles: [broken\n")
        proxy.signal()
        wait_until(lambda: "REFUSED" in proxy.log(), what="the broken config refused", detail=proxy.log)
        before = dict(statuses)
        wait_until(lambda: statuses.get(403, 0) > before.get(403, 0) + 20, what="blocks after the refusal")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    log = proxy.log()
    proxy.stop()
    assert not failures, failures[:3]
    assert set(statuses) <= {200, 403}
    assert statuses[200] > 10 and statuses[403] > before.get(403, 0) + 20  # still blocking under the kept policy
    assert "REFUSED" in log and "not valid YAML" in log


@pytest.mark.parametrize("trigger", ["file change", "SIGHUP"])
def test_a_reload_failing_the_configs_own_policy_tests_is_refused_and_the_old_policy_applies(own_school, trigger):
    proxy, config = own_school()
    with client(proxy, "pupil1") as c:
        assert c.get("http://socialsite.test/").status_code == 403
    # Someone allows a social network for pupils; the config's test `pupil1 socialsite.test: block` fails.
    config.write_text(config.read_text().replace(
        "overrides:\n", "overrides:\n  - {site: socialsite.test, action: allow, profiles: [pupil], "
                        "rationale: Class blog, author: CL, date: 2026-09-02}\n", 1))
    if trigger == "SIGHUP":
        proxy.signal()
    wait_until(lambda: "REFUSED" in proxy.log(), what="the reload refused", detail=proxy.log)
    log = proxy.log()
    assert f"reload ({trigger}) REFUSED — still serving the previous configuration" in log
    assert "1 of the config's own policy tests failed" in log
    assert "FAIL tests[0] user pupil1 (pupil) http://socialsite.test/: expected block, got allow" in log
    with client(proxy, "pupil1") as c:
        assert c.get("http://socialsite.test/").status_code == 403
    metrics = httpx.get(metrics_url(config), timeout=5).text
    assert 'schoolproxy_config_reloads_total{result="refused"} 1.0' in metrics
    assert 'schoolproxy_config_reloads_total{result="ok"} 0.0' in metrics


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET http://learning.test/ HTTP/1.1\r\nHost: learning.test\r\nContent-Length: -5\r\n\r\n",
    b"GET http://[::1/ HTTP/1.1\r\n\r\n",
    b"GET http://" + b"a." * 3000 + b"test/ HTTP/1.1\r\n\r\n",
    b"CONNECT :443 HTTP/1.1\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 64,
])
def test_malformed_requests_get_an_error_and_the_proxy_keeps_serving(world, raw):
    import socket
    _, proxy, _ = world
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        try:
            while chunk := s.recv(65536):
                reply += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    assert not reply.startswith(b"HTTP/1.1 200")  # never served
    with client(proxy, "pupil1") as c:
        assert c.get("http://learning.test/").status_code == 200
        assert c.get("http://socialsite.test/").status_code == 403
