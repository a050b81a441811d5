"""The schoolproxy command as a network manager runs it (a real subprocess)."""

import contextlib
import datetime as dt
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from conftest import PASSWORD, add_people, make_school

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


# -- everyday use on a gateway (issue 13 item 6) -------------------------------------------------------------
def test_the_config_is_found_without_config(tmp_path, monkeypatch):
    from schoolproxy.cli import common
    from schoolproxy.config import ConfigError
    etc, local = tmp_path / "etc" / "schoolproxy.yaml", tmp_path / "config" / "schoolproxy.yaml"
    monkeypatch.setattr(common, "CONFIG_PLACES", (etc, local))
    monkeypatch.delenv("SCHOOLPROXY_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="give --config FILE, or set SCHOOLPROXY_CONFIG"):
        common.find_config(None)
    local.parent.mkdir()
    local.write_text("x")
    assert common.find_config(None) == str(local)
    etc.parent.mkdir()
    etc.write_text("x")
    assert common.find_config(None) == str(etc)                          # /etc before ./config
    monkeypatch.setenv("SCHOOLPROXY_CONFIG", "/somewhere/else.yaml")
    assert common.find_config(None) == "/somewhere/else.yaml"            # the environment before both
    assert common.find_config("given.yaml") == "given.yaml"              # --config before everything


def test_a_command_finds_the_config_from_the_environment_and_the_working_directory(tmp_path):
    import os
    school = make_school(tmp_path / "school")
    env = {k: v for k, v in os.environ.items() if k != "SCHOOLPROXY_CONFIG"}
    r = subprocess.run([str(BIN), "check"], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                       env={**env, "SCHOOLPROXY_CONFIG": str(school)})
    assert r.returncode == 0 and f"{school}: configuration valid" in r.stdout, r.stdout + r.stderr
    if not Path("/etc/schoolproxy/schoolproxy.yaml").exists():  # a gateway's own would come first
        r = subprocess.run([str(BIN), "check"], capture_output=True, text=True, cwd=ROOT, timeout=60, env=env)
        assert r.returncode == 0 and "config/schoolproxy.yaml: configuration valid" in r.stdout, r.stdout + r.stderr
        r = subprocess.run([str(BIN), "check"], capture_output=True, text=True, cwd=tmp_path, timeout=60, env=env)
        assert r.returncode == 2 and "no configuration found" in r.stderr and "Traceback" not in r.stderr


def test_uk_dates_are_read_wherever_a_time_is(lunchtime_school):
    school = lunchtime_school
    from zoneinfo import ZoneInfo

    from schoolproxy.cli.common import when
    tz = ZoneInfo("Europe/London")
    assert when("02/12/2026 10:42", tz) == when("2026-12-02 10:42", tz) == dt.datetime(2026, 12, 2, 10, 42, tzinfo=tz)
    assert when("2/12/2026", tz) == dt.datetime(2026, 12, 2, tzinfo=tz)   # day first, as the UK writes it
    assert when("02/07/2026 9:05", tz) == dt.datetime(2026, 7, 2, 9, 5, tzinfo=tz)
    r = run("explain", "--config", str(school), "--user", "pupil1", "--at", "25/11/2026 12:15", "http://gamesite.test/")
    assert r.returncode == 0 and "time window 'lunchtime' is in force at Wed 12:15" in r.stdout, r.stdout + r.stderr
    r = run("register", "add", "--config", str(school), "--logon", "Supply1", "--person", "Ms A Khan",
            "--from", "25/11/2026 08:30", "--to", "25/11/2026 15:30", "--by", "office")
    assert r.returncode == 0 and "Wed 25 Nov 08:30" in r.stdout, r.stdout + r.stderr
    r = run("register", "who", "--config", str(school), "--logon", "Supply1", "--at", "25/11/2026 10:00")
    assert r.returncode == 0 and "Ms A Khan" in r.stdout
    add_people(school)
    r = run("report", "user", "pupil1", "--config", str(school), "--since", "01/11/2026", "--until", "30/11/2026 23:00",
            "--by", "clawrence")
    assert r.returncode == 0 and "(0 records)" in r.stdout, r.stderr
    r = run("report", "user", "pupil1", "--config", str(school), "--since", "31/02/2026", "--by", "clawrence")
    assert r.returncode == 2 and "cannot read the time '31/02/2026'" in r.stderr


def test_report_user_around_an_alert_a_record_or_a_time(school):
    from console_school import add_alert, add_record, open_db
    cfg, db = open_db(add_people(school))
    t0 = dt.datetime(2026, 12, 2, 10, 42, tzinfo=dt.timezone.utc)  # 10:42 in London in December
    alert = add_alert(db, cfg, when=t0, username="pupil1")
    blocked = add_record(db, when=t0 - dt.timedelta(minutes=20), host="before.test", action="block")
    add_record(db, when=t0 + dt.timedelta(minutes=25), host="after.test")
    add_record(db, when=t0 - dt.timedelta(hours=2), host="earlier.test")
    add_record(db, when=t0 + dt.timedelta(minutes=5), host="someone-else.test", username="pupil2")
    r = run("report", "user", "pupil1", "--around", alert["ref"], "--config", str(school), "--by", "clawrence")
    assert r.returncode == 0, r.stderr
    assert f"pupil1: 30 minutes either side of 02/12/2026 10:42 (alert {alert['ref']})" in r.stdout
    assert all(h in r.stdout for h in ("before.test", "www.google.com", "after.test")), r.stdout
    assert "earlier.test" not in r.stdout and "someone-else.test" not in r.stdout
    r = run("report", "user", "pupil1", "--around", "02/12/2026 10:42", "--minutes", "10", "--config", str(school),
            "--by", "clawrence")
    assert r.returncode == 0 and "www.google.com" in r.stdout and "before.test" not in r.stdout, r.stdout
    r = run("report", "user", "pupil1", "--around", blocked["ref"].lower(), "--minutes", "5", "--config", str(school),
            "--by", "clawrence")
    assert f"(record {blocked['ref']})" in r.stdout and "before.test" in r.stdout and "after.test" not in r.stdout
    r = run("report", "user", "pupil1", "--around", "ZZZZ-ZZZZ-ZZZZ", "--config", str(school), "--by", "clawrence")
    assert r.returncode == 1 and "no alert or record has the reference 'ZZZZ-ZZZZ-ZZZZ'" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    r = run("report", "ref", "ZZZZ-ZZZZ-ZZZZ", "--config", str(school), "--by", "clawrence")
    assert r.returncode == 1 and "no record with the reference 'ZZZZ-ZZZZ-ZZZZ' that you can see" in r.stderr


def test_users_add_list_remove_without_a_terminal_keeping_the_files_owner_and_mode(school):
    import os
    import pwd
    users = school.parent / "users.htpasswd"
    nobody = pwd.getpwnam("nobody")
    os.chown(users, nobody.pw_uid, nobody.pw_gid)   # as a gateway has it: root:schoolproxy 0640, say
    users.chmod(0o640)
    r = run("users", "add", "newkid", "--file", str(users), input="")  # no terminal, no --password-stdin
    assert r.returncode == 2 and "--password-stdin" in r.stderr and "Traceback" not in r.stderr
    r = run("users", "add", "newkid", "--config", str(school), "--password-stdin", input="Pa55word!\n")
    assert r.returncode == 0, r.stderr                                   # the config's users file, found by it
    st = users.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (nobody.pw_uid, nobody.pw_gid, 0o640)
    r = run("users", "list", "--file", str(users))
    assert r.returncode == 0 and r.stdout.split() == ["pupil1", "teacher1", "Supply3", "visitor", "newkid"]
    assert "$2" not in r.stdout                                           # never a hash
    r = run("users", "remove", "NEWKID", "--file", str(users))
    assert r.returncode == 0 and "newkid" not in users.read_text()
    st = users.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (nobody.pw_uid, nobody.pw_gid, 0o640)
    r = run("users", "remove", "newkid", "--file", str(users))
    assert r.returncode == 1 and "has no user 'newkid'" in r.stderr
    from schoolproxy.identity.userfile import UsersFile
    assert UsersFile(users).check("pupil1", PASSWORD) and "newkid" not in UsersFile(users)


def test_no_traceback_when_the_reader_goes_away(school):
    import os
    read, write = os.pipe()
    os.close(read)  # as `schoolproxy ... | head -1` once head has its line
    try:
        r = subprocess.run([str(BIN), "report", "user", "pupil1", "--config", str(add_people(school)), "--by",
                            "clawrence"], stdout=write,
                           stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=60)
    finally:
        os.close(write)
    assert r.returncode == 141 and r.stderr == "", r.stderr


def test_start_up_says_nothing_of_migrations(school):
    from proxyproc import ProxyProcess
    r = run("db", "upgrade", "--config", str(school))
    assert r.returncode == 0 and r.stderr == "" and "Running upgrade" not in r.stdout
    (school.parent / "records.db").unlink()
    proxy = ProxyProcess.schoolproxy_run(school, school.parent)
    try:
        deadline = time.monotonic() + 30
        while "records database: schema created" not in proxy.log():  # one line of ours instead
            assert time.monotonic() < deadline, proxy.log()
            time.sleep(0.2)
        log = proxy.log()
    finally:
        proxy.stop()
    for noise in ("Context impl", "Will assume", "Running upgrade"):
        assert noise not in log, log


@contextlib.contextmanager
def dropping_port():
    """A port on 127.0.0.1 that takes no new connection and never answers one, as a database host behind a
    firewall that drops packets: a listening socket whose accept queue is full, for which Linux drops
    every further SYN (the client keeps resending, unanswered)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    address = server.getsockname()
    fillers = []
    try:
        while True:   # fill the queue until a connection goes unanswered
            probe = socket.socket()
            probe.settimeout(0.5)
            fillers.append(probe)
            try:
                probe.connect(address)
            except TimeoutError:
                break
            if len(fillers) > 8:
                pytest.skip("this kernel answers every connection to a full accept queue")
        yield address
    finally:
        for s in fillers:
            s.close()
        server.close()


def test_check_and_reports_say_plainly_when_the_records_database_does_not_answer(school):
    import yaml
    add_people(school)
    with dropping_port() as (host, port):
        data = yaml.safe_load(school.read_text())
        data["records"]["database"] = f"postgresql+psycopg://schoolproxy@{host}:{port}/schoolproxy"
        school.write_text(yaml.safe_dump(data, sort_keys=False))
        unreachable = f"cannot reach the records database at {host}:{port} (timed out after 5 s)"
        # run() gives up after 60 s: without a connect timeout psycopg waits 130 s.
        r = run("check", "--config", str(school))
        assert f"warning: alerts: {unreachable}" in r.stdout, r.stdout + r.stderr
        assert "Traceback" not in r.stderr
        r = run("report", "user", "pupil1", "--config", str(school), "--by", "clawrence")
        assert r.returncode == 2 and r.stderr == f"error: {unreachable}\n", r.stderr
