"""Config validation: every error names the file, the key path and what is wrong."""

from pathlib import Path

import pytest
from conftest import make_school

from schoolproxy.config import ConfigError, load_config
from schoolproxy.snapshot import build_snapshot

ROOT = Path(__file__).resolve().parent.parent


def refused(school: Path, old: str, new: str) -> str:
    school.write_text(school.read_text().replace(old, new, 1))
    with pytest.raises(ConfigError) as e:
        build_snapshot(school)
    return str(e.value)


def test_example_config_is_valid_and_passes_its_own_tests():
    snap = build_snapshot(ROOT / "config" / "schoolproxy.yaml")
    assert {"pupil", "staff", "supply", "guest"} <= set(snap.policy.profiles)
    assert len(snap.config.tests) >= 10 and all(r.passed for r in snap.run_tests())


def test_invalid_yaml_names_file_and_line(school):
    school.write_text("school: x\nprofiles: [unclosed\n")
    with pytest.raises(ConfigError, match=r"schoolproxy.yaml: not valid YAML at line \d+"):
        load_config(school)


def test_a_file_that_is_not_utf8_is_refused_with_the_line(school):
    text = school.read_text().replace("school: Test Primary", "school: St Mary\u2019s Primary")
    school.write_bytes(text.encode("cp1252"))  # saved by a Windows editor as "ANSI"
    with pytest.raises(ConfigError, match=r"schoolproxy.yaml: not UTF-8 text: byte 0x92 on line 1 — save the file "
                                          r"as UTF-8"):
        load_config(school)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")


def test_unknown_key_is_refused_with_path(school):
    msg = refused(school, "    role: pupil\n", "    role: pupil\n    blok_categories: [games]\n")
    assert "profiles.pupil.blok_categories: unknown key" in msg and str(school) in msg


def test_unknown_category_is_refused_with_path(school):
    msg = refused(school, "block_categories: [adult,", "block_categories: [adlt,")
    assert "profiles.pupil.block_categories[0]: unknown category 'adlt'" in msg


def test_unknown_profile_reference(school):
    msg = refused(school, "teacher1: staff", "teacher1: stafff")
    assert "identity.users.teacher1: unknown profile 'stafff'" in msg


def test_default_profile_must_not_be_staff(school):
    assert "must not be a staff profile" in refused(school, "default_profile: pupil", "default_profile: staff")


def test_default_profile_must_fail_closed(school):
    msg = refused(school, "default_profile: pupil", "default_profile: supply")
    assert "must fail closed" in msg and "social-networking" in msg


def test_helpsites_cannot_be_blocked_by_category(school):
    msg = refused(school, "block_categories: [adult,", "block_categories: [helpsites, adult,")
    assert "help sites ('helpsites') can never be blocked" in msg


@pytest.mark.parametrize("site", ["childline.org.uk", "www.childline.org.uk/contact", "org.uk"])
def test_helpsites_cannot_be_blocked_by_override(school, site):
    msg = refused(school, "overrides:\n", f"overrides:\n  - {{site: {site}, action: block, rationale: testing, "
                                          f"author: x, date: 2026-01-01}}\n")
    assert "help site" in msg and "overrides[0]" in msg


def test_override_needs_rationale_author_date(school):
    msg = refused(school, ", rationale: Unmoderated forum, author: CL, date: 2026-09-01", "")
    for key in ("rationale", "author", "date"):
        assert f"overrides[0].{key}: required key is missing" in msg


def test_contradictory_rules_are_refused(school):
    msg = refused(school, "overrides:\n", "overrides:\n  - {site: learning.test/forum, action: allow, "
                                          "profiles: [pupil], rationale: 'yes', author: x, date: 2026-01-01}\n")
    assert "contradicts another override" in msg
    school2 = make_school(school.parent / "two")
    msg = refused(school2, "allow_categories: [education]\n", "allow_categories: [education, games]\n")
    assert "both blocked and allowed" in msg


def test_failing_policy_test_refuses_the_config(school):
    msg = refused(school, "url: \"http://socialsite.test/\", expect: block", "url: \"http://socialsite.test/\", expect: allow")
    assert "policy tests failed" in msg and "tests[0]" in msg


@pytest.mark.parametrize("old, new, expect", [
    ("timezone: Europe/London", "timezone: Mars/Olympus", "unknown time zone"),
    ("cidr: 10.9.0.0/16", "cidr: 10.9.0.300/16", "identity.subnets[0].cidr"),
    ("listen_port: 8080", "listen_port: 99999", "proxy.listen_port"),
    ('from: "12:00", to: "13:00"', 'from: "12:00", to: "12:00"', "window would be empty"),
    ("upstream: null", "upstream: smoothwall:800", "proxy.upstream: must be a proxy URL"),
])
def test_bad_values(lunchtime_school, old, new, expect):
    assert expect in refused(lunchtime_school, old, new)


def test_users_file_must_hold_bcrypt_hashes(school):
    (school.parent / "users.htpasswd").write_text("pupil1:{SHA}abc\n")
    with pytest.raises(ConfigError, match=r"users.htpasswd:1: .*only bcrypt"):
        build_snapshot(school)


def test_yaml_boolean_trap_is_explained(school):
    msg = refused(school, "rationale: Unmoderated forum", "rationale: no")
    assert "overrides[0].rationale" in msg and "put the text in quotes" in msg


def test_duplicate_key_is_refused_with_line(school):
    school.write_text(school.read_text() + "\nschool: Another name\n")
    with pytest.raises(ConfigError, match=r"key 'school' appears twice \(first at line 1\)"):
        load_config(school)
