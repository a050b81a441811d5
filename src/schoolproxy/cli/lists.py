"""``schoolproxy lists``: import a UT1 tree, show entries per category."""

from __future__ import annotations

import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

from schoolproxy.snapshot import build_snapshot


def register(sub) -> None:
    p = sub.add_parser("lists", help="import or inspect category lists")
    p.set_defaults(func=cmd_lists)
    lsub = p.add_subparsers(dest="lists_command", required=True)
    q = lsub.add_parser("import", help="import a UT1 blacklist tree (directory or .tar.gz) unchanged")
    q.add_argument("source")
    q.add_argument("--dest", default="var/lists/ut1", help="where to put it (default: var/lists/ut1)")
    q = lsub.add_parser("stats", help="entries per category in the configured lists")
    q.add_argument("--config", default=None)
    q = lsub.add_parser("update", help="fetch the UT1 lists (lists.update), check them and put them in place")
    q.add_argument("--config", default=None)
    q.add_argument("--source", help="a URL, or a file or directory put here by hand (default: lists.update.source)")
    q.add_argument("--force", action="store_true",
                   help="accept a set that is much smaller than the one in use, or lacks some of its categories")



def cmd_lists(args) -> int:
    if args.lists_command == "update":
        return cmd_update(args)
    if args.lists_command == "stats":
        snap = build_snapshot(args.config, run_tests=False)
        stats = snap.lists.stats
        print(f"{'category':<24} {'domains':>10} {'urls':>8}")
        for c in snap.lists.categories:
            print(f"{c:<24} {stats.domains.get(c, 0):>10} {stats.urls.get(c, 0):>8}")
        print(f"total entries: {len(snap.lists)}; invalid lines skipped: {stats.invalid}; "
              f"expression files ignored: {stats.expressions_ignored}")
        return 0
    return import_ut1(Path(args.source), Path(args.dest))


def import_ut1(source: Path, dest: Path) -> int:
    """Put a UT1 tree (directory or tarball) at ``dest`` unchanged, after checking it compiles."""
    from schoolproxy.filtering.lists import load_lists
    with tempfile.TemporaryDirectory(dir=dest.parent if dest.parent.exists() else None) as tmp:
        if source.is_file():
            try:
                with tarfile.open(source) as tar:
                    tar.extractall(tmp, filter="data")
            except (tarfile.TarError, OSError) as e:
                print(f"error: {source}: not a readable tar archive: {e}", file=sys.stderr)
                return 2
            root = _category_root(Path(tmp))
        elif source.is_dir():
            root = _category_root(source)
        else:
            print(f"error: {source}: no such file or directory", file=sys.stderr)
            return 2
        if root is None:
            print(f"error: {source}: no UT1 categories found (expected <category>/domains files)", file=sys.stderr)
            return 2
        lists = load_lists([root], {})
        staged = Path(tmp) / "staged"
        shutil.copytree(root, staged, symlinks=False)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.move(staged, dest)
    print(f"imported {len(lists)} entries in {len(lists.categories) - 1} categories into {dest}")
    print("add it to lists.sources in your config, then reload (SIGHUP) — UT1 names are mapped to ours "
          "through the aliases in filterlists/categories.yaml")
    return 0


def _category_root(top: Path) -> Path | None:
    """The directory whose subdirectories hold ``domains`` files (UT1 tarballs nest it in blacklists/)."""
    for d in [top, *sorted(p for p in top.rglob("*") if p.is_dir())]:
        if any((c / "domains").is_file() for c in d.iterdir() if c.is_dir()):
            return d
    return None


def cmd_update(args) -> int:
    from schoolproxy.config import ListUpdateSettings, load_config
    from schoolproxy.filtering.listupdate import UpdateRefused, update
    cfg = load_config(args.config)
    dest = cfg.path((cfg.lists.update or ListUpdateSettings()).dest)
    try:
        new = update(cfg, source=args.source, force=args.force)
    except UpdateRefused as e:
        print(f"lists NOT updated: {e}. The lists in use are unchanged.", file=sys.stderr)
        return 1
    print(f"lists updated: {new.total:,} entries in {len(new.entries)} categories, now in use at {dest}")
    if dest not in [cfg.path(s) for s in cfg.lists.sources]:
        print(f"warning: {dest} is not in lists.sources, so the proxy does not use these lists: add it there",
              file=sys.stderr)
    else:
        print("the proxy picks them up by itself within seconds (it compiles them beside the running ones)")
    return 0
