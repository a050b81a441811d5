"""The supply and student register: pure lookups, the database, and the CLI."""

import datetime as dt
import subprocess

import pytest
from conftest import make_school
from proxyproc import BIN

from schoolproxy.identity.register import Register, Visit, is_shared_logon
from schoolproxy.records import open_database, upgrade
from schoolproxy.records.visits import RegisterError, add_visit, cancel_visit, end_visit, list_visits, load_register

UTC = dt.timezone.utc
D = dt.datetime(2026, 11, 25, tzinfo=UTC)


def at(h: int, m: int = 0) -> dt.datetime:
    return D.replace(hour=h, minute=m)


def test_who_held_a_logon_at_a_moment():
    reg = Register([Visit("Supply1", "Ms Khan", at(8), at(12)), Visit("Supply1", "Mr Patel", at(12), at(16))])
    assert reg.who("supply1", at(9)).person == "Ms Khan"
    assert reg.who("Supply1", at(12)).person == "Mr Patel"       # the boundary belongs to the next visit
    assert reg.who("Supply1", at(7, 59)) is None and reg.who("Supply1", at(16)) is None
    assert reg.who("Student1", at(9)) is None and reg.who(None, at(9)) is None


def test_shared_logons_are_patterns_or_supply_profiles():
    assert is_shared_logon("pattern Supply*", "supply") and is_shared_logon("user x", "supply")
    assert is_shared_logon("pattern Student*", "pupil")
    assert not is_shared_logon("group year4", "pupil")


def test_visits_in_the_database(db_url):
    db = open_database(db_url)
    upgrade(db)
    v = add_visit(db, "Supply1", "Ms  Aisha   Khan", at(8), at(15, 30), "Year 4", "office")
    assert v.person == "Ms Aisha Khan" and v.id
    with pytest.raises(RegisterError, match="already registered to Ms Aisha Khan"):
        add_visit(db, "supply1", "Mr B", at(9), at(10), None, "office")
    with pytest.raises(RegisterError, match="before it starts"):
        add_visit(db, "Supply2", "Mr B", at(10), at(9), None, "office")
    with pytest.raises(RegisterError, match="control characters"):
        add_visit(db, "Supply2", "Mr\x1b[31m B", at(9), at(10), None, "office")
    assert load_register(db).who("Supply1", at(10)).person == "Ms Aisha Khan"
    ended = end_visit(db, "Supply1", at(12))
    assert ended.ends == at(12)
    assert load_register(db).who("Supply1", at(13)) is None
    add_visit(db, "Supply1", "Mr Patel", at(12), at(16), None, "office")       # now it fits
    assert [x.person for x in list_visits(db, at(0), at(23))] == ["Ms Aisha Khan", "Mr Patel"]
    with pytest.raises(RegisterError, match="no one is registered"):
        end_visit(db, "Student1", at(10))


def test_register_cli(tmp_path):
    config = make_school(tmp_path)
    sp = str(BIN / "schoolproxy")

    def run(*args):
        return subprocess.run([sp, "register", *args, "--config", str(config)], capture_output=True, text=True)
    r = run("add", "--logon", "Supply1", "--person", "Ms Aisha Khan", "--class", "Year 4", "--from", "2026-11-25 08:00",
            "--to", "2026-11-25 15:30", "--by", "office")
    assert r.returncode == 0 and "Supply1 is Ms Aisha Khan (Year 4)" in r.stdout
    r = run("who", "--logon", "supply1", "--at", "2026-11-25 10:00")
    assert r.returncode == 0 and "Ms Aisha Khan" in r.stdout
    r = run("list", "--date", "2026-11-25")
    assert "Ms Aisha Khan" in r.stdout and "[by office]" in r.stdout
    r = run("add", "--logon", "Supply1", "--person", "Someone Else", "--from", "2026-11-25 09:00")
    assert r.returncode == 2 and "already registered" in r.stderr
    r = run("add", "--logon", "Supply1", "--person", "X", "--from", "half past eight")
    assert r.returncode == 2 and "cannot read the time" in r.stderr
    r = run("end", "--logon", "Supply1", "--at", "2026-11-25 12:00")
    assert r.returncode == 0
    r = run("who", "--logon", "Supply1", "--at", "2026-11-25 13:00")
    assert r.returncode == 1 and "no one registered" in r.stdout


OFFICE = """\
people:
  office1: {name: Mrs S Hughes, roles: [office]}
"""


def test_register_cancel_a_future_visit_stamped_with_who(tmp_path):
    config = make_school(tmp_path, extra=OFFICE)
    sp = str(BIN / "schoolproxy")

    def run(*args):
        return subprocess.run([sp, "register", *args, "--config", str(config)], capture_output=True, text=True)
    later = dt.datetime.now() + dt.timedelta(days=3)
    day = f"{later:%d/%m/%Y}"
    r = run("add", "--logon", "Supply1", "--person", "Mr B Future", "--from", f"{day} 08:30", "--to", f"{day} 15:30",
            "--by", "office1")
    assert r.returncode == 0, r.stderr
    r = run("cancel", "--logon", "Supply1")
    assert r.returncode == 2 and "--by" in r.stderr                     # who cancels is required…
    r = run("cancel", "--logon", "Supply1", "--by", "root")
    assert r.returncode == 2 and "is not a person in the config's people:" in r.stderr  # …and must be a person
    assert "Mr B Future" in run("list", "--date", day).stdout            # nothing changed
    r = run("cancel", "--logon", "supply1", "--on", day, "--by", "Office1")
    assert r.returncode == 0 and "cancelled: Mr B Future on Supply1" in r.stdout and "by Mrs S Hughes (office1)" in r.stdout
    assert "no visits registered" in run("list", "--date", day).stdout
    r = run("cancel", "--logon", "Supply1", "--by", "office1")
    assert r.returncode == 2 and "no visit on Supply1 that has not started" in r.stderr
    # The cancelled visit stays on file with who cancelled it, and frees the logon for someone else.
    db = open_database(f"sqlite:///{tmp_path / 'records.db'}")
    from sqlalchemy import select

    from schoolproxy.records.schema import supply_register
    with db.connect() as c:
        row = c.execute(select(supply_register)).one()
    assert row.person == "Mr B Future" and row.cancelled_by == "Mrs S Hughes (office1)" and row.cancelled_at
    r = run("add", "--logon", "Supply1", "--person", "Ms C Instead", "--from", f"{day} 08:30", "--to", f"{day} 15:30",
            "--by", "office1")
    assert r.returncode == 0, r.stderr
    r = run("cancel", "--visit", str(row.id), "--by", "office1")
    assert r.returncode == 2 and "already cancelled, by Mrs S Hughes (office1)" in r.stderr


def test_ending_a_visit_never_leaves_one_of_no_length(db_url):
    db = open_database(db_url)
    upgrade(db)
    v = add_visit(db, "Supply1", "Ms Khan", at(10), at(15), None, "office")
    with pytest.raises(RegisterError, match="has not started yet .* cancel it instead"):
        end_visit(db, "Supply1", at(9))                                   # before it starts
    with pytest.raises(RegisterError, match="would leave a visit of no length; cancel it instead"):
        end_visit(db, "Supply1", at(10))                                  # the moment it starts
    assert [(x.starts, x.ends) for x in list_visits(db, at(0), at(23))] == [(at(10), at(15))]
    with pytest.raises(RegisterError, match="has already started: end it instead"):
        cancel_visit(db, v.id, at(11), "office")
    cancel_visit(db, v.id, at(9), "office")
    assert list_visits(db, at(0), at(23)) == [] and load_register(db).who("Supply1", at(11)) is None
