"""Names and classes for logons: the MIS export, then the directory, then the logon itself."""

from __future__ import annotations

import pytest

from schoolproxy.identity.names import Name, NameBook, NamesError, parse_mis_csv, read_mis_csv


def test_sims_style_export_with_forename_surname_and_reg_group():
    text = "\ufeffAdno,Legal Forename,Legal Surname,Reg Group,Network Login\n1001,Jamie,Smith,4B,JSmith\n1002,Ali,Khan,6A,akhan\n"
    people = parse_mis_csv(text)
    assert people["jsmith"] == Name("Jamie Smith", "4B", "mis")
    assert people["akhan"].label == "Ali Khan (6A)"


def test_display_name_column_and_semicolons_and_missing_class():
    people = parse_mis_csv("Username;Display name;Year\nbjones;Billie Jones;Year 6\nnoclass;No Class;\n")
    assert people["bjones"].label == "Billie Jones (Year 6)"
    assert people["noclass"].label == "No Class"


def test_rows_without_a_logon_or_a_name_are_skipped():
    people = parse_mis_csv("Logon,Forename,Surname\n,Nobody,Here\nx1,,\nok,A,B\n")
    assert set(people) == {"ok"}


@pytest.mark.parametrize("text,needle", [
    ("", "empty"), ("Forename,Surname\nA,B\n", "no logon column"), ("Logon,Class\nx,4B\n", "no name column"),
])
def test_an_export_without_the_columns_says_which(text, needle):
    with pytest.raises(NamesError, match=needle):
        parse_mis_csv(text, "pupils.csv")


def test_hostile_cells_become_one_plain_line(tmp_path):
    f = tmp_path / "mis.csv"
    f.write_text('Logon,Display name,Class\nevil,"Jamie\x1b[31m\nSmith\u202e",=cmd|x\n', encoding="utf-8")
    name = read_mis_csv(f)["evil"]
    assert name.display == "Jamie [31m Smith" and "\x1b" not in name.label and "\u202e" not in name.label


def test_an_unreadable_file_is_a_clear_error(tmp_path):
    with pytest.raises(NamesError, match="cannot read the MIS export"):
        read_mis_csv(tmp_path / "missing.csv")


def test_the_mis_wins_then_the_directory_then_the_logon():
    asked = []

    def directory(logon):
        asked.append(logon)
        return {"jsmith": ("J Smith (AD)", "Staff"), "dir1": ("Dee Rector", "Year 5")}.get(logon)
    book = NameBook({"jsmith": Name("Jamie Smith", "Year 4", "mis")}, directory)
    assert book.name("JSmith").label == "Jamie Smith (Year 4)"
    assert book.name("dir1") == Name("Dee Rector", "Year 5", "directory")
    assert book.name("nobody").label == "nobody"
    assert book.name(None) is None
    assert asked == ["dir1", "nobody"]


def test_directory_answers_are_remembered_for_a_while():
    clock = [0.0]
    asked = []
    book = NameBook(lookup=lambda u: asked.append(u) or ("Name", None), ttl=60, clock=lambda: clock[0])
    for _ in range(3):
        book.name("pupil9")
    assert asked == ["pupil9"]
    clock[0] = 61
    book.name("pupil9")
    assert asked == ["pupil9", "pupil9"]


def test_find_logons_by_part_of_a_name():
    book = NameBook(parse_mis_csv("Logon,Forename,Surname\njsmith,Jamie,Smith\njjones,Jamie,Jones\nakhan,Ali,Khan\n"))
    assert book.logons_named("jamie") == ["jjones", "jsmith"]
    assert book.logons_named("SMITH") == ["jsmith"]
    assert book.logons_named("j") == []          # too short to mean anyone
