"""FileCheck on printed IR: `assert_filecheck(ir_text, checks)` with LLVM FileCheck syntax.

The `filecheck` package runs in this process (`run_filecheck`, shared with tests/lit.py): a
`python -m filecheck` subprocess per check cost ~0.12 s of CPU, over ~100 checks per suite run.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import textwrap
import traceback
from collections.abc import Sequence
from pathlib import Path


def run_filecheck(check_args: Sequence[str], text: str) -> tuple[int, str]:
    """`filecheck CHECK_ARGS` on `text` as its input, in this process: its exit status and
    what it printed (the diagnostics). A check file it cannot read or parse is status 2 with
    the exception, as the command's own traceback would be."""
    from filecheck.matcher import Matcher
    from filecheck.options import parse_argv_options

    err = io.StringIO()
    with tempfile.TemporaryDirectory() as tmp:
        input_file = Path(tmp) / "input.mlir"
        input_file.write_text(text)
        argv = ["filecheck", *check_args, "--input-file", str(input_file)]
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
            try:
                status = Matcher.from_opts(parse_argv_options(argv)).run()
            except Exception:  # noqa: BLE001  (reported as the failing check's output)
                traceback.print_exc(file=err)
                status = 2
    return status, err.getvalue()


def assert_filecheck(text: str, checks: str) -> None:
    """Fail with FileCheck's diagnostics unless `text` matches the CHECK lines in `checks`."""
    with tempfile.TemporaryDirectory() as tmp:
        check_file = Path(tmp) / "checks.txt"
        check_file.write_text(textwrap.dedent(checks))
        status, diagnostics = run_filecheck([str(check_file)], text)
    assert status == 0, f"FileCheck failed:\n{diagnostics}\n--- IR ---\n{text}"
