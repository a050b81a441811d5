"""Signed-in sessions, kept on the server.

The browser holds only a random token (a ``__Host-`` cookie: Secure, HttpOnly, SameSite=Strict, path /);
the database holds its SHA-256, the logon, the directory groups seen at sign-in and the session's CSRF
token. Nothing the browser sends can claim a role: roles are worked out on every request from the logon,
those groups and the current config, so a role taken away in the config is gone at the next click. A
session ends after ``idle_minutes`` without a request, after ``session_hours`` in any case, or on
signing out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Engine, delete, insert, select, update

from schoolproxy.records.schema import console_sessions

UTC = dt.timezone.utc
COOKIE = "__Host-schoolproxy-console"
MAX_TOKEN = 100
TOUCH_EVERY = dt.timedelta(seconds=15)   # last_seen is written at most this often


@dataclass(frozen=True, slots=True)
class Session:
    id: str                   # the token's hash
    username: str
    groups: frozenset[str]
    csrf: str
    created_at: dt.datetime
    last_seen: dt.datetime

    def csrf_ok(self, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(self.csrf.encode(), str(sent).encode())


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


class Sessions:
    def __init__(self, db: Engine, idle: dt.timedelta, lifetime: dt.timedelta):
        self.db = db
        self.idle = idle
        self.lifetime = lifetime

    def create(self, username: str, groups: frozenset[str], address: str,
               now: dt.datetime | None = None) -> tuple[str, Session]:
        """A new session: (the cookie's token, the session)."""
        now = now or dt.datetime.now(UTC)
        token = secrets.token_urlsafe(32)
        s = Session(_hash(token), username.lower(), frozenset(g.lower() for g in groups),
                    secrets.token_urlsafe(32), now, now)
        with self.db.begin() as conn:
            conn.execute(delete(console_sessions).where(console_sessions.c.last_seen < now - self.idle))
            conn.execute(insert(console_sessions).values(
                id=s.id, username=s.username[:256], groups="\n".join(sorted(s.groups)), csrf=s.csrf,
                address=address[:64], created_at=now, last_seen=now))
        return token, s

    def find(self, token: str | None, now: dt.datetime | None = None) \
            -> tuple[Session | None, Literal["ok", "none", "idle", "expired"]]:
        """The live session for a cookie's token, touched; or why there is none (an ended one is deleted)."""
        if not token or len(token) > MAX_TOKEN:
            return None, "none"
        now = now or dt.datetime.now(UTC)
        sid = _hash(token)
        with self.db.connect() as conn:
            row = conn.execute(select(console_sessions).where(console_sessions.c.id == sid)).mappings().first()
        if row is None:
            return None, "none"
        last_seen, created = _aware(row["last_seen"]), _aware(row["created_at"])
        if now - created > self.lifetime or now - last_seen > self.idle:
            self.end(token)
            return None, "expired" if now - created > self.lifetime else "idle"
        if now - last_seen > TOUCH_EVERY:
            with self.db.begin() as conn:
                conn.execute(update(console_sessions).where(console_sessions.c.id == sid).values(last_seen=now))
            last_seen = now
        groups = frozenset(g for g in (row["groups"] or "").split("\n") if g)
        return Session(sid, row["username"], groups, row["csrf"], created, last_seen), "ok"

    def end(self, token: str) -> None:
        with self.db.begin() as conn:
            conn.execute(delete(console_sessions).where(console_sessions.c.id == _hash(token)))

    def end_all(self, username: str) -> int:
        with self.db.begin() as conn:
            return conn.execute(delete(console_sessions).where(console_sessions.c.username == username.lower())).rowcount
