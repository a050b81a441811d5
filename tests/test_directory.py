"""The AD/LDAP authenticator against a real OpenLDAP slapd (tests/directory_server.py)."""

from __future__ import annotations

import pytest
from directory_server import PASSWORD

from schoolproxy.config import parse_config
from schoolproxy.identity.directory import Directory


def directory_for(server, tmp_path, **kw) -> Directory:
    text = "school: T\nidentity:\n" + server.yaml(**kw) + "  default_profile: p\nprofiles:\n  p: {role: pupil}\n"
    config = parse_config(text, tmp_path / "c.yaml")
    return Directory(config.identity.directory, tmp_path)


@pytest.mark.parametrize("bind", ["search", "direct"])
def test_staff_and_pupil_sign_in_with_nested_groups(slapd, tmp_path, bind):
    d = directory_for(slapd, tmp_path, bind=bind)
    assert d.check("amiller", PASSWORD) is True
    assert d.groups("amiller") == {"teaching-staff", "staff"}
    assert d.check("jsmith", PASSWORD) is True
    assert d.groups("jsmith") == {"year4", "pupils"}
    assert d.check("head", PASSWORD) is True and d.groups("head") == {"staff"}


@pytest.mark.parametrize("bind", ["search", "direct"])
@pytest.mark.parametrize("user,password", [
    ("jsmith", "wrong"), ("jsmith", ""), ("nobody", PASSWORD), ("oldpupil", PASSWORD),
    ("*", PASSWORD), ("j*", PASSWORD), ("jsmith)(uid=*", PASSWORD), ("jsmith\x00", PASSWORD),
    ("admin,dc=school", PASSWORD), ("x" * 5000, PASSWORD), ("jsmith", "x" * 100_000),
])
def test_wrong_disabled_and_injected_credentials_are_refused(slapd, tmp_path, bind, user, password):
    d = directory_for(slapd, tmp_path, bind=bind)
    assert d.check(user, password) is False
    assert d.up


def test_groups_of_a_logon_feed_user_come_from_the_service_account(slapd, tmp_path):
    d = directory_for(slapd, tmp_path)
    assert d.groups("bjones") == {"year6", "pupils"}
    assert d.groups("Supply1") == {"supply"}
    assert d.groups("nobody") is None
    assert d.groups("oldpupil") is None


def test_ldaps_verifies_the_server_certificate(slapd, tmp_path):
    d = directory_for(slapd, tmp_path, url=slapd.ldaps_url)
    assert d.check("amiller", PASSWORD) is True
    # A CA that did not sign the server's certificate: the directory is "unavailable", never trusted.
    from internet import make_test_ca
    wrong_ca = make_test_ca(tmp_path / "wrong-ca").path
    text = "school: T\nidentity:\n" + slapd.yaml(url=slapd.ldaps_url).replace(str(slapd.ca_file), str(wrong_ca)) \
        + "  default_profile: p\nprofiles:\n  p: {role: pupil}\n"
    bad = Directory(parse_config(text, tmp_path / "c.yaml").identity.directory, tmp_path)
    assert bad.check("amiller", PASSWORD) is None
    assert not bad.up and bad.errors == 1 and "certificate" in bad.last_error.lower()


def test_starttls(slapd, tmp_path):
    url = slapd.url.replace("127.0.0.1", "localhost")
    d = directory_for(slapd, tmp_path, url=url, extra="    start_tls: true\n")
    assert d.check("jsmith", PASSWORD) is True and d.groups("jsmith") == {"year4", "pupils"}


def test_directory_down_answers_none_and_cached_groups_survive(tmp_path, own_slapd):
    server = own_slapd
    d = directory_for(server, tmp_path)
    assert d.check("jsmith", PASSWORD) is True
    server.stop()
    assert d.check("amiller", PASSWORD) is None      # new user: no answer, not "wrong password"
    assert not d.up and d.errors >= 1
    assert d.groups("jsmith") == {"year4", "pupils"}  # cached
    server.start()
    assert d.check("amiller", PASSWORD) is True and d.up


def test_config_errors_are_clear(tmp_path):
    from schoolproxy.config import ConfigError
    base = "school: T\nidentity:\n  directory:\n    url: {url}\n    user_base: dc=x\n{extra}  default_profile: p\nprofiles:\n  p: {{role: pupil}}\n"
    cases = {
        ("http://dc1", ""): "must start with ldap:// or ldaps://",
        ("ldap://dc1", ""): "bind: search needs service_dn and service_password_file",
        ("ldap://dc1", "    bind: direct\n"): "direct_bind_template",
        ("ldap://dc1", "    bind: direct\n    direct_bind_template: x@y\n    user_filter: (uid=x)\n"): "user_filter must contain {username}",
    }
    for (url, extra), message in cases.items():
        with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
            parse_config(base.format(url=url, extra=extra), tmp_path / "c.yaml")


@pytest.mark.parametrize("bind", ["search", "direct"])
def test_the_directory_spells_the_name_however_it_was_typed(slapd, tmp_path, bind):
    d = directory_for(slapd, tmp_path, bind=bind)
    assert d.canonical("JSmith") is None  # never asks the directory itself (it runs on the event loop)
    assert d.check("JSmith", PASSWORD) is True
    assert d.canonical("JSMITH") == "jsmith"  # the uid as the directory holds it
    if bind == "search":  # a logon-feed user's groups, looked up by the service account
        assert d.groups("BJones") == {"year6", "pupils"} and d.canonical("bjones") == "bjones"


def test_whether_a_user_exists_is_asked_with_the_service_account(slapd, tmp_path):
    # The logon feed believes only users the directory has (identity.logons.admit).
    d = directory_for(slapd, tmp_path)
    assert d.known("bjones") == (True, frozenset({"year6", "pupils"}))
    for user in ("nobody", "oldpupil", "*", "jsmith)(uid=*"):  # unknown, disabled, not a logon name
        assert d.known(user) == (False, None), user
    direct = directory_for(slapd, tmp_path, bind="direct")
    assert direct.known("bjones") == (None, None)  # no service account: it cannot say…
    assert direct.check("bjones", PASSWORD) and direct.known("bjones")[0] is True  # …until they sign in
