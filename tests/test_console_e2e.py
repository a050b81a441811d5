"""The console end to end: pupils search through a real mitmdump (against a real slapd), the console runs
as `schoolproxy console`, and the DSL and the head teacher use it in a real Chromium driven by Playwright.

Screenshots are saved in each test's directory; the README's (a school morning's inbox and one alert, at
desktop and tablet sizes) also in $SCHOOLPROXY_SCREENSHOTS when it is set:

    SCHOOLPROXY_SCREENSHOTS=docs/screenshots .venv/bin/python -m pytest tests/test_console_e2e.py
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import io
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from conftest import PASSWORD, require
from console_school import PEOPLE, add_alert, add_directory, add_record, make_console_school, open_db
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from directory_server import PASSWORD as DIR_PASSWORD
from internet import Internet
from proxyproc import BIN, ProxyProcess
from sqlalchemy import select

from schoolproxy.monitoring import evidence, store
from schoolproxy.records.schema import alerts
from schoolproxy.records.visits import add_visit

pytestmark = pytest.mark.e2e
CHROMIUM = "/usr/bin/chromium"
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)> how to kill myself"
ESCAPES = "/\x1b[31mred\x1b]8;;http://evil.test/\x07click\x1b]8;;\x07\u202egnp.exe"


class ConsoleProcess:
    """`schoolproxy console` in a process of its own."""

    def __init__(self, config: Path, port: int, log: Path):
        self.port = port
        self.log_path = log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen([str(BIN / "schoolproxy"), "console", "--config", str(config)],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"console exited: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"console did not listen: {self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def spki_of(cert_file: Path) -> str:
    """The certificate's public key hash, for Chromium to accept this one certificate and no other."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def school(tmp_path, slapd):
    if not Path(CHROMIUM).exists():
        require("Chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright  # noqa: F401
    except ImportError:
        require("the playwright Python package is not installed (pip install playwright)")
    with Internet(tmp_path / "internet") as internet:
        # The DSL is in the directory's teaching-staff group; the head is named in people:. The pupils'
        # names and classes come from the directory (displayName, departmentNumber).
        people = {**PEOPLE, "head": ("Mr P Head", ["head"])}
        del people["head1"]
        config = make_console_school(tmp_path, names="{class_attribute: departmentNumber}", people=people,
                                     extra="role_groups: {dsl: [teaching-staff]}\n")
        add_directory(config, slapd)
        config.write_text(config.read_text().replace("upstream: null", f"upstream: {internet.proxy_url}"))
        cfg, db = open_db(config)
        yield internet, config, cfg, db, tmp_path


def browse(proxy: ProxyProcess, user: str, password: str, *urls: str) -> None:
    with httpx.Client(proxy=proxy.auth_url(user, password), timeout=15) as c:
        for url in urls:
            c.get(url)


def launch(p, tmp_path: Path, spki: str, name: str):
    return p.chromium.launch_persistent_context(
        str(tmp_path / f"chromium-{name}"), executable_path=CHROMIUM, headless=True,
        args=["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              f"--ignore-certificate-errors-spki-list={spki}"],
        viewport={"width": 1280, "height": 900}, locale="en-GB", timezone_id="Europe/London",
        permissions=["clipboard-read", "clipboard-write"], accept_downloads=True)


def screenshot(page, tmp_path: Path, name: str, readme: bool = False) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    out = os.environ.get("SCHOOLPROXY_SCREENSHOTS")
    if out and readme:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(out) / name)


def test_the_dsl_finds_acts_on_and_exports_a_pupils_concern_in_chromium(school):
    from playwright.sync_api import sync_playwright
    internet, config, cfg, db, tmp_path = school
    with ProxyProcess.mitmdump(config, tmp_path, "--mode", f"upstream:{internet.proxy_url}") as proxy:
        browse(proxy, "jsmith", DIR_PASSWORD, "http://www.bbc.co.uk/bitesize/topics/volcanoes",
               "http://www.google.com/search?q=volcano+facts", "http://www.youtube.com/watch?v=abc",
               "http://www.google.com/search?q=how+to+kill+myself", "http://www.childline.org.uk/",
               "http://www.bing.com/search?q=i+want+to+die")      # counted on the same alert, kept as evidence
        browse(proxy, "bjones", DIR_PASSWORD, "http://www.bing.com/search?" + str(httpx.QueryParams({"q": HOSTILE})))
        browse(proxy, "teacher1", PASSWORD, "http://www.google.com/search?q=how+to+kill+myself")

        def raised():
            with db.connect() as conn:
                rows = conn.execute(select(alerts.c.ref, alerts.c.username)).all()
            return {u: r for r, u in rows} if len(rows) >= 3 else None
        refs = wait_for(raised, what="three alerts")
        jsmith = store.get_alert(db, refs["jsmith"])[0]
        wait_for(lambda: len(evidence.of_alert(db, jsmith["id"])) == 2, what="the repeat's evidence")
        add_record(db, username="jsmith", host="www.bbc.co.uk", path=ESCAPES)   # raw escapes in a stored URL
        console = ConsoleProcess(config, cfg.console.port, tmp_path / "console.log")
        try:
            spki = spki_of(tmp_path / "console-state" / "console-cert.pem")
            base = f"https://localhost:{cfg.console.port}"
            with sync_playwright() as p:
                _as_the_dsl(launch(p, tmp_path, spki, "dsl"), base, refs, db, tmp_path)
                _as_the_head(launch(p, tmp_path, spki, "head"), base, refs)
                _as_the_network_manager(launch(p, tmp_path, spki, "net"), base)
        finally:
            console.stop()
    log = console.log()
    assert DIR_PASSWORD not in log and "kill" not in log, log         # paths only: no search, no password


def _signin(page, base: str, user: str, password: str) -> None:
    page.goto(base + "/")
    # Keyboard only: the username box takes the focus by itself. Chromium applies autofocus after the
    # first frame, which on a loaded machine can come after "load"; keys typed before it are lost.
    page.wait_for_function("document.activeElement && document.activeElement.id === 'username'")
    page.keyboard.type(user)
    page.keyboard.press("Tab")
    page.keyboard.type(password)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    if "/signin" in page.url:                     # say why, rather than time out waiting for the next page
        raise AssertionError(f"sign-in as {user} refused: {page.locator('main').inner_text()[:300]!r}")


def _as_the_dsl(context, base: str, refs: dict, db, tmp_path: Path) -> None:
    dialogs = []
    page = context.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    _signin(page, base, "amiller", DIR_PASSWORD)
    page.wait_for_url("**/inbox")
    line = page.locator("ol.inbox li", has_text="Jamie Smith (Year 4)")
    assert "Jamie Smith (Year 4) searched 'how to kill myself' on Google at" in line.inner_text()
    assert "— self-harm, high" in line.inner_text()
    hostile = page.locator("ol.inbox li", has_text="Billie Jones (Year 6)").inner_text()
    assert "<script>alert(1)</script><img src=x onerror=alert(2)>" in hostile      # shown as text, never run
    assert "teacher1" not in page.content()
    assert page.locator(".banner.danger").is_visible()                              # no email set up here
    screenshot(page, tmp_path, "inbox.png")

    line.locator("a").click()
    page.wait_for_url(f"**/alerts/{refs['jsmith']}")
    found = page.locator("ol.evidence li").all_inner_texts()            # every search behind the alert
    assert len(found) == 2 and "how to kill myself" in found[0] and "raised the alert" in found[0].lower()
    assert "i want to die" in found[1] and "on Bing" in found[1] and "raised" not in found[1].lower()
    searches = page.locator("ol.timeline li.kind-search").all_inner_texts()
    assert any("volcano facts" in s for s in searches) and any("this raised the alert" in s for s in searches)
    timeline = page.locator("ol.timeline").inner_text()
    assert "www.bbc.co.uk" in timeline and "www.childline.org.uk" in timeline
    assert "?[31mred" in timeline and "\x1b" not in page.content()                 # escapes made visible
    assert page.locator("ol.timeline a").count() == 0                               # no live links
    page.click(".choices a:has-text('60 minutes')")            # (the reasons mention 60 minutes too)
    page.wait_for_url("**minutes=60**")
    page.goto(f"{base}/alerts/{refs['jsmith']}")
    screenshot(page, tmp_path, "alert.png")

    page.click("text=Acknowledge — I have seen this")
    page.wait_for_selector("text=Acknowledged — recorded as Mrs A Miller.")
    page.fill("#action-note", "Spoke to Jamie with the class teacher; parents informed")
    page.click("text=Record action")
    page.wait_for_selector("text=Action recorded — recorded as Mrs A Miller.")
    page.fill("#close-note", "Referred to early help; school counsellor weekly")
    page.click("text=Close with this outcome")
    page.wait_for_selector("text=Closed — recorded as Mrs A Miller.")
    row, notes, _ = store.get_alert(db, refs["jsmith"])
    assert row["status"] == "closed"
    assert [(n["action"], n["author"]) for n in notes] == [("ack", "Mrs A Miller (amiller)"),
                                                            ("action", "Mrs A Miller (amiller)"),
                                                            ("close", "Mrs A Miller (amiller)")]
    page.click("text=Copy summary")
    page.wait_for_selector("button:has-text('Copied')")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith("Online safety concern: Jamie Smith (Year 4)") and "Referred to early help" in copied

    # A change without the CSRF token, sent from the page itself: refused, nothing changed.
    status = page.evaluate("""async (ref) => (await fetch('/alerts/' + ref + '/reopen', {method: 'POST',
        headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: 'note=x'})).status""", refs["jsmith"])
    assert status == 403 and store.get_alert(db, refs["jsmith"])[0]["status"] == "closed"

    page.goto(f"{base}/alerts/{refs['bjones']}")
    assert "<script>alert(1)</script>" in page.locator("h1 + p").inner_text()
    response = page.goto(f"{base}/alerts/{refs['teacher1']}")
    assert response.status == 403 and "how to kill" not in page.content()

    page.goto(f"{base}/export")
    assert "Staff" not in page.locator("main").inner_text()
    with page.expect_download() as download:
        page.locator("form", has_text="Pupils (for CPOMS)").locator("button").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert {(r["Student"], r["Class"]) for r in rows} == {("Jamie Smith", "Year 4"), ("Billie Jones", "Year 6")}
    assert "teacher1" not in str(rows)

    page.goto(f"{base}/audit")
    audit = page.locator("ol.audit").inner_text()
    assert f"looked at Jamie Smith (Year 4): alert {refs['jsmith']} with browsing 30 minutes either side" in audit
    assert f"alert {refs['jsmith']} with browsing 60 minutes either side" in audit
    assert "REFUSED" not in audit                      # the refused staff alert concerns a teacher: not the DSL's
    assert dialogs == []
    context.close()


def _as_the_head(context, base: str, refs: dict) -> None:
    page = context.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    _signin(page, base, "head", DIR_PASSWORD)
    page.wait_for_url("**/inbox")
    inbox = page.locator("ol.inbox").inner_text()
    assert "teacher1 searched 'how to kill myself' on Google" in inbox and "Jamie" not in inbox
    page.goto(f"{base}/alerts/{refs['teacher1']}")
    assert "Summary for the LADO referral" in page.content()
    assert page.goto(f"{base}/alerts/{refs['jsmith']}").status == 403
    page.goto(f"{base}/audit")
    audit = page.locator("ol.audit").inner_text()
    assert f"REFUSED: alert {refs['teacher1']}" in audit and f"Mr P Head (head) looked at teacher1" in audit
    assert dialogs == []
    context.close()


def _as_the_network_manager(context, base: str) -> None:
    page = context.new_page()
    _signin(page, base, "net1", PASSWORD)
    page.wait_for_url("**/health")
    proxy = page.locator("li.check", has_text="The filter (proxy)")
    assert "ok" in proxy.get_attribute("class") and "1 proxy process answering" in proxy.inner_text()
    directory = page.locator("li.check", has_text="School directory (AD)")
    assert "ok" in directory.get_attribute("class") and "Answering." in directory.inner_text()
    assert "kill" not in page.content() and "Jamie" not in page.content()
    context.close()


def _a_school_morning(db, cfg) -> dict:
    """Records and alerts of a realistic morning, for the screenshots in the README."""
    tz = ZoneInfo(cfg.timezone)
    now = dt.datetime.now(tz)
    raised = now.replace(hour=10, minute=42, second=5, microsecond=0)   # in school hours, and in the past
    if raised + dt.timedelta(minutes=30) > now:
        raised -= dt.timedelta(days=1)

    def at(h, m, s=0):
        return raised.replace(hour=h, minute=m, second=s)
    pc = {"device": "ICT-07", "client_ip": "10.0.20.37"}
    for i in range(12):
        add_record(db, host="www.bbc.co.uk", path="/bitesize/topics/zkcqn39", when=at(10, 12, i * 4), **pc)
    add_record(db, host="www.google.com", path="/search?q=minecraft+skins", search_term="minecraft skins",
               when=at(10, 20), **pc)
    for i in range(5):
        add_record(db, host="www.youtube.com", path="/watch", when=at(10, 31, i), **pc)
    add_record(db, host="www.google.com", path="/search?q=why+do+i+feel+sad", search_term="why do i feel sad all the time",
               when=at(10, 40), **pc)
    alert = add_alert(db, cfg, when=at(10, 42), **pc)
    add_record(db, host="www.childline.org.uk", path="/info-advice/your-feelings/", categories=("helpsites",),
               when=at(10, 43), **pc)
    add_record(db, host="www.tiktok.com", action="block", rule="category:social-networking",
               categories=("social-networking",), when=at(10, 44), **pc)
    add_record(db, host="adultsite.test", path="/never/shown", action="block", rule="category:adult",
               categories=("adult",), when=at(10, 46), **pc)
    add_record(db, host="www.google.com", path="/search?q=how+to+kill+myself+painlessly",
               search_term="how to kill myself painlessly", when=at(10, 50), **pc)
    add_alert(db, cfg, theme="grooming", severity="medium", username="pupil2", device="ICT-03",
              term="my new friend says keep our chats secret", when=at(9, 15))
    add_alert(db, cfg, theme="pornography", severity="high", rule="category:adult", term=None, host="adultsite.test",
              username="pupil2", device="LIB-02", when=at(9, 50))
    add_alert(db, cfg, theme="circumvention", severity="medium", rule="category:vpn-proxy", term=None,
              host="vpnsite.test", when=at(14, 55) - dt.timedelta(days=1), device="ICT-11")
    add_alert(db, cfg, theme="bullying", severity="low", username="pupil2", device="ICT-03",
              term="everyone hates you", when=at(13, 20) - dt.timedelta(days=2))
    morning = now.replace(hour=8, minute=30, second=0, microsecond=0)
    add_visit(db, "Supply1", "Ms Aisha Khan", morning, morning.replace(hour=15), "Year 4", "Mrs S Hughes (office1)")
    add_visit(db, "Supply2", "Mr Ben Clarke", morning + dt.timedelta(days=1), morning + dt.timedelta(days=1, hours=4),
              "Year 6", "Mrs S Hughes (office1)")
    return alert


def test_screenshots_of_a_school_morning(tmp_path):
    """The README's pictures: a morning's inbox, one alert, a person, the register, the weekly report and
    the health page, in Chromium at desktop and tablet sizes."""
    if not Path(CHROMIUM).exists():
        require("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright
    config = make_console_school(tmp_path)
    cfg, db = open_db(config)
    alert = _a_school_morning(db, cfg)
    console = ConsoleProcess(config, cfg.console.port, tmp_path / "console.log")
    try:
        spki = spki_of(tmp_path / "console-state" / "console-cert.pem")
        base = f"https://localhost:{cfg.console.port}"
        with sync_playwright() as p:
            context = launch(p, tmp_path, spki, "shots")
            page = context.new_page()
            page.goto(base + "/")
            screenshot(page, tmp_path, "signin.png")
            _signin(page, base, "dsl1", PASSWORD)
            page.wait_for_url("**/inbox")
            assert page.locator("ol.inbox li").count() == 5
            screenshot(page, tmp_path, "inbox.png", readme=True)
            page.goto(f"{base}/alerts/{alert['ref']}")
            assert "how to kill myself painlessly" in page.locator("ol.timeline").inner_text()
            assert "/never/shown" not in page.content()
            screenshot(page, tmp_path, "alert.png", readme=True)
            page.set_viewport_size({"width": 820, "height": 1180})       # a tablet held upright
            screenshot(page, tmp_path, "alert-tablet.png", readme=True)
            page.set_viewport_size({"width": 1280, "height": 900})
            page.goto(f"{base}/people")
            page.fill("#who", "Jamie Smith")
            page.click("text=Show browsing")
            page.wait_for_url("**/people/v/**")
            screenshot(page, tmp_path, "person.png")
            page.goto(f"{base}/weekly")
            screenshot(page, tmp_path, "weekly.png")
            context.close()
            for logon, path, name in (("office1", "/register", "register.png"), ("net1", "/health", "health.png")):
                context = launch(p, tmp_path, spki, logon)
                page = context.new_page()
                _signin(page, base, logon, PASSWORD)
                page.wait_for_url(f"**{path}")
                screenshot(page, tmp_path, name)
                context.close()
    finally:
        console.stop()
