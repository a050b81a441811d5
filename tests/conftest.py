"""Shared fixtures: a small, self-contained school (lists, metadata, users file, config) in tmp_path,
so tests do not depend on the shipped starter lists changing."""

from __future__ import annotations

import os
import socket
import textwrap
from pathlib import Path

import bcrypt
import pytest

#: A help service that a list also files under a blocked category (a counselling service with a forum,
#: filed under social networking too): it must stay reachable for pupils all the same.
HELP_SITE_ALSO_BLOCKED = "talkhelp.test"

LISTS = {
    "social-networking/domains": ["socialsite.test", "facebook.com", HELP_SITE_ALSO_BLOCKED],
    "education/domains": ["learning.test"],
    "education/urls": ["bbc.co.uk/bitesize"],
    "helpsites/domains": ["helpline.test", "childline.org.uk", HELP_SITE_ALSO_BLOCKED],
    "games/domains": ["gamesite.test"],
    "banking/domains": ["bank.test"],
    "adult/domains": ["adultsite.test"],
    "vpn-proxy/domains": ["vpnsite.test"],
    "doh/domains": ["1.1.1.1", "dns.google"],
}

METADATA = """\
adult: {description: Adult content., uksic: pornography, theme: pornography, severity: high, child_restricted: true, aliases: [adult, mixed_adult]}
social-networking: {description: Social networks., severity: medium, child_restricted: true, aliases: [social_networks]}
education: {description: Education., severity: low}
helpsites: {description: Help for children., severity: low}
games: {description: Games., severity: low}
banking: {description: Banks., severity: low, aliases: [bank]}
vpn-proxy: {description: VPNs and proxies., theme: circumvention, severity: high, child_restricted: true, aliases: [vpn]}
doh: {description: DNS over HTTPS., theme: circumvention, severity: high, child_restricted: true}
"""

PASSWORD = "s3cret-pass"

#: Games for pupils at lunchtime, Monday to Friday. Only in a school made with ``lunchtime=True``, and
#: tests of it give the time: a window in force changes every pupil decision's rule, and the suite must
#: not depend on the time of day it runs at.
LUNCHTIME = """\
    windows:
      - {name: lunchtime, from: "12:00", to: "13:00", allow_categories: [games]}
"""

CONFIG = """\
school: Test Primary
timezone: Europe/London
proxy: {{listen_host: 127.0.0.1, listen_port: 8080, ca_dir: ca, upstream: {upstream}}}
lists: {{sources: [lists], metadata: lists/categories.yaml}}
metrics: {{listen: "127.0.0.1:{metrics_port}"}}
records: {{database: "{database}", spool_dir: spool, batch_ms: 100}}
identity:
  proxy_auth: {{enabled: true, users_file: users.htpasswd, realm: Test School, cache_seconds: 300}}
  users: {{teacher1: staff}}
  groups:
    year4: {{profile: pupil, members: [pupil1]}}
  patterns:
    - {{match: "Supply*", profile: supply}}
  subnets:
    - {{cidr: 10.9.0.0/16, profile: guest, name: iPads}}
  default_profile: pupil
profiles:
  pupil:
    role: pupil
    block_categories: [adult, social-networking, games, vpn-proxy, doh, ip-address]
    allow_categories: [education]
{windows}  staff:
    role: staff
    safesearch: {{search_engines: false, youtube: "off"}}
    tls: {{intercept: true, passthrough_categories: [banking]}}
    connect_ports: []
  supply:
    role: supply
    block_categories: [adult]
    safesearch: {{search_engines: true, youtube: moderate}}
  guest:
    role: guest
    default: block
    allow_categories: [education]
overrides:
  - {{site: learning.test/forum, action: block, profiles: [pupil], rationale: Unmoderated forum, author: CL, date: 2026-09-01}}
tests:
  - {{user: pupil1, url: "http://socialsite.test/", expect: block}}
  - {{user: teacher1, url: "http://socialsite.test/", expect: allow}}
{extra}"""


def pytest_collection_modifyitems(config, items):
    """``SCHOOLPROXY_TEST_ORDER=reverse`` runs each file's tests in reverse order, ``shuffle:SEED`` in a
    seeded random order (the files keep theirs, so a module's shared proxy still starts once): a test
    that passes only because another test of its file ran first shows up."""
    order = os.environ.get("SCHOOLPROXY_TEST_ORDER", "")
    if not order:
        return
    import random
    by_file: dict[str, list] = {}
    for item in items:
        by_file.setdefault(item.nodeid.split("::")[0], []).append(item)
    rng = random.Random(order.partition(":")[2]) if order.startswith("shuffle") else None
    for tests in by_file.values():
        if rng is not None:
            rng.shuffle(tests)
        else:
            tests.reverse()
    items[:] = [item for tests in by_file.values() for item in tests]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics_url(config: Path) -> str:
    import yaml
    return f"http://{yaml.safe_load(config.read_text())['metrics']['listen']}/metrics"


def metric_value(config: Path, name: str) -> float | None:
    """The value of an unlabelled metric on the proxy's metrics endpoint, or None (not there, or no answer)."""
    import re

    import httpx
    try:
        text = httpx.get(metrics_url(config), timeout=5).text
    except httpx.HTTPError:
        return None
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found[1]) if found else None


def hash_pw(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def make_school(root: Path, extra: str = "", users: tuple[str, ...] = ("pupil1", "teacher1", "Supply3", "visitor"),
                upstream: str | None = None, database: str = "sqlite:///records.db", lunchtime: bool = False) -> Path:
    """Write the test school into ``root``; return the config path. ``lunchtime``: with the pupils'
    lunchtime window (LUNCHTIME)."""
    for rel, entries in LISTS.items():
        f = root / "lists" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("# test list\n" + "\n".join(entries) + "\n")
    (root / "lists" / "categories.yaml").write_text(METADATA)
    (root / "users.htpasswd").write_text("".join(f"{u}:{hash_pw(PASSWORD)}\n" for u in users))
    (root / "users.htpasswd").chmod(0o600)  # as `schoolproxy users add` writes it
    cfg = root / "schoolproxy.yaml"
    cfg.write_text(CONFIG.format(extra=textwrap.dedent(extra), upstream=upstream or "null", metrics_port=free_port(),
                                 database=database, windows=LUNCHTIME if lunchtime else ""))
    return cfg


#: Who runs the report commands in the tests (``--by``): people: entries by logon.
READERS = {"clawrence": {"name": "Mrs C Lawrence", "roles": ["dsl", "computing_lead"]},
           "head1": {"name": "Mr R Patel", "roles": ["head"]},
           "slt1": {"name": "Ms S Leader", "roles": ["slt"]}}


def add_people(config: Path, people: dict = READERS) -> Path:
    """Give the school's config these ``people:`` (logon → {name, roles}), keeping any it has."""
    import yaml
    data = yaml.safe_load(config.read_text())
    data["people"] = {**(data.get("people") or {}), **people}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


@pytest.fixture
def school(tmp_path: Path) -> Path:
    return make_school(tmp_path)


@pytest.fixture
def lunchtime_school(tmp_path: Path) -> Path:
    """The test school with the pupils' lunchtime window (games allowed, weekdays 12:00-13:00)."""
    return make_school(tmp_path, lunchtime=True)


@pytest.fixture
def snapshot(school: Path):
    from schoolproxy.snapshot import build_snapshot
    return build_snapshot(school)


def make_verdict(**kw):
    """A finished Verdict as the enforcement addon would publish it; override any field."""
    from schoolproxy.verdict import Verdict, new_reference
    base = dict(ref=new_reference(), time=1764072000.0, client_ip="10.0.0.7", username="jsmith", profile="pupil",
                identity_source="proxy-auth", identity_rule="group year4", method="GET", scheme="http",
                host="socialsite.test", port=80, path="/", action="block", rule="category:social-networking",
                reason="social-networking is blocked for pupil", categories=("social-networking",))
    base.update(kw)
    return Verdict(**base)


def require(reason: str) -> None:
    """Skip with a reason on a user's machine; fail in CI, where everything must run."""
    if os.environ.get("SCHOOLPROXY_REQUIRE_ALL"):
        pytest.fail(f"required in CI but unavailable: {reason}")
    pytest.skip(reason)


PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"


@pytest.fixture
def pg_url():
    """A fresh, empty PostgreSQL database on the machine's server, dropped afterwards."""
    try:
        import psycopg
        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except Exception as e:
        require(f"PostgreSQL not reachable at 127.0.0.1:5432 ({str(e).splitlines()[0][:80]})")
    name = "sp_test_" + os.urandom(5).hex()
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'records.db'}"
    return request.getfixturevalue("pg_url")


def _slapd_here():
    import directory_server
    if not directory_server.available():
        require("OpenLDAP slapd is not installed (apt-get install slapd ldap-utils)")
    return directory_server.Slapd


@pytest.fixture(scope="session")
def slapd(tmp_path_factory):
    """A real OpenLDAP server with the test school's directory (tests/directory_server.py)."""
    server = _slapd_here()(tmp_path_factory.mktemp("slapd")).start()
    yield server
    server.stop()


@pytest.fixture
def own_slapd(tmp_path):
    """A slapd of the test's own, which it may stop and start again."""
    server = _slapd_here()(tmp_path / "ldap").start()
    yield server
    server.stop()


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


@pytest.fixture
def chromium():
    """A real Chromium (Debian's), driven by Playwright: the browser a pupil or a governor uses."""
    if not Path(CHROMIUM).exists():
        require(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require("playwright is not installed (pip install playwright)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
