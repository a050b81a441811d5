"""The transparent-mode firewall rules as text (applying them is tested in namespaces: test_e2e_transparent)."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_school

from schoolproxy.config import ConfigError, load_config, parse_config
from schoolproxy.gateway.firewall import FirewallError, ruleset

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent / "schoolproxy"


def transparent(school: Path, settings: str, mode: str = "transparent") -> Path:
    school.write_text(school.read_text().replace(
        "proxy: {listen_host: 127.0.0.1,", f"proxy: {{mode: {mode}, transparent: {settings}, listen_host: 127.0.0.1,"))
    return school


def test_rules_redirect_the_lan_and_refuse_what_would_go_round_the_proxy(school):
    rules = ruleset(load_config(transparent(school, "{port: 3129, lan_interfaces: [eth1, eth1.20]}")))
    assert 'set lan_interfaces { type ifname; elements = { "eth1", "eth1.20" } }' in rules
    assert "iifname @lan_interfaces meta nfproto ipv4 tcp dport { 80, 443 } redirect to :3129" in rules
    assert "iifname @lan_interfaces fib daddr type local tcp dport 80 redirect to :3129" in rules
    assert "fib daddr type local return" in rules  # the gateway's other services are left alone
    assert "iifname @lan_interfaces udp dport 443 reject" in rules  # QUIC
    assert "iifname @lan_interfaces meta l4proto { tcp, udp } th dport 853 reject" in rules  # DNS over TLS/QUIC
    assert 'iifname != "lo" tcp dport 3129 ct status & dnat == 0 drop' in rules
    # Idempotent as a file: creates the table if missing, then deletes and defines it in one transaction.
    assert rules.index("table inet schoolproxy\ndelete table inet schoolproxy\n") < rules.index("chain")
    assert "lan_subnets" not in rules and "hook output" not in rules  # never the gateway's own traffic


def test_rules_by_subnet(school):
    rules = ruleset(load_config(transparent(school, "{lan_subnets: [10.0.0.0/16, 192.168.5.0/24]}")))
    assert "set lan_subnets { type ipv4_addr; flags interval; elements = { 10.0.0.0/16, 192.168.5.0/24 } }" in rules
    assert "ip saddr @lan_subnets meta nfproto ipv4 tcp dport { 80, 443 } redirect to :8081" in rules
    assert "iifname" not in rules.replace('iifname != "lo"', "")


def test_explicit_mode_has_no_rules(school):
    with pytest.raises(FirewallError, match="the firewall rules are for transparent mode"):
        ruleset(load_config(school))


def test_the_shipped_example_is_what_the_command_prints():
    text = (ROOT / "config/schoolproxy.yaml").read_text().replace(
        "  mode: explicit\n", "  mode: transparent\n  transparent: {port: 8081, lan_interfaces: [eth1]}\n", 1)
    cfg = parse_config(text, Path("/etc/schoolproxy/schoolproxy.yaml"))
    assert (ROOT / "deploy/nftables/schoolproxy.nft").read_text() == ruleset(cfg)


@pytest.mark.parametrize("settings, mode, message", [
    (None, "transparent", "proxy: mode transparent: needs a transparent section naming the LAN"),
    ("{port: 8081}", "transparent", "give lan_interfaces (e.g. [eth1]) and/or lan_subnets"),
    ("{port: 8080, lan_interfaces: [eth1]}", "both", "mode both: transparent.port must differ from listen_port"),
    ('{lan_interfaces: ["eth1; flush ruleset"]}', "transparent", "lan_interfaces[0]"),
])
def test_bad_transparent_settings_are_refused_with_the_key(school, settings, mode, message):
    if settings is None:
        school.write_text(school.read_text().replace("proxy: {listen_host", f"proxy: {{mode: {mode}, listen_host"))
    else:
        transparent(school, settings, mode)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        load_config(school)


def test_missing_nft_binary_is_said_plainly(school):
    transparent(school, "{lan_interfaces: [eth1]}")
    r = subprocess.run([str(BIN), "firewall", "apply", "--config", str(school)], capture_output=True, text=True,
                       env={"PATH": "/nonexistent"})
    assert r.returncode == 2 and "nft (nftables) is not installed: apt-get install nftables" in r.stderr
    assert "not filtered" in r.stderr and "Traceback" not in r.stderr


def test_show_prints_the_rules_and_check_warns_without_an_identity_source(school):
    transparent(school, "{lan_interfaces: [eth1]}")
    r = subprocess.run([str(BIN), "firewall", "show", "--config", str(school)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == ruleset(load_config(school))
    school.write_text(school.read_text().replace("  subnets:\n    - {cidr: 10.9.0.0/16, profile: guest, name: iPads}\n", ""))
    r = subprocess.run([str(BIN), "check", "--config", str(school)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "warning: transparent mode with no way to tell who is browsing" in r.stdout
    assert "every redirected device gets the default profile (pupil)" in r.stdout and "Filtering stays on." in r.stdout
