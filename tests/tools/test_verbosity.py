"""-v/-q on every `ember` command (tools/verbosity.py) and the compile progress display:
the level of the `ember.*` loggers, progress on a terminal only, through tqdm."""

from __future__ import annotations

import io
import logging
import sys

import onnx
import pytest

import ember
from ember.engine import aot
from ember.tests.tools.test_profile import twin_convs
from ember.tools import cli

COMMANDS = ["compile", "run", "bench", "opt", "conformance", "fuzz", "check", "graph", "view",
            "profile", "quantize", "cache", "serve"]  # fmt: skip


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_v_and_q(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    assert "-v, --verbose" in help_text and "-q, --quiet" in help_text
    # The two are exclusive, with argparse's one-line usage error.
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "-v", "-q"])
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def _compile(tmp_path, *flags: str) -> None:
    path = tmp_path / "twin.onnx"
    onnx.save(twin_convs(4, 4), str(path))
    argv = ["compile", str(path), "-o", str(tmp_path / f"out{len(flags)}"), "--threads", "1"]
    assert cli.main([*argv, *flags]) == 0


@pytest.mark.parametrize(("flags", "debug"), [((), False), (("-v",), True), (("-q",), False)])
def test_verbose_logs_pass_timings_and_leaves_the_level_as_found(
    tmp_path, caplog: pytest.LogCaptureFixture, flags: tuple[str, ...], debug: bool
) -> None:
    logger = logging.getLogger("ember")
    before = logger.level
    caplog.set_level(logging.DEBUG)  # the root handler sees what the ember logger lets through
    logger.setLevel(logging.NOTSET)
    try:
        _compile(tmp_path, *flags)
        passes = [r for r in caplog.records if r.name == "ember.compile" and "pass " in r.msg]
        assert bool(passes) == debug
        assert logger.level == logging.NOTSET  # restored after the command
    finally:
        logger.setLevel(before)


def test_quiet_hides_info_messages(caplog: pytest.LogCaptureFixture) -> None:
    from argparse import Namespace

    from ember.tools.verbosity import apply_verbosity, restored_logging

    caplog.set_level(logging.DEBUG)
    for quiet, shown in [(False, True), (True, False)]:
        caplog.clear()
        with restored_logging():
            apply_verbosity(Namespace(verbose=False, quiet=quiet))
            logging.getLogger("ember.cli").info("compiling an instrumented build")
            logging.getLogger("ember.cli").warning("a warning")
        messages = [r.getMessage() for r in caplog.records]
        assert ("compiling an instrumented build" in messages) == shown
        assert "a warning" in messages


def test_cli_without_logging_configured_prints_one_line_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Outside pytest no root handler: the CLI prints `ember: message` on stderr itself."""
    from argparse import Namespace

    from ember.tools.verbosity import apply_verbosity, restored_logging

    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    with restored_logging():
        apply_verbosity(Namespace(verbose=True, quiet=False))
        logging.getLogger("ember.compile").debug("pass fuse: 0.001 s")
    logging.getLogger("ember.compile").debug("after the command")  # handler removed again
    assert stderr.getvalue() == "ember: pass fuse: 0.001 s\n"


def test_progress_is_a_tqdm_line_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    progress = aot.Progress(terminal)
    with progress.stage("import, optimize, lower to loops"):
        progress.detail = "fuse-conv-activation"
    text = terminal.getvalue()
    assert text.startswith("\r  import, optimize, lower to loops") and text.endswith("\n")
    assert text.split("\r")[-1].rstrip().endswith(" s")  # the stage's time, the line kept
    assert "\033[K" not in text  # tqdm draws it, not hand-written escape codes


def test_ember_compile_shows_progress_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for stream, progress, shown in [
        (_Terminal(), True, True),
        (_Terminal(), False, False),
        (io.StringIO(), True, False),
    ]:
        monkeypatch.setattr(sys, "stderr", stream)
        ember.compile(twin_convs(4, 4), threads=1, progress=progress)
        text = stream.getvalue()
        assert ("LLVM codegen (O3)" in text) == shown, text
        assert ("import, optimize, lower to loops" in text) == shown


def test_config_shows_progress_by_default() -> None:
    assert ember.Config("model.onnx")._progress is True
