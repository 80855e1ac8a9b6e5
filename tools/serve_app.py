"""The HTTP side of `ember serve`: the KServe v2 routes on FastAPI, status codes, limits.

Imported only when serving (FastAPI is the optional extra `ember[serve]`). Status codes: 400
for a request the model cannot take (malformed body, unknown input or output, wrong datatype or
shape, an index a kernel refused), 404 for an unknown model or version, 413 for a body over
max_request_bytes, 503 (with Retry-After) when the model's queue is full, the server is
shutting down or the request timed out waiting, 500 for a bug in ember (logged with its
traceback). Every failure is answered and counted; the other requests carry on.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from ember import __version__
from ember.runtime.batching import Overloaded, RequestTimeout
from ember.runtime.errors import EmberError, InputError, InternalCompilerError, KernelError
from ember.tools.serve import ModelRepository
from ember.tools.serve_models import ServedModel, describe_settings
from ember.tools.serve_protocol import HEADER_LENGTH, datatype, encode_response, parse_request

log = logging.getLogger("ember.serve")

EXTENSIONS = ["binary_tensor_data", "model_repository", "metrics"]
# Bodies above this are parsed and encoded off the event loop.
_LARGE_BODY = 64 << 10
# The infer route's path (FastAPI's `{name}` and `{version}` match one path segment each).
_INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")


# -- HTTP --------------------------------------------------------------------------------------


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _status_of(error: BaseException) -> int:
    if isinstance(error, (Overloaded, RequestTimeout)):
        return 503
    if isinstance(error, InternalCompilerError):
        return 500
    # A kernel that refused the request's data (an index out of range) is the request's fault.
    if isinstance(error, (InputError, KernelError, EmberError)):
        return 400
    return 500


def _tensor_metadata(served: ServedModel, infos: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {"name": i.name, "datatype": datatype(i.dtype), "shape": served.metadata_shape(i)}
        for i in infos
        if not i.dtype_only
    ]


class InferFastPath:
    """The ASGI application in front of the FastAPI one: `POST .../infer` goes straight to
    the infer handler, everything else (and the lifespan) to FastAPI.

    Why: FastAPI's middleware (server errors, exception handlers, body limit, telemetry, exit
    stacks) and its routing and dependency solving cost the event loop more CPU per request
    than parsing, checking, queueing and answering it: py-spy on the BERT benchmark put 62% of
    the event loop's samples under those layers, 12% in the handler. The event loop shares the
    cores with the model's compute threads, so that CPU is taken from the model. The handler
    answers every failure itself (infer() catches everything), so it needs none of them.
    """

    def __init__(
        self,
        app: FastAPI,
        infer: Callable[[str, str | None, Request], Awaitable[Response]],
    ) -> None:
        self.app = app
        self._infer = infer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _INFER_PATH.fullmatch(scope["path"])
            if match is not None:
                name, version = match.groups()
                response = await self._infer(name, version, Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(repository: ModelRepository) -> InferFastPath:
    """The application serving `repository`: FastAPI, behind the infer fast path."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # type: ignore[no-untyped-def]
        yield
        # uvicorn has answered the requests in flight; drain the queues and stop the workers.
        await run_in_threadpool(repository.close)
        log.info("server stopped", extra={"event": "shutdown"})

    # No generated API pages: the server answers the protocol's routes and /metrics only.
    app = FastAPI(
        title="ember serve",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    def error(status: int, message: str) -> JSONResponse:
        headers = {"Retry-After": "1"} if status == 503 else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def model(name: str, version: str | None = None) -> ServedModel:
        served = repository.models.get(name)
        if served is None:
            raise _HttpError(
                404, f"unknown model '{name}'; this server has {sorted(repository.models)}"
            )
        if version not in (None, "", "1"):
            raise _HttpError(404, f"model '{name}' has no version '{version}' (only '1')")
        return served

    @app.exception_handler(_HttpError)
    async def http_error(_request: Request, exc: _HttpError) -> JSONResponse:
        return error(exc.status, str(exc))

    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        if not repository.ready:
            return JSONResponse({"ready": False}, status_code=503)
        return JSONResponse({"ready": True})

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "ember", "version": __version__, "extensions": EXTENSIONS}

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None) -> dict[str, Any]:
        served = model(name, version)
        assert served.accepts is not None
        return {
            "name": name,
            "versions": ["1"],
            "platform": "ember",
            "inputs": _tensor_metadata(served, served.accepts.inputs),
            "outputs": _tensor_metadata(served, served.accepts.outputs),
            "parameters": {
                "batching": served.batching,
                "batching_reason": served.batching_reason,
            },
        }

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> Response:
        model(name, version)
        if not repository.ready:
            return JSONResponse({"name": name, "ready": False}, status_code=503)
        return JSONResponse({"name": name, "ready": True})

    @app.get("/v2/models/{name}/config")
    @app.get("/v2/models/{name}/versions/{version}/config")
    async def model_config(name: str, version: str | None = None) -> dict[str, Any]:
        return describe_settings(model(name, version))

    @app.post("/v2/repository/index")
    async def repository_index() -> list[dict[str, Any]]:
        state = "READY" if repository.ready else "UNAVAILABLE"
        return [{"name": n, "version": "1", "state": state} for n in sorted(repository.models)]

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(
            generate_latest(repository.metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str | None = None) -> Response:
        return await answer_infer(name, version, request)

    async def answer_infer(name: str, version: str | None, request: Request) -> Response:
        try:
            served = model(name, version)
        except _HttpError as exc:
            return error(exc.status, str(exc))
        started = time.perf_counter()
        repository.metrics.requests.labels(name).inc()
        try:
            response = await _infer(served, request)
        except Exception as exc:  # every failure is answered; the server carries on
            status = exc.status if isinstance(exc, _HttpError) else _status_of(exc)
            message = str(exc) or type(exc).__name__
            if status == 500:
                log.exception("model %s: internal error", name, extra={"model": name})
                message = f"internal error ({type(exc).__name__}: {message})"
            else:
                log.info(
                    "model %s: %d %s",
                    name,
                    status,
                    message,
                    extra={"model": name, "status": status},
                )
            repository.metrics.failures.labels(name, str(status)).inc()
            response = error(status, message)
        repository.metrics.request_seconds.labels(name).observe(time.perf_counter() - started)
        return response

    async def _infer(served: ServedModel, request: Request) -> Response:
        settings = served.settings
        if request.headers.get("content-encoding", "identity") != "identity":
            raise _HttpError(
                400, f"Content-Encoding '{request.headers['content-encoding']}' is not supported"
            )
        body = await _read_body(request, settings.max_request_bytes)
        dtypes = {i.name: i.dtype for i in served.signature.inputs if not i.dtype_only}
        header = request.headers.get(HEADER_LENGTH)
        if len(body) > _LARGE_BODY:
            parsed = await run_in_threadpool(parse_request, body, header, dtypes)
        else:
            parsed = parse_request(body, header, dtypes)
        served.check(parsed.inputs)
        unknown = [n for n in parsed.outputs or [] if n not in served.output_names]
        if unknown:
            raise InputError(
                f"model '{served.name}' has no outputs {unknown}; its outputs: "
                f"{served.output_names}"
            )
        timeout = min(settings.request_timeout_s, parsed.timeout_s or settings.request_timeout_s)
        future = repository.submit(served.name, parsed.inputs, timeout)
        try:
            outputs = await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except asyncio.TimeoutError:
            raise RequestTimeout(
                f"model '{served.name}': no answer within the request timeout of {timeout:g} s"
            ) from None
        if len(body) > _LARGE_BODY:
            content, json_length = await run_in_threadpool(
                encode_response, served.name, parsed, outputs, served.output_names
            )
        else:
            content, json_length = encode_response(
                served.name, parsed, outputs, served.output_names
            )
        if json_length is None:
            return Response(content, media_type="application/json")
        return Response(
            content,
            media_type="application/octet-stream",
            headers={HEADER_LENGTH: str(json_length)},
        )

    async def _read_body(request: Request, limit: int) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _HttpError(
                413, f"the request has {declared} bytes, more than the {limit} allowed"
            )
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise _HttpError(413, f"the request has more than the {limit} bytes allowed")
            chunks.append(chunk)
        return b"".join(chunks)

    return InferFastPath(app, answer_infer)
