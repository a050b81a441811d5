"""``make install`` into a temporary root (a container-like tree with its own /etc/passwd): the layout,
owners and modes, then an upgrade over it that keeps the config and the data and migrates the database."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import require
from pydantic import BaseModel

from schoolproxy.config import Config, parse_config
from schoolproxy.gateway.install import installed_config
from schoolproxy.records.database import current_revision, head_revision, open_database
from schoolproxy.snapshot import build_snapshot

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = ("/etc/schoolproxy/", "/var/lib/schoolproxy/", "/var/log/schoolproxy/", "/opt/schoolproxy/share/")


def config_paths(cfg: Config) -> dict[str, Path]:
    """Every file or directory the config points at, defaults included: found by walking the model, so
    a setting added later is checked too."""
    found: dict[str, Path] = {"records.database": Path(cfg.records.database.removeprefix("sqlite:///"))}

    def walk(value, where: str) -> None:
        if isinstance(value, Path):
            found[where] = value
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                if (where, name) != ("", "base_dir"):
                    walk(getattr(value, name), f"{where}.{name}" if where else name)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, f"{where}[{i}]")
        elif isinstance(value, dict):
            for k, item in value.items():
                walk(item, f"{where}.{k}")
    walk(cfg, "")
    return {k: cfg.path(v) for k, v in found.items()}


def test_the_installed_config_points_every_path_at_the_installed_layout():
    text = installed_config((ROOT / "config" / "schoolproxy.yaml").read_text())
    cfg = parse_config(text, Path("/etc/schoolproxy/schoolproxy.yaml"))
    for key, path in config_paths(cfg).items():
        assert str(path).startswith(ALLOWED), f"{key}: {path}"
    assert "../" not in text and "changeme" not in text
    assert cfg.lists.update is not None and Path("/var/lib/schoolproxy/lists/ut1") in cfg.lists.sources
    assert cfg.records.database == "sqlite:////var/lib/schoolproxy/schoolproxy.db"
    assert "schoolproxy check --config" not in text


def make_root(tmp_path: Path) -> Path:
    """A tree with the /etc files a Debian system has before the install adds its user."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    (root / "etc" / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc" / "gshadow").write_text("root:*::\n")
    return root


def make_install(root: Path) -> subprocess.CompletedProcess:
    # The Makefile finds a Python 3.12 as it would in a network manager's shell.
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    r = subprocess.run(["make", "-s", "install", f"DESTDIR={root}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=900, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def user_ids(root: Path) -> tuple[int, int]:
    [entry] = [line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines()
               if line.startswith("schoolproxy:")]
    assert entry[5] == "/var/lib/schoolproxy" and entry[6] == "/usr/sbin/nologin"
    assert int(entry[2]) < 1000  # a system user
    return int(entry[2]), int(entry[3])


def owner_mode(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def load_rooted(config: Path, root: Path):
    """The installed config, loaded here with its absolute paths inside ``root`` (a copy beside it, so its
    relative paths still find the users file)."""
    text = config.read_text()
    for top in ("/opt/schoolproxy", "/var/lib/schoolproxy", "/var/log/schoolproxy"):
        text = text.replace(top, f"{root}{top}")
    copy = config.with_name(".rooted-for-test.yaml")
    copy.write_text(text)
    try:
        return build_snapshot(copy)
    finally:
        copy.unlink()


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if os.geteuid() != 0:
        require("installing (useradd, chown) needs root")
    if shutil.which("useradd") is None:
        require("useradd is not installed (apt-get install passwd)")
    tmp = tmp_path_factory.mktemp("install")
    root = make_root(tmp)
    result = make_install(root)
    return root, tmp, result


@pytest.mark.e2e
def test_make_install_lays_out_the_gateway(installed):
    root, tmp, result = installed
    uid, gid = user_ids(root)
    expected = {
        "etc/schoolproxy": (0, gid, 0o750),
        "etc/schoolproxy/schoolproxy.yaml": (0, gid, 0o640),
        "etc/schoolproxy/users.htpasswd": (0, gid, 0o640),
        "etc/schoolproxy/feed-secret": (0, gid, 0o640),
        "var/lib/schoolproxy": (uid, gid, 0o700),
        "var/lib/schoolproxy/ca": (uid, gid, 0o700),
        "var/lib/schoolproxy/spool": (uid, gid, 0o700),
        "var/lib/schoolproxy/lists/ut1": (uid, gid, 0o700),
        "var/lib/schoolproxy/lists-cache": (uid, gid, 0o700),
        "var/lib/schoolproxy/schoolproxy.db": (uid, gid, 0o600),
        "var/log/schoolproxy": (uid, gid, 0o750),
        "etc/systemd/system/schoolproxy.service": (0, 0, 0o644),
        "etc/systemd/system/schoolproxy-console.service": (0, 0, 0o644),
        "etc/systemd/system/schoolproxy-lists-update.service": (0, 0, 0o644),
        "etc/systemd/system/schoolproxy-lists-update.timer": (0, 0, 0o644),
        "etc/systemd/system/schoolproxy-firewall.service": (0, 0, 0o644),
        "etc/logrotate.d/schoolproxy": (0, 0, 0o644),
        "etc/default/schoolproxy": (0, 0, 0o644),
        "opt/schoolproxy/share/filterlists/categories.yaml": (0, 0, 0o644),
    }
    found = {rel: owner_mode(root / rel) for rel in expected}
    assert found == expected
    assert (root / "etc/schoolproxy/users.htpasswd").read_text() == ""  # no demo accounts on a gateway
    assert len((root / "etc/schoolproxy/feed-secret").read_text().strip()) >= 32
    assert os.readlink(root / "usr/local/bin/schoolproxy") == "/opt/schoolproxy/venv/bin/schoolproxy"
    r = subprocess.run([str(root / "opt/schoolproxy/venv/bin/schoolproxy"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "doctor" in r.stdout
    engine = open_database(f"sqlite:///{root}/var/lib/schoolproxy/schoolproxy.db")
    assert current_revision(engine) == head_revision()
    # The installed config is the example, pointed at the layout: it loads and its policy tests pass.
    snap = load_rooted(root / "etc/schoolproxy/schoolproxy.yaml", root)
    assert all(r.passed for r in snap.run_tests()) and len(snap.lists) > 100
    assert "changeme" not in (root / "etc/schoolproxy/schoolproxy.yaml").read_text()


@pytest.mark.e2e
def test_units_are_valid_systemd_units(installed, tmp_path):
    root, _, _ = installed
    if shutil.which("systemd-analyze") is None:
        require("systemd-analyze is not installed (apt-get install systemd)")
    for unit in (root / "etc/systemd/system").glob("schoolproxy*"):
        (tmp_path / unit.name).write_text(unit.read_text().replace("/opt/schoolproxy", f"{root}/opt/schoolproxy"))
    r = subprocess.run(["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.iterdir())],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
    service = (root / "etc/systemd/system/schoolproxy.service").read_text()
    for hardening in ("User=schoolproxy", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                      "CapabilityBoundingSet=\n", "ReadWritePaths=/var/lib/schoolproxy", "--workers ${SCHOOLPROXY_WORKERS}"):
        assert hardening in service


@pytest.mark.e2e
def test_an_upgrade_keeps_config_and_data_and_migrates_the_database(installed):
    root, tmp, _ = installed
    # The other tests of this file read the same install: what this one changes is put back afterwards.
    originals = {p: p.read_bytes() for p in (root / "etc/schoolproxy/schoolproxy.yaml",
                                            root / "etc/schoolproxy/users.htpasswd")}
    try:
        upgrade_over_the_install(root)
    finally:
        for p, data in originals.items():
            p.write_bytes(data)


def upgrade_over_the_install(root: Path) -> None:
    uid, gid = user_ids(root)
    config = root / "etc/schoolproxy/schoolproxy.yaml"
    config.write_text(config.read_text().replace("listen_host: 127.0.0.1", "listen_host: 10.0.0.1") + "# my note\n")
    kept = {p: p.read_bytes() for p in (config, root / "etc/schoolproxy/feed-secret")}
    (root / "etc/schoolproxy/users.htpasswd").write_text("jsmith:$2b$04$abc\n")
    db = root / "var/lib/schoolproxy/schoolproxy.db"
    from alembic import command

    from schoolproxy.records.database import _alembic
    engine = open_database(f"sqlite:///{db}")
    with engine.begin() as conn:  # an older schema with a record in it, as a previous version left it
        command.downgrade(_alembic(engine, conn), "0002")
    engine.dispose()
    with sqlite3.connect(db) as c:
        c.execute("INSERT INTO requests (ref, time, username, profile, client_ip, method, scheme, host, port, path, "
                  "bytes, category, categories, action, rule, reason, layer, identity_source) VALUES "
                  "('1BMA-0000-KEEP', '2026-11-30 10:00:00', 'jsmith', 'pupil', '10.0.0.7', 'GET', 'http', "
                  "'www.tiktok.com', 80, '/', 0, 'social-networking', 'social-networking', 'block', 'r', 'x', "
                  "'http', 'proxy-auth')")
    (root / "var/lib/schoolproxy/spool/left-by-root.jsonl").write_text("")  # e.g. a command run as root
    (root / "etc/systemd/system/schoolproxy.service").write_text("[Service]\nExecStart=/bin/false\n")

    make_install(root)

    assert {p: p.read_bytes() for p in kept} == kept
    assert (root / "etc/schoolproxy/users.htpasswd").read_text() == "jsmith:$2b$04$abc\n"
    engine = open_database(f"sqlite:///{db}")
    assert current_revision(engine) == head_revision()
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT username, host FROM requests WHERE ref = '1BMA-0000-KEEP'").fetchall() == \
            [("jsmith", "www.tiktok.com")]
    assert owner_mode(root / "var/lib/schoolproxy/spool/left-by-root.jsonl") == (uid, gid, 0o600)
    assert owner_mode(db) == (uid, gid, 0o600)
    assert "User=schoolproxy" in (root / "etc/systemd/system/schoolproxy.service").read_text()
    assert user_ids(root) == (uid, gid)  # the same user, not a second one
    assert sum(line.startswith("schoolproxy:") for line in (root / "etc/passwd").read_text().splitlines()) == 1


def test_install_refuses_a_directory_that_is_not_a_checkout(tmp_path):
    from schoolproxy.gateway.install import Installer, InstallError
    with pytest.raises(InstallError, match="is not a schoolproxy checkout"):
        Installer(tmp_path, tmp_path).run()
