"""Files under the state directory are private to the service user; `check` names what is not."""

import os
import stat
import subprocess
import sys
from pathlib import Path

from conftest import make_school
from sqlalchemy import text

from schoolproxy.config import load_config
from schoolproxy.private import exposed, private_dir, private_file, private_umask
from schoolproxy.records import open_database, upgrade
from schoolproxy.records.spool import Spool

BIN = Path(sys.executable).parent / "schoolproxy"


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_private_file_is_created_0600_whatever_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        f = private_file(tmp_path / "state" / "x")
    finally:
        os.umask(old)
    assert mode(f) == 0o600 and mode(f.parent) == 0o700


def test_private_file_tightens_an_existing_file_of_ours(tmp_path):
    f = tmp_path / "x"
    f.write_text("secret")
    f.chmod(0o644)
    private_file(f)
    assert mode(f) == 0o600 and f.read_text() == "secret"


def test_private_dir_tightens_only_when_asked(tmp_path):
    d = tmp_path / "shared"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    private_dir(d)
    assert mode(d) == 0o755
    private_dir(d, tighten=True)
    assert mode(d) == 0o700


def test_private_umask_restores_the_callers(tmp_path):
    old = os.umask(0o022)
    try:
        with private_umask():
            (tmp_path / "inside").write_text("x")
        (tmp_path / "after").write_text("x")
    finally:
        os.umask(old)
    assert mode(tmp_path / "inside") == 0o600 and mode(tmp_path / "after") == 0o644


def test_sqlite_database_and_its_wal_and_shm_are_0600_under_a_loose_umask(tmp_path):
    old = os.umask(0o022)
    try:
        db = tmp_path / "var" / "records.db"
        db.parent.mkdir()
        engine = open_database(f"sqlite:///{db}")
        upgrade(engine)
        with engine.connect() as conn:  # keep a connection open so -wal and -shm exist
            conn.execute(text("SELECT count(*) FROM requests"))
            files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
            assert all(f.exists() for f in files)
            assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
        engine.dispose()
    finally:
        os.umask(old)


def test_an_existing_world_readable_database_is_tightened_when_opened(tmp_path):
    db = tmp_path / "records.db"
    upgrade(open_database(f"sqlite:///{db}"))
    db.chmod(0o644)
    open_database(f"sqlite:///{db}")
    assert mode(db) == 0o600


def test_spool_directory_is_private(tmp_path):
    old = os.umask(0o022)
    try:
        spool = Spool(tmp_path / "spool")
        spool.append([{"ref": "X"}])
    finally:
        os.umask(old)
    assert mode(spool.dir) == 0o700 and mode(spool.path) == 0o600


def test_exposed_names_readable_secrets_and_the_fix(tmp_path):
    cfg = make_school(tmp_path)
    (tmp_path / "users.htpasswd").chmod(0o644)
    (tmp_path / "records.db").write_bytes(b"")
    (tmp_path / "records.db").chmod(0o644)
    warnings = exposed(load_config(cfg))
    assert any("users file (password hashes)" in w and "chmod 600" in w and "0644" in w for w in warnings)
    assert any(w.startswith(f"records database {tmp_path / 'records.db'}") for w in warnings)
    (tmp_path / "users.htpasswd").chmod(0o600)
    (tmp_path / "records.db").chmod(0o600)
    assert exposed(load_config(cfg)) == []


def test_check_warns_about_a_readable_users_file(tmp_path):
    cfg = make_school(tmp_path)
    (tmp_path / "users.htpasswd").chmod(0o644)
    r = subprocess.run([str(BIN), "check", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"warning: users file (password hashes) {tmp_path / 'users.htpasswd'} can be read by other local " \
           f"accounts (mode 0644): chmod 600 {tmp_path / 'users.htpasswd'}" in r.stdout


def test_cli_creates_the_database_private(tmp_path):
    cfg = make_school(tmp_path)
    r = subprocess.run([str(BIN), "db", "upgrade", "--config", str(cfg)], capture_output=True, text=True,
                       timeout=60, preexec_fn=lambda: os.umask(0o022))
    assert r.returncode == 0, r.stdout + r.stderr
    assert mode(tmp_path / "records.db") == 0o600


def test_the_service_groups_read_access_is_not_exposure(tmp_path):
    from schoolproxy.private import readable_by_others
    f = tmp_path / "secret"
    f.write_text("x")
    f.chmod(0o640)
    os.chown(f, -1, os.getegid())
    assert not readable_by_others(f)
    f.chmod(0o604)
    assert readable_by_others(f)
