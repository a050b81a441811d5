"""The running snapshot and its change detection: which edits make the file watcher reload."""

import os

import schoolproxy.snapshot as snapshot_module
from schoolproxy.snapshot import SnapshotHolder


def loaded(school) -> SnapshotHolder:
    e = SnapshotHolder()
    e.load(school)
    return e


def test_nothing_changed_after_a_load(school):
    assert not loaded(school).changed()


def test_an_in_place_edit_of_a_list_file_is_a_change(school):
    # `echo site >> lists/games/domains` changes no directory's mtime; the list file itself is watched.
    e = loaded(school)
    with open(school.parent / "lists" / "games" / "domains", "a") as f:
        f.write("newgame.test\n")
    assert e.changed()


def test_a_new_list_file_in_a_category_is_a_change(school):
    e = loaded(school)
    (school.parent / "lists" / "games" / "urls").write_text("example.test/games\n")
    assert e.changed()


def test_a_rewrite_within_one_clock_tick_is_a_change(school):
    # A truncate-then-write seen half-way and the finished file can share an mtime; the size tells them apart.
    e = loaded(school)
    st = school.stat()
    school.write_text(school.read_text() + "\n# a comment\n")
    os.utime(school, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert school.stat().st_mtime_ns == st.st_mtime_ns
    assert e.changed()


def test_an_edit_made_while_the_snapshot_was_being_built_is_not_missed(school, monkeypatch):
    # The files are stamped before they are read, so an edit landing during the build (after the config
    # was read) still differs from the snapshot's stamp and the watcher reloads again.
    real = snapshot_module.load_config

    def load_then_edit(path):
        config = real(path)
        school.write_text(school.read_text().replace("school: Test Primary", "school: Test Primary School"))
        return config

    monkeypatch.setattr(snapshot_module, "load_config", load_then_edit)
    e = loaded(school)
    assert e.snapshot.config.school == "Test Primary"
    monkeypatch.setattr(snapshot_module, "load_config", real)
    assert e.changed()
    e.swap(e.build())
    assert e.snapshot.config.school == "Test Primary School"
    assert not e.changed()
