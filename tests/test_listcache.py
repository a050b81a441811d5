"""The compiled list cache: opened instead of re-parsed, rebuilt when a list changes or the cache is damaged."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from schoolproxy.filtering import listcache
from schoolproxy.filtering.listcache import load_compiled
from schoolproxy.filtering.lists import ListError, load_metadata


@pytest.fixture
def school(tmp_path: Path):
    src = tmp_path / "lists"
    (src / "adult").mkdir(parents=True)
    (src / "adult" / "domains").write_text("porn.test\nxxx.example\n")
    (src / "social").mkdir()
    (src / "social" / "domains").write_text("chat.test\nporn.test\n")
    (src / "social" / "urls").write_text("example.org/forum\n")
    (src / "helpsites").mkdir()
    (src / "helpsites" / "domains").write_text("childline.org.uk\n")
    md = tmp_path / "categories.yaml"
    md.write_text("adult: {}\nsocial: {}\n")
    return src, md, tmp_path / "cache"


def load(school):
    src, md, cache = school
    return load_compiled([src], md, load_metadata(md), cache)


def names(lists, host, path="/"):
    return lists.names(lists.classify(host, path))


def test_compiled_lists_classify_like_the_sources(school):
    lists = load(school)
    assert lists.compiled is not None and len(lists) == 5  # porn.test once, in two categories
    assert names(lists, "www.porn.test") == {"adult", "social"}
    assert names(lists, "chat.test") == {"social"} and names(lists, "notchat.test") == frozenset()
    assert names(lists, "example.org", "/forum/1") == {"social"} and names(lists, "example.org") == frozenset()
    assert lists.helpsite_domains() == ["childline.org.uk"]
    assert lists.stats.domains == {"adult": 2, "social": 2, "helpsites": 1}


def test_an_unchanged_list_is_opened_not_parsed_again(school, monkeypatch):
    load(school)
    monkeypatch.setattr(listcache, "load_lists", lambda *a: pytest.fail("the lists were parsed again"))
    assert names(load(school), "porn.test") == {"adult", "social"}


def test_a_changed_list_is_compiled_again_and_old_versions_are_pruned(school):
    src, md, cache = school
    load(school)
    for i in range(5):
        (src / "adult" / "domains").write_text(f"porn.test\nnew{i}.test\n")
        os.utime(src / "adult" / "domains", ns=(i * 10**9, i * 10**9))  # a new mtime even within one tick
        lists = load(school)
        assert names(lists, f"www.new{i}.test") == {"adult"}
        assert names(lists, "xxx.example") == frozenset()
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == listcache.KEEP


@pytest.mark.parametrize("damage", ["meta.json", "masks.u32", "domains.marisa"])
def test_a_damaged_cache_is_rebuilt_with_a_warning(school, damage, caplog):
    src, md, cache = school
    load(school)
    (directory,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    (directory / damage).chmod(0o600)
    (directory / damage).write_bytes(b"\x00garbage")
    with caplog.at_level(logging.WARNING):
        lists = load(school)
    assert names(lists, "www.porn.test") == {"adult", "social"}
    assert "damaged" in caplog.text


def test_an_unwritable_cache_falls_back_to_parsing_in_memory(school, caplog):
    src, md, cache = school
    cache.write_text("not a directory")
    with caplog.at_level(logging.WARNING):
        lists = load(school)
    assert lists.compiled is None and names(lists, "porn.test") == {"adult", "social"}
    assert "cannot write the compiled cache" in caplog.text


def test_big_lists_are_compiled_in_a_child_process(school, monkeypatch):
    monkeypatch.setattr(listcache, "IN_PROCESS_BYTES", 0)
    monkeypatch.setattr(listcache, "compile_to", lambda *a: pytest.fail("compiled inside the proxy process"))
    lists = load(school)
    assert names(lists, "www.porn.test") == {"adult", "social"} and lists.compiled is not None


def test_a_failing_compile_is_a_clear_error(school, monkeypatch):
    src, md, cache = school
    monkeypatch.setattr(listcache, "IN_PROCESS_BYTES", 0)
    monkeypatch.setattr(listcache.sys, "executable", "/bin/false")
    with pytest.raises(ListError, match="compiling the lists failed"):
        load(school)


def test_missing_source_is_a_clear_error(school):
    src, md, cache = school
    with pytest.raises(ListError, match="not a directory"):
        load_compiled([src / "nope"], md, load_metadata(md), cache)


def cache_dir_of(cache: Path) -> Path:
    (directory,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    return directory


def test_the_cache_is_read_only_and_private(school):
    src, md, cache = school
    load(school)
    directory = cache_dir_of(cache)
    assert oct(cache.stat().st_mode & 0o777) == "0o700" and oct(directory.stat().st_mode & 0o777) == "0o700"
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in directory.iterdir()} == {
        "domains.marisa": "0o400", "masks.u32": "0o400", "meta.json": "0o400"}


@pytest.mark.parametrize("damage", ["truncate", "same size", "meta"])
def test_a_cache_changed_in_place_is_not_trusted_when_opened(school, damage, caplog):
    # Overwriting masks.u32 with other category numbers of the same size used to change verdicts silently.
    src, md, cache = school
    load(school)
    directory = cache_dir_of(cache)
    if damage == "meta":
        target = directory / "meta.json"
        text = target.read_text().replace('"adult"', '"adulx"')
    else:
        target = directory / "masks.u32"
        data = target.read_bytes()
        text = None
    target.chmod(0o600)
    if damage == "truncate":
        target.write_bytes(data[:4])
    elif damage == "same size":
        target.write_bytes(bytes(len(data)))  # every domain in mask 0: no categories
    else:
        target.write_text(text)
    with caplog.at_level(logging.WARNING):
        lists = load(school)
    assert names(lists, "www.porn.test") == {"adult", "social"}
    assert "damaged" in caplog.text and ("checksum" in caplog.text or "bytes, written as" in caplog.text)


def test_damage_after_opening_is_noticed_by_the_reloader_and_the_next_snapshot_is_sound(tmp_path):
    from conftest import make_school

    from schoolproxy.snapshot import SnapshotHolder
    cfg = make_school(tmp_path)
    cfg.write_text(cfg.read_text().replace("metadata: lists/categories.yaml}",
                                           "metadata: lists/categories.yaml, cache_dir: cache}"))
    engine = SnapshotHolder()
    engine.load(cfg)
    assert not engine.changed()
    masks = cache_dir_of(tmp_path / "cache") / "masks.u32"
    masks.chmod(0o600)
    masks.write_bytes(bytes(masks.stat().st_size))  # same size: only the checksum can tell
    assert engine.changed()  # the reloader builds a new snapshot...
    snap = engine.build()
    assert snap.policy.decide("pupil", "www.socialsite.test").action == "block"  # ...from a sound cache


def test_what_an_interrupted_compile_left_is_removed_later(school):
    src, md, cache = school
    load(school)
    left = cache / ".tmp-deadbeef-4242"
    left.mkdir()
    (left / "domains.marisa").write_bytes(b"half")
    os.utime(left, (0, 0))
    recent = cache / ".tmp-cafe-4343"
    recent.mkdir()  # maybe another worker compiling right now: kept
    (src / "adult" / "domains").write_text("porn.test\nnew.test\n")
    os.utime(src / "adult" / "domains", ns=(10**9, 10**9))
    load(school)
    assert not left.exists() and recent.exists()
