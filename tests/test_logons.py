"""The logon table behind the logon feed."""

import ipaddress
import json

import pytest

from schoolproxy.identity.logons import LogonError, LogonTable


def test_latest_logon_wins_and_only_its_holder_can_log_off():
    t = LogonTable(3600)
    t.logon("jsmith", "10.0.0.5", "LAB-01", now=100)
    t.logon("SCHOOL\\amiller", "10.0.0.5", "LAB-01", now=200)
    assert t.lookup("10.0.0.5", now=201).user == "amiller"
    assert t.logoff("jsmith", "10.0.0.5") is False           # a late logoff from the previous user
    assert t.lookup("10.0.0.5", now=202).user == "amiller"
    assert t.logoff("AMILLER", "10.0.0.5") is True           # Windows logons are case-insensitive
    assert t.lookup("10.0.0.5", now=203) is None


def test_entries_expire():
    t = LogonTable(60)
    t.logon("jsmith", "10.0.0.5", now=1000)
    assert t.lookup("10.0.0.5", now=1059) is not None
    assert t.lookup("10.0.0.5", now=1060) is None
    assert t.live(now=1060) == []


def test_ipv4_mapped_addresses_are_the_same_client():
    t = LogonTable(60)
    t.logon("jsmith", "::ffff:10.0.0.5", now=0)
    assert t.lookup("10.0.0.5", now=1).user == "jsmith"


@pytest.mark.parametrize("user,ip,device", [
    ("", "10.0.0.5", None), ("a b", "10.0.0.5", None), ("x" * 129, "10.0.0.5", None), ("j)(uid=*", "10.0.0.5", None),
    ("jsmith", "10.0.0.999", None), ("jsmith", "example.com", None), ("jsmith", "10.0.0.5", "<script>"),
    ("jsmith", "10.0.0.5", "x" * 65), ("jsmith", "10.0.0.5", "IT-SUITE-07\n"), ("jsmith", "10.0.0.5", "PC\nX"),
])
def test_bad_input_is_refused(user, ip, device):
    t = LogonTable(60)
    with pytest.raises(LogonError):
        t.logon(user, ip, device)
    assert t.live() == []


def test_live_logons_survive_a_restart_and_a_damaged_file_is_ignored(tmp_path):
    state = tmp_path / "logons.json"
    t = LogonTable(3600, state)
    t.logon("jsmith", "10.0.0.5", "LAB-01", groups=frozenset({"year4"}))
    again = LogonTable(3600, state)
    assert again.load() == 1
    e = again.lookup("10.0.0.5")
    assert (e.user, e.device, e.groups) == ("jsmith", "LAB-01", ("year4",))
    assert oct(state.stat().st_mode & 0o777) == "0o600"
    state.write_text("{not json")
    assert LogonTable(3600, state).load() == 0
    state.write_text(json.dumps([{"user": "x"}]))
    assert LogonTable(3600, state).load() == 0


# -- whom the feed believes (identity.logons.admit) --------------------------------------------------------
from schoolproxy.config import ProfileSettings  # noqa: E402
from schoolproxy.identity.logons import FeedSources, Refused, admit, needs_staff_pc  # noqa: E402

SOURCES = FeedSources(frozenset({"10.0.0.1", "127.0.0.1", "::1"}),
                      relays=(ipaddress.ip_network("10.0.5.10/32"),),
                      staff=(ipaddress.ip_network("10.0.10.0/24"),))
PROFILES = {"pupil": ProfileSettings(role="pupil", block_categories=["adult"]),
            "staff": ProfileSettings(role="staff"),
            "supply": ProfileSettings(role="supply", block_categories=["adult"]),
            "open-pupil": ProfileSettings(role="pupil")}  # a pupil profile that blocks nothing
ACCOUNTS = {"jsmith": "pupil", "mbrown": "staff", "supply1": "supply", "sixthform": "open-pupil"}


def known(user):
    return (True, frozenset({"g"})) if user.lower() in ACCOUNTS else (False, None)


def profile_of(user, groups):
    assert groups == frozenset({"g"})  # the directory's groups reach the profile
    return PROFILES[ACCOUNTS[user.lower()]]


def refusal(user, ip, caller, source="logon-feed", known=known) -> str | None:
    try:
        admit(user, ip, caller, source, SOURCES, known, profile_of)
    except Refused as e:
        assert "mbrown" not in str(e) and "staff" not in str(e)  # the caller is not told who is staff
        return e.reason
    return None


@pytest.mark.parametrize("user", ["mbrown", "supply1", "sixthform"])
def test_a_pupil_pc_with_the_secret_cannot_name_a_staff_supply_or_unfiltered_account(user):
    assert refusal(user, "10.0.20.7", "10.0.20.7") == "staff-elsewhere"
    assert refusal(user, "10.0.10.5", "10.0.20.7") == "not-own-address"    # nor name a staff PC for it
    assert refusal(user, "10.0.10.5", "10.0.10.5") is None                 # the staff PC itself may
    assert refusal(user, "10.0.10.5", "10.0.5.10") is None                 # and a relay for it
    assert refusal(user, "10.0.20.7", "10.0.5.10") == "staff-elsewhere"    # but not for a pupil PC
    assert refusal(user, "10.0.20.7", "10.0.0.1") == "staff-elsewhere"     # the gateway is no exception
    assert refusal(user, "10.0.20.7", "10.0.0.1", "sign-in") is None        # …but its sign-in page checked the password


def test_pupils_are_named_from_any_pc_but_only_for_its_own_address():
    assert refusal("jsmith", "10.0.20.7", "10.0.20.7") is None
    assert refusal("jsmith", "10.0.20.8", "10.0.20.7") == "not-own-address"
    assert refusal("jsmith", "10.0.20.8", "127.0.0.1") is None              # the console, on the gateway
    assert refusal("jsmith", "10.0.20.7", "10.0.20.7", "sign-in") == "sign-in-not-from-gateway"


def test_a_user_who_does_not_exist_is_refused_and_a_silent_directory_is_not_trusted():
    assert refusal("nobody", "10.0.20.7", "10.0.20.7") == "unknown-user"
    with pytest.raises(Refused) as e:
        admit("jsmith", "10.0.20.7", "10.0.20.7", "logon-feed", SOURCES, lambda u: (None, None), profile_of)
    assert (e.value.reason, e.value.status) == ("directory-down", 503)


def test_which_profiles_need_a_staff_pc():
    assert [needs_staff_pc(p) for p in PROFILES.values()] == [False, True, True, True]
    assert not needs_staff_pc(ProfileSettings(role="guest", default="block"))


def test_who_exists_without_a_directory_is_the_users_file_and_the_configs_names(tmp_path):
    from conftest import make_school

    from schoolproxy.identity.logons import who_exists
    from schoolproxy.snapshot import build_snapshot
    snap = build_snapshot(make_school(tmp_path))
    exists = who_exists(snap.config, snap.directory, snap.users)
    assert exists("Supply3") == (True, frozenset())        # users file
    assert exists("teacher1")[0] and exists("PUPIL1")[0]   # users file, any case
    assert exists("nobody") == (False, None)
    snap.config.identity.users["confignamed"] = "staff"    # named only in the config (users:)
    assert who_exists(snap.config, None, None)("ConfigNamed")[0]


def test_check_says_when_the_feed_names_no_staff(tmp_path):
    from conftest import make_school

    from schoolproxy.config import load_config
    from schoolproxy.gateway.modes import identity_warnings
    config = make_school(tmp_path)
    (tmp_path / "feed-secret").write_text("x" * 20)
    text = config.read_text().replace("identity:\n", "identity:\n  logon_feed: {secret_file: feed-secret}\n", 1)
    config.write_text(text)
    assert any("names pupils only" in w for w in identity_warnings(load_config(config)))
    config.write_text(text.replace("secret_file: feed-secret}", "secret_file: feed-secret, staff_subnets: [10.0.10.0/24]}"))
    assert not any("names pupils only" in w for w in identity_warnings(load_config(config)))


def test_a_directory_without_a_service_account_cannot_back_the_feed(tmp_path):
    from conftest import make_school

    from schoolproxy.config import ConfigError, load_config
    config = make_school(tmp_path)
    (tmp_path / "feed-secret").write_text("x" * 20)
    config.write_text(config.read_text().replace("identity:\n", (
        "identity:\n  logon_feed: {secret_file: feed-secret}\n"
        "  directory: {url: 'ldap://dc1', bind: direct, direct_bind_template: '{username}@school', user_base: 'dc=s'}\n"
    ), 1))
    with pytest.raises(ConfigError, match="logon_feed: the feed checks that a reported user exists"):
        load_config(config)
