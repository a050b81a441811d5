"""Category lists: UT1-layout directories compiled at load into in-memory lookup tables.

Layout (as UT1 / squidGuard ship it): ``<source>/<category>/domains`` (a domain matches itself and every
subdomain), ``<source>/<category>/urls`` (``host/path`` entries that match that path prefix), and an
optional ``expressions`` file (regular expressions, which we count but do not apply: they are slow on
the hot path and UT1 uses them for little). A full UT1 tree can be used unchanged as a source; its
category names are mapped to ours through the ``aliases`` in the category metadata file.

Each category is a bit; a host's categories are an ``int`` mask, so the policy tests "blocked?" with
one AND. Lookup walks the host and its parent domains through a dict, whatever the list size.
Large lists are not held in that dict: :mod:`schoolproxy.filtering.listcache` compiles them into a memory-mapped
trie (``compiled``), and the dict holds only what is added after loading (help sites from the config).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import yaml

from schoolproxy.filtering.hostnames import InvalidHost, normalise_entry

log = logging.getLogger(__name__)

#: Pseudo-category every IP-literal host belongs to, so a profile can block bare-IP browsing.
IP_ADDRESS = "ip-address"
HELPSITES = "helpsites"

_PATH_END = frozenset("/?#;")


@dataclass(frozen=True, slots=True)
class CategoryInfo:
    name: str
    description: str = ""
    uksic: str | None = None
    theme: str | None = None
    severity: str = "medium"
    child_restricted: bool = False
    #: Illegal content (child abuse, terrorism): blocked for everyone; nothing in the config can allow it.
    locked: bool = False
    aliases: tuple[str, ...] = ()


@dataclass(slots=True)
class ListStats:
    domains: dict[str, int] = field(default_factory=dict)
    urls: dict[str, int] = field(default_factory=dict)
    expressions_ignored: int = 0
    invalid: int = 0
    files: int = 0


class ListError(ValueError):
    """A list source or metadata file cannot be used."""


class CategoryLists:
    """The compiled lists: ``classify(host, path)`` → category mask; names via :meth:`names`."""

    def __init__(self, info: dict[str, CategoryInfo]):
        self.info = info
        self.categories: list[str] = []
        self.bits: dict[str, int] = {}
        self._domains: dict[str, int] = {}
        self._urls: dict[str, list[tuple[str, int]]] = {}
        self._names: dict[int, frozenset[str]] = {0: frozenset()}
        self._sorted: dict[int, tuple[str, ...]] = {0: ()}
        self.stats = ListStats()
        #: The compiled, memory-mapped domain table (listcache.CompiledDomains), if loaded from the cache.
        self.compiled = None
        self.compiled_helpsites: list[str] = []
        for name in info:
            self.bit(name)
        self.bit(IP_ADDRESS)

    # -- building ---------------------------------------------------------------------------------
    def bit(self, category: str) -> int:
        """The mask bit of a category, allocating one for a new name."""
        b = self.bits.get(category)
        if b is None:
            b = self.bits[category] = 1 << len(self.categories)
            self.categories.append(category)
        return b

    def add_domain(self, host: str, category: str) -> None:
        b = self.bit(category)
        self._domains[host] = self._domains.get(host, 0) | b

    def add_url(self, host: str, path: str, category: str) -> None:
        b = self.bit(category)
        entries = self._urls.setdefault(host, [])
        for i, (p, m) in enumerate(entries):
            if p == path:
                entries[i] = (p, m | b)
                return
        entries.append((path, b))
        entries.sort(key=lambda e: -len(e[0]))  # longest prefix first

    def add_entry(self, raw: str, category: str) -> None:
        host, path = normalise_entry(raw)
        if path and path != "/":
            self.add_url(host, path, category)
        else:
            self.add_domain(host, category)

    # -- lookup (hot path) ------------------------------------------------------------------------
    def classify(self, host: str, path: str = "", is_ip: bool = False) -> int:
        """Mask of every category listing ``host`` (or a parent domain), or a URL prefix of ``path``.

        ``host`` must already be normalised (:func:`hostnames.normalise_host`).
        """
        compiled = self.compiled
        if is_ip:
            mask = self._domains.get(host, 0) | self.bits[IP_ADDRESS]
            if compiled is not None:
                mask |= compiled.exact(host)
            if self._urls and path:
                mask |= self._url_mask(host, path)
            return mask
        domains, urls = self._domains, self._urls
        mask = compiled.mask(host) if compiled is not None else 0
        if not domains and not urls:
            return mask
        h = host
        while True:
            m = domains.get(h)
            if m:
                mask |= m
            if urls and path and h in urls:
                mask |= self._url_mask(h, path)
            i = h.find(".")
            if i < 0:
                return mask
            h = h[i + 1:]

    def _url_mask(self, host: str, path: str) -> int:
        entries = self._urls.get(host)
        if not entries:
            return 0
        p = path.lower()
        mask = 0
        for prefix, m in entries:
            if p.startswith(prefix) and (
                len(p) == len(prefix) or prefix[-1] == "/" or p[len(prefix)] in _PATH_END
            ):
                mask |= m
        return mask

    def names(self, mask: int) -> frozenset[str]:
        """Category names of a mask (cached: masks repeat)."""
        names = self._names.get(mask)
        if names is None:
            names = frozenset(c for c, b in self.bits.items() if mask & b)
            if len(self._names) < 65536:
                self._names[mask] = names
        return names

    def sorted_names(self, mask: int) -> tuple[str, ...]:
        """Category names of a mask as a sorted tuple, cached: what a Verdict carries, per request."""
        names = self._sorted.get(mask)
        if names is None:
            names = tuple(sorted(self.names(mask)))
            if len(self._sorted) < 65536:
                self._sorted[mask] = names
        return names

    def helpsite_domains(self) -> list[str]:
        b = self.bits[HELPSITES]
        return self.compiled_helpsites + [d for d, m in self._domains.items() if m & b]

    def __len__(self) -> int:
        return (len(self.compiled) if self.compiled is not None else 0) + len(self._domains) \
            + sum(len(v) for v in self._urls.values())


def load_metadata(path: Path) -> dict[str, CategoryInfo]:
    """Read ``categories.yaml`` (see filterlists/); raise :class:`ListError` naming the problem."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ListError(f"{path}: category metadata file not found") from None
    except yaml.YAMLError as e:
        raise ListError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ListError(f"{path}: expected a mapping of category name → metadata")
    info: dict[str, CategoryInfo] = {}
    for name, meta in data.items():
        meta = meta or {}
        if not isinstance(meta, dict):
            raise ListError(f"{path}: {name}: expected a mapping")
        unknown = set(meta) - set(CategoryInfo.__slots__)
        if unknown:
            raise ListError(f"{path}: {name}: unknown key(s) {sorted(unknown)}")
        for flag in ("child_restricted", "locked"):
            if flag in meta and not isinstance(meta[flag], bool):
                raise ListError(f"{path}: {name}.{flag}: must be true or false, not {meta[flag]!r}")
        aliases = tuple(meta.pop("aliases", None) or ())
        info[str(name)] = CategoryInfo(name=str(name), aliases=aliases, **meta)
    info.setdefault(HELPSITES, CategoryInfo(HELPSITES, "Help and support services for children."))
    info.setdefault(IP_ADDRESS, CategoryInfo(IP_ADDRESS, "A site reached by bare IP address instead of a name."))
    return info


def load_lists(sources: Iterable[Path], info: dict[str, CategoryInfo]) -> CategoryLists:
    """Compile every category directory under each source. Raise :class:`ListError` on a missing source."""
    alias_of = {}
    for name, meta in info.items():
        for alias in meta.aliases:
            alias_of[alias] = name
    lists = CategoryLists(info)
    for source in sources:
        if not source.is_dir():
            raise ListError(f"{source}: list source is not a directory")
        for entry in sorted(os.scandir(source), key=lambda e: e.name):
            if entry.is_dir():
                category = alias_of.get(entry.name, entry.name)
                _load_category(lists, Path(entry.path), category)
    log.info("lists: %d entries in %d categories (%d invalid lines skipped)",
             len(lists), len(lists.categories), lists.stats.invalid)
    return lists


def _load_category(lists: CategoryLists, directory: Path, category: str) -> None:
    stats = lists.stats
    for kind in ("domains", "urls"):
        f = directory / kind
        if not f.is_file():
            continue
        stats.files += 1
        count = 0
        with open(f, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().split("\n")
        domain_bit = lists.bit(category)
        domains = lists._domains
        for line in lines:
            line = line.strip()
            if not line or line[0] == "#":
                continue
            if kind == "domains" and line.isascii() and "/" not in line and ":" not in line:
                # Fast path for the millions of plain domain lines in a full list.
                host = line.lower().rstrip(".").lstrip("*.")
                if host and " " not in host and not host[-1].isdigit():
                    domains[host] = domains.get(host, 0) | domain_bit
                    count += 1
                    continue
            try:
                lists.add_entry(line, category)
                count += 1
            except InvalidHost:
                stats.invalid += 1
        getattr(stats, kind)[category] = getattr(stats, kind).get(category, 0) + count
    if (directory / "expressions").is_file():
        stats.expressions_ignored += 1
