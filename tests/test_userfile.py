"""The local users file: bcrypt hashes, one spelling per name, timing that does not reveal names."""

import bcrypt
import pytest
from conftest import PASSWORD, hash_pw

from schoolproxy.config import ConfigError
from schoolproxy.identity.userfile import UsersFile, hash_cost, stand_in_hash


def users(tmp_path, text: str) -> UsersFile:
    f = tmp_path / "users.htpasswd"
    f.write_text(text)
    return UsersFile(f)


def test_any_case_signs_in_and_the_file_spells_the_name(tmp_path):
    u = users(tmp_path, f"JSmith:{hash_pw(PASSWORD)}\nSupply3:{hash_pw(PASSWORD)}\n")
    assert u.check("jsmith", PASSWORD) and u.check("JSMITH", PASSWORD)
    assert u.canonical("jSMITH") == "JSmith" and u.canonical("supply3") == "Supply3"
    assert u.canonical("nobody") is None


def test_a_name_given_twice_in_any_case_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"users.htpasswd:2: user 'JSMITH' appears twice"):
        users(tmp_path, f"jsmith:{hash_pw('a')}\nJSMITH:{hash_pw('b')}\n")


def test_version_is_the_hash_and_none_once_removed(tmp_path):
    h = hash_pw(PASSWORD)
    u = users(tmp_path, f"jsmith:{h}\n")
    assert u.version("JSmith") == h.encode()
    assert users(tmp_path, "").version("jsmith") is None


def test_stand_in_hash_has_the_cost_of_the_files_own_hashes(tmp_path):
    # bcrypt's time is set by the cost: an unknown user then takes as long as a wrong password (the old
    # fixed cost-10 stand-in was 4x quicker than the cost-12 hashes `users add` writes).
    h = bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=6)).decode()
    u = users(tmp_path, f"a:{h}\nb:{h}\nc:{hash_pw(PASSWORD)}\n")  # two at cost 6, one at cost 4
    assert hash_cost(u._stand_in) == 6 == hash_cost(h.encode())
    assert stand_in_hash(6) is stand_in_hash(6)  # made once per cost

