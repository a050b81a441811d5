"""The gateway's own addresses and names (filtering/local.py)."""

import pytest

from schoolproxy.filtering.local import LocalDestinations, is_special_address, own_addresses, own_names


@pytest.mark.parametrize("address", ["127.0.0.1", "127.9.9.9", "0.0.0.0", "169.254.169.254", "224.0.0.1",
                                     "255.255.255.255", "::1", "::", "fe80::1", "ff02::1", "::ffff:127.0.0.1",
                                     "64:ff9b::7f00:1", "2002:7f00:1::1"])
def test_special_addresses(address):
    assert is_special_address(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "10.0.0.1", "192.168.1.1", "2001:db8::1", "64:ff9b::808:808"])
def test_ordinary_addresses(address):
    assert not is_special_address(address)


def test_the_gateways_addresses_and_names_but_not_what_the_config_allows():
    local = LocalDestinations({"10.0.0.1"}, {"gateway", "gateway.school.local"}, {"10.0.0.1"})
    assert local.forbidden("gateway.school.local", False) and local.forbidden("localhost", False)
    assert local.forbidden("x.localhost", False) and not local.forbidden("localhost.example", False)
    assert not local.forbidden("10.0.0.1", True)  # allowed by the config
    assert LocalDestinations({"10.0.0.1"}).forbidden("10.0.0.1", True)
    assert local.forbidden_address("::ffff:127.0.0.1") and local.forbidden_address("not an address")


def test_this_machines_addresses_and_names_are_found(tmp_path):
    found = own_addresses()
    assert "127.0.0.1" in found
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.1.1 gw gw.school.local  # the gateway\n10.9.9.9 other\n192.0.2.7 mine\n")
    names = own_names({"192.0.2.7"}, hosts)
    assert {"gw", "gw.school.local", "mine"} <= names and "other" not in names


def test_interfaces_are_read_from_the_kernels_local_routes(tmp_path):
    (tmp_path / "fib_trie").write_text(
        "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 10.20.0.1\n        /32 host LOCAL\n"
        "     |-- 10.20.0.255\n        /32 link BROADCAST\n")
    (tmp_path / "if_inet6").write_text("fd000000000000000000000000000002 02 40 00 80     eth0\n")
    found = own_addresses(tmp_path)
    assert {"10.20.0.1", "fd00::2"} <= found and "10.20.0.255" not in found
