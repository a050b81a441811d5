"""The compiled list cache: millions of list entries ready in milliseconds, in a few MB of memory.

A full UT1 tree is ~3 million domains. Parsed into a Python dict it takes seconds to build and ~700 MB
to hold, in every proxy process. Instead the lists are compiled once into a MARISA trie (marisa-trie)
of the domains written backwards with a leading dot (``a.com`` → ``moc.a.``) plus a flat array of
category-mask numbers, and each proxy process memory-maps them: the kernel shares the pages between
processes and loads only those a lookup touches. A host's categories are the OR of every key that is a
prefix of the reversed host — exactly the host and its parent domains, since keys end at a dot.

The cache lives in ``lists.cache_dir`` under a fingerprint of the sources (every list file's size and
mtime, and the category metadata): a changed list gets a new fingerprint, hence a fresh compile, and an
unchanged one is opened, never re-read.

A cache is never modified in place: it is written into a new directory and renamed into place, its files
read-only (0400, directory 0700). ``meta.json``, written last, holds the size and SHA-256 of every file and
a checksum of itself; they are verified each time the cache is opened (~50 ms for 3M entries), so a
truncated or overwritten cache is compiled again rather than trusted. Damage after opening is noticed by
the reloader (the files are watched) and the next snapshot opens a fresh compile. Big lists are compiled in a child process so the proxy's own
heap never holds the dict; concurrent compiles (several workers) are serialised by a lock file.
``python -m schoolproxy.filtering.listcache`` (used by that child and by ``schoolproxy lists compile``) compiles.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import mmap
import os
import shutil
import subprocess
import sys
import time
from array import array
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

import marisa_trie

from schoolproxy.filtering.lists import (
    HELPSITES,
    CategoryInfo,
    CategoryLists,
    ListError,
    ListStats,
    load_lists,
    load_metadata,
)
from schoolproxy.private import private_dir

log = logging.getLogger(__name__)

FORMAT = 2  # 2: sizes and checksums of the files in meta.json
#: Sources up to this size are compiled inside the proxy process; bigger ones in a child process.
IN_PROCESS_BYTES = 8 << 20
KEEP = 3  # compiled versions kept (the newest few; older ones are removed after a compile)
STALE_SECONDS = 3600  # a half-written compile this old was interrupted
LIST_FILES = ("domains", "urls", "expressions")  # the files of one UT1 category directory
DATA_FILES = ("domains.marisa", "masks.u32")
CACHE_FILES = (*DATA_FILES, "meta.json")  # meta.json last: its presence marks a complete cache


def trie_key(host: str) -> str:
    """``www.a.com`` → ``moc.a.www.``: a listed domain's key is a prefix of each of its subdomains' keys."""
    return ("." + host)[::-1]


def fingerprint(sources: Iterable[Path], metadata: Path) -> tuple[str, int]:
    """A name for this exact set of list files, and their total size in bytes."""
    h = hashlib.sha256(f"schoolproxy-lists-{FORMAT}\n".encode())
    try:
        h.update(metadata.read_bytes())
    except OSError as e:
        raise ListError(f"{metadata}: cannot read category metadata: {e.strerror}") from None
    total = 0
    for src in sources:
        if not src.is_dir():
            raise ListError(f"{src}: list source is not a directory")
        h.update(f"source {src.resolve()}\n".encode())
        for entry in sorted(os.scandir(src), key=lambda e: e.name):
            if not entry.is_dir():
                continue
            for kind in LIST_FILES:
                try:
                    st = os.stat(os.path.join(entry.path, kind))
                except FileNotFoundError:
                    continue
                total += st.st_size
                h.update(f"{entry.name}/{kind} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32], total


class CompiledDomains:
    """The memory-mapped domain table of one compiled cache directory."""

    def __init__(self, directory: Path, masks: list[int]):
        self.directory = directory
        self.trie = marisa_trie.Trie()
        self.trie.mmap(str(directory / "domains.marisa"))
        self.masks = masks
        size = (directory / "masks.u32").stat().st_size
        if size:
            with open(directory / "masks.u32", "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self.ids = memoryview(self._map).cast("I")
        else:
            self.ids = memoryview(b"").cast("I")
        if len(self.ids) != len(self.trie):
            raise ValueError(f"{len(self.trie)} keys but {len(self.ids)} mask numbers")

    def mask(self, host: str) -> int:
        """Categories of ``host`` and every parent domain listed."""
        m = 0
        ids, masks = self.ids, self.masks
        for _, kid in self.trie.iter_prefixes_with_ids(("." + host)[::-1]):  # trie_key, inlined: hot path
            m |= masks[ids[kid]]
        return m

    def exact(self, host: str) -> int:
        """Categories listing exactly ``host`` (an IP address has no parent domains)."""
        kid = self.trie.get(trie_key(host))
        return self.masks[self.ids[kid]] if kid is not None else 0

    def __len__(self) -> int:
        return len(self.trie)


# -- writing ------------------------------------------------------------------------------------------
def write_cache(lists: CategoryLists, directory: Path, key: str) -> None:
    """Write ``lists`` (a freshly parsed, dict-backed CategoryLists) as cache ``directory`` atomically."""
    domains = lists._domains
    # One trie level: a third larger than marisa's default of three, but a lookup takes half the time.
    trie = marisa_trie.Trie([trie_key(d) for d in domains], num_tries=1)
    distinct: dict[int, int] = {}
    ids = array("I", bytes(4 * len(trie)))
    for k, kid in trie.iteritems():
        mask = domains[k[-2::-1]]
        ids[kid] = distinct.setdefault(mask, len(distinct))
    for entries in lists._urls.values():
        for _, mask in entries:
            distinct.setdefault(mask, len(distinct))
    help_bit = lists.bits.get(HELPSITES, 0)
    directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = directory.parent / f".tmp-{key}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    try:
        trie.save(str(tmp / "domains.marisa"))
        with open(tmp / "masks.u32", "wb") as f:
            ids.tofile(f)
        meta = _meta(lists, key, distinct, domains, help_bit, tmp)
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")  # written last: marks it complete
        for name in CACHE_FILES:
            os.chmod(tmp / name, 0o400)  # never written again, by us or by mistake
        try:
            os.rename(tmp, directory)
        except OSError:
            if not (directory / "meta.json").is_file():
                raise
            # Another process compiled the same lists meanwhile: theirs is as good as ours.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _meta(lists: CategoryLists, key: str, distinct: dict[int, int], domains: dict[str, int], help_bit: int,
          directory: Path) -> dict:
    meta = {
        "format": FORMAT,
        "fingerprint": key,
        "categories": lists.categories,
        "masks": [format(m, "x") for m in distinct],
        "urls": {h: [[p, distinct[m]] for p, m in e] for h, e in lists._urls.items()},
        "helpsites": sorted(d for d, m in domains.items() if m & help_bit) if help_bit else [],
        "stats": asdict(lists.stats),
        "files": {name: _file_sum(directory / name) for name in DATA_FILES},
    }
    meta["checksum"] = _meta_sum(meta)
    return meta


def _file_sum(path: Path) -> list:
    """[size, sha256] of a file, read in chunks (the trie of 3M entries is ~35 MB)."""
    with open(path, "rb") as f:
        return [os.fstat(f.fileno()).st_size, hashlib.file_digest(f, "sha256").hexdigest()]


def _meta_sum(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def verify(directory: Path, meta: dict) -> None:
    """Raise ValueError unless ``meta`` and the files it describes are exactly as written."""
    if meta.get("checksum") != _meta_sum(meta):
        raise ValueError("meta.json does not match its checksum")
    for name in DATA_FILES:
        expected = meta["files"][name]
        actual = _file_sum(directory / name)
        if actual[0] != expected[0]:
            raise ValueError(f"{name} is {actual[0]} bytes, written as {expected[0]}")
        if actual[1] != expected[1]:
            raise ValueError(f"{name} does not match its checksum (changed since it was written)")


def compile_to(sources: list[Path], metadata: Path, cache_dir: Path) -> Path:
    """Parse the sources and write their compiled cache; return its directory."""
    key, _ = fingerprint(sources, metadata)
    directory = cache_dir / key
    if not (directory / "meta.json").is_file():
        t = time.perf_counter()
        lists = load_lists(sources, load_metadata(metadata))
        write_cache(lists, directory, key)
        log.info("lists: compiled %d entries into %s in %.1f s", len(lists), directory, time.perf_counter() - t)
    _prune(cache_dir, keep=directory)
    return directory


def _prune(cache_dir: Path, keep: Path) -> None:
    old = sorted((p for p in cache_dir.iterdir() if p.is_dir() and p != keep and not p.name.startswith(".")),
                 key=lambda p: p.stat().st_mtime, reverse=True)
    for p in old[KEEP - 1:]:
        shutil.rmtree(p, ignore_errors=True)  # a process still mapping it keeps its pages (Linux)
    # What a compile killed half-way (kill -9, power cut) left behind, once it is surely not in progress.
    for p in [*cache_dir.glob(".tmp-*"), *cache_dir.glob(".damaged-*")]:
        try:
            if p.is_dir() and time.time() - p.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            continue


def cache_files(lists: CategoryLists) -> list[Path]:
    """The compiled files ``lists`` was opened from (watched: a change means damage), or []."""
    compiled = lists.compiled
    return [compiled.directory / name for name in CACHE_FILES] if compiled is not None else []


# -- opening ------------------------------------------------------------------------------------------
def open_cache(directory: Path, info: dict[str, CategoryInfo]) -> CategoryLists:
    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"cache format {meta.get('format')}, expected {FORMAT}")
    verify(directory, meta)
    lists = CategoryLists(info)
    bits = [lists.bit(name) for name in meta["categories"]]

    def remap(hex_mask: str) -> int:
        old, new, i = int(hex_mask, 16), 0, 0
        while old:
            if old & 1:
                new |= bits[i]
            old >>= 1
            i += 1
        return new

    masks = [remap(m) for m in meta["masks"]]
    lists._urls = {h: [(p, masks[i]) for p, i in e] for h, e in meta["urls"].items()}
    lists.compiled = CompiledDomains(directory, masks)
    lists.compiled_helpsites = meta["helpsites"]
    lists.stats = ListStats(**meta["stats"])
    return lists


def load_compiled(sources: list[Path], metadata: Path, info: dict[str, CategoryInfo],
                  cache_dir: Path | None) -> CategoryLists:
    """The lists from their compiled cache, compiling it first if the sources changed.

    Without a cache directory, or if it cannot be written, the lists are parsed into memory as before
    (slower to start and larger, but the proxy runs)."""
    if cache_dir is None:
        return load_lists(sources, info)
    key, size = fingerprint(sources, metadata)
    directory = cache_dir / key
    for attempt in (1, 2):
        if not (directory / "meta.json").is_file():
            try:
                _compile_locked(sources, metadata, cache_dir, directory, size)
            except OSError as e:
                log.warning("lists: cannot write the compiled cache in %s (%s); parsing the lists into memory",
                            cache_dir, e)
                return load_lists(sources, info)
        try:
            return open_cache(directory, info)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:  # marisa: RuntimeError
            if attempt == 2:
                raise ListError(f"{directory}: compiled list cache unusable: {e}") from None
            log.warning("lists: compiled cache %s is damaged (%s); compiling it again", directory, e)
            _remove(directory)
    raise AssertionError("unreachable")


def _remove(directory: Path) -> None:
    """Remove a damaged cache: renamed aside first, so a process mapping it keeps its (damaged) pages
    until it swaps, and the compile that follows gets a fresh directory of the same name."""
    aside = directory.parent / f".damaged-{directory.name}-{os.getpid()}"
    try:
        os.rename(directory, aside)
    except OSError:
        aside = directory
    shutil.rmtree(aside, ignore_errors=True)


def _compile_locked(sources: list[Path], metadata: Path, cache_dir: Path, directory: Path, size: int) -> None:
    private_dir(cache_dir, tighten=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker compiling the same lists: wait for it
        if (directory / "meta.json").is_file():
            return
        if size <= IN_PROCESS_BYTES:
            compile_to(sources, metadata, cache_dir)
            return
        log.info("lists: compiling %.0f MB of lists in a child process (once per change)…", size / 2**20)
        r = subprocess.run([sys.executable, "-m", "schoolproxy.filtering.listcache", "--cache-dir", str(cache_dir),
                            "--metadata", str(metadata), *map(str, sources)], capture_output=True, text=True)
        if r.returncode != 0:
            raise ListError("compiling the lists failed: "
                            + ((r.stderr.strip().splitlines() or ["(no output)"])[-1])[:300])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m schoolproxy.filtering.listcache", description="compile category lists")
    ap.add_argument("--cache-dir", type=Path, required=True)
    ap.add_argument("--metadata", type=Path, required=True)
    ap.add_argument("sources", type=Path, nargs="+")
    args = ap.parse_args(argv)
    try:
        print(compile_to(args.sources, args.metadata, args.cache_dir))
    except (ListError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
