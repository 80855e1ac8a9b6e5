"""`ember cache`: where the on-disk cache is, what it holds, and emptying it.

    ember cache info                       # location, entries and bytes per kind, the cap
    ember cache list                       # every entry: last use, size, kind, name
    ember cache clear [--older-than DAYS]  # remove everything, or what was unused that long

The cache itself (location, cap, eviction) is runtime/cache.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

from ember.runtime.cache import ARTIFACT, DATA, OBJECT, CacheEntry, DiskCache
from ember.tools.verbosity import apply_verbosity, verbosity_options

KIND_NAMES = {
    OBJECT: "compiled kernels (objects/)",
    ARTIFACT: "compiled models (artifacts/)",
    DATA: "conformance data (onnx-node-tests/, not evicted)",
}


def format_bytes(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _entry_name(cache: DiskCache, entry: CacheEntry) -> str:
    """The entry's path in the cache; an artifact also names the model it was compiled from."""
    try:
        name = str(entry.path.relative_to(cache.root))
    except ValueError:
        name = str(entry.path)
    if entry.kind == ARTIFACT:
        try:
            source = json.loads((entry.path / "manifest.json").read_text())["source"]["name"]
            name += f"  ({source})"
        except (OSError, ValueError, KeyError, TypeError):
            pass  # an incomplete entry: listed by its path alone
    return name


def info(cache: DiskCache) -> str:
    entries = cache.entries()
    where = "EMBER_CACHE_DIR" if os.environ.get("EMBER_CACHE_DIR") else "the user cache directory"
    lines = [f"location: {cache.root} ({where})"]
    for kind, label in KIND_NAMES.items():
        of_kind = [e for e in entries if e.kind == kind]
        count = f"{len(of_kind)} entr{'y' if len(of_kind) == 1 else 'ies'}"
        lines.append(f"{label}: {count}, {format_bytes(sum(e.bytes for e in of_kind))}")
    compiled = sum(e.bytes for e in entries if e.kind != DATA)
    lines.append(
        f"compiled entries: {format_bytes(compiled)} of the {format_bytes(cache.max_bytes)} cap "
        "(EMBER_CACHE_MAX_BYTES); the least recently used are evicted beyond it"
    )
    return "\n".join(lines)


def listing(cache: DiskCache) -> str:
    entries = sorted(cache.entries(), key=lambda e: e.last_used, reverse=True)
    if not entries:
        return f"{cache.root}: empty"
    lines = [f"{'last used':<19}  {'size':>10}  {'kind':<8}  name (in {cache.root})"]
    for entry in entries:
        used = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.last_used))
        lines.append(
            f"{used:<19}  {format_bytes(entry.bytes):>10}  {entry.kind:<8}  "
            f"{_entry_name(cache, entry)}"
        )
    return "\n".join(lines)


def clear(cache: DiskCache, older_than_days: float | None) -> str:
    seconds = None if older_than_days is None else older_than_days * 86400
    removed = cache.clear(seconds)
    which = "" if older_than_days is None else f" unused for {older_than_days:g} days"
    return (
        f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'}{which} "
        f"({format_bytes(sum(e.bytes for e in removed))}) from {cache.root}"
    )


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of days, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        parents=[verbosity_options()], prog="ember cache", description=__doc__.split("\n")[0]
    )
    parser.add_argument("action", choices=["info", "list", "clear"])
    parser.add_argument(
        "--older-than",
        type=_days,
        metavar="DAYS",
        help="clear: only entries not used for this many days",
    )
    args = parser.parse_args(argv)
    apply_verbosity(args)
    if args.older_than is not None and args.action != "clear":
        parser.error("--older-than applies to clear only")
    try:
        cache = DiskCache.default()
    except ValueError as e:  # a malformed EMBER_CACHE_MAX_BYTES
        print(f"ember cache: error: {e}", file=sys.stderr)
        return 1
    if args.action == "info":
        print(info(cache))
    elif args.action == "list":
        print(listing(cache))
    else:
        print(clear(cache, args.older_than))
    return 0


if __name__ == "__main__":
    sys.exit(main())
