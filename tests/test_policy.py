import datetime as dt

import pytest
from conftest import make_school

from schoolproxy.snapshot import build_snapshot

TZ = "Europe/London"


def at(hhmm: str, day: int = 25) -> dt.datetime:  # 2026-11-25 is a Wednesday
    h, m = map(int, hhmm.split(":"))
    from zoneinfo import ZoneInfo
    return dt.datetime(2026, 11, day, h, m, tzinfo=ZoneInfo(TZ))


@pytest.mark.parametrize("profile, url, action, rule", [
    ("pupil", "http://www.facebook.com/", "block", "category:social-networking"),
    ("pupil", "http://learning.test/", "allow", "category:education"),
    ("pupil", "http://learning.test/forum/topic", "block", "override[0]:learning.test/forum"),
    ("pupil", "http://example.org/", "allow", "default:pupil"),
    ("pupil", "http://helpline.test/chat", "allow", "helpsite"),
    ("guest", "http://helpline.test/", "allow", "helpsite"),
    ("pupil", "http://talkhelp.test/forum", "allow", "helpsite"),     # also in social networking, blocked for pupils
    ("guest", "http://example.org/", "block", "default:guest"),
    ("guest", "http://www.bbc.co.uk/bitesize/maths", "allow", "category:education"),
    ("staff", "http://www.facebook.com/", "allow", "default:staff"),
    ("pupil", "http://8.8.4.4/", "block", "category:ip-address"),
    ("pupil", "http://exa mple.org/", "block", "invalid-host"),
])
def test_precedence(snapshot, profile, url, action, rule):
    d = snapshot.policy.decide_url(profile, url, at("10:30"))   # outside the lunchtime window
    assert (d.action, d.rule) == (action, rule)


def test_blocked_category_wins_over_allowed(tmp_path):
    school = make_school(tmp_path)
    (tmp_path / "lists" / "education" / "domains").write_text("learning.test\nsocialsite.test\n")
    d = build_snapshot(school).policy.decide_url("pupil", "http://socialsite.test/")
    assert d.action == "block"


def test_time_window_allows_games_at_lunchtime_only(lunchtime_school):
    p = build_snapshot(lunchtime_school).policy
    assert p.decide_url("pupil", "http://gamesite.test/", at("10:30")).action == "block"
    lunch = p.decide_url("pupil", "http://gamesite.test/", at("12:30"))
    assert (lunch.action, lunch.rule) == ("allow", "window:lunchtime:category:games")
    assert p.decide_url("pupil", "http://gamesite.test/", at("13:00")).action == "block"
    assert p.decide_url("pupil", "http://gamesite.test/", at("12:30", day=28)).action == "block"  # Saturday


def test_a_window_is_named_only_where_it_made_the_difference(lunchtime_school):
    """At lunchtime a social network is blocked as it is all day, not "by lunchtime"."""
    p = build_snapshot(lunchtime_school).policy
    assert p.decide_url("pupil", "http://www.facebook.com/", at("12:30")).rule == "category:social-networking"
    assert p.decide_url("pupil", "http://learning.test/", at("12:30")).rule == "category:education"
    assert p.decide_url("pupil", "http://gamesite.test/", at("12:30")).rule == "window:lunchtime:category:games"


def test_window_across_midnight(tmp_path):
    school = make_school(tmp_path, lunchtime=True)
    school.write_text(school.read_text().replace(
        '{name: lunchtime, from: "12:00", to: "13:00", allow_categories: [games]}',
        '{name: late, days: [fri], from: "22:00", to: "02:00", allow_categories: [games]}'))
    p = build_snapshot(school).policy
    assert p.decide_url("pupil", "http://gamesite.test/", at("23:00", day=27)).action == "allow"  # Fri 23:00
    assert p.decide_url("pupil", "http://gamesite.test/", at("01:00", day=28)).action == "allow"  # Sat 01:00
    assert p.decide_url("pupil", "http://gamesite.test/", at("01:00", day=27)).action == "block"  # Fri 01:00


def test_passthrough_and_connect_ports(snapshot):
    p = snapshot.policy
    mask = p.lists.classify("bank.test")
    assert p.passthrough("staff", "bank.test", mask)
    assert not p.passthrough("pupil", "bank.test", mask)
    assert not p.passthrough("staff", "learning.test", p.lists.classify("learning.test"))
    assert p.connect_port_allowed("pupil", 443) and not p.connect_port_allowed("pupil", 22)
    assert p.connect_port_allowed("staff", 22)


def test_trace_explains_each_step(snapshot):
    trace: list[str] = []
    snapshot.policy.decide_url("pupil", "http://www.facebook.com/", None, trace)
    text = "\n".join(trace)
    assert "categories of www.facebook.com: social-networking" in text
    assert "1. help site: no" in text and "3. category rule: social-networking is blocked for pupil" in text


def test_config_help_sites_join_the_helpsites_category(tmp_path):
    school = make_school(tmp_path, extra="help_sites: [localhelp.test]\n")
    d = build_snapshot(school).policy.decide_url("guest", "http://www.localhelp.test/")
    assert (d.action, d.rule) == ("allow", "helpsite")


def test_a_profile_the_policy_does_not_know_is_blocked(snapshot):
    # Cannot come from a validated config; if it ever did (a stale identity after a reload), fail closed.
    d = snapshot.policy.decide("no-such-profile", "learning.test")
    assert (d.action, d.rule) == ("block", "unknown-profile")
