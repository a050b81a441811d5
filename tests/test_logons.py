"""The logon table behind the logon feed."""

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
