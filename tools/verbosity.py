"""`-v` / `-q` of every `ember` command: the level of the `ember.*` loggers and the progress display.

    -v, --verbose   debug messages too (stage and pass timings: `ember.compile`)
    (neither)       info messages, progress on a terminal
    -q, --quiet     warnings and errors only, no progress display

Every subcommand's parser takes `parents=[verbosity_options()]`, so the flags mean the same
everywhere, and calls `apply_verbosity(args)` after parsing. Messages go through `logging`
(stderr, one line each); a program that embeds ember configures the `ember` logger itself.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

LOGGER = "ember"


class _CliHandler(logging.StreamHandler):
    """The stderr handler the CLI installs (told apart from a host program's handlers)."""


def verbosity_options() -> argparse.ArgumentParser:
    """The parent parser holding -v/--verbose and -q/--quiet (dests `verbose`, `quiet`)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_mutually_exclusive_group()
    group.add_argument(
        "-v", "--verbose", action="store_true", help="debug messages too (stage and pass timings)"
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", help="warnings and errors only, no progress display"
    )
    return parent


def log_level(verbose: bool, quiet: bool) -> int:
    return logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO


def apply_verbosity(args: argparse.Namespace) -> None:
    """Set the `ember` logger's level from `args` and, unless logging is configured already
    (a root handler), print its messages on stderr as `ember: message` lines."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(log_level(getattr(args, "verbose", False), getattr(args, "quiet", False)))
    logger.handlers[:] = [h for h in logger.handlers if not isinstance(h, _CliHandler)]
    if not logging.getLogger().handlers:
        handler = _CliHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("ember: %(message)s"))
        logger.addHandler(handler)


@contextmanager
def restored_logging() -> Iterator[None]:
    """The `ember` logger's level and handlers as they were before a command ran (the CLI
    called in-process, by tests or a host program, leaves logging as it found it)."""
    logger = logging.getLogger(LOGGER)
    level, handlers = logger.level, list(logger.handlers)
    try:
        yield
    finally:
        logger.setLevel(level)
        logger.handlers[:] = handlers
