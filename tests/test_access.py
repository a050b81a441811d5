"""Who may see what: the audience of a concern, and which viewers are in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from schoolproxy.config import ConfigError, parse_config
from schoolproxy.monitoring.access import audience, may_see_alert, may_see_browsing, viewer_for

BASE = """
school: Test
identity: {default_profile: pupil}
profiles:
  pupil: {role: pupil}
  staff: {role: staff}
people:
  dsl1: {name: Mrs D, roles: [dsl]}
  lead: {name: Mr L, roles: [computing_lead]}
  head: {name: Mr H, roles: [head]}
  chair: {name: Mrs C, roles: [chair_of_governors]}
  net: {name: Ms N, roles: [network_manager]}
  gov: {name: Mr G, roles: [governor]}
  office: {name: Mrs O, roles: [office]}
role_groups: {dsl: [Safeguarding Team]}
"""


@pytest.fixture
def config():
    return parse_config(BASE, Path("t.yaml"))


def alert(config, role, username):
    return {"username": username, "route": ",".join(audience(config, role, username))}


def test_pupil_concern_goes_to_dsl_and_computing_lead(config):
    a = alert(config, "pupil", "jsmith")
    seen = {u for u in ("dsl1", "lead", "head", "chair", "net", "gov", "office")
            if may_see_alert(viewer_for(config, u), a)}
    assert seen == {"dsl1", "lead"}


def test_staff_concern_goes_to_the_head_only(config):
    a = alert(config, "staff", "mbrown")
    seen = {u for u in ("dsl1", "lead", "head", "chair", "net", "gov", "office")
            if may_see_alert(viewer_for(config, u), a)}
    assert seen == {"head"}


def test_concern_about_the_head_goes_to_the_chair_of_governors(config):
    a = alert(config, "staff", "HEAD")
    assert audience(config, "staff", "Head") == ("chair_of_governors",)
    assert not may_see_alert(viewer_for(config, "head"), a)
    assert may_see_alert(viewer_for(config, "chair"), a)


def test_nobody_sees_a_concern_about_themselves(config):
    lead_as_pupil_route = {"username": "Lead", "route": "dsl,computing_lead"}
    assert not may_see_alert(viewer_for(config, "lead"), lead_as_pupil_route)
    assert not may_see_browsing(config, viewer_for(config, "lead"), "pupil", "LEAD")


def test_browsing_follows_the_same_audience(config):
    assert may_see_browsing(config, viewer_for(config, "dsl1"), "pupil", "jsmith")
    assert not may_see_browsing(config, viewer_for(config, "dsl1"), "staff", "mbrown")
    assert may_see_browsing(config, viewer_for(config, "head"), "staff", "mbrown")
    assert not may_see_browsing(config, viewer_for(config, "net"), "pupil", "jsmith")
    assert not may_see_browsing(config, viewer_for(config, "gov"), "pupil", "jsmith")


def test_roles_from_directory_groups_and_none_without_a_role(config):
    v = viewer_for(config, "Teacher7", frozenset({"safeguarding team"}))
    assert v is not None and v.roles == {"dsl"} and v.username == "teacher7"
    assert viewer_for(config, "teacher8", frozenset({"Year 4"})) is None
    assert viewer_for(config, "jsmith") is None


def test_config_refuses_staff_concerns_routed_beyond_the_head():
    with pytest.raises(ConfigError, match="routes.staff"):
        parse_config(BASE + "alerts: {routes: {staff: [head, dsl]}}\n", Path("t.yaml"))
    with pytest.raises(ConfigError, match=r"people.office.roles\[0\]: Input should be 'dsl'"):
        parse_config(BASE.replace("roles: [office]", "roles: [janitor]"), Path("t.yaml"))
