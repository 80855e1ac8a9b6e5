"""A stand-in case runner for the worker-pool tests: the case's directory name says what to do."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any


def run(case_dir: str, rtol: float, atol: float, options: dict[str, Any]) -> dict[str, Any]:
    kind = Path(case_dir).name.split("_")[0]
    if kind == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if kind == "hang":
        time.sleep(600)
    if kind == "exit":
        os._exit(3)
    return {"status": "passed", "pid": os.getpid(), "options": options, "rtol": rtol}
