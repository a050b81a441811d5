"""What the commands share: finding the config, opening the records database, reading times, and who is
running them (``--by``)."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

from schoolproxy.config import ConfigError

CONFIG_ENV = "SCHOOLPROXY_CONFIG"
#: Where the config is looked for when --config is not given, in order (after $SCHOOLPROXY_CONFIG).
CONFIG_PLACES = (Path("/etc/schoolproxy/schoolproxy.yaml"), Path("config/schoolproxy.yaml"))


def find_config(given: str | None) -> str:
    """--config, else $SCHOOLPROXY_CONFIG, else /etc/schoolproxy/schoolproxy.yaml, else ./config/."""
    if given:
        return given
    if os.environ.get(CONFIG_ENV):
        return os.environ[CONFIG_ENV]
    for place in CONFIG_PLACES:
        if place.is_file():
            return str(place)
    raise ConfigError("no configuration found: give --config FILE, or set SCHOOLPROXY_CONFIG, or put it at "
                      + " or ".join(str(p) for p in CONFIG_PLACES))


def open_records(config_path: str):
    """(config, database engine) with the schema brought up to date."""
    from schoolproxy.config import load_config
    from schoolproxy.records import open_database, upgrade
    from schoolproxy.records.database import unreachable
    from sqlalchemy.exc import OperationalError
    cfg = load_config(config_path)
    db = open_database(cfg.database_url())
    try:
        upgrade(db)
    except OperationalError as e:   # down, or dropping packets: said in one line, not a traceback
        db.dispose()
        raise ConfigError(unreachable(cfg.database_url(), e)) from None
    return cfg, db


def read_datetime(text: str) -> tuple[dt.datetime, bool]:
    """A date and perhaps a time as people write them: '02/12/2026 10:42' or '02/12/2026' (day first, as
    UK dates are), or ISO ('2026-12-02 10:42', '2026-12-02'). (the moment, whether a time was given);
    naive unless the ISO text gave a zone. ValueError if it is neither."""
    from schoolproxy.console.words import parse_uk_date
    text = " ".join(text.split())
    if re.match(r"\d{4}-", text):
        return dt.datetime.fromisoformat(text), len(text) > 10
    day_text, _, time_text = text.partition(" ")
    day = parse_uk_date(day_text)
    if not time_text:
        return dt.datetime.combine(day, dt.time()), False
    if not re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", time_text):
        raise ValueError(f"not a time: {time_text!r}")
    hour, minute, *second = (int(n) for n in time_text.split(":"))
    return dt.datetime.combine(day, dt.time(hour, minute, *second)), True


def when(text: str, tz, day: dt.datetime | None = None) -> dt.datetime:
    """'02/12/2026', '02/12/2026 08:30' (or ISO: '2026-12-02 08:30'), '24h'/'7d' ago, or '08:30' on
    ``day``'s date (default today), in the school's time zone."""
    text = text.strip()
    units = {"h": 3600, "d": 86400, "w": 7 * 86400}
    if text[:-1].isdigit() and text[-1:] in units:
        return dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        if len(text) <= 5 and ":" in text:
            t = dt.time.fromisoformat(text.zfill(5))
            day = day or dt.datetime.now(tz)
            return day.astimezone(tz).replace(hour=t.hour, minute=t.minute, second=0, microsecond=0)
        moment, _ = read_datetime(text)
    except ValueError:
        raise ConfigError(f"cannot read the time {text!r}: use e.g. 08:30, 02/12/2026, '02/12/2026 08:30', "
                          f"24h or 7d") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def shared_logon_test(cfg):
    """(username, profile) → is this a shared logon (Supply1)? By pattern or a supply-role profile."""
    from schoolproxy.identity.profiles import ProfileResolver
    from schoolproxy.identity.register import is_shared_logon
    resolver = ProfileResolver(cfg)

    def shared(username: str, profile: str) -> bool:
        p = cfg.profiles.get(profile)
        return is_shared_logon(resolver.resolve(username)[1], p.role if p else None)
    return shared


#: Accounts that are not a person: a record stamped with one would not say who did it.
SYSTEM_ACCOUNTS = frozenset({"root", "schoolproxy", "nobody", "daemon"})


def actor(cfg, given: str | None) -> str:
    """Who is doing this, as the record should name them: ``--by`` (a logon in ``people:`` becomes
    "Mrs C Lawrence (clawrence)"), else the login name — never a system account such as root."""
    import getpass
    name = " ".join((given or "").split())
    if not name:
        name = getpass.getuser()
        if name.lower() in SYSTEM_ACCOUNTS:
            raise ConfigError(f"say who you are with --by NAME: the record must name a person, not {name!r}")
    if any(ord(c) < 32 for c in name):
        raise ConfigError("--by: control characters are not allowed")
    person = next((p for u, p in cfg.people.items() if u.lower() == name.lower()), None)
    return f"{person.name} ({name.lower()})" if person is not None else name[:200]


BY_HELP = ("who you are: your logon (in the config's people:, or in a directory group that role_groups gives a "
           "role); required: the record names you")


def viewer_of(cfg, given: str | None, directory=None):
    """The person running the command, from ``--by``, with the roles the console gives them when they sign
    in: their logon in ``people:``, and the roles ``role_groups`` gives their directory groups. There is no
    signed-in identity at a shell, and the login name (often root) names no one. ``directory``: the one
    the caller already has (its cache is shared), else one is opened when ``role_groups`` needs it."""
    from schoolproxy.monitoring.access import viewer_for
    name = " ".join((given or "").split())
    if not name:
        raise ConfigError("say who you are with --by NAME (your logon in the config's people:, or one a directory "
                          "group in role_groups gives a role): what you see and what you change is recorded "
                          "against a named person")
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        raise ConfigError("--by: control characters are not allowed")
    listed = any(u.lower() == name.lower() for u in cfg.people)
    groups, display = frozenset(), None
    if cfg.role_groups and cfg.identity.directory is not None:
        groups, display = _directory_groups(cfg, name, directory, listed)
    viewer = viewer_for(cfg, name, groups)
    if viewer is None:
        raise ConfigError(f"--by {name[:64]!r} is not a person in the config's people: with a role, nor in a "
                          f"directory group that role_groups gives a role: give your own logon as it is written "
                          f"there (whoever keeps the config gives people their roles)")
    if not listed and display:
        from dataclasses import replace
        viewer = replace(viewer, name=display)
    return viewer


def _directory_groups(cfg, name: str, directory, listed: bool) -> tuple[frozenset[str], str | None]:
    """(the directory groups of ``name``, their display name) — as the console reads them at sign-in.
    A directory that cannot answer gives no group: someone in ``people:`` goes on with the roles written
    there (said on stderr), anyone else is refused (fail closed)."""
    import logging
    import sys

    from schoolproxy.identity import directory as directory_module
    from schoolproxy.identity.directory import Directory, valid_username
    if not valid_username(name):
        return frozenset(), None
    settings = cfg.identity.directory
    directory = directory or Directory(settings, cfg.base_dir)
    # The directory logs an outage for the proxy ("new sign-ins get the default profile"): not what a
    # command at a shell means; it says its own line below.
    quiet = logging.getLogger(directory_module.__name__)
    was, quiet.disabled = quiet.disabled, True
    try:
        known, groups = directory.known(name)
        display = None
        if known and not listed:
            found = directory.attributes(name, [cfg.console.names.name_attribute]) or {}
            display = next(iter(found.values()), None)
    finally:
        quiet.disabled = was
    if known is not None:
        return groups or frozenset(), display
    if settings.bind == "direct":
        why = ("the directory is set up with bind: direct, which has no service account to look up anyone's "
               "groups with")
    else:
        why = (f"the directory ({', '.join(settings.urls)}) is not answering"
               + (f": {directory.last_error.splitlines()[0][:200]}" if directory.last_error else ""))
    if listed:
        print(f"warning: {why}, so any role a directory group gives {name!r} (role_groups) is not known now: "
              f"going by people: alone", file=sys.stderr)
        return frozenset(), None
    raise ConfigError(f"cannot tell whether --by {name[:64]!r} holds a role: {why}. Nothing was shown or "
                      f"changed; try again when the directory answers, or ask for your logon to be put in the "
                      f"config's people:")
