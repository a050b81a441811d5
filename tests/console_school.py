"""The test school with its console: people in every role (local console accounts), records and alerts put
straight into the database, and a Flask test client that speaks HTTPS (the console's cookies are Secure)."""

from __future__ import annotations

import datetime as dt
import re
import textwrap
from pathlib import Path

from conftest import PASSWORD, free_port, hash_pw, make_school, make_verdict

from schoolproxy.config import load_config
from schoolproxy.monitoring import store
from schoolproxy.monitoring.rules import Candidate
from schoolproxy.records import open_database, upgrade
from schoolproxy.records.schema import requests
from schoolproxy.records.writer import to_row

ROOT = Path(__file__).resolve().parent.parent
#: logon → (name, roles)
PEOPLE = {
    "dsl1": ("Mrs D Lawrence", ["dsl"]),
    "lead1": ("Mr C Lead", ["computing_lead"]),
    "head1": ("Mr R Patel", ["head"]),
    "chair1": ("Mrs J Okafor", ["chair_of_governors"]),
    "net1": ("Mr T Evans", ["network_manager"]),
    "gov1": ("Mr G Governor", ["governor"]),
    "office1": ("Mrs S Hughes", ["office"]),
}
MIS_CSV = "Logon,Forename,Surname,Reg Group\npupil1,Jamie,Smith,Year 4\npupil2,Jamie,Jones,Year 6\n"


def people_yaml(people: dict = PEOPLE) -> str:
    lines = ["people:"]
    for logon, (name, roles) in people.items():
        lines.append(f"  {logon}: {{name: {name}, roles: [{', '.join(roles)}]}}")
    return "\n".join(lines) + "\n"


def make_console_school(root: Path, database: str | None = None, extra: str = "", console_extra: str = "",
                        alerts_extra: str = "", names: str = "{mis_csv: pupils.csv}", people: dict = PEOPLE) -> Path:
    database = database or f"sqlite:///{root / 'records.db'}"
    (root / "console-users.htpasswd").write_text("".join(f"{u}:{hash_pw(PASSWORD)}\n" for u in PEOPLE))
    (root / "pupils.csv").write_text(MIS_CSV)
    text = people_yaml(people) + textwrap.dedent(f"""\
        console:
          listen: "127.0.0.1:{free_port()}"
          users_file: console-users.htpasswd
          state_dir: console-state
          names: {names}
        """) + textwrap.indent(textwrap.dedent(console_extra), "  ") + textwrap.dedent(f"""\
        alerts:
          phrases: {ROOT / 'filterlists' / 'phrases'}
        """) + textwrap.indent(textwrap.dedent(alerts_extra), "  ") + textwrap.dedent(extra)
    return make_school(root, extra=text, users=("pupil1", "pupil2", "teacher1", "Supply3", "visitor"),
                       database=database)


def open_db(config: Path):
    cfg = load_config(config)
    db = open_database(cfg.database_url())
    upgrade(db)
    return cfg, db


def add_record(db, **kw) -> dict:
    """A request record as the proxy writes it; ``when`` (datetime) sets its time."""
    when = kw.pop("when", None)
    if when is not None:
        kw["time"] = when.timestamp()
    v = make_verdict(**{"time": dt.datetime.now(dt.timezone.utc).timestamp(), "username": "pupil1",
                        "action": "allow", "rule": "default",
                        "categories": (), "host": "www.bbc.co.uk", "path": "/news", **kw})
    row = to_row(v)
    with db.begin() as conn:
        conn.execute(requests.insert().values(**row))
    return row


def add_alert(db, cfg, role: str = "pupil", theme: str = "self-harm", severity: str = "high",
              rule: str = "search-phrases", term: str | None = "how to kill myself", host: str = "www.google.com",
              person: str | None = None, **kw) -> dict:
    """An alert raised as the proxy raises one, with the request record behind it."""
    when = kw.pop("when", None)
    kw.setdefault("username", "pupil1")
    kw.setdefault("profile", {"pupil": "pupil", "staff": "staff", "supply": "supply", "guest": "guest"}[role])
    path = f"/search?q={term.replace(' ', '+')}" if term else "/"
    record = add_record(db, host=host, path=path, search_term=term, when=when, **kw)
    v = make_verdict(**{**kw, "ref": record["ref"], "time": record["time"].timestamp(), "host": host, "path": path,
                        "search_term": term, "action": "allow", "rule": "default", "categories": ()})
    evidence = (f'searched for "{term}" on google (matched: x; score 120, threshold 60)' if rule == "search-phrases"
                else f"visited {host} (category {rule.partition(':')[2]})")
    c = Candidate(theme, severity, rule, evidence, v, 120 if rule == "search-phrases" else None, term)
    row = store.raise_alert(db, cfg, c, role, person)
    assert row is not None
    return row


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    m = _CSRF.search(html)
    assert m, html[:2000]
    return m[1]


class Browser:
    """The Flask test client over HTTPS, remembering the page's CSRF token."""

    def __init__(self, app):
        self.client = app.test_client()
        self.last = ""

    def get(self, path: str, **kw):
        r = self.client.get(path, base_url="https://console.test", **kw)
        self.last = r.get_data(as_text=True)
        return r

    def post(self, path: str, data: dict | None = None, csrf: bool = True, **kw):
        data = dict(data or {})
        if csrf and "csrf" not in data:
            data["csrf"] = csrf_of(self.last)
        r = self.client.post(path, data=data, base_url="https://console.test", **kw)
        self.last = r.get_data(as_text=True)
        return r

    def signin(self, username: str, password: str = PASSWORD):
        self.get("/signin")
        return self.post("/signin", {"username": username, "password": password})


class World:
    """A test school with its console app and database."""

    def __init__(self, root: Path, database: str | None = None, **kw):
        from schoolproxy.console import create_app
        self.root = root
        self.config = make_console_school(root, database, **kw)
        self.cfg, self.db = open_db(self.config)
        self.app = create_app(self.config, self.db)

    def browser(self, user: str | None = None) -> Browser:
        b = Browser(self.app)
        if user is not None:
            r = b.signin(user)
            assert r.status_code == 303, b.last[:3000]
        return b

    def alert(self, **kw) -> dict:
        return add_alert(self.db, self.cfg, **kw)

    def audit_rows(self) -> list[dict]:
        from sqlalchemy import select

        from schoolproxy.records.schema import access_audit
        with self.db.connect() as conn:
            return [dict(r) for r in conn.execute(select(access_audit).order_by(access_audit.c.id)).mappings()]

    def alert_row(self, ref: str) -> dict:
        return store.get_alert(self.db, ref)[0]


def add_directory(config: Path, server) -> Path:
    """Sign people in against ``server`` (a tests/directory_server.py slapd) as well."""
    text = config.read_text().replace("  default_profile: pupil", server.yaml() + "  default_profile: pupil")
    config.write_text(text)
    return config


def search(term: str, t: float, user: str = "pupil1", host: str = "www.google.com"):
    """The Verdict of a search as the proxy publishes it."""
    from urllib.parse import quote_plus
    return make_verdict(username=user, time=t, host=host, path=f"/search?q={quote_plus(term)}", search_term=term,
                        action="allow", rule="default", categories=(), scheme="https", port=443)


def run_service(config: Path, db, verdicts) -> None:
    """The alert service as the proxy runs it: verdicts submitted, its rules thread stores the alerts;
    stopping it stores the repeats it has counted (with their evidence)."""
    from schoolproxy.monitoring.service import AlertService
    from schoolproxy.snapshot import SnapshotHolder
    holder = SnapshotHolder()
    holder.load(config)
    service = AlertService(holder, db, poll_seconds=0.05, deliver=False).start()
    for v in verdicts:
        service.submit(v)
    service.stop()
