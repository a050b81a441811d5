"""Reload addon: a changed configuration is swapped in only if it is valid and passes its own policy
tests; a refused one is logged with its reason and the running policy keeps applying."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from mitmproxy.test import taddons
from prometheus_client import CollectorRegistry, generate_latest

from schoolproxy.config import ConfigError
from schoolproxy.filtering.decide import decide, facts_for_url
from schoolproxy.proxy import reload as reload_module
from schoolproxy.proxy.reload import Reload
from schoolproxy.snapshot import SnapshotHolder

# Someone allows a social network for pupils; the config's own test
# `{user: pupil1, url: "http://socialsite.test/", expect: block}` then fails.
OVERRIDES = "overrides:\n"
ALLOW_SOCIAL = ("overrides:\n  - {site: socialsite.test, action: allow, profiles: [pupil], "
                "rationale: Class blog, author: CL, date: 2026-09-02}\n")


def allow_social(school) -> None:
    school.write_text(school.read_text().replace(OVERRIDES, ALLOW_SOCIAL, 1))


def pupil_action(snapshots: SnapshotHolder, url: str = "http://socialsite.test/") -> str:
    snap = snapshots.snapshot
    return decide(snap, snap.resolver.identify("pupil1"), facts_for_url(url)).decision.action


@pytest.fixture
def reload(school):
    snapshots, registry = SnapshotHolder(), CollectorRegistry()
    snapshots.load(school)
    addon = Reload(snapshots, registry)
    addon.registry = registry
    with taddons.context(addon):
        yield addon


def test_the_holder_refuses_to_build_a_config_that_fails_its_own_policy_tests(school):
    snapshots = SnapshotHolder()
    snapshots.load(school)
    allow_social(school)
    with pytest.raises(ConfigError, match=r"1 of the config's own policy tests failed(.|\n)*tests\[0\] user pupil1"):
        snapshots.build()


async def test_a_config_failing_its_own_policy_tests_is_refused_and_the_old_policy_applies(reload, school, caplog):
    running = reload.snapshots.snapshot
    assert pupil_action(reload.snapshots) == "block"
    allow_social(school)
    with caplog.at_level(logging.ERROR, logger="schoolproxy.proxy.reload"):
        assert await reload.reload("SIGHUP", force=True) is False
    assert reload.snapshots.snapshot is running
    assert pupil_action(reload.snapshots) == "block"
    assert reload.reloads == {"ok": 0, "refused": 1}
    said = caplog.text
    assert "reload (SIGHUP) REFUSED — still serving the previous configuration" in said
    assert "policy tests failed" in said and "FAIL tests[0] user pupil1 (pupil) http://socialsite.test/: " \
                                             "expected block, got allow" in said
    text = generate_latest(reload.registry).decode()
    assert 'schoolproxy_config_reloads_total{result="refused"} 1.0' in text


async def test_the_watcher_does_not_retry_a_refused_config_until_it_is_edited_again(reload, school):
    allow_social(school)
    assert await reload.reload("file change") is False
    assert await reload.reload("file change") is False        # the same files: not built again
    assert reload.reloads["refused"] == 1
    # The network manager takes the allow out and allows a games site instead: accepted.
    school.write_text(school.read_text().replace(ALLOW_SOCIAL, ALLOW_SOCIAL.replace("socialsite.test", "gamesite.test")))
    assert await reload.reload("file change") is True
    assert reload.reloads == {"ok": 1, "refused": 1}
    assert pupil_action(reload.snapshots, "http://gamesite.test/") == "allow"
    assert pupil_action(reload.snapshots) == "block"


async def test_a_valid_change_is_swapped_in(reload, school):
    running = reload.snapshots.snapshot
    school.write_text(school.read_text().replace("school: Test Primary", "school: Test Primary School"))
    assert await reload.reload("SIGHUP", force=True) is True
    assert reload.snapshots.snapshot is not running
    assert reload.snapshots.snapshot.config.school == "Test Primary School"


async def test_a_config_that_is_not_valid_is_refused(reload, school):
    running = reload.snapshots.snapshot
    school.write_text(school.read_text() + "\nprofiles: [broken\n")
    assert await reload.reload("SIGHUP", force=True) is False
    assert reload.snapshots.snapshot is running and reload.reloads["refused"] == 1


async def test_a_changed_upstream_filter_is_refused_until_a_restart(reload, school):
    # mitmproxy is chained to the upstream it started with; a config naming another must not be served.
    running = reload.snapshots.snapshot
    school.write_text(school.read_text().replace("upstream: null", "upstream: http://127.0.0.1:3128"))
    assert await reload.reload("SIGHUP", force=True) is False
    assert reload.snapshots.snapshot is running


async def test_the_watcher_looks_at_every_file_a_slice_at_a_time(reload, school, monkeypatch):
    # One file a slice: an in-place edit of one of the last watched files is still applied.
    monkeypatch.setattr(reload_module, "WATCH_SLICE", 1)
    running = reload.snapshots.snapshot
    banking = school.parent / "lists" / "banking" / "domains"
    assert list(running.watched).index(banking) > len(running.watched) / 2
    watcher = asyncio.create_task(reload._watch(0.3))
    try:
        with banking.open("a") as f:
            f.write("newbank.test\n")
        deadline = time.monotonic() + 20
        while reload.reloads["ok"] == 0:
            assert time.monotonic() < deadline, "the edit was not applied"
            await asyncio.sleep(0.05)
    finally:
        watcher.cancel()
    assert reload.snapshots.snapshot is not running


@pytest.mark.parametrize("edit", ["theme list", "new list file", "sets", "exceptions", "new theme"])
async def test_the_watcher_reloads_when_a_phrase_list_is_edited(school, edit):
    # The phrase lists (alerts.phrases) are watched like the category lists: the new snapshot carries
    # their stamps, and the content addon and the alert service load them again when those differ.
    phrases = school.parent / "phrases"
    (phrases / "self-harm").mkdir(parents=True)
    (phrases / "self-harm" / "en.txt").write_text("< kill yourself ><100>\n")
    (phrases / "sets.txt").write_text("@die = die | dying\n")
    school.write_text(school.read_text() + f"\nalerts: {{phrases: {phrases}}}\n")
    snapshots = SnapshotHolder()
    snapshots.load(school)
    addon = Reload(snapshots, CollectorRegistry())
    running = snapshots.snapshot
    assert phrases / "self-harm" / "en.txt" in running.watched and phrases / "sets.txt" in running.watched
    assert not snapshots.changed()
    change = {"theme list": (phrases / "self-harm" / "en.txt", "< kill yourself ><100>\n< zorblat ><100>\n"),
              "new list file": (phrases / "self-harm" / "pl.txt", "< zabij się ><100>\n"),
              "sets": (phrases / "sets.txt", "@die = die | dying | dead\n"),
              "exceptions": (phrases / "exceptions.txt", "skill yourself up\n"),
              "new theme": (phrases / "bullying" / "en.txt", "< you are worthless ><100>\n")}[edit]
    change[0].parent.mkdir(exist_ok=True)
    change[0].write_text(change[1])
    assert snapshots.changed()
    with taddons.context(addon):
        assert await addon.reload("file change") is True
    assert snapshots.snapshot.phrase_files != running.phrase_files
    assert not snapshots.changed()
