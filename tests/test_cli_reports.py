"""``schoolproxy report user|ref|blocked`` as the DSL, the head and the network manager run them (a real
subprocess): who is looking is said with --by, and they see the browsing the console would show them —
pupils' to the DSL, staff's to the head alone, no one's to the network manager, who has the figures
instead. Every look and every refusal is in the access audit against a name. A logon given its role by a
directory group (role_groups, a real slapd) is accepted — by unblock approve and refuse too — and refused
plainly when the directory is down."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from console_school import World, add_directory, add_record

from schoolproxy.records import unblock

BIN = Path(sys.executable).parent / "schoolproxy"
BLOCK = {"action": "block", "rule": "category:social-networking", "categories": ("social-networking",)}


@pytest.fixture
def world(tmp_path):
    return World(tmp_path)


def run(world, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *args, "--config", str(world.config)], capture_output=True, text=True,
                          timeout=60)


def browsing(world) -> tuple[dict, dict, dict]:
    """A pupil's block, a teacher's, and one of a new teacher the config does not know (so a pupil, by the
    default profile), whose records say staff: not the DSL's to see (nor the head's alone, as in the console)."""
    return (add_record(world.db, username="pupil1", host="pupil-site.test", **BLOCK),
            add_record(world.db, username="teacher1", profile="staff", host="staff-site.test", **BLOCK),
            add_record(world.db, username="mrnew", profile="staff", host="new-teacher-site.test", **BLOCK))


def audited(world) -> set[tuple[str, str, str]]:
    return {(r["viewer"], r["subject"], r["what"].split(" ")[0] + (" " + r["what"].split(" ")[1]
                                                                  if r["what"].startswith("REFUSED") else ""))
            for r in world.audit_rows()}


def test_a_staff_members_browsing_is_the_heads_alone(world):
    _, teachers_block, _ = browsing(world)
    r = run(world, "report", "user", "pupil1", "--by", "dsl1")
    assert r.returncode == 0 and "pupil-site.test" in r.stdout, r.stderr
    for teacher, host in (("teacher1", "staff-site.test"), ("mrnew", "new-teacher-site.test")):
        refused = run(world, "report", "user", teacher, "--by", "dsl1")
        assert refused.returncode == 2 and "Nothing has been shown" in refused.stderr, refused.stderr
        assert host not in refused.stdout + refused.stderr and refused.stdout == ""
    shown = run(world, "report", "user", "teacher1", "--by", "head1")
    assert shown.returncode == 0 and "staff-site.test" in shown.stdout, shown.stderr
    assert run(world, "report", "user", "pupil1", "--by", "head1").returncode == 2     # pupils: not the head's
    around = run(world, "report", "user", "pupil1", "--around", teachers_block["ref"], "--by", "dsl1")
    assert around.returncode == 1 and around.stdout == ""          # not even when the teacher's block was
    assert run(world, "report", "user", "head1", "--by", "head1").returncode == 2      # never your own
    assert {("Mrs D Lawrence (dsl1)", "pupil1", "history"), ("Mrs D Lawrence (dsl1)", "teacher1", "REFUSED: history"),
            ("Mrs D Lawrence (dsl1)", "mrnew", "REFUSED: history"), ("Mr R Patel (head1)", "teacher1", "history"),
            ("Mr R Patel (head1)", "pupil1", "REFUSED: history")} <= audited(world)


def test_no_one_reads_browsing_without_saying_who_they_are(world):
    browsing(world)
    for by in ((), ("--by", "root"), ("--by", "nobody-here")):
        r = run(world, "report", "user", "pupil1", *by)
        assert r.returncode == 2 and "people:" in r.stderr and "pupil-site.test" not in r.stdout, r.stderr
    assert "say who you are with --by" in run(world, "report", "blocked").stderr
    r = run(world, "report", "user", "pupil1", "--viewer", "dsl1")                     # the older name of --by
    assert r.returncode == 0 and "pupil-site.test" in r.stdout
    assert all(row["viewer"] == "Mrs D Lawrence (dsl1)" for row in world.audit_rows())


def test_a_reference_the_viewer_may_not_see_gets_the_same_answer_as_none(world):
    pupil, teacher, _ = browsing(world)
    shown = run(world, "report", "ref", pupil["ref"], "--by", "dsl1")
    assert shown.returncode == 0 and "pupil-site.test" in shown.stdout and "(1 record)" in shown.stdout
    hidden = run(world, "report", "ref", teacher["ref"], "--by", "dsl1")
    nothing = run(world, "report", "ref", "ZZZZ-ZZZZ-ZZZZ", "--by", "dsl1")
    assert hidden.returncode == nothing.returncode == 1 and hidden.stdout == nothing.stdout == ""
    assert hidden.stderr.replace(teacher["ref"], "ZZZZ-ZZZZ-ZZZZ") == nothing.stderr
    assert "teacher1" not in hidden.stderr and "staff-site.test" not in hidden.stderr
    assert "staff-site.test" in run(world, "report", "ref", teacher["ref"], "--by", "head1").stdout
    assert ("Mrs D Lawrence (dsl1)", "teacher1", "REFUSED: record") in audited(world)


def test_blocked_lists_only_the_people_whose_browsing_is_yours(world):
    browsing(world)
    dsl = run(world, "report", "blocked", "--since", "1d", "--by", "dsl1")
    assert dsl.returncode == 0 and "pupil-site.test" in dsl.stdout, dsl.stderr
    assert "staff-site.test" not in dsl.stdout and "teacher1" not in dsl.stdout and "mrnew" not in dsl.stdout
    assert "2 blocked requests by people whose browsing goes to other people are left out" in dsl.stderr
    head = run(world, "report", "blocked", "--since", "1d", "--csv", "--by", "head1")
    assert "staff-site.test" in head.stdout and "pupil-site.test" not in head.stdout


def test_the_network_manager_sees_counts_never_browsing(world):
    pupil, _, _ = browsing(world)
    for args in (("user", "pupil1"), ("ref", pupil["ref"]), ("blocked",)):
        r = run(world, "report", *args, "--by", "net1")
        assert r.returncode in (1, 2) and r.stdout == "" and "pupil-site.test" not in r.stderr, r.stderr
        assert "report blocked --counts --by net1" in r.stderr and "explain --user" in r.stderr
    counts = run(world, "report", "blocked", "--counts", "--since", "1d", "--by", "net1")
    assert counts.returncode == 0, counts.stderr
    assert "social-networking  3" in counts.stdout and "(3 blocked requests" in counts.stdout, counts.stdout
    assert not any(s in counts.stdout for s in ("pupil1", "teacher1", "mrnew", "site.test"))
    assert run(world, "report", "blocked", "--counts", "--by", "office1").returncode == 2   # no figures either
    assert {("Mr T Evans (net1)", "pupil1", "REFUSED: history"), ("Mr T Evans (net1)", "(figures)", "blocked")} \
        <= audited(world)


@pytest.fixture
def directory_world(tmp_path, own_slapd):
    """The DSL is no one in people:, but in the directory's teaching-staff group, which role_groups makes dsl."""
    world = World(tmp_path, extra="role_groups: {dsl: [teaching-staff]}\n")
    add_directory(world.config, own_slapd)
    return world, own_slapd


def test_a_role_from_a_directory_group_works_with_by_and_a_directory_down_refuses(directory_world):
    world, slapd = directory_world
    browsing(world)
    alert = world.alert()
    r = run(world, "report", "user", "pupil1", "--by", "amiller")
    assert r.returncode == 0 and "pupil-site.test" in r.stdout, r.stderr
    assert run(world, "report", "user", "teacher1", "--by", "amiller").returncode == 2     # a DSL's, no more
    listed = run(world, "alerts", "list", "--by", "AMiller")
    assert listed.returncode == 0 and alert["ref"] in listed.stdout, listed.stderr
    # Named as the directory names them, as the console does.
    assert ("Mrs A Miller (amiller)", "pupil1", "history") in audited(world)
    asked = unblock.add_request(world.db, username="pupil1", profile="pupil", client_ip="10.0.20.15", device=None,
                                host="gamesite.test", url="http://gamesite.test/", block_ref=None,
                                rule="category:games", categories="games", reason="For my project",
                                per_user_per_day=10)
    refused = run(world, "unblock", "refuse", asked["ref"], "--by", "amiller", "--why", "Not for school work")
    assert refused.returncode == 0, refused.stderr                       # the DSL is an approver, by the group
    assert "by Mrs A Miller (amiller)" in run(world, "unblock", "list", "--status", "all", "--by", "dsl1").stdout
    r = run(world, "report", "user", "pupil1", "--by", "jsmith")          # in the directory, in no role's group
    assert r.returncode == 2 and "not a person in the config's people: with a role" in r.stderr
    slapd.stop()
    before = len(world.audit_rows())
    for args in (("report", "user", "pupil1"), ("alerts", "list")):
        down = run(world, *args, "--by", "amiller")
        assert down.returncode == 2 and down.stdout == "", down.stdout
        assert "the directory (ldap://127.0.0.1:" in down.stderr and "is not answering" in down.stderr
        assert "Traceback" not in down.stderr and "pupil-site.test" not in down.stderr
    assert len(world.audit_rows()) == before
    r = run(world, "report", "user", "pupil1", "--by", "dsl1")             # in people: goes on, and is told
    assert r.returncode == 0 and "pupil-site.test" in r.stdout
    assert "going by people: alone" in r.stderr and "Traceback" not in r.stderr


def week_of_concerns(world) -> tuple[dict, dict, dict]:
    """A pupil's concern and a teacher's, both left for the digest, and a high one about the teacher that
    reached no one (no email is set up)."""
    return (world.alert(severity="medium", theme="bullying", term="everyone hates me"),
            world.alert(role="staff", username="teacher1", severity="medium", theme="gambling", term="casino bonus"),
            world.alert(role="staff", username="teacher1", term="how to kill myself"))


def test_the_weekly_digest_shows_each_person_the_concerns_routed_to_them(world):
    pupils, teachers, unseen = week_of_concerns(world)
    nobody = run(world, "report", "weekly")
    assert nobody.returncode == 2 and nobody.stdout == "" and "say who you are with --by" in nobody.stderr
    dsl = run(world, "report", "weekly", "--by", "dsl1")
    assert dsl.returncode == 0 and pupils["ref"] in dsl.stdout and "everyone hates me" in dsl.stdout, dsl.stderr
    assert "teacher1" not in dsl.stdout and "casino" not in dsl.stdout and unseen["ref"] not in dsl.stdout
    head = run(world, "report", "weekly", "--by", "head1")
    assert head.returncode == 0 and "casino bonus" in head.stdout and teachers["ref"] in head.stdout
    assert "NOT SEEN BY ANYONE YET: 1" in head.stdout and unseen["ref"] in head.stdout
    assert "pupil1" not in head.stdout and "everyone hates me" not in head.stdout
    for figures_only in ("net1", "gov1"):
        r = run(world, "report", "weekly", "--by", figures_only)
        assert r.returncode == 0 and "figures only" in r.stdout and "Bullying: 1" in r.stdout, r.stderr
        assert "NOT SEEN BY ANYONE YET: 1" in r.stdout
        assert not any(s in r.stdout for s in ("pupil1", "teacher1", "hates", "casino", pupils["ref"]))
    refused = run(world, "report", "weekly", "--by", "office1")
    assert refused.returncode == 2 and refused.stdout == "" and "Nothing has been shown" in refused.stderr
    assert {("Mrs D Lawrence (dsl1)", "(alerts)", "weekly"), ("Mr R Patel (head1)", "(alerts)", "weekly"),
            ("Mr T Evans (net1)", "(figures)", "weekly"), ("Mrs S Hughes (office1)", "(alerts)", "REFUSED: weekly")} \
        <= audited(world)


def test_sending_the_digest_needs_no_one_and_prints_no_names(world):
    """As a scheduled job runs it: queued for every address, each with its own share, nothing named printed."""
    week_of_concerns(world)
    world.config.write_text(world.config.read_text().replace(
        "alerts:\n", "alerts:\n  recipients: {dsl: [dsl@s.test], computing_lead: [cl@s.test], head: [h@s.test], "
        "slt: [slt@s.test]}\n", 1))
    unknown = run(world, "report", "weekly", "--send", "--by", "root")       # refused before anything is queued
    assert unknown.returncode == 2 and unknown.stdout == ""
    sent = run(world, "report", "weekly", "--send")
    assert sent.returncode == 0 and "waits in the outbox for 3 recipient(s)" in sent.stdout, sent   # no email yet
    assert "Weekly online-safety digest" in sent.stdout and "2 alert(s)" in sent.stdout
    assert not any(s in sent.stdout for s in ("pupil1", "teacher1", "hates", "casino", "kill"))
    from sqlalchemy import select

    from schoolproxy.records.schema import alert_outbox
    with world.db.connect() as conn:
        bodies = {r.recipient: r.body for r in conn.execute(select(alert_outbox).where(alert_outbox.c.kind == "digest"))}
    assert "casino bonus" in bodies["h@s.test"] and "everyone hates me" not in bodies["h@s.test"]
    assert "everyone hates me" in bodies["dsl@s.test"] and "casino" not in bodies["dsl@s.test"]
    again = run(world, "report", "weekly", "--send").stdout      # the unseen one again, to the head alone
    assert "0 alert(s) — 1 HIGH ALERT(S) NOT SEEN BY ANYONE" in again and "for 1 recipient(s)" in again


def ask_to_unblock(world, reason: str = "For my project") -> dict:
    return unblock.add_request(world.db, username="pupil1", profile="pupil", client_ip="10.0.20.15", device=None,
                               host="gamesite.test", url="http://gamesite.test/level1", block_ref=None,
                               rule="category:games", categories="games", reason=reason, per_user_per_day=10)


def test_unblock_requests_are_listed_to_the_approvers_alone(world):
    asked = ask_to_unblock(world, "For my dinosaur project")
    for approver in ("dsl1", "lead1"):                                   # unblock.approvers: dsl, computing_lead
        r = run(world, "unblock", "list", "--by", approver)
        assert r.returncode == 0 and asked["ref"] in r.stdout and "dinosaur project" in r.stdout, r.stderr
    for other in ("head1", "net1", "gov1", "office1"):
        r = run(world, "unblock", "list", "--by", other)
        assert r.returncode == 2 and r.stdout == "" and "only computing_lead and dsl" in r.stderr, r.stderr
        assert "pupil1" not in r.stderr and "gamesite" not in r.stderr and "dinosaur" not in r.stderr
    for nobody in ((), ("--by", "root"), ("--by", "pupil1")):
        r = run(world, "unblock", "list", *nobody)
        assert r.returncode == 2 and r.stdout == "" and "--by" in r.stderr
    assert {("Mrs D Lawrence (dsl1)", "(unblock requests)", "unblock"),
            ("Mr T Evans (net1)", "(unblock requests)", "REFUSED: unblock")} <= audited(world)


@pytest.fixture
def teacher_world(tmp_path, own_slapd):
    """amiller holds no place in people:, but the directory's teaching-staff group makes them a teacher and
    an office keeper of the register (role_groups)."""
    world = World(tmp_path, extra="role_groups: {teacher: [teaching-staff], office: [teaching-staff]}\n")
    add_directory(world.config, own_slapd)
    return world


def test_a_role_from_a_directory_group_cancels_a_visit_and_is_a_teacher(teacher_world):
    world = teacher_world
    import datetime as dt
    day = f"{dt.datetime.now() + dt.timedelta(days=3):%d/%m/%Y}"
    added = run(world, "register", "add", "--logon", "Supply3", "--person", "Mr B Future", "--from", f"{day} 08:30",
                "--to", f"{day} 15:30", "--by", "office1")
    assert added.returncode == 0, added.stderr
    assert run(world, "register", "cancel", "--logon", "Supply3", "--by", "dsl1").returncode == 2   # not a keeper
    r = run(world, "register", "cancel", "--logon", "Supply3", "--on", day, "--by", "amiller")
    assert r.returncode == 0 and "by Mrs A Miller (amiller)" in r.stdout, r.stderr
    # A teacher by their group: refused the pupils' requests, told what is theirs instead; their classes come
    # from people: alone, as on the console's page, so they have none here.
    ask_to_unblock(world)
    listed = run(world, "unblock", "list", "--by", "amiller")
    assert listed.returncode == 2 and "unblock class SITE --class CLASS --by amiller" in listed.stderr
    allow = run(world, "unblock", "class", "gamesite.test", "--class", "year4", "--by", "amiller", "--why", "A lesson")
    assert allow.returncode == 2 and "Mrs A Miller may allow sites for their own classes only (none in the config)" \
        in allow.stderr, allow.stderr
