"""A pool of worker processes that run many test cases each, replaced when one crashes or hangs.

    with WorkerPool("ember.tools.conformance.runner:run_case", jobs=2, timeout=60) as pool:
        results = pool.map([(name, (case_dir, rtol, atol, options)) for name in names])

A case runs as `runner(*args)` in a spawned worker and returns a dict. A worker runs many cases
(no Python start per case) and is replaced after `recycle` cases (bounding the memory held by
JIT-compiled modules), when it dies (a segfault in generated code) or when a case outlives its
`timeout`, or when a case's result asks for it (`RECYCLE_KEY`). A crashed or hung case gets `{"status": "crashed", "category": "crash" | "timeout", "message":
...}`, so one case never stops a run. Used by the conformance runner and the fuzzer.
"""

from __future__ import annotations

import importlib
import multiprocessing
import signal
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

Job = tuple[Hashable, tuple[Any, ...]]
# A result holding this key set to True has its worker replaced before the next case.
RECYCLE_KEY = "recycle_worker"
Progress = Callable[[Hashable, dict[str, Any]], None]


def _resolve(spec: str) -> Callable[..., dict[str, Any]]:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def _worker_main(conn: Connection, runner_spec: str, environ: Mapping[str, str]) -> None:
    import os

    os.environ.update(environ)
    runner = _resolve(runner_spec)
    while True:
        try:
            args = conn.recv()
        except EOFError:
            return
        if args is None:
            return
        conn.send(runner(*args))


def signal_name(exitcode: int | None) -> str:
    """`SIGSEGV` for a process killed by signal 11, else `exit code N`."""
    if exitcode is None or exitcode >= 0:
        return f"exit code {exitcode}"
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    key: Hashable | None = None
    deadline: float = 0.0
    done: int = 0


class WorkerPool:
    """`jobs` worker processes running `runner` ("module:function") on the cases given to map."""

    def __init__(
        self,
        runner: str,
        jobs: int = 2,
        timeout: float = 60.0,
        recycle: int = 100,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.runner = runner
        self.jobs = max(1, jobs)
        self.timeout = timeout
        self.recycle = recycle
        self.environ = dict(environ or {})
        # Spawned, not forked: workers start from a clean interpreter (no inherited LLVM state).
        self._mp = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self.restarts = 0  # workers replaced after a crash or a timeout

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> _Worker:
        parent, child = self._mp.Pipe()
        process = self._mp.Process(
            target=_worker_main, args=(child, self.runner, self.environ), daemon=True
        )
        process.start()
        child.close()
        return _Worker(process, parent)

    @staticmethod
    def _stop(worker: _Worker) -> None:
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join()
        worker.conn.close()

    def close(self) -> None:
        for worker in self._workers:
            if worker.process.is_alive() and worker.key is None:
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
            worker.process.join(2)
            self._stop(worker)
        self._workers = []

    def map(self, jobs: Iterable[Job], progress: Progress | None = None) -> dict[Any, Any]:
        """Run every (key, args) job; return key -> result, crashed and hung cases included."""
        pending = list(reversed(list(jobs)))
        results: dict[Any, dict[str, Any]] = {}
        while len(self._workers) < min(self.jobs, len(pending)):
            self._workers.append(self._start())
        workers = self._workers

        def record(worker: _Worker, result: dict[str, Any]) -> None:
            results[worker.key] = result
            if progress:
                progress(worker.key, result)
            worker.key = None
            worker.done += 1

        def assign(worker: _Worker) -> None:
            key, args = pending.pop()
            worker.key, worker.deadline = key, time.monotonic() + self.timeout
            worker.conn.send(args)

        try:
            for worker in workers:
                if pending:
                    assign(worker)
            while any(w.key is not None for w in workers):
                busy = [w for w in workers if w.key is not None]
                timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic())
                wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout)
                for i, worker in enumerate(workers):
                    if worker.key is None:
                        continue
                    restart = False
                    try:
                        if worker.conn.poll():
                            result = worker.conn.recv()
                            # A case may ask for a fresh worker (it ran code that may have
                            # corrupted this process without killing it).
                            restart = bool(result.pop(RECYCLE_KEY, False))
                            record(worker, result)
                            restart = restart or worker.done >= self.recycle
                        elif not worker.process.is_alive():
                            raise EOFError
                        elif time.monotonic() > worker.deadline:
                            message = f"no result after {self.timeout:g} s"
                            record(
                                worker,
                                {"status": "crashed", "category": "timeout", "message": message},
                            )
                            restart = True
                            self.restarts += 1
                    except (EOFError, OSError):
                        worker.process.join(5)
                        reason = signal_name(worker.process.exitcode)
                        record(
                            worker,
                            {
                                "status": "crashed",
                                "category": "crash",
                                "message": f"worker died ({reason})",
                            },
                        )
                        restart = True
                        self.restarts += 1
                    if restart:
                        self._stop(worker)
                        workers[i] = worker = self._start()
                    if worker.key is None and pending:
                        assign(worker)
        except BaseException:
            self.close()
            raise
        return results
