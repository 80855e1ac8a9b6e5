"""Kernel choices that depend on sizes, made once for every shape (compile once, issue 10).

Some conversions pick a kernel variant from an activation's size: the channel-lanes conv's
channel block (its weight layout `conv_lanes_panel{NR}`) or the im2col GEMM by the output's
width. A program compiled once serves every size, so compile once (engine/compile_once.py)
imports the model at its largest probe shape with a `SizeChoices` log recording each such
choice in program order, then at the other probes replaying them: the probes' programs get
the same kernels (and weight layouts), tuned for the largest probe's maps (a 224 x 224
image's for conv networks). Outside compile once, `size_choice` just computes the choice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")


class SizeChoiceMismatch(Exception):
    """A replayed import asked for another choice than the one recorded (the programs at the
    probe shapes differ before their kernels do)."""


class SizeChoices:
    """Choices recorded at one import, in order, then replayed at the others."""

    def __init__(self) -> None:
        self.recorded: list[tuple[str, Any]] = []
        self.replaying = False
        self.position = 0

    def replay(self) -> None:
        """From now on, hand out the recorded choices from the first."""
        self.replaying, self.position = True, 0


_CHOICES: ContextVar[SizeChoices | None] = ContextVar("ember_size_choices", default=None)


@contextmanager
def choices_in(log: SizeChoices) -> Iterator[SizeChoices]:
    """Size choices within the block are recorded in (or replayed from) `log`."""
    token = _CHOICES.set(log)
    try:
        yield log
    finally:
        _CHOICES.reset(token)


def size_choice(what: str, choose: Callable[[], T]) -> T:
    """`choose()`, or (replaying) the choice recorded for `what` at the same point."""
    log = _CHOICES.get()
    if log is None:
        return choose()
    if not log.replaying:
        value = choose()
        log.recorded.append((what, value))
        return value
    if log.position >= len(log.recorded) or log.recorded[log.position][0] != what:
        found = log.recorded[log.position][0] if log.position < len(log.recorded) else "none"
        raise SizeChoiceMismatch(f"a size choice for {what} where {found} was recorded")
    value = log.recorded[log.position][1]
    log.position += 1
    return value
