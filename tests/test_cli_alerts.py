"""``schoolproxy alerts`` as the DSL and the head run it (a real subprocess): who is running it is said
with --by (a logon in people:), they see only the concerns their role may see — staff concerns stay with
the head — every change is stamped with that named person, and an alert shows every search behind it."""

from __future__ import annotations

import csv
import datetime as dt
import io
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from console_school import World, run_service, search

from schoolproxy.monitoring import store

BIN = Path(sys.executable).parent / "schoolproxy"
UTC = dt.timezone.utc
LONDON = ZoneInfo("Europe/London")


@pytest.fixture
def world(tmp_path):
    return World(tmp_path)


def cli(world, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), "alerts", *args, "--config", str(world.config)], capture_output=True,
                          text=True, timeout=60)


def concerns(world):
    """A pupil's, a teacher's and a supply teacher's concern."""
    return (world.alert(), world.alert(role="staff", username="teacher1"),
            world.alert(role="supply", username="Supply3", person="Ms Aisha Khan"))


def test_show_lists_every_search_behind_the_alert_with_uk_times(world):
    t0 = dt.datetime.now(UTC).timestamp() - 300
    searches = ("how to kill myself", "how to k1ll myself", "i want to die")
    run_service(world.config, world.db, [search(s, t0 + 60 * i) for i, s in enumerate(searches)])
    (alert,) = store.list_alerts(world.db, dt.datetime.now(UTC) - dt.timedelta(days=1))
    r = cli(world, "show", alert["ref"], "--by", "dsl1")
    assert r.returncode == 0, r.stderr
    assert "Every search and visit behind this alert (3, UK time):" in r.stdout
    for i, s in enumerate(searches):
        t = dt.datetime.fromtimestamp(t0 + 60 * i, UTC).astimezone(LONDON)
        assert f'{t:%d/%m/%Y %H:%M:%S}  searched "{s}" on Google' in r.stdout, r.stdout
    export = cli(world, "export", "--since", "1d", "--by", "dsl1")
    (row,) = csv.DictReader(io.StringIO(export.stdout))
    assert [e.split(" ", 2)[2].split(" (matched")[0] for e in row["Evidence"].split(" | ")] == \
        [f'searched "{s}" on Google' for s in searches]


def test_a_staff_concern_is_hidden_from_the_dsl_in_list_show_and_export(world):
    pupil, staff, supply = concerns(world)
    listed = cli(world, "list", "--by", "dsl1")
    assert listed.returncode == 0, listed.stderr
    assert pupil["ref"] in listed.stdout and staff["ref"] not in listed.stdout and "teacher1" not in listed.stdout
    shown = cli(world, "show", staff["ref"], "--by", "dsl1")
    assert shown.returncode == 2 and "teacher1" not in shown.stdout + shown.stderr
    assert "that you can see" in shown.stderr
    nothing = cli(world, "show", "ZZZZ-ZZZZ-ZZZZ", "--by", "dsl1")            # no such alert: the same refusal
    assert nothing.returncode == 2 and nothing.stderr.replace("ZZZZ-ZZZZ-ZZZZ", staff["ref"]) == shown.stderr
    for group in ("pupil", "staff", "supply"):
        out = cli(world, "export", "--since", "1d", "--group", group, "--by", "dsl1").stdout
        assert "teacher1" not in out and staff["ref"] not in out
    head = cli(world, "list", "--by", "head1").stdout
    assert staff["ref"] in head and pupil["ref"] not in head
    assert "how to kill myself" in cli(world, "show", staff["ref"], "--by", "head1").stdout
    audit = [(r["viewer"], r["what"]) for r in world.audit_rows()]
    assert ("Mrs D Lawrence (dsl1)", f"REFUSED: alert {staff['ref']} (not in their audience)") in audit


def test_the_cpoms_export_holds_pupils_only_and_staff_concerns_are_the_heads_own_file(world):
    pupil, staff, supply = concerns(world)
    cpoms = list(csv.DictReader(io.StringIO(cli(world, "export", "--since", "1d", "--by", "dsl1").stdout)))
    assert [(r["Student"], r["Class"], r["Reference"]) for r in cpoms] == [("Jamie Smith", "Year 4", pupil["ref"])]
    assert cpoms[0]["Category"] == "Online safety - Self-harm and suicide"
    head_cpoms = cli(world, "export", "--since", "1d", "--by", "head1").stdout
    assert list(csv.DictReader(io.StringIO(head_cpoms))) == []               # no teacher under "Student"
    staff_file = list(csv.DictReader(io.StringIO(
        cli(world, "export", "--since", "1d", "--group", "staff", "--by", "head1").stdout)))
    assert [(r["Name"], r["Logon"], r["Reference"]) for r in staff_file] == [("teacher1", "teacher1", staff["ref"])]
    assert "Student" not in staff_file[0]


def test_a_change_without_a_named_person_is_refused(world):
    a = world.alert()
    for by in ((), ("--by", "root"), ("--by", "nobody-here")):
        r = cli(world, "ack", a["ref"], *by)
        assert r.returncode == 2 and "people:" in r.stderr, r.stderr
    assert "say who you are with --by" in cli(world, "ack", a["ref"]).stderr
    assert "not a person in the config's people:" in cli(world, "ack", a["ref"], "--by", "root").stderr
    assert cli(world, "list").returncode == 2                                 # looking is recorded too
    row, notes, _ = store.get_alert(world.db, a["ref"])
    assert row["status"] == "new" and notes == []


def test_every_change_is_stamped_with_the_named_person(world):
    a = world.alert()
    assert cli(world, "ack", a["ref"], "--by", "dsl1").returncode == 0
    r = cli(world, "close", a["ref"], "--note", "Referred to early help", "--by", "LEAD1")
    assert r.returncode == 0 and "by Mr C Lead (lead1)" in r.stdout
    _, notes, _ = store.get_alert(world.db, a["ref"])
    assert [(n["action"], n["author"]) for n in notes] == [("ack", "Mrs D Lawrence (dsl1)"),
                                                           ("close", "Mr C Lead (lead1)")]
    shown = cli(world, "show", a["ref"], "--by", "dsl1").stdout
    assert "Mrs D Lawrence (dsl1)" in shown and "root" not in shown


def test_no_one_acts_on_a_concern_they_may_not_see(world):
    staff = world.alert(role="staff", username="teacher1")
    r = cli(world, "close", staff["ref"], "--note", "closing it quietly", "--by", "dsl1")
    assert r.returncode == 2 and "that you can see" in r.stderr
    about_the_head = world.alert(role="staff", username="head1", profile="staff")
    assert cli(world, "ack", about_the_head["ref"], "--by", "head1").returncode == 2   # never about yourself
    assert cli(world, "ack", about_the_head["ref"], "--by", "chair1").returncode == 0
    assert store.get_alert(world.db, staff["ref"])[0]["status"] == "new"
