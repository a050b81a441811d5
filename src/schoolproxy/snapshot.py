"""Loading the whole configuration into one immutable :class:`Snapshot`, and swapping it on reload.

A snapshot is everything a decision needs (config, compiled lists, policy, identity maps). It is built
completely — and must pass the config's own policy tests — before it replaces the running one, with a
single reference assignment; requests in flight keep the snapshot they started with. A snapshot that
fails is refused and the running one keeps serving.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from schoolproxy.config import Config, ConfigError, load_config
from schoolproxy.filtering.decide import decide, facts_for_url
from schoolproxy.filtering.expiring import NONE as NO_EXPIRING
from schoolproxy.filtering.expiring import ExpiringOverrides
from schoolproxy.filtering.listcache import LIST_FILES, cache_files, load_compiled
from schoolproxy.filtering.local import LocalDestinations
from schoolproxy.filtering.local import for_config as local_destinations
from schoolproxy.filtering.lists import CategoryLists, ListError, load_metadata
from schoolproxy.filtering.policy import Decision, Policy
from schoolproxy.identity.directory import Directory, read_secret
from schoolproxy.identity.profiles import Authenticator, Identity, LocalThenDirectory, ProfileResolver, SubnetMap
from schoolproxy.identity.userfile import UsersFile

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TestResult:
    index: int
    who: str
    url: str
    expect: str
    decision: Decision

    @property
    def passed(self) -> bool:
        return self.decision.action == self.expect

    def __str__(self) -> str:
        mark = "ok  " if self.passed else "FAIL"
        return (f"{mark} tests[{self.index}] {self.who} {self.url}: expected {self.expect}, "
                f"got {self.decision.action} ({self.decision.rule})")


@dataclass(frozen=True)
class Snapshot:
    config: Config
    lists: CategoryLists
    policy: Policy
    resolver: ProfileResolver
    subnets: SubnetMap
    authenticator: Authenticator | None
    #: Files whose change triggers a reload, with their stamps (mtime, size, inode) from before they were read.
    watched: dict[Path, tuple[int, int, int]] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)
    #: The AD/LDAP directory, if configured (also answers group lookups for logon-feed users).
    directory: Directory | None = None
    #: The logon feed's shared secret (from its secret file), if the feed is configured.
    logon_secret: str | None = None
    #: The local users file, if proxy sign-in uses one (the logon feed asks it who exists).
    users: UsersFile | None = None
    #: The gateway's own addresses and names, never reached through the proxy (filtering/local.py).
    local: LocalDestinations | None = None
    #: Expiring allows in force (approved unblock requests, teachers' class allows), from the records:
    #: replaced every few seconds by the pages addon, carried over by a reload. The config's own policy
    #: tests are run without them.
    expiring: ExpiringOverrides = NO_EXPIRING
    #: The phrase list files (``alerts.phrases``) with their stamps from before this snapshot was built: the
    #: content addon and the alert service load the lists again when it differs from theirs.
    phrase_files: tuple[tuple[Path, tuple[int, int, int]], ...] = ()

    def run_tests(self) -> list[TestResult]:
        """The config's own policy tests, decided as the proxy decides a browser's request."""
        results = []
        for i, t in enumerate(self.config.tests):
            if t.user:
                ident = self.resolver.identify(t.user)
                who = f"user {t.user} ({ident.profile})"
            else:
                ident, who = Identity(None, t.profile, "given", "given"), f"profile {t.profile}"
            at = t.at
            if at is not None and at.tzinfo is None:
                at = at.replace(tzinfo=self.policy.tz)
            ruling = decide(self, ident, facts_for_url(t.url), at)
            results.append(TestResult(i, who, t.url, t.expect, ruling.decision))
        return results


def build_snapshot(config_path: str | Path, run_tests: bool = True, previous: Snapshot | None = None) -> Snapshot:
    """Load and compile everything; raise :class:`ConfigError` naming what is wrong.

    The directory connection (and its cache of users' groups) carries over from ``previous`` when its
    settings are unchanged, so a reload does not send every user back to the directory."""
    # Files are stamped before they are read: an edit made during the build then differs from the
    # stamp, and the watcher reloads again rather than missing it.
    config_stamp = _stamp(Path(config_path))
    config = load_config(config_path)
    watched = {p: _stamp(p) for p in watched_files(config)}
    watched[Path(config.source)] = config_stamp
    phrases = tuple((p, _stamp(p)) for p in phrase_list_files(config.path(config.alerts.phrases)))
    watched.update(phrases)
    try:
        info = load_metadata(config.path(config.lists.metadata))
        cache = config.lists.cache_dir
        lists = load_compiled([config.path(s) for s in config.lists.sources], config.path(config.lists.metadata),
                              info, config.path(cache) if cache is not None else None)
    except ListError as e:
        raise ConfigError(f"{config.source}: lists: {e}") from None
    # The compiled cache is never changed by us once written: a change is damage, and a reload opens a
    # verified (or freshly compiled) one.
    watched.update((p, _stamp(p)) for p in cache_files(lists))
    policy = Policy(config, lists)
    authenticator: Authenticator | None = None
    ident = config.identity
    directory = None
    if ident.directory is not None:
        old = previous.directory if previous is not None else None
        new = Directory(ident.directory, config.base_dir)
        # Keep the running one (and its cache of users' groups) if nothing about it changed.
        directory = old if old is not None and old.same_as(new) else new
    pa = ident.proxy_auth
    local = None
    if pa is not None and pa.enabled:
        if pa.users_file is not None:
            users_path = config.path(pa.users_file)
            local = UsersFile(users_path)
        if local is not None and directory is not None:
            authenticator = LocalThenDirectory(local, directory)
        else:
            authenticator = local or directory
    logon_secret = None
    if ident.logon_feed is not None:
        secret_path = config.path(ident.logon_feed.secret_file)
        logon_secret = read_secret(secret_path)
        if len(logon_secret) < 16:
            raise ConfigError(f"{secret_path}: the logon feed secret must be at least 16 characters")
    snapshot = Snapshot(config, lists, policy, ProfileResolver(config, authenticator), SubnetMap(config),
                        authenticator, watched, directory=directory, logon_secret=logon_secret,
                        users=local, local=local_destinations(config), phrase_files=phrases)
    if run_tests:
        failed = [r for r in snapshot.run_tests() if not r.passed]
        if failed:
            raise ConfigError(f"{config.source}: {len(failed)} of the config's own policy tests failed:\n"
                              + "\n".join(f"  {r}" for r in failed))
    return snapshot


def watched_files(config: Config) -> list[Path]:
    """The files whose change triggers a reload: the config, the category metadata, the users and secret
    files it names, and every list file (an in-place edit of ``lists/custom/domains`` changes no directory)."""
    ident = config.identity
    files = [Path(config.source), config.path(config.lists.metadata)]
    if ident.proxy_auth is not None and ident.proxy_auth.enabled and ident.proxy_auth.users_file is not None:
        files.append(config.path(ident.proxy_auth.users_file))
    if ident.logon_feed is not None:
        files.append(config.path(ident.logon_feed.secret_file))
    if ident.directory is not None and ident.directory.service_password_file is not None:
        files.append(config.path(ident.directory.service_password_file))
    for s in config.lists.sources:
        src = config.path(s)
        files.append(src)  # a category added or removed
        try:
            categories = [Path(e.path) for e in os.scandir(src) if e.is_dir()]
        except OSError:
            continue  # reported by the list loader
        for category in categories:
            files.append(category)
            files.extend(category / kind for kind in LIST_FILES)
    return files


def phrase_list_files(root: Path) -> list[Path]:
    """The files the phrase lists are read from (``monitoring/phrases.py``): the directory (a theme added or
    removed), ``sets.txt``, ``exceptions.txt``, each theme's folder and its ``*.txt``. Watched like the
    category lists, so that an edit is picked up without a reload by hand."""
    files = [root, root / "sets.txt", root / "exceptions.txt"]
    try:
        themes = sorted(Path(e.path) for e in os.scandir(root) if e.is_dir())
    except OSError:
        return files  # reported by the phrase list loader
    for theme in themes:
        files.append(theme)  # a list file added or removed
        try:
            files.extend(sorted(Path(e.path) for e in os.scandir(theme) if e.name.endswith(".txt") and e.is_file()))
        except OSError:
            continue
    return files


def _stamp(p: Path) -> tuple[int, int, int]:
    """What identifies a file's version: mtime alone misses a rewrite within one clock tick (a
    truncate-then-write seen half-way has the same mtime as the finished file, but not the same size)."""
    try:
        st = p.stat()
    except OSError:
        return (0, 0, 0)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


WORKER_ENV = "SCHOOLPROXY_WORKER"  # "i/N" in a process started by `schoolproxy run --workers N`


def worker_from_env() -> tuple[int, int]:
    """(worker number, number of workers) of this process: (0, 1) unless started by the supervisor."""
    try:
        i, n = (int(x) for x in os.environ.get(WORKER_ENV, "").split("/"))
    except ValueError:
        return 0, 1
    return (i, n) if 0 <= i < n else (0, 1)


class SnapshotHolder:
    """The running snapshot. Readers take ``holder.snapshot`` once per request and keep that one; a reload
    builds a new snapshot beside it and swaps the reference."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.config_path: Path | None = None
        self._on_config: list[Callable[[Snapshot], None]] = []

    def on_config(self, fn: Callable[[Snapshot], None]) -> None:
        """Call ``fn`` with each snapshot of a newly loaded configuration (start-up and reloads), on the
        thread that swaps it in (the event loop)."""
        self._on_config.append(fn)

    def _configured(self) -> None:
        for fn in self._on_config:
            fn(self.snapshot)

    def load(self, config_path: str | Path) -> Snapshot:
        self.config_path = Path(config_path)
        self.snapshot = build_snapshot(self.config_path)
        self._configured()
        return self.snapshot

    def changed(self, part: slice = slice(None)) -> bool:
        """Has any watched file changed since the running snapshot was built? With ``part``, only that slice
        of the watched files is looked at. Stops at the first change."""
        snap = self.snapshot
        if snap is None:
            return False
        files = itertools.islice(snap.watched.items(), part.start, part.stop, part.step)
        return any(_stamp(path) != stamp for path, stamp in files)

    def file_state(self) -> tuple[tuple[Path, tuple[int, int, int]], ...]:
        """The watched files and their current stamps (to remember which state a reload refused)."""
        snap = self.snapshot
        return () if snap is None else tuple((p, _stamp(p)) for p in snap.watched)

    def build(self) -> Snapshot:
        """Build a replacement snapshot (blocking; run it in a thread)."""
        assert self.config_path is not None
        return build_snapshot(self.config_path, previous=self.snapshot)

    def swap(self, snapshot: Snapshot) -> None:
        running = self.snapshot
        if running is not None and running.expiring is not snapshot.expiring:
            snapshot = replace(snapshot, expiring=running.expiring)  # loaded while the new one was built
        self.snapshot = snapshot
        self._configured()

    def set_expiring(self, expiring: ExpiringOverrides) -> None:
        """The expiring allows now in force, in a new snapshot otherwise the same (one reference swap)."""
        running = self.snapshot
        if running is not None:
            self.snapshot = replace(running, expiring=expiring)
