"""Who is browsing, end to end: a real mitmdump signing users in against a real OpenLDAP slapd, the
logon feed, the supply register, the directory going down mid-run, and password guessing."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import add_people, make_school, metrics_url
from directory_server import PASSWORD as DIR_PASSWORD
from directory_server import Slapd
from internet import Internet
from proxyproc import BIN, ProxyProcess, free_port
from sqlalchemy import select
from waits import wait_until

from schoolproxy.records import open_database
from schoolproxy.records.schema import requests

pytestmark = pytest.mark.e2e
SECRET = "feed-secret-0123456789abcdef"


def school_with_directory(root: Path, server: Slapd, internet: Internet, cache_seconds: int = 300,
                          max_failures: int = 10) -> tuple[Path, str]:
    """The test school, signing in against ``server``; returns (config, logon feed URL)."""
    config = make_school(root, upstream=internet.proxy_url, database=f"sqlite:///{root / 'records.db'}")
    data = yaml.safe_load(config.read_text())
    directory = yaml.safe_load("identity:\n" + server.yaml())["identity"]["directory"]
    directory["cache_seconds"] = cache_seconds
    (root / "feed-secret").write_text(SECRET + "\n")
    feed_port = free_port()
    data["identity"].update({
        "directory": directory,
        "logon_feed": {"listen": f"127.0.0.1:{feed_port}", "secret_file": "feed-secret", "state_file": "logons.json",
                       "staff_subnets": ["127.0.0.1/32"]},  # these tests' own address stands for a staff PC
        "groups": {"pupils": {"profile": "pupil"}, "staff": {"profile": "staff"}},
    })
    data["identity"]["patterns"].append({"match": "Student*", "profile": "supply"})
    data["identity"]["proxy_auth"]["max_failures"] = max_failures
    data["identity"]["proxy_auth"]["cache_seconds"] = cache_seconds
    del data["identity"]["proxy_auth"]["users_file"]  # everyone signs in against the directory
    data["tests"] = []
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config, f"http://127.0.0.1:{feed_port}"


def start_proxy(config: Path, root: Path, internet: Internet) -> ProxyProcess:
    return ProxyProcess.mitmdump(config, root, "--mode", f"upstream:{internet.proxy_url}",
                                 "--set", f"ssl_verify_upstream_trusted_ca={internet.ca_path}", quiet=False)


def get(proxy: ProxyProcess, url: str, user: str | None = None, password: str = DIR_PASSWORD) -> httpx.Response:
    with httpx.Client(proxy=proxy.auth_url(user, password) if user else proxy.url, timeout=15) as c:
        return c.get(url)


def records(root: Path, n: int, timeout: float = 15.0) -> list[dict]:
    engine = open_database(f"sqlite:///{root / 'records.db'}")
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                with engine.connect() as c:
                    rows = [dict(r) for r in c.execute(select(requests).order_by(requests.c.id)).mappings()]
            except Exception:
                rows = []
            if len(rows) >= n or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)
    finally:
        engine.dispose()


def record(root: Path, ref: str, timeout: float = 30.0) -> dict | None:
    """The row with reference ``ref``, once the writer has stored it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = next((x for x in records(root, 0, timeout=0) if x["ref"] == ref), None)
        if row is not None:
            return row
        time.sleep(0.2)
    return None


def feed_answers(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def feed(url: str, path: str, body: object, secret: str = SECRET, raw: bytes | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(url + path, content=content, headers={**headers, "Content-Type": "application/json"},
                      timeout=5)


def feed_from(source: str, url: str, path: str, body: object) -> httpx.Response:
    """A logon-feed call with the right secret from another PC on the LAN (``source``: 127.x.y.z)."""
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=5) as c:
        return c.post(url + path, json=body, headers={"Authorization": f"Bearer {SECRET}"})


def get_from(source: str, proxy: ProxyProcess, url: str) -> httpx.Response:
    """Browsing without a proxy sign-in from the PC at ``source`` (curl: httpx cannot choose the source
    address of a proxied connection). Only the status and headers are kept."""
    out = subprocess.run(["curl", "-sS", "--max-time", "15", "-o", "/dev/null", "-D", "-", "--interface", source,
                          "-x", proxy.url, url], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    head = out.stdout.strip().split("\n\n")[-1].splitlines()  # text mode: the CRLFs are already \n
    headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
    return httpx.Response(int(head[0].split()[1]), headers=headers)


def wait_for_feed(url: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the logon feed never answered"
        time.sleep(0.1)


def metric(config: Path, name: str) -> float | None:
    for line in httpx.get(metrics_url(config), timeout=5).text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture(scope="module")
def world(tmp_path_factory, slapd):
    root = tmp_path_factory.mktemp("identity")
    with Internet(root / "internet") as internet:
        config, feed_url = school_with_directory(root, slapd, internet)
        proxy = start_proxy(config, root, internet)
        # The logon feed listens on its own port, a moment after the proxy does.
        wait_until(lambda: feed_answers(feed_url), what="the logon feed listening", detail=proxy.log)
        try:
            yield proxy, root, feed_url, config
        finally:
            proxy.stop()


def test_directory_staff_and_year_group_pupil_get_their_profiles(world):
    proxy, root, _, _ = world
    assert get(proxy, "http://socialsite.test/", "amiller").status_code == 200    # staff ⊃ teaching-staff
    r = get(proxy, "http://socialsite.test/", "jsmith")                           # pupils ⊃ year4
    assert r.status_code == 403
    row = record(root, r.headers["X-Schoolproxy-Reference"])
    assert (row["username"], row["profile"], row["identity_source"]) == ("jsmith", "pupil", "proxy-auth")


@pytest.mark.parametrize("user,password", [("jsmith", "wrong-password"), ("oldpupil", DIR_PASSWORD),
                                           ("nobody", DIR_PASSWORD), ("jsmith)(uid=*", DIR_PASSWORD),
                                           ("*", DIR_PASSWORD), ("x" * 3000, "y" * 3000)])
def test_wrong_password_disabled_account_and_injection_get_407(world, user, password):
    proxy, *_ = world
    r = get(proxy, "http://learning.test/", user, password)
    assert r.status_code == 407


def test_malformed_proxy_authorization_headers_get_407(world):
    proxy, *_ = world
    for header in ["Basic", "Basic !!!!", "Basic " + base64.b64encode(b"no-colon").decode(), "NTLM TlRMTVNTUAAB",
                   "Basic " + base64.b64encode(b"\xff\xfe:\x00").decode(), "Basic " + "QUFB" * 3000]:
        out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-x", proxy.url,
                              "--proxy-header", f"Proxy-Authorization: {header}", "http://learning.test/"],
                             capture_output=True, text=True, timeout=15)
        assert out.stdout == "407", (header[:40], out.stdout, out.stderr)
    assert get(proxy, "http://learning.test/", "amiller").status_code == 200  # still serving


def test_supply_logon_resolves_to_the_registered_person(world):
    proxy, root, _, config = world
    sp = str(BIN / "schoolproxy")
    done = subprocess.run([sp, "register", "add", "--config", str(config), "--logon", "Supply1",
                           "--person", "Ms Aisha Khan", "--class", "Year 4", "--from", "00:00", "--to", "23:59"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    r = get(proxy, "http://adultsite.test/", "Supply1")
    assert r.status_code == 403
    ref = r.headers["X-Schoolproxy-Reference"]
    row = record(root, ref)
    assert row is not None and row["username"] == "Supply1" and row["profile"] == "supply"
    add_people(config)
    report = subprocess.run([sp, "report", "ref", "--config", str(config), ref, "--by", "slt1"], capture_output=True,
                            text=True)
    assert "Ms Aisha Khan" in report.stdout, report.stdout
    # Student1 has no visit registered: the report says so plainly.
    r = get(proxy, "http://adultsite.test/", "Student1")
    ref2 = r.headers["X-Schoolproxy-Reference"]
    assert record(root, ref2) is not None
    report = subprocess.run([sp, "report", "ref", "--config", str(config), ref2, "--by", "slt1"], capture_output=True,
                            text=True)
    assert "no one registered" in report.stdout, report.stdout


def test_logon_feed_attributes_requests_without_proxy_auth(world):
    proxy, root, feed_url, _ = world
    assert get(proxy, "http://learning.test/").status_code == 407          # nobody known at 127.0.0.1
    r = feed(feed_url, "/logon", {"user": "SCHOOL\\bjones", "device": "IT-SUITE-07"})
    assert r.status_code == 200 and r.json()["user"] == "bjones" and r.json()["ip"] == "127.0.0.1"
    r = get(proxy, "http://socialsite.test/")                                # bjones ∈ year6 ⊂ pupils
    assert r.status_code == 403
    row = record(root, r.headers["X-Schoolproxy-Reference"])
    assert (row["username"], row["profile"], row["device"], row["identity_source"]) == \
        ("bjones", "pupil", "IT-SUITE-07", "logon-feed")
    # Proxy authentication, where present, wins over the feed — and still carries the device name.
    assert get(proxy, "http://socialsite.test/", "amiller").status_code == 200
    # The latest logon on an address wins; a logoff by someone else does not clear it.
    assert feed(feed_url, "/logon", {"user": "amiller", "device": "STAFFROOM-1"}).status_code == 200
    assert feed(feed_url, "/logoff", {"user": "bjones"}).json()["cleared"] is False
    assert get(proxy, "http://socialsite.test/").status_code == 200
    assert feed(feed_url, "/logoff", {"user": "amiller"}).json()["cleared"] is True
    assert get(proxy, "http://learning.test/").status_code == 407


@pytest.mark.parametrize("secret,raw,status", [
    ("wrong-secret-000000000000", None, 401), ("", None, 401),
    (SECRET, b"\xff\xfe garbage", 400), (SECRET, b"[1,2,3]", 400), (SECRET, b'{"user": "a;b\\u0000"}', 400),
    (SECRET, b'{"user": "x", "ip": "not-an-ip"}', 400), (SECRET, b'{"device": "no-user"}', 400),
    (SECRET, b'{"user": {"nested": 1}}', 400), (SECRET, b"x" * 5000, 413),
])
def test_bad_logon_feed_calls_are_rejected_and_change_nothing(world, secret, raw, status):
    proxy, _, feed_url, _ = world
    r = feed(feed_url, "/logon", {"user": "amiller"}, secret=secret, raw=raw)
    assert r.status_code == status and "error" in r.json()
    assert get(proxy, "http://learning.test/").status_code == 407  # no one was signed in by it


def test_the_feed_names_only_accounts_the_directory_has_and_staff_only_at_staff_pcs(world):
    proxy, root, feed_url, config = world
    pc = "127.0.3.30"  # a PC outside the staff subnets
    for user in ("nobody", "oldpupil", "amiller"):  # not in the directory; disabled there; staff
        r = feed_from(pc, feed_url, "/logon", {"user": user, "device": "IT-SUITE-09"})
        assert r.status_code == 403, (user, r.text)
    assert get_from(pc, proxy, "http://learning.test/").status_code == 407  # so no one is known at that PC
    assert feed_from(pc, feed_url, "/logon", {"user": "bjones", "device": "IT-SUITE-09"}).status_code == 200
    r = get_from(pc, proxy, "http://socialsite.test/")
    assert r.status_code == 403
    row = record(root, r.headers["X-Schoolproxy-Reference"])
    assert (row["username"], row["profile"], row["identity_source"]) == ("bjones", "pupil", "logon-feed")
    assert metric(config, 'schoolproxy_logon_feed_refused_total{reason="unknown-user"}') >= 2
    assert metric(config, 'schoolproxy_logon_feed_refused_total{reason="staff-elsewhere"}') >= 1


def test_logon_feed_lists_live_logons_only_with_the_secret(world):
    _, _, feed_url, _ = world
    assert httpx.get(feed_url + "/logons", timeout=5).status_code == 401
    assert httpx.get(feed_url + "/health", timeout=5).json() == {"ok": True}
    assert feed(feed_url, "/logon", {"user": "jsmith", "ip": "10.1.2.3", "device": "IT-SUITE-03"}).status_code == 200
    live = httpx.get(feed_url + "/logons", headers={"Authorization": f"Bearer {SECRET}"}, timeout=5).json()["logons"]
    assert {"user": "jsmith", "ip": "10.1.2.3", "device": "IT-SUITE-03"}.items() <= next(
        e for e in live if e["ip"] == "10.1.2.3").items()


def test_directory_down_mid_run(tmp_path, own_slapd):
    """slapd stopped: signed-in users keep their profile, new sign-ins get the default profile (never
    staff), the network manager sees it in the log and the metrics; when it is back, all is normal."""
    server = own_slapd
    with Internet(tmp_path / "internet") as internet:
        config, feed_url = school_with_directory(tmp_path, server, internet, cache_seconds=1)
        with start_proxy(config, tmp_path, internet) as proxy:
            assert get(proxy, "http://socialsite.test/", "amiller").status_code == 200   # staff, cached
            server.stop()
            time.sleep(1.5)                                                              # cache expired
            # A logon for someone the directory cannot vouch for now is not believed (the PC fails closed).
            r = feed(feed_url, "/logon", {"user": "bjones"})
            assert r.status_code == 503 and "not answering" in r.json()["error"]
            assert get(proxy, "http://socialsite.test/", "amiller").status_code == 200   # still staff
            r = get(proxy, "http://socialsite.test/", "head")                            # new: staff in AD…
            assert r.status_code == 403                                                  # …but default profile
            assert get(proxy, "http://learning.test/", "head").status_code == 200        # still browsing
            assert "directory unreachable" in proxy.log()
            assert metric(config, "schoolproxy_directory_up") == 0
            server.start()
            deadline = time.monotonic() + 10
            while get(proxy, "http://socialsite.test/", "head").status_code != 200:
                assert time.monotonic() < deadline, "head never got the staff profile back"
                time.sleep(0.5)
            assert metric(config, "schoolproxy_directory_up") == 1
            rows = records(tmp_path, 1)
            unverified = [r for r in rows if r["username"] == "head" and r["identity_source"] == "unverified"]
            assert unverified and all(r["profile"] == "pupil" for r in unverified)


def test_password_guessing_is_slowed_and_reported(tmp_path, slapd):
    with Internet(tmp_path / "internet") as internet:
        config, _ = school_with_directory(tmp_path, slapd, internet, max_failures=3)
        with start_proxy(config, tmp_path, internet) as proxy:
            for i in range(3):
                assert get(proxy, "http://learning.test/", "jsmith", f"guess-{i}").status_code == 407
            assert "possible password guessing from 127.0.0.1" in proxy.log()
            assert "possible password guessing against account jsmith" in proxy.log()
            t0 = time.monotonic()
            assert get(proxy, "http://learning.test/", "jsmith", "guess-x").status_code == 407
            text = httpx.get(metrics_url(config), timeout=5).text
            # Reported once for the address and once for the account.
            assert 'schoolproxy_signin_problems_total{result="guessing_reports"} 2.0' in text
            assert 'schoolproxy_signin_problems_total{result="slowed"} 1.0' in text
            assert time.monotonic() - t0 >= 1.0  # it waited before answering (the slowing itself)
            assert DIR_PASSWORD not in proxy.log() and "guess-" not in proxy.log()


def test_a_pupil_with_the_feed_secret_cannot_browse_as_a_teacher(tmp_path):
    """Issue 13: the feed's secret reached a pupil (the old logon script read it from a share every pupil
    could read). From a pupil's PC they claim a teacher's logon, then browse. The feed refuses: the PC stays
    a pupil PC, nothing is recorded under the teacher's name, and the network manager sees the attempt."""
    pupil_pc, next_pupil_pc, staff_pc = "127.0.2.20", "127.0.2.21", "127.0.1.10"
    with Internet(tmp_path / "internet") as internet:
        config = make_school(tmp_path, upstream=internet.proxy_url, database=f"sqlite:///{tmp_path / 'records.db'}")
        (tmp_path / "feed-secret").write_text(SECRET + "\n")
        (tmp_path / "feed-secret").chmod(0o600)
        data = yaml.safe_load(config.read_text())
        feed_url = f"http://127.0.0.1:{free_port()}"
        data["identity"]["groups"]["staff"] = {"profile": "staff", "members": ["mbrown"]}
        data["identity"]["subnets"].append({"cidr": "127.0.2.0/24", "profile": "pupil", "name": "ICT suite"})
        data["identity"]["logon_feed"] = {"listen": feed_url[7:], "secret_file": "feed-secret",
                                          "state_file": "logons.json", "staff_subnets": ["127.0.1.0/24"]}
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        with start_proxy(config, tmp_path, internet) as proxy:
            wait_for_feed(feed_url)
            r = feed_from(pupil_pc, feed_url, "/logon", {"user": "mbrown", "device": "ICT-07"})
            assert r.status_code == 403 and "mbrown" not in r.text and "staff" not in r.text, r.text
            r = get_from(pupil_pc, proxy, "http://socialsite.test/")
            assert r.status_code == 403                                   # still filtered as the ICT suite
            row = record(tmp_path, r.headers["X-Schoolproxy-Reference"])
            assert (row["username"], row["profile"], row["identity_source"]) == (None, "pupil", "subnet")
            # Nor by naming the staff PC's address, posing as the console's sign-in page, or making a name up.
            for body in ({"user": "mbrown", "ip": staff_pc}, {"user": "mbrown", "source": "sign-in"},
                         {"user": "mbrown2"}):
                assert feed_from(pupil_pc, feed_url, "/logon", body).status_code == 403, body
            assert get_from(pupil_pc, proxy, "http://socialsite.test/").status_code == 403
            # The teacher at a staff PC is named, and browses as staff.
            assert feed_from(staff_pc, feed_url, "/logon", {"user": "mbrown", "device": "STAFFROOM-1"}).status_code == 200
            r = get_from(staff_pc, proxy, "http://socialsite.test/")
            assert r.status_code == 200
            # Pupils are still named at their own PCs.
            assert feed_from(next_pupil_pc, feed_url, "/logon", {"user": "pupil1", "device": "ICT-08"}).status_code == 200
            r = get_from(next_pupil_pc, proxy, "http://socialsite.test/")
            assert r.status_code == 403
            assert record(tmp_path, r.headers["X-Schoolproxy-Reference"])["username"] == "pupil1"
            rows = records(tmp_path, 4)
            assert [(r["client_ip"], r["profile"]) for r in rows if r["username"] == "mbrown"] == [(staff_pc, "staff")]
            # Four refusals from the pupil's PC: logged once (no secret), counted by reason with no user or address.
            log = proxy.log()
            assert log.count(f"logon feed: refused a call from {pupil_pc}") == 1, log
            assert SECRET not in log
            text = httpx.get(metrics_url(config), timeout=5).text
            for reason, n in (("staff-elsewhere", 1), ("not-own-address", 1), ("sign-in-not-from-gateway", 1),
                              ("unknown-user", 1)):
                assert f'schoolproxy_logon_feed_refused_total{{reason="{reason}"}} {n}.0' in text, reason
            assert pupil_pc not in text and "mbrown" not in text
