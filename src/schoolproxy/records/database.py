"""Opening the database and bringing its schema up to date.

SQLite (the default, a file under ``var/``) runs in WAL mode with ``synchronous=NORMAL``: readers
(reports) never block the writer, and a commit does not wait for the disk. PostgreSQL is reached
through a SQLAlchemy URL (``postgresql+psycopg://user@host/db``) for bigger sites and trusts.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from schoolproxy.private import private_file

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)
# alembic narrates every start-up at INFO ("Context impl SQLiteImpl.", each migration it runs) into the
# proxy's terminal log: it is kept to warnings, and upgrade() says in one line when the schema moved.
logging.getLogger("alembic").setLevel(logging.WARNING)


#: Seconds to wait for a PostgreSQL server to answer a new connection. Without it psycopg waits over two
#: minutes for a host that drops packets (a server gone, a firewall), and `schoolproxy check` seemed hung.
CONNECT_TIMEOUT = 5


def open_database(url: str) -> Engine:
    if url.startswith("sqlite"):
        _private_sqlite(url)
        engine = create_engine(url, connect_args={"timeout": 5})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    # A connect_timeout written in the URL (?connect_timeout=10) is the school's choice and is kept.
    bounded = {} if "connect_timeout" in make_url(url).query else {"connect_timeout": CONNECT_TIMEOUT}
    return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2, connect_args=bounded)


def unreachable(url: str, error: BaseException) -> str:
    """What went wrong opening the records database, in one plain line:
    "cannot reach the records database at db.school.local:5432 (timed out after 5 s)"."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return f"cannot open the records database {u.database}: {_first_line(error)}"
    where = f"{u.host or 'localhost'}:{u.port or 5432}"
    cause = getattr(error, "orig", None) or error
    if type(cause).__name__ == "ConnectionTimeout" or "timeout expired" in str(cause):
        seconds = u.query.get("connect_timeout", CONNECT_TIMEOUT)
        return f"cannot reach the records database at {where} (timed out after {seconds} s)"
    return f"cannot reach the records database at {where}: {_first_line(cause)}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]


def _private_sqlite(url: str) -> None:
    """Create the database file 0600 before SQLite does: its -wal and -shm files take the same mode."""
    path = make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    db = Path(path)
    try:
        private_file(db)
        for extra in (Path(f"{db}-wal"), Path(f"{db}-shm")):
            if extra.exists():
                private_file(extra)
    except OSError:
        pass  # SQLite reports the real problem (missing directory, read-only disk) when it opens it


def _alembic(engine: Engine, connection) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the schema to ``revision`` (idempotent)."""
    if revision == "head":
        # Already there (every start but the first): read, without the write transaction a migration
        # takes, which on SQLite would wait on whatever the record writer or alert process is writing.
        with engine.connect() as conn:
            if MigrationContext.configure(conn).get_current_revision() == head_revision():
                return
    with engine.begin() as conn:
        before = MigrationContext.configure(conn).get_current_revision()
        command.upgrade(_alembic(engine, conn), revision)
        after = MigrationContext.configure(conn).get_current_revision()
    if before is None:
        log.info("records database: schema created (revision %s)", after)
    elif after != before:
        log.info("records database: schema upgraded from revision %s to %s", before, after)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()
