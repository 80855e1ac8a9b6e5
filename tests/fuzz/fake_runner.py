"""A stand-in runner for the worker-pool test: reports its pid, asks for a fresh worker."""

from __future__ import annotations

import os
from typing import Any

from ember.tools.workers import RECYCLE_KEY


def run(recycle: bool) -> dict[str, Any]:
    return {"pid": os.getpid(), RECYCLE_KEY: recycle}
