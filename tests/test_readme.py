"""Every command the README shows works as written.

The commands are taken from the README's ```sh blocks and run in order, as written, in a copy of this
checkout's example school: ``config/`` copied, a fresh ``var/`` (records database, spool, CA, list
cache), ``.venv`` and ``filterlists`` the checkout's own. The references the examples name (a block
page's, an alert's, an unblock request's) are given to records made beforehand, so ``alerts show
1BMA-00G2-7Q1X`` finds its alert; the Quick start's curl commands go to a proxy started from the same
config (on a free port instead of 8080). Each command must exit 0 without a traceback. The few that
need root, the internet, an installation or a terminal, or that run until stopped, are listed in
NOT_RUN with the reason and where they are tested instead."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import free_port, make_verdict
from proxyproc import BIN, ProxyProcess
from sqlalchemy import update

from schoolproxy.config import load_config
from schoolproxy.monitoring import store
from schoolproxy.monitoring.rules import Candidate
from schoolproxy.records import open_database, to_row, unblock, upgrade
from schoolproxy.records.schema import alerts, requests, unblock_requests

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

#: Commands not run here, by how they begin: why, and what tests the same thing.
NOT_RUN = {
    "make run": "starts the proxy and runs until stopped; the Quick start's commands run against one here",
    "make test": "the test suite itself",
    "sudo ": "needs root on the school's gateway; tests/test_install.py installs into a test root",
    "sudoedit ": "needs root on the school's gateway",
    ".venv/bin/schoolproxy lists import ": "needs the UT1 archive from the internet; tests/test_cli.py imports a small one",
    ".venv/bin/schoolproxy checks run": "tests the proxy and the upstream filter over the network; tests/test_checks.py",
    ".venv/bin/mitmdump ": "starts the proxy and runs until stopped; tests/test_e2e_proxy.py",
    ".venv/bin/schoolproxy console": "starts the console and runs until stopped; tests/test_console_e2e.py",
    ".venv/bin/schoolproxy users add ": "asks for the new password at a terminal; tests/test_userfile.py",
}
REFERENCE = re.compile(r"\b[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}\b")


def shell_commands(text: str) -> list[str]:
    """The command lines of the ```sh blocks, in order (comment lines left out, continuations joined)."""
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.M | re.S):
        pending = ""
        for line in block.splitlines():
            line = pending + line.strip()
            pending = ""
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def not_run(command: str) -> str | None:
    return next((why for start, why in NOT_RUN.items() if command.startswith(start)), None)


def test_the_readme_shows_commands_and_every_exception_is_still_there():
    commands = shell_commands(README.read_text())
    assert len(commands) > 30
    for start in NOT_RUN:  # an exception no longer needed is taken out, so the command runs again
        assert any(c.startswith(start) for c in commands), f"NOT_RUN[{start!r}] matches no README command"
    assert all(not_run(c) or c.startswith((".venv/bin/schoolproxy ", "schoolproxy ", "curl ")) for c in commands), \
        [c for c in commands if not not_run(c) and not c.startswith((".venv/bin/schoolproxy ", "schoolproxy ", "curl "))]


@pytest.fixture
def example_school(tmp_path):
    """A copy of the example school to run the README's commands in, with a private database and ports."""
    home = tmp_path / "school"
    shutil.copytree(ROOT / "config", home / "config")
    (home / "var").mkdir()
    for shared in (".venv", "filterlists", "addons"):
        (home / shared).symlink_to(ROOT / shared)
    (home / "config" / "users.htpasswd").chmod(0o600)  # as make run leaves it
    config = home / "config" / "schoolproxy.yaml"
    data = yaml.safe_load(config.read_text())
    data["metrics"]["listen"] = f"127.0.0.1:{free_port()}"
    data["console"]["listen"] = f"127.0.0.1:{free_port()}"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return home, config


def give_the_examples_their_references(config: Path, commands: list[str]) -> None:
    """Make the record, alert or unblock request each example reference names, as the proxy would."""
    cfg = load_config(config)
    db = open_database(cfg.database_url())
    upgrade(db)
    now = dt.datetime.now(dt.timezone.utc)
    made: set[str] = set()
    try:
        for command in commands:
            for ref in REFERENCE.findall(command):
                if ref in made:
                    continue
                made.add(ref)
                if " report ref " in command:
                    row = to_row(make_verdict(ref=ref, username="jsmith", time=now.timestamp() - 600))
                    with db.begin() as conn:
                        conn.execute(requests.insert().values(**row))
                elif " alerts " in command:
                    v = make_verdict(username="jsmith", profile="pupil", host="www.google.com", action="allow",
                                     path="/search?q=how+to+kill+myself", search_term="how to kill myself",
                                     rule="default:pupil", categories=(), time=now.timestamp() - 600)
                    c = Candidate("self-harm", "high", "search-phrases", 'searched for "how to kill myself"', v,
                                  120, "how to kill myself")
                    alert = store.raise_alert(db, cfg, c, "pupil", None)
                    with db.begin() as conn:
                        conn.execute(update(alerts).where(alerts.c.id == alert["id"]).values(ref=ref))
                elif " unblock " in command:
                    host = f"game{len(made)}.example"
                    asked = unblock.add_request(db, username="jsmith", profile="pupil", client_ip="10.0.20.15",
                                                device=None, host=host, url=f"http://{host}/", block_ref=None,
                                                rule="category:games", categories="games",
                                                reason="For my poster project", per_user_per_day=10)
                    with db.begin() as conn:
                        conn.execute(update(unblock_requests).where(unblock_requests.c.id == asked["id"])
                                     .values(ref=ref))
                else:
                    raise AssertionError(f"the example reference in {command!r} is of a kind this test cannot make")
    finally:
        db.dispose()


def test_every_command_in_the_readme_works_as_written(example_school):
    home, config = example_school
    commands = shell_commands(README.read_text())
    give_the_examples_their_references(config, commands)
    env = {**os.environ, "SCHOOLPROXY_CONFIG": str(config), "PATH": f"{BIN}:{os.environ['PATH']}"}
    port = free_port()
    proxy = ProxyProcess([str(BIN / "schoolproxy"), "run", "--config", "config/schoolproxy.yaml",
                          "--listen-port", str(port)], port, home / "var" / "proxy.log", cwd=home)
    failures, ran = [], 0
    try:
        for command in commands:
            if not_run(command):
                continue
            if command.startswith("curl "):
                command = command.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
            r = subprocess.run(["bash", "-c", command], cwd=home, env=env, capture_output=True, text=True,
                               timeout=120)
            ran += 1
            said = r.stdout + r.stderr
            if r.returncode != 0 or "Traceback (most recent call last)" in said:
                failures.append(f"$ {command}\nexit {r.returncode}\n{said[-1500:]}")
    finally:
        proxy.stop()
    log = proxy.log_path.read_text(errors="replace")
    assert not failures, "\n\n".join(failures) + "\n\nproxy log:\n" + log[-2000:]
    assert ran > 25
    assert "Traceback" not in log
