"""FileCheck on printed IR: `assert_filecheck(ir_text, checks)` with LLVM FileCheck syntax."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path


def assert_filecheck(text: str, checks: str) -> None:
    """Fail with FileCheck's diagnostics unless `text` matches the CHECK lines in `checks`."""
    with tempfile.TemporaryDirectory() as tmp:
        check_file = Path(tmp) / "checks.txt"
        input_file = Path(tmp) / "input.mlir"
        check_file.write_text(textwrap.dedent(checks))
        input_file.write_text(text)
        result = subprocess.run(
            [sys.executable, "-m", "filecheck", str(check_file), "--input-file", str(input_file)],
            capture_output=True,
            text=True,
        )
    assert result.returncode == 0, f"FileCheck failed:\n{result.stderr}\n--- IR ---\n{text}"
