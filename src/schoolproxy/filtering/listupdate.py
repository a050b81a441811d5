"""``schoolproxy lists update``: fetch the UT1 lists, check them, and put them in place — or refuse.

Run daily by the ``schoolproxy-lists-update`` timer. The source is the configured URL (a ``.tar.gz``;
through the upstream filter when one is set) or a file or directory put on the gateway by hand. A new
set replaces the lists in use only if every check passes; otherwise the lists in use stay exactly as
they are and the command says why (exit status 1). What is refused:

- a download that fails, is larger than ``max_download_mb``, does not match the published checksum
  (``checksum_url``), or is not a complete gzip/tar archive (a truncated download);
- an archive with unsafe members (absolute paths, ``..``, links out of it) or larger than
  ``max_unpacked_mb`` once unpacked;
- a set with no categories, with far fewer entries than the set in use (below ``min_ratio`` of it), or
  in which a category of the set in use is missing or empty. ``--force`` accepts such a set once a
  person has looked at it.

The new set goes into a directory of its own beside ``dest``, and ``dest`` (a symbolic link) is switched
to it in one rename, so the proxy never reads a half-written set; its reload notices the change and
compiles the new lists beside the running ones. The previous set is kept for going back to by hand. Each
attempt is recorded in ``<dest>.status.json`` (``schoolproxy doctor`` reads it) and, if configured, a
history log.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from schoolproxy.config import Config, ListUpdateSettings

LIST_FILES = ("domains", "urls")
MIN_DOWNLOAD = 1024  # bytes: anything smaller is an error page, not a list archive


class UpdateRefused(Exception):
    """The new set was not put in place; the lists in use are unchanged. The message says why."""


@dataclass
class ListSet:
    """Entries per category of a UT1 tree (lines in its ``domains`` and ``urls`` files)."""

    root: Path
    entries: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.entries.values())


def count(root: Path) -> ListSet:
    found = ListSet(root)
    for category in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        n = 0
        for kind in LIST_FILES:
            f = category / kind
            if f.is_file() and not f.is_symlink():
                with open(f, "rb") as fh:
                    n += sum(1 for line in fh if line.strip() and not line.startswith(b"#"))
        if n or any((category / k).is_file() for k in LIST_FILES):
            found.entries[category.name] = n
    return found


def category_root(top: Path) -> Path | None:
    """The directory whose subdirectories hold ``domains`` files (UT1 tarballs nest it in blacklists/)."""
    for d in [top, *sorted(p for p in top.rglob("*") if p.is_dir() and not p.is_symlink())]:
        if any((c / "domains").is_file() for c in d.iterdir() if c.is_dir()):
            return d
    return None


def download(settings: ListUpdateSettings, into: Path, proxy: str | None) -> Path:
    """Fetch ``settings.source`` into ``into``; through ``proxy`` (the upstream filter) if given."""
    handlers = urllib.request.ProxyHandler({"http": proxy, "https": proxy} if proxy else {})
    opener = urllib.request.build_opener(handlers)
    request = urllib.request.Request(settings.source, headers={"User-Agent": "schoolproxy-lists-update"})
    target = into / "download.tar.gz"
    limit = settings.max_download_mb * 1024 * 1024
    try:
        with opener.open(request, timeout=settings.timeout_seconds) as resp, open(target, "wb") as out:
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise UpdateRefused(f"the download is {int(declared) // 2**20} MB, more than max_download_mb "
                                    f"({settings.max_download_mb})")
            got = 0
            while chunk := resp.read(1 << 20):
                got += len(chunk)
                if got > limit:
                    raise UpdateRefused(f"the download is larger than max_download_mb ({settings.max_download_mb} MB)")
                out.write(chunk)
            if declared and declared.isdigit() and got != int(declared):
                raise UpdateRefused(f"the download stopped early ({got} of {declared} bytes): truncated")
    except urllib.error.HTTPError as e:
        raise UpdateRefused(f"cannot download {settings.source}: the server answered {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", None) or e
        raise UpdateRefused(f"cannot download {settings.source}: {reason}") from None
    if target.stat().st_size < MIN_DOWNLOAD:
        raise UpdateRefused(f"the download is only {target.stat().st_size} bytes: not a list archive")
    if settings.checksum_url:
        _verify_checksum(opener, settings, target)
    return target


def _verify_checksum(opener, settings: ListUpdateSettings, target: Path) -> None:
    try:
        with opener.open(settings.checksum_url, timeout=60) as resp:
            text = resp.read(1 << 20).decode("ascii", "replace")
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise UpdateRefused(f"cannot fetch the checksum {settings.checksum_url}: {getattr(e, 'reason', e)}") from None
    name = settings.source.rstrip("/").rsplit("/", 1)[-1]
    wanted = None
    for line in text.splitlines():
        parts = line.split()
        if parts and (len(parts) == 1 or parts[-1].lstrip("*") == name):
            wanted = parts[0].lower()
            break
    algorithm = {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}.get(len(wanted or ""))
    if wanted is None or algorithm is None:
        raise UpdateRefused(f"{settings.checksum_url} has no checksum for {name}")
    digest = hashlib.new(algorithm)
    with open(target, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != wanted:
        raise UpdateRefused(f"the download does not match its published {algorithm} checksum: damaged or tampered with")


def unpack(archive: Path, into: Path, max_unpacked_mb: int) -> Path:
    """Extract a tar archive safely; the root of its categories. UpdateRefused if it is damaged,
    truncated, unsafe, too large, or holds no categories."""
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()  # reads the whole archive: a truncated one fails here
            size = sum(m.size for m in members if m.isfile())
            if size > max_unpacked_mb * 1024 * 1024:
                raise UpdateRefused(f"the archive unpacks to {size // 2**20} MB, more than max_unpacked_mb "
                                    f"({max_unpacked_mb})")
            tar.extractall(into, members=members, filter="data")
    except UpdateRefused:
        raise
    except tarfile.FilterError as e:
        raise UpdateRefused(f"the archive holds an unsafe entry ({e}): refused") from None
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise UpdateRefused(f"the archive is damaged or truncated ({type(e).__name__}: {e})") from None
    root = category_root(into)
    if root is None:
        raise UpdateRefused("the archive holds no UT1 categories (<category>/domains files)")
    return root


def compare(new: ListSet, current: ListSet | None, min_ratio: float) -> list[str]:
    """Why ``new`` should not replace ``current`` (empty: it may)."""
    problems = []
    if not new.entries:
        return ["the new set has no categories"]
    if current is None:
        return problems
    if current.total and new.total < min_ratio * current.total:
        problems.append(f"the new set has {new.total:,} entries, far fewer than the {current.total:,} in use "
                        f"(below min_ratio {min_ratio:.0%})")
    missing = sorted(c for c, n in current.entries.items() if n and not new.entries.get(c))
    if missing:
        problems.append(f"categories in use would vanish or be empty: {', '.join(missing)}")
    return problems


def install(root: Path, dest: Path) -> Path:
    """Move the checked tree ``root`` next to ``dest`` and switch ``dest`` (a symlink) to it atomically.
    The previous set is kept (one), older ones removed. Returns the new set's directory."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    version = dest.parent / f".{dest.name}-{stamp}"
    shutil.move(str(root), version)
    os.chmod(version, 0o755)
    if dest.exists() and not dest.is_symlink():  # a tree put there by `lists import`: keep it as the previous set
        dest.rename(dest.parent / f".{dest.name}-imported-{stamp}")
    previous = dest.resolve() if dest.is_symlink() else None
    link = dest.parent / f".{dest.name}.link-{stamp}"
    link.symlink_to(version.name)
    link.replace(dest)  # one rename: the proxy sees the old set or the new one, never a mix
    keep = {version, previous}
    for old in dest.parent.glob(f".{dest.name}-*"):
        if old not in keep and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return version


def current_set(dest: Path) -> ListSet | None:
    return count(dest) if dest.is_dir() else None


def status_path(dest: Path) -> Path:
    return dest.parent / f"{dest.name}.status.json"


def read_status(dest: Path) -> dict:
    try:
        return json.loads(status_path(dest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _record(config: Config, settings: ListUpdateSettings, dest: Path, result: str, new: ListSet | None) -> None:
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    status = read_status(dest)
    status.update({"last_attempt": now, "last_result": result, "source": settings.source})
    if result == "ok" and new is not None:
        status.update({"updated": now, "entries": new.total, "categories": len(new.entries)})
    tmp = status_path(dest).with_suffix(".tmp")
    tmp.write_text(json.dumps(status, indent=1), encoding="utf-8")
    tmp.replace(status_path(dest))
    if settings.history is not None:
        history = config.path(settings.history)
        history.parent.mkdir(parents=True, exist_ok=True)
        with open(history, "a", encoding="utf-8") as fh:
            totals = f" ({new.total} entries, {len(new.entries)} categories)" if new is not None else ""
            fh.write(f"{now} {settings.source}: {result}{totals}\n")


def update(config: Config, source: str | None = None, force: bool = False, log=print) -> ListSet:
    """Fetch, check and install; UpdateRefused (lists in use unchanged) if anything is wrong."""
    settings = config.lists.update or ListUpdateSettings()
    if source is not None:
        settings = settings.model_copy(update={"source": source})
    dest = config.path(settings.dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    new = None
    try:
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-incoming-") as tmp:
            work = Path(tmp)
            if "://" in settings.source:
                log(f"downloading {settings.source}"
                    + (f" through the upstream filter {config.proxy.upstream}" if config.proxy.upstream else ""))
                archive = download(settings, work, config.proxy.upstream)
                root = unpack(archive, work / "unpacked", settings.max_unpacked_mb)
            else:
                given = config.path(Path(settings.source))
                if given.is_dir():
                    found = category_root(given)
                    if found is None:
                        raise UpdateRefused(f"{given}: no UT1 categories (<category>/domains files)")
                    root = work / "copied"
                    shutil.copytree(found, root, symlinks=False)
                elif given.is_file():
                    root = unpack(given, work / "unpacked", settings.max_unpacked_mb)
                else:
                    raise UpdateRefused(f"{given}: no such file or directory")
            new = count(root)
            problems = compare(new, current_set(dest), settings.min_ratio)
            if problems and not force:
                raise UpdateRefused("; ".join(problems) + " — if the new set is right, run "
                                                          "`schoolproxy lists update --force`")
            install(root, dest)
    except UpdateRefused as e:
        _record(config, settings, dest, f"refused: {e}", None)
        raise
    _record(config, settings, dest, "ok", new)
    return new


def age_days(dest: Path, now: float | None = None) -> float | None:
    """Days since the lists at ``dest`` were last updated (the status file, else the tree's own time)."""
    now = time.time() if now is None else now
    updated = read_status(dest).get("updated")
    if updated:
        return (now - dt.datetime.fromisoformat(updated).timestamp()) / 86400
    try:
        return (now - dest.resolve().stat().st_mtime) / 86400
    except OSError:
        return None
