

def test_profile_by_user_group_pattern_default(snapshot):
    r = snapshot.resolver
    assert r.resolve("teacher1") == ("staff", "user teacher1")
    assert r.resolve("TEACHER1")[0] == "staff"          # Windows logons are case-insensitive
    assert r.resolve("pupil1") == ("pupil", "group year4")
    assert r.resolve("Supply3") == ("supply", "pattern Supply*")
    assert r.resolve("supply12")[0] == "supply"
    assert r.resolve("stranger")[0] == "pupil"           # the fail-closed default
    assert r.resolve("x", frozenset({"year4"}))[0] == "pupil"  # directory groups count too


def test_subnet_map(snapshot):
    s = snapshot.subnets
    ident = s.lookup("10.9.3.4")
    assert (ident.profile, ident.source, ident.rule) == ("guest", "subnet", "subnet iPads")
    assert s.lookup("::ffff:10.9.3.4").profile == "guest"
    assert s.lookup("192.168.1.1") is None
    assert s.lookup("not an ip") is None


def test_unidentified_gets_default(snapshot):
    ident = snapshot.resolver.unidentified()
    assert (ident.username, ident.profile, ident.source) == (None, "pupil", "default")


def test_one_spelling_of_a_name_on_every_identity(snapshot):
    r = snapshot.resolver
    assert r.identify("PUPIL1").username == "pupil1"          # the users file's spelling
    assert r.identify("supply3").username == "Supply3"
    assert r.identify("Teacher1", "logon-feed").username == "teacher1"
    assert r.identify("SomeOne").username == "someone"        # known nowhere: lower case
    assert r.unverified("PUPIL1", "directory unreachable").username == "pupil1"


def test_config_spelling_when_no_back_end_knows_the_name(tmp_path):
    from conftest import make_school

    from schoolproxy.snapshot import build_snapshot
    cfg = make_school(tmp_path, users=("pupil1",))
    cfg.write_text(cfg.read_text().replace("users: {teacher1: staff}", "users: {Teacher1: staff}"))
    assert build_snapshot(cfg).resolver.identify("TEACHER1").username == "Teacher1"
