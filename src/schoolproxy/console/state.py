"""What the console works from: the school's config and what is built from it (the database, names,
accounts, categories), rebuilt when the config file changes — a role given or taken away in ``people:``
applies at the next click, as the proxy's own reload does. A config that no longer loads is logged and
the previous one kept."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from schoolproxy.config import Config, ConfigError, load_config
from schoolproxy.console.signin import Accounts
from schoolproxy.filtering.lists import ListError, load_metadata
from schoolproxy.identity.names import NameBook, NamesError, read_mis_csv
from schoolproxy.identity.profiles import ProfileResolver

log = logging.getLogger(__name__)
CHECK_EVERY = 2.0   # seconds between looks at the config file's modification time
#: Content the console shows as host and time only (SPEC 2: staff must not view indecent images).
HIDDEN_THEMES = frozenset({"pornography"})


@dataclass
class State:
    config: Config
    db: Engine
    accounts: Accounts
    names: NameBook
    resolver: ProfileResolver
    hidden_categories: frozenset[str]
    category_text: dict[str, str]

    def role_of_profile(self, profile: str | None) -> str | None:
        p = self.config.profiles.get(profile or "")
        return p.role if p is not None else None


def build_state(config: Config, db: Engine) -> State:
    accounts = Accounts(config)
    names_cfg = config.console.names
    mis = read_mis_csv(config.path(names_cfg.mis_csv)) if names_cfg.mis_csv is not None else {}
    directory = accounts.directory
    lookup = None
    if directory is not None:
        wanted = [names_cfg.name_attribute, names_cfg.class_attribute]

        def lookup(logon: str):
            found = directory.attributes(logon, wanted)
            if found is None:
                return None
            lowered = {k.lower(): v for k, v in found.items()}
            return lowered.get(wanted[0].lower()), lowered.get(wanted[1].lower())
    try:
        info = load_metadata(config.path(config.lists.metadata))
    except ListError as e:
        raise ConfigError(str(e)) from None
    hidden = set()
    for name, c in info.items():
        if c.theme in HIDDEN_THEMES or c.uksic == "pornography":
            hidden.add(name)
            hidden.update(c.aliases)
    return State(config, db, accounts, NameBook(mis, lookup), ProfileResolver(config), frozenset(hidden),
                 {name: c.description for name, c in info.items()})


class Live:
    """The current State; looks at the config file (and the MIS export) at most every two seconds and
    rebuilds it when either changes."""

    def __init__(self, config_path: str | Path, db: Engine, state: State | None = None):
        self.path = Path(config_path)
        self.db = db
        self._state = state or build_state(load_config(self.path), db)
        self._stamp = self._file_stamp()
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def _file_stamp(self):
        names = self._state.config.console.names.mis_csv
        files = [self.path] + ([self._state.config.path(names)] if names is not None else [])
        stamps = []
        for f in files:
            try:
                st = f.stat()
                stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def current(self) -> State:
        now = time.monotonic()
        if now - self._checked < CHECK_EVERY:
            return self._state
        with self._lock:
            if now - self._checked < CHECK_EVERY:
                return self._state
            self._checked = now
            stamp = self._file_stamp()
            if stamp[0] is not None and stamp != self._stamp:
                self._stamp = stamp
                try:
                    config = load_config(self.path)
                    if config.database_url() != self._state.config.database_url():
                        raise ConfigError("records.database changed: restart the console to use the new database")
                    self._state = build_state(config, self.db)
                    self._stamp = self._file_stamp()
                    log.info("console: configuration reloaded from %s", self.path)
                except (ConfigError, NamesError) as e:
                    log.error("console: configuration change NOT applied, still using the previous one: %s", e)
        return self._state
