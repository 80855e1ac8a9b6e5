"""`ember serve REPO`: a model repository over HTTP with the KServe v2 / Open Inference Protocol.

    ember serve models/ --port 8000 --max-batch-size 8 --max-queue-delay-ms 2

The protocol of Triton and OpenVINO Model Server, so their clients (`tritonclient.http`) work
unchanged: `GET /v2/health/live`, `/v2/health/ready`, `/v2`, `/v2/models/{name}`,
`/v2/models/{name}/ready`, `/v2/models/{name}/config`, `POST /v2/models/{name}/infer` (JSON
tensors and the binary tensor extension), `POST /v2/repository/index`; Prometheus metrics at
`/metrics`. Each model's requests queue in a DynamicBatcher (runtime/batching.py) that runs them
in batches on the model's instances. FastAPI + uvicorn carry the HTTP; the models come from
tools/serve_models.py, the wire format from tools/serve_protocol.py. docs/serving.md has the
policies (batching, padding, threads, limits, status codes).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ember.runtime.batching import BatchStats, DynamicBatcher
from ember.runtime.errors import ModelError
from ember.tools.serve_models import (
    ModelSettings,
    ServedModel,
    environment_cpus,
    find_models,
    load_model,
    settings_for,
    thread_plan,
    warm_up,
)

if TYPE_CHECKING:
    from ember.tools.serve_app import InferFastPath

log = logging.getLogger("ember.serve")

_MISSING_EXTRA = (
    "ember serve needs FastAPI, uvicorn and prometheus_client: pip install 'ember[serve]'"
)


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (one per server)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        seconds = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
        self.requests = Counter(
            "ember_requests", "Inference requests received", ["model"], registry=self.registry
        )
        self.failures = Counter(
            "ember_request_failures",
            "Inference requests answered with an error, by HTTP status",
            ["model", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "ember_request_seconds",
            "Time from a request's arrival to its answer",
            ["model"],
            buckets=seconds,
            registry=self.registry,
        )
        self.queue_seconds = Histogram(
            "ember_queue_seconds",
            "Time a request waited in its model's queue",
            ["model"],
            buckets=seconds,
            registry=self.registry,
        )
        self.compute_seconds = Histogram(
            "ember_compute_seconds",
            "Time of one run of a model (one batch)",
            ["model"],
            buckets=seconds,
            registry=self.registry,
        )
        self.formation_seconds = Histogram(
            "ember_batch_formation_seconds",
            "Time from a batch's oldest request's arrival until the batch was complete (full, "
            "or max_queue_delay over); its queue time beyond that is waiting for a worker",
            ["model"],
            buckets=seconds,
            registry=self.registry,
        )
        self.model_seconds = Histogram(
            "ember_model_seconds",
            "Time of the model call alone in one run (compute minus stacking and splitting)",
            ["model"],
            buckets=seconds,
            registry=self.registry,
        )
        self.model_stall_seconds = Histogram(
            "ember_model_stall_seconds",
            "Time of the model call its calling thread was off the CPU (preempted, or waiting "
            "for a descheduled compute thread)",
            ["model"],
            buckets=seconds,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "ember_batch_size",
            "Rows of requests per run (before padding)",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.rows = Counter(
            "ember_batch_rows", "Rows run, by kind (request or padding)", ["model", "kind"],
            registry=self.registry,
        )  # fmt: skip
        self.elements = Counter(
            "ember_input_elements",
            "Input elements run, by kind (request or padding: rows and sequence padding)",
            ["model", "kind"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "ember_queue_depth", "Requests waiting", ["model"], registry=self.registry
        )
        self.compiles = Gauge(
            "ember_model_compiles",
            "Shape variants compiled since the model was loaded, warm-up included (a rise "
            "under traffic means requests waited for the compiler)",
            ["model"],
            registry=self.registry,
        )
        # The garbage collector stops every thread that needs the GIL (the event loop, the
        # batchers after their model calls) while it runs: a long collection is a latency
        # spike of every request in flight. Server-wide, not per model.
        self.gc_pause_seconds = Histogram(
            "ember_gc_pause_seconds",
            "Pauses of Python's garbage collector, by generation (2: a full collection)",
            ["generation"],
            buckets=seconds,
            registry=self.registry,
        )
        for generation in ("0", "1", "2"):
            self.gc_pause_seconds.labels(generation)
        self._gc_started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            pause = time.perf_counter() - self._gc_started
            self.gc_pause_seconds.labels(str(info["generation"])).observe(pause)

    def close(self) -> None:
        """Stop observing the garbage collector (its callbacks are process-wide)."""
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def declare(self, model: str) -> None:
        """Export every series of `model` at zero from the start. A labelled series otherwise
        appears only once it is first touched, so a scrape before the model's first run lacks
        it (and a rate or a before/after difference over that window has no starting point)."""
        for metric in (
            self.requests,
            self.request_seconds,
            self.queue_seconds,
            self.compute_seconds,
            self.formation_seconds,
            self.model_seconds,
            self.model_stall_seconds,
            self.batch_size,
        ):
            metric.labels(model)
        for kind in ("request", "padding"):
            self.rows.labels(model, kind)
            self.elements.labels(model, kind)

    def observe(self, model: str, stats: BatchStats) -> None:
        for waited in stats.queue_seconds:
            self.queue_seconds.labels(model).observe(waited)
        self.compute_seconds.labels(model).observe(stats.compute_seconds)
        self.formation_seconds.labels(model).observe(stats.formation_seconds)
        self.model_seconds.labels(model).observe(stats.model_seconds)
        self.model_stall_seconds.labels(model).observe(stats.model_stall_seconds)
        self.batch_size.labels(model).observe(stats.rows)
        self.rows.labels(model, "request").inc(stats.rows)
        self.rows.labels(model, "padding").inc(stats.padded_rows - stats.rows)
        self.elements.labels(model, "request").inc(stats.real_elements)
        self.elements.labels(model, "padding").inc(stats.padded_elements - stats.real_elements)


class ModelRepository:
    """The loaded models, each with its batcher; what the HTTP handlers call."""

    def __init__(self, models: dict[str, ServedModel]) -> None:
        self.models = models
        self.metrics = Metrics()
        self.batchers: dict[str, DynamicBatcher] = {}
        for name, served in models.items():
            self.batchers[name] = DynamicBatcher(
                served.run,
                served.policy(),
                served.input_names,
                name=name,
                on_batch=lambda stats, model=name: self.metrics.observe(model, stats),
            )
            batcher = self.batchers[name]
            self.metrics.declare(name)
            if hasattr(served.model, "compiles"):  # a model specialised per input shape
                compiled = served.model
                self.metrics.compiles.labels(name).set_function(lambda m=compiled: m.compiles)
            self.metrics.queue_depth.labels(name).set_function(lambda b=batcher: b.queued)
        self.ready = True

    def submit(self, name: str, feeds: dict[str, Any], timeout: float) -> Future[Any]:
        return self.batchers[name].submit(feeds, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Stop taking requests; finish the queued ones."""
        self.ready = False
        for batcher in self.batchers.values():
            batcher.close(timeout)
        self.metrics.close()


def load_repository(
    path: str | Path,
    defaults: ModelSettings | None = None,
    *,
    cpus: int | None = None,
    oversubscribe: bool = False,
    warmup: bool = True,
) -> ModelRepository:
    """Load every model of the repository folder `path` (compiling .onnx files)."""
    defaults = defaults or ModelSettings()
    paths = find_models(Path(path))
    settings = {name: settings_for(p, defaults) for name, p in paths.items()}
    for name, chosen in settings.items():  # every model's settings checked before compiling
        try:
            chosen.policy()
        except ValueError as error:
            raise ModelError(f"model '{name}': {error}") from None
    threads = thread_plan(settings, cpus or environment_cpus(), oversubscribe)
    models = {}
    for name, model_path in paths.items():
        started = time.perf_counter()
        served = load_model(name, model_path, settings[name], threads[name])
        variants = warm_up(served) if warmup else 0
        models[name] = served
        log.info(
            "model %s loaded from %s in %.1f s (%d variants compiled ahead): "
            "%d instances x %d threads",
            name,
            model_path,
            time.perf_counter() - started,
            variants,
            served.settings.instances,
            served.threads,
            extra={"model": name, "source": served.kind, "batching": served.batching},
        )
    return ModelRepository(models)


def freeze_startup_heap() -> int:
    """Take every object alive now (the compiled models, the imported modules) out of the
    garbage collector's reach; returns how many objects that is. Call once, after the models
    are loaded and warmed up.

    A full (generation-2) collection walks every tracked object, and holds the GIL while it
    does: with the BERT encoder's 8 compiled variants (their lowered IR, ~570k xDSL objects)
    one took 0.3-0.5 s of CPU (2 s under load), stopping the event loop and the batcher's
    calls alike. The traffic of a busy server triggers one every ~2,000 requests: that pause
    was the batched server's p99 (docs/serving.md "The batched p99 tail"). Frozen objects are
    never scanned again, so a full collection costs only what requests allocated since. The
    price: a frozen object that later becomes cyclic garbage (a variant evicted from the
    cache of specialisations) is never freed; bounded by what was alive at startup.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def create_app(repository: ModelRepository) -> InferFastPath:
    """The ASGI application serving `repository`: FastAPI behind the infer fast path
    (tools/serve_app.py)."""
    try:
        from ember.tools.serve_app import create_app as create
    except ImportError as error:
        raise ImportError(f"{_MISSING_EXTRA} ({error})") from None
    return create(repository)


# -- running -----------------------------------------------------------------------------------


class BackgroundServer:
    """`ember serve` in a thread of this process (tests, benchmarks): `.url`, `.stop()`."""

    def __init__(self, repository: ModelRepository, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        config = uvicorn.Config(
            create_app(repository),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=30,
        )
        self.repository = repository
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="ember-serve", daemon=True)
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server did not start (see the log)")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.host = host
        self.url = f"{host}:{self.port}"

    def stop(self) -> None:
        """Stop like on SIGTERM: finish the requests in flight, then the queued ones."""
        self.server.should_exit = True
        self.thread.join(60)


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: time, level, logger, message and the record's extras."""

    _STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        document.update(
            {
                k: v
                for k, v in vars(record).items()
                if k not in self._STANDARD and k != "color_message"
            }
        )
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


def configure_logging(level: str, form: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if form == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of sizes, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be >= 1, got {text!r}")
    return sizes


def _parser() -> argparse.ArgumentParser:
    defaults = ModelSettings()
    from ember.tools.verbosity import verbosity_options

    parser = argparse.ArgumentParser(
        prog="ember serve",
        description="Serve a model repository with the KServe v2 protocol (docs/serving.md).",
        parents=[verbosity_options()],
    )
    parser.add_argument("repository", help="folder of artifacts, model folders and .onnx files")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=8000, help="default: %(default)s")
    group = parser.add_argument_group("per-model defaults (a model's config.json overrides them)")
    group.add_argument("--instances", type=int, default=defaults.instances)
    group.add_argument(
        "--threads-per-instance",
        type=int,
        default=None,
        help="default: the cores split between all instances of all models",
    )
    group.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size)
    group.add_argument(
        "--preferred-batch-sizes",
        type=_batch_sizes,
        default=defaults.preferred_batch_sizes,
        metavar="1,2,4,8",
    )
    group.add_argument("--max-queue-delay-ms", type=float, default=defaults.max_queue_delay_ms)
    group.add_argument("--queue-limit", type=int, default=defaults.queue_limit)
    group.add_argument("--request-timeout-s", type=float, default=defaults.request_timeout_s)
    group.add_argument("--max-request-bytes", type=int, default=defaults.max_request_bytes)
    parser.add_argument(
        "--oversubscribe",
        action="store_true",
        help="allow more threads in total than cores (refused by default)",
    )
    parser.add_argument("--no-warmup", action="store_true", help="compile batch sizes on demand")
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["debug", "info", "warning", "error"],
        help="default: info (-v: debug, -q: warning)",
    )
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = args.log_level or ("debug" if args.verbose else "warning" if args.quiet else "info")
    configure_logging(level, args.log_format)
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn
    except ImportError as error:
        print(f"ember serve: error: {_MISSING_EXTRA} ({error})", file=sys.stderr)
        return 1
    defaults = replace(
        ModelSettings(),
        instances=args.instances,
        threads_per_instance=args.threads_per_instance,
        max_batch_size=args.max_batch_size,
        preferred_batch_sizes=args.preferred_batch_sizes,
        max_queue_delay_ms=args.max_queue_delay_ms,
        queue_limit=args.queue_limit,
        request_timeout_s=args.request_timeout_s,
        max_request_bytes=args.max_request_bytes,
    )
    repository = load_repository(
        args.repository, defaults, oversubscribe=args.oversubscribe, warmup=not args.no_warmup
    )
    frozen = freeze_startup_heap()
    log.info("%d objects alive after loading, frozen out of the garbage collector", frozen)
    uvicorn.run(
        create_app(repository),
        host=args.host,
        port=args.port,
        log_config=None,
        timeout_graceful_shutdown=30,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
