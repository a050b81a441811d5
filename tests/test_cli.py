"""The schoolproxy command as a network manager runs it (a real subprocess)."""

import subprocess
import sys
import tarfile
from pathlib import Path

from conftest import PASSWORD, make_school

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent / "schoolproxy"


def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, input=input, cwd=ROOT, timeout=60)


def test_check_example_config_passes():
    r = run("check", "--config", "config/schoolproxy.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "configuration valid" in r.stdout and " 0 failed" in r.stdout
    assert "no upstream filter" in r.stdout  # the example ships without a Smoothwall address
    assert "phrase lists" not in r.stdout  # the example's phrase lists load


def test_check_warns_when_phrase_lists_are_missing(school):
    r = run("check", "--config", str(school))  # the test school has no phrase list directory
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning: phrase lists not loaded, search alerts would be off:" in r.stdout
    assert "phrase list directory not found" in r.stdout


def test_check_reports_failing_policy_test(school):
    school.write_text(school.read_text().replace('url: "http://socialsite.test/", expect: block',
                                                 'url: "http://socialsite.test/", expect: allow'))
    r = run("check", "--config", str(school))
    assert r.returncode == 1
    assert "FAIL tests[0] user pupil1 (pupil) http://socialsite.test/: expected allow, got block" in r.stdout


def test_check_refuses_bad_config_with_path(school):
    school.write_text(school.read_text().replace("block_categories: [adult,", "block_categories: [adultt,"))
    r = run("check", "--config", str(school))
    assert r.returncode == 2
    assert "profiles.pupil.block_categories[0]: unknown category 'adultt'" in r.stderr
    assert "Traceback" not in r.stderr


def test_explain_prints_trace_and_verdict(school):
    r = run("explain", "--config", str(school), "--user", "pupil1", "https://www.facebook.com/")
    assert r.returncode == 0, r.stderr
    assert "pupil1 → profile pupil (group year4)" in r.stdout
    assert "3. category rule: social-networking is blocked for pupil" in r.stdout
    assert "verdict:  BLOCK — rule category:social-networking" in r.stdout
    assert "https:    intercepted" in r.stdout


def test_explain_at_time_and_passthrough(lunchtime_school):
    school = lunchtime_school
    r = run("explain", "--config", str(school), "--user", "pupil1", "--at", "2026-11-25 12:15", "http://gamesite.test/")
    assert "time window 'lunchtime' is in force at Wed 12:15" in r.stdout and "ALLOW" in r.stdout
    r = run("explain", "--config", str(school), "--user", "teacher1", "https://bank.test/")
    assert "passed through (not decrypted)" in r.stdout
    r = run("explain", "--config", str(school), "--user", "pupil1", "--at", "lunchtime", "http://x.test/")
    assert r.returncode == 2 and "--at 'lunchtime'" in r.stderr


def test_lists_import_ut1_tarball_and_stats(tmp_path):
    ut1 = tmp_path / "src" / "blacklists"
    for cat, entries in {"social_networks": "facebook.com\nexample.org\n", "adult": "porn.test\n",
                         "cooking": "recipes.test\n"}.items():
        (ut1 / cat).mkdir(parents=True)
        (ut1 / cat / "domains").write_text(entries)
    tgz = tmp_path / "blacklists.tar.gz"
    with tarfile.open(tgz, "w:gz") as t:
        t.add(ut1, arcname="blacklists")
    dest = tmp_path / "var" / "ut1"
    r = run("lists", "import", str(tgz), "--dest", str(dest))
    assert r.returncode == 0, r.stderr
    assert "imported 4 entries" in r.stdout and (dest / "social_networks" / "domains").is_file()
    school = make_school(tmp_path / "school")
    school.write_text(school.read_text().replace("sources: [lists]", f"sources: [lists, {dest}]"))
    r = run("explain", "--config", str(school), "--user", "pupil1", "http://example.org/")
    assert "social-networking" in r.stdout and "BLOCK" in r.stdout  # UT1 name mapped through aliases
    r = run("lists", "stats", "--config", str(school))
    assert "cooking" in r.stdout


def test_lists_import_rejects_garbage(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball")
    r = run("lists", "import", str(junk), "--dest", str(tmp_path / "d"))
    assert r.returncode == 2 and "not a readable tar archive" in r.stderr


def test_users_add_writes_bcrypt_never_the_password(school):
    users = school.parent / "users.htpasswd"
    r = run("users", "add", "newkid", "--file", str(users), "--password-stdin", input="Pa55word!\n")
    assert r.returncode == 0, r.stderr
    text = users.read_text()
    assert "newkid:$2b$" in text and "Pa55word!" not in text
    assert (users.stat().st_mode & 0o777) == 0o600
    from schoolproxy.identity.userfile import UsersFile
    assert UsersFile(users).check("newkid", "Pa55word!") and UsersFile(users).check("pupil1", PASSWORD)


def test_decision_log_records_why_the_policy_changed(school):
    r = run("decisions", "add", "YouTube allowed for staff", "--why", "Head asked: lesson videos", "--by", "ndavies",
            "--config", str(school))
    assert r.returncode == 0 and "decision 1 recorded" in r.stdout, r.stderr
    r = run("decisions", "add", "Games unblocked", "--why", "  ", "--config", str(school))
    assert r.returncode == 2 and "rationale" in r.stderr                 # a change without a reason is refused
    r = run("decisions", "list", "--since", "7d", "--config", str(school))
    assert r.returncode == 0 and "ndavies: YouTube allowed for staff" in r.stdout
    assert "why: Head asked: lesson videos" in r.stdout and "Games unblocked" not in r.stdout
    r = run("decisions", "list", "--since", "last tuesday", "--config", str(school))
    assert r.returncode != 0 and "cannot read the time" in r.stderr
