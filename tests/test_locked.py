"""The locked tier: illegal-content categories that no profile, override, time window, help site or
default can allow (UKSIC: illegal content blocking can never be switched off)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from conftest import PASSWORD, make_school
from internet import Internet
from proxyproc import ProxyProcess

from schoolproxy.config import ConfigError
from schoolproxy.filtering.lists import ListError, load_metadata
from schoolproxy.snapshot import build_snapshot

ROOT = Path(__file__).resolve().parent.parent
LOCKED_METADATA = """\
child-abuse: {description: Illegal., uksic: illegal, theme: grooming, severity: critical, locked: true}
terrorism: {description: Illegal., uksic: illegal, theme: extremism, severity: critical, locked: true}
"""
LOCKED_SITE = "abuse.test"
LUNCH = dt.datetime(2026, 11, 25, 12, 30, tzinfo=ZoneInfo("Europe/London"))  # a Wednesday


def locked_school(root: Path, extra: str = "", **kw) -> Path:
    """The test school with two locked categories: child-abuse (a domain and a URL) and terrorism."""
    config = make_school(root, extra=extra, **kw)
    with open(root / "lists" / "categories.yaml", "a") as f:
        f.write(LOCKED_METADATA)
    for category, kind, entries in (("child-abuse", "domains", [LOCKED_SITE]),
                                    ("child-abuse", "urls", ["learning.test/hidden/abuse"]),
                                    ("terrorism", "domains", ["terror.test"])):
        (root / "lists" / category).mkdir(exist_ok=True)
        (root / "lists" / category / kind).write_text("\n".join(entries) + "\n")
    return config


def edit(config: Path, old: str, new: str) -> None:
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new))


@pytest.fixture
def policy(tmp_path):
    return build_snapshot(locked_school(tmp_path, lunchtime=True)).policy


@pytest.mark.parametrize("profile", ["pupil", "staff", "supply", "guest"])
@pytest.mark.parametrize("url, category", [
    (f"http://{LOCKED_SITE}/", "child-abuse"),
    (f"https://www.{LOCKED_SITE}/any/path?q=1", "child-abuse"),
    ("http://learning.test/hidden/abuse/page", "child-abuse"),   # a URL entry inside an allowed site
    ("http://terror.test/", "terrorism"),
])
def test_locked_is_blocked_for_every_profile(policy, profile, url, category):
    # Staff have default: allow and list no categories; guests block by default; neither matters.
    d = policy.decide_url(profile, url)
    assert (d.action, d.rule) == ("block", f"locked:{category}")


def test_locked_is_blocked_inside_a_time_window(policy):
    assert policy.decide_url("pupil", "http://gamesite.test/", LUNCH).action == "allow"  # the window is on
    assert policy.decide_url("pupil", f"http://{LOCKED_SITE}/", LUNCH).rule == "locked:child-abuse"


def test_rest_of_an_allowed_site_is_unaffected(policy):
    assert policy.decide_url("pupil", "http://learning.test/lessons").action == "allow"


def test_profile_allowing_a_locked_category_is_refused(tmp_path):
    config = locked_school(tmp_path)
    edit(config, "allow_categories: [education]\n  staff", "allow_categories: [education, child-abuse]\n  staff")
    with pytest.raises(ConfigError) as e:
        build_snapshot(config)
    msg = str(e.value)
    assert "profiles.pupil.allow_categories" in msg and "child-abuse is a locked category (illegal content)" in msg
    assert "nothing can allow it" in msg


def test_time_window_allowing_a_locked_category_is_refused(tmp_path):
    config = locked_school(tmp_path, lunchtime=True)
    edit(config, "allow_categories: [games]}", "allow_categories: [games, terrorism]}")
    with pytest.raises(ConfigError, match=r"profiles\.pupil\.windows\[0\]\.allow_categories: terrorism is a "
                                          r"locked category"):
        build_snapshot(config)


@pytest.mark.parametrize("site", [LOCKED_SITE, f"www.{LOCKED_SITE}/path", "learning.test/hidden/abuse"])
def test_override_allowing_a_locked_site_is_refused(tmp_path, site):
    config = locked_school(tmp_path)
    edit(config, "overrides:\n", f"overrides:\n  - {{site: '{site}', action: allow, profiles: ['*'], "
                                 "rationale: Research project, author: CL, date: 2026-09-01}\n")
    with pytest.raises(ConfigError) as e:
        build_snapshot(config)
    assert f"overrides[0] ({site})" in str(e.value) and "locked category (illegal content)" in str(e.value)


def test_override_on_a_parent_domain_leaves_the_locked_part_blocked(tmp_path):
    # learning.test is allowed; a URL on it is locked. An allow override for the whole site is not a
    # request to allow the locked part, so it is accepted — and the locked part stays blocked.
    config = locked_school(tmp_path)
    edit(config, "overrides:\n", "overrides:\n  - {site: learning.test, action: allow, profiles: [guest], "
                                 "rationale: Curriculum site, author: CL, date: 2026-09-01}\n")
    policy = build_snapshot(config).policy
    assert policy.decide_url("guest", "http://learning.test/lessons").rule.startswith("override[")
    assert policy.decide_url("guest", "http://learning.test/hidden/abuse/1").rule == "locked:child-abuse"


def test_block_override_of_a_locked_site_is_accepted(tmp_path):
    config = locked_school(tmp_path)
    edit(config, "overrides:\n", "overrides:\n  - {site: terror.test, action: block, profiles: ['*'], "
                                 "rationale: Belt and braces, author: CL, date: 2026-09-01}\n")
    assert build_snapshot(config).policy.decide_url("staff", "http://terror.test/").rule == "locked:terrorism"


def test_config_help_site_in_a_locked_list_is_refused(tmp_path):
    config = locked_school(tmp_path, extra=f"help_sites: [support.{LOCKED_SITE}]\n")
    with pytest.raises(ConfigError, match=rf"help_sites\[0\] \(support\.{LOCKED_SITE}\): child-abuse is a locked"):
        build_snapshot(config)


def test_help_site_a_provider_list_also_locks_stays_blocked_and_is_reported(tmp_path):
    config = locked_school(tmp_path)
    (tmp_path / "lists" / "terrorism" / "domains").write_text("terror.test\nhelpline.test\n")
    policy = build_snapshot(config).policy
    assert policy.decide_url("guest", "http://helpline.test/").rule == "locked:terrorism"
    assert policy.decide_url("guest", "http://childline.org.uk/").rule == "helpsite"
    assert any("help site helpline.test is also in a locked list" in w for w in policy.warnings)


def test_helpsites_category_cannot_be_locked(tmp_path):
    config = locked_school(tmp_path)
    text = (tmp_path / "lists" / "categories.yaml").read_text()
    (tmp_path / "lists" / "categories.yaml").write_text(
        text.replace("helpsites: {description: Help for children., severity: low}",
                     "helpsites: {description: Help for children., severity: low, locked: true}"))
    with pytest.raises(ConfigError, match="'helpsites' category cannot be locked"):
        build_snapshot(config)


def test_locked_must_be_a_boolean(tmp_path):
    md = tmp_path / "categories.yaml"
    md.write_text("child-abuse: {locked: 'yes'}\n")
    with pytest.raises(ListError, match=r"child-abuse\.locked: must be true or false"):
        load_metadata(md)


def test_default_profile_need_not_list_locked_categories(tmp_path):
    # The fail-closed check counts locked categories as blocked: they are, for everyone.
    config = locked_school(tmp_path)
    text = (tmp_path / "lists" / "categories.yaml").read_text()
    (tmp_path / "lists" / "categories.yaml").write_text(text.replace("locked: true}", "locked: true, "
                                                                      "child_restricted: true}"))
    assert build_snapshot(config).policy.decide_url("pupil", "http://terror.test/").action == "block"


def test_policy_test_expecting_a_locked_site_allowed_fails(tmp_path):
    config = locked_school(tmp_path)
    edit(config, "tests:\n", f'tests:\n  - {{user: teacher1, url: "http://{LOCKED_SITE}/", expect: allow}}\n')
    with pytest.raises(ConfigError, match="expected allow, got block \\(locked:child-abuse\\)"):
        build_snapshot(config)


def test_explain_says_locked(tmp_path):
    config = locked_school(tmp_path)
    r = subprocess.run([str(Path(sys.executable).parent / "schoolproxy"), "explain", "--config", str(config),
                        "--user", "teacher1", f"http://www.{LOCKED_SITE}/"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "0. locked: child-abuse is a locked category (illegal content)" in r.stdout
    assert "verdict:  BLOCK — rule locked:child-abuse" in r.stdout


def test_shipped_lists_lock_only_harmless_test_names():
    info = load_metadata(ROOT / "filterlists" / "categories.yaml")
    locked = sorted(name for name, i in info.items() if i.locked)
    assert locked == ["child-abuse", "terrorism"]
    for name in locked:
        for f in (ROOT / "filterlists" / name).iterdir():
            entries = [line.strip() for line in f.read_text().splitlines() if line.strip() and line[0] != "#"]
            assert entries and all(e.split("/")[0].endswith(".invalid") for e in entries), f


def test_example_config_blocks_the_locked_test_name_for_staff():
    snap = build_snapshot(ROOT / "config" / "schoolproxy.yaml", run_tests=False)
    d = snap.policy.decide_url("staff", "https://locked-test.child-abuse.invalid/")
    assert (d.action, d.rule) == ("block", "locked:child-abuse")


@pytest.mark.e2e
def test_staff_get_the_block_page_for_a_locked_site_through_the_proxy(tmp_path):
    with Internet(tmp_path / "internet") as internet:
        config = locked_school(tmp_path, upstream=internet.proxy_url)
        with ProxyProcess.mitmdump(config, tmp_path, "--mode", f"upstream:{internet.proxy_url}",
                                   "--set", f"ssl_verify_upstream_trusted_ca={internet.ca_path}") as proxy:
            with httpx.Client(proxy=proxy.auth_url("teacher1", PASSWORD), verify=False, timeout=10) as c:
                plain = c.get(f"http://www.{LOCKED_SITE}/")
                tls = c.get(f"https://www.{LOCKED_SITE}/")
                allowed = c.get("http://socialsite.test/")   # staff are otherwise unrestricted
    for r in (plain, tls):
        assert r.status_code == 403 and "locked:child-abuse" in r.text and "illegal content" in r.text
    assert allowed.status_code == 200
    assert not internet.requests_for(f"www.{LOCKED_SITE}")
