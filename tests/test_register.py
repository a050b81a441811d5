"""The supply and student register: pure lookups, the database, and the CLI."""

import datetime as dt
import subprocess

import pytest
from conftest import make_school
from proxyproc import BIN

from schoolproxy.identity.register import Register, Visit, is_shared_logon
from schoolproxy.records import open_database, upgrade
from schoolproxy.records.visits import RegisterError, add_visit, end_visit, list_visits, load_register

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
