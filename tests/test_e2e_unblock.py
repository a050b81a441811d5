"""Unblock requests end to end: a pupil in real Chromium, through a real mitmdump chained to the stand-in
upstream, asks from the block page; the computing lead approves from the command line; the site is let
through until the approval expires, then blocked again; a refusal is told on the block page; all of it
in the decision log."""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from conftest import PASSWORD, make_school
from internet import Internet
from proxyproc import BIN, ProxyProcess
from sqlalchemy import select

from schoolproxy.records import open_database
from schoolproxy.records.decisions import list_decisions
from schoolproxy.records.schema import requests

pytestmark = pytest.mark.e2e
LONDON = ZoneInfo("Europe/London")


def school(root: Path, internet: Internet) -> Path:
    config = make_school(root, upstream=internet.proxy_url, database=f"sqlite:///{root / 'records.db'}")
    data = yaml.safe_load(config.read_text())
    for profile in data["profiles"].values():   # no lunchtime window: games stay blocked whenever the suite runs
        profile.pop("windows", None)
    data["people"] = {"clawrence": {"name": "Mrs C Lawrence", "roles": ["computing_lead", "dsl"]}}
    data["block_page"] = {"report_to": "Mrs Lawrence"}
    data["notice"] = {"enabled": False}  # the notice has its own test
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


def cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "schoolproxy"), *args, "--config", str(config)], capture_output=True,
                          text=True, timeout=60)


def wait_for(predicate, timeout: float = 15.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


@pytest.fixture
def world(tmp_path):
    with Internet(tmp_path / "internet") as internet:
        config = school(tmp_path, internet)
        with ProxyProcess.mitmdump(config, tmp_path, "--mode", f"upstream:{internet.proxy_url}",
                                   "--set", f"ssl_verify_upstream_trusted_ca={internet.ca_path}",
                                   "--set", "schoolproxy_pages_refresh_ms=300") as proxy:
            yield internet, proxy, config, tmp_path


def pupil(chromium, proxy: ProxyProcess, user: str = "pupil1"):
    context = chromium.new_context(proxy={"server": proxy.url, "username": user, "password": PASSWORD},
                                   ignore_https_errors=True, viewport={"width": 1000, "height": 800})
    return context.new_page()


def ask(page, url: str, reason: str, shots: Path, name: str) -> str:
    """From the block page of ``url``, ask for it to be checked; returns the block page's reference."""
    response = page.goto(url)
    assert response.status == 403 and "This page is blocked" in page.content()
    ref = response.headers["x-schoolproxy-reference"]
    page.screenshot(path=str(shots / f"{name}-1-blocked.png"))
    page.click("text=Ask for this page to be checked")
    page.wait_for_selector("textarea#reason")
    assert "schoolproxy.invalid/unblock" in page.url and url.split("//")[1] in page.content()
    page.fill("textarea#reason", reason)
    page.screenshot(path=str(shots / f"{name}-2-form.png"))
    page.click("text=Ask for it to be checked")
    page.wait_for_selector("text=your request has been sent")
    page.screenshot(path=str(shots / f"{name}-3-sent.png"))
    return ref


def test_request_approve_expire_and_refuse(world, chromium):
    internet, proxy, config, root = world
    shots = root / "shots"
    shots.mkdir()
    page = pupil(chromium, proxy)

    # The pupil asks, from the block page, in the browser.
    ask(page, "http://socialsite.test/club", "Our class is making a safe social network poster", shots, "social")
    listed = cli(config, "unblock", "list", "--by", "clawrence")
    assert "pupil1 (pupil) asked for http://socialsite.test/club" in listed.stdout, listed.stderr
    assert 'reason: "Our class is making a safe social network poster"' in listed.stdout
    ref = listed.stdout.split()[0]

    # The computing lead approves it until a moment from now; the running proxy lets it through.
    until = (dt.datetime.now(LONDON) + dt.timedelta(seconds=30)).replace(microsecond=0)
    approved = cli(config, "unblock", "approve", ref, "--by", "clawrence", "--until", until.isoformat(" "),
                   "--why", "Poster project, supervised")
    assert approved.returncode == 0, approved.stderr
    opened = wait_for(lambda: page.goto("http://socialsite.test/club").status == 200, timeout=25)
    assert opened and "origin socialsite.test" in page.content()
    page.screenshot(path=str(shots / "social-4-allowed.png"))
    assert internet.requests_for("socialsite.test")

    # At the expiry it is blocked again, by itself, and the block page says what happened.
    wait = (until - dt.datetime.now(LONDON)).total_seconds()
    time.sleep(max(0.0, wait) + 0.5)
    response = page.goto("http://socialsite.test/club")
    assert response.status == 403
    text = page.inner_text("main")
    assert f"It was allowed until {until:%H:%M}" in text and "That time is over" in text
    page.screenshot(path=str(shots / "social-5-expired.png"))

    # A refused request: the pupil sees why, next time.
    ask(page, "http://gamesite.test/", "I want to play at break time with my friends", shots, "games")
    games = [line for line in cli(config, "unblock", "list", "--by", "clawrence").stdout.splitlines() if "gamesite" in line]
    refused = cli(config, "unblock", "refuse", games[0].split()[0], "--by", "clawrence",
                  "--why", "Games are for the lunchtime club only")
    assert refused.returncode == 0, refused.stderr
    told = wait_for(lambda: "the answer was no" in (page.goto("http://gamesite.test/") and page.inner_text("main")),
                    timeout=30)
    assert told and "Games are for the lunchtime club only" in page.inner_text("main")
    page.screenshot(path=str(shots / "games-4-refused.png"))
    seen = wait_for(lambda: cli(config, "unblock", "list", "--status", "refused", "--by", "clawrence").stdout)
    assert "refused by Mrs C Lawrence" in seen

    # All of it in the decision log; the allowed requests recorded with the expiring rule.
    db = open_database(f"sqlite:///{root / 'records.db'}")
    changes = [d["change"] for d in list_decisions(db, dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))]
    assert any(c.startswith("Allowed socialsite.test for profile pupil until") and ref in c for c in changes)
    assert any(c.startswith("Refused unblock request") and "gamesite.test" in c for c in changes)
    rules = wait_for(lambda: {r for r, in db.connect().execute(
        select(requests.c.rule).where(requests.c.host == "socialsite.test"))} >= {"category:social-networking"}
        and {r for r, in db.connect().execute(select(requests.c.rule).where(requests.c.host == "socialsite.test"))})
    assert any(r.startswith("expiring[") for r in rules) and "category:social-networking" in rules


def test_another_pupil_cannot_use_the_reference_and_locked_blocks_offer_nothing(world, chromium):
    internet, proxy, config, root = world
    page = pupil(chromium, proxy)
    response = page.goto("http://socialsite.test/")
    ref = response.headers["x-schoolproxy-reference"]
    other = pupil(chromium, proxy, user="visitor")
    r = other.goto(f"http://schoolproxy.invalid/unblock?ref={ref}")
    assert r.status == 404 and "We could not find that blocked page" in other.content()
    assert "No pending" in cli(config, "unblock", "list", "--by", "clawrence").stdout or \
        "no pending" in cli(config, "unblock", "list", "--by", "clawrence").stdout
