"""`ember serve` driven by the official Triton HTTP client (tritonclient[http]) on localhost.

The server runs in a thread of the test process (BackgroundServer) on a free port, over a
repository of tiny models with a symbolic batch axis (tests/serve/models.py) and two small AOT
artifacts with a static batch. Answers are compared with onnxruntime (rel 1e-5 of the largest
value) and with the same model run on each request alone; gathers compare exactly.
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("fastapi")
http = pytest.importorskip("tritonclient.http")
from prometheus_client import generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from ember.runtime.batching import BatchPolicy, DynamicBatcher  # noqa: E402
from ember.tests.oracle import assert_close, onnxruntime_outputs  # noqa: E402
from ember.tests.runtime.util import compile_model, small_convnet  # noqa: E402
from ember.tests.serve.models import (  # noqa: E402
    batch_mixing_model,
    dense_feeds,
    dense_model,
    masked_mean_model,
)
from ember.tools.serve import (  # noqa: E402
    BackgroundServer,
    Metrics,
    ModelRepository,
    create_app,
    freeze_startup_heap,
    load_repository,
)

DATATYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.float64): "FP64",
}

# A batcher thread that dies would leave requests waiting: fail the test instead.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


def _model_folder(root: Path, name: str, model: onnx.ModelProto, config: dict | None) -> None:
    folder = root / name
    folder.mkdir()
    onnx.save(model, str(folder / "model.onnx"))
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def repository_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repository")
    # A long queue delay: concurrent requests surely meet in one batch (no timing asserted).
    _model_folder(root, "dense", dense_model(), {"max_queue_delay_ms": 300, "queue_limit": 64})
    _model_folder(root, "mixing", batch_mixing_model(), {"max_request_bytes": 2000})
    sequence = {"inputs": {"tokens": [1, 0], "mask": [1, 0]}, "buckets": [4, 8]}
    _model_folder(
        root, "masked", masked_mean_model(), {"max_queue_delay_ms": 300, "sequence": sequence}
    )
    artifacts = tmp_path_factory.mktemp("artifacts")
    for batch in (1, 2):
        built = compile_model(small_convnet(batch=batch), artifacts / f"b{batch}", threads=1)
        built.rename(root / f"convnet_b{batch}")
    return root


@pytest.fixture(scope="module")
def repository(repository_path: Path) -> ModelRepository:
    return load_repository(repository_path, cpus=2)


@pytest.fixture(scope="module")
def server(repository: ModelRepository) -> Iterator[BackgroundServer]:
    running = BackgroundServer(repository)
    yield running
    running.stop()


@pytest.fixture
def client(server: BackgroundServer) -> http.InferenceServerClient:
    return http.InferenceServerClient(server.url, concurrency=32)


def _inputs(feeds: dict[str, np.ndarray], binary: bool = True) -> list:
    inputs = []
    for name, array in feeds.items():
        tensor = http.InferInput(name, list(array.shape), DATATYPES[array.dtype])
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


def _metrics(server: BackgroundServer) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://{server.url}/metrics").read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _post(server: BackgroundServer, path: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://{server.url}{path}", data=body, method="POST")
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_health_and_metadata(client: http.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata()["name"] == "ember"
    assert client.is_model_ready("dense")
    metadata = client.get_model_metadata("dense")
    assert metadata["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "ids", "datatype": "INT64", "shape": [-1, 2]},
    ]
    assert metadata["outputs"][1] == {"name": "picked", "datatype": "FP32", "shape": [-1, 2, 3]}
    assert client.get_model_config("dense")["batching"] is True
    index = {m["name"] for m in client.get_model_repository_index()}
    assert index == {"dense", "mixing", "masked", "convnet_b1", "convnet_b2"}


def test_batching_decisions_are_reported(client: http.InferenceServerClient) -> None:
    mixing = client.get_model_config("mixing")
    assert mixing["batching"] is False and "mixes rows" in mixing["batching_reason"]
    static = client.get_model_config("convnet_b1")
    assert static["batching"] is False and "static batch of 1" in static["batching_reason"]
    padded = client.get_model_config("convnet_b2")
    assert padded["batching"] is True and padded["preferred_batch_sizes"] == [2]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_matches_onnxruntime(client: http.InferenceServerClient, binary: bool) -> None:
    feeds = dense_feeds(3, seed=1)
    outputs = [http.InferRequestedOutput(n, binary_data=binary) for n in ("y", "picked")]
    result = client.infer("dense", _inputs(feeds, binary), outputs=outputs, request_id="r1")
    assert result.get_response()["id"] == "r1"
    got = {n: result.as_numpy(n) for n in ("y", "picked")}
    assert_close(got, onnxruntime_outputs(dense_model(), feeds), rel=1e-5)


def test_artifact_with_static_batch_pads_one_row(client: http.InferenceServerClient) -> None:
    x = np.random.default_rng(2).standard_normal((1, 8, 10, 10)).astype(np.float32)
    result = client.infer("convnet_b2", _inputs({"x": x}))
    reference = onnxruntime_outputs(small_convnet(batch=2), {"x": np.concatenate([x, x])})
    assert_close(
        {n: result.as_numpy(n) for n in reference},
        {n: v[:1] for n, v in reference.items()},
        rel=1e-5,
    )
    alone = client.infer("convnet_b1", _inputs({"x": x}))
    assert_close(
        {"logits": alone.as_numpy("logits")}, {"logits": reference["logits"][:1]}, rel=1e-5
    )


def test_metrics_exist_before_a_models_first_run() -> None:
    # Regression: a labelled series appeared only after the model's first batch, so a
    # before/after difference taken across that first batch (test_concurrent_clients_through_
    # the_batcher run alone) raised KeyError on ('ember_batch_rows_total', ...).
    metrics = Metrics()
    metrics.declare("idle")
    metrics.close()
    text = generate_latest(metrics.registry).decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    for kind in ("request", "padding"):
        assert samples[("ember_batch_rows_total", (("kind", kind), ("model", "idle")))] == 0
        assert samples[("ember_input_elements_total", (("kind", kind), ("model", "idle")))] == 0
    for name in ("ember_requests_total", "ember_batch_size_count", "ember_queue_seconds_count"):
        assert samples[(name, (("model", "idle"),))] == 0


def test_garbage_collector_pauses_are_measured() -> None:
    """A full collection stops the event loop and the batchers: each is timed, by generation
    (the batched server's p99 was such a pause), until the metrics are closed."""

    def full_collections(metrics: Metrics) -> float:
        text = generate_latest(metrics.registry).decode()
        (family,) = [
            f for f in text_string_to_metric_families(text) if f.name.endswith("pause_seconds")
        ]
        (count,) = [
            s.value
            for s in family.samples
            if s.name.endswith("_count") and s.labels == {"generation": "2"}
        ]
        return count

    metrics = Metrics()
    assert full_collections(metrics) == 0
    gc.collect()
    metrics.close()
    gc.collect()
    assert full_collections(metrics) == 1


def test_concurrent_clients_through_the_batcher(
    client: http.InferenceServerClient, server: BackgroundServer, repository: ModelRepository
) -> None:
    before = _metrics(server)
    count = 32
    feeds = [dense_feeds(1 + i % 3, seed=100 + i) for i in range(count)]
    pending = [
        client.async_infer("dense", _inputs(f, binary=i % 2 == 0), request_id=str(i))
        for i, f in enumerate(feeds)
    ]
    results = [p.get_result() for p in pending]
    model = repository.models["dense"]
    for i, (f, result) in enumerate(zip(feeds, results)):
        assert result.get_response()["id"] == str(i)
        alone = model.run(f)  # the same model, this request alone
        np.testing.assert_array_equal(result.as_numpy("picked"), alone["picked"])
        assert_close({"y": result.as_numpy("y")}, {"y": alone["y"]}, rel=1e-5)
    after = _metrics(server)
    key = (("model", "dense"),)
    assert (
        after[("ember_requests_total", key)] - before.get(("ember_requests_total", key), 0) == count
    )
    rows = (("kind", "request"), ("model", "dense"))
    sent_rows = sum(f["x"].shape[0] for f in feeds)
    assert (
        after[("ember_batch_rows_total", rows)] - before[("ember_batch_rows_total", rows)]
        == sent_rows
    )
    # Batches of more than one row happened: fewer runs of at most 1 row than runs.
    runs = after[("ember_batch_size_count", key)] - before[("ember_batch_size_count", key)]
    one_row = ("ember_batch_size_bucket", (("le", "1.0"), ("model", "dense")))
    single = after[one_row] - before.get(one_row, 0)
    assert runs < count and single < runs
    assert max(repository.batchers["dense"].batch_sizes_seen) > 1


def test_sequences_padded_under_the_mask(
    client: http.InferenceServerClient, server: BackgroundServer, repository: ModelRepository
) -> None:
    rng = np.random.default_rng(3)
    feeds = [
        {
            "tokens": rng.standard_normal((1, n, 4)).astype(np.float32),
            "mask": np.ones((1, n), np.float32),
        }
        for n in (3, 5, 7, 2, 8, 4)
    ]
    pending = [client.async_infer("masked", _inputs(f)) for f in feeds]
    model = repository.models["masked"]
    for f, p in zip(feeds, pending):
        assert_close({"pooled": p.get_result().as_numpy("pooled")}, model.run(f), rel=1e-5)
    padding = _metrics(server)[
        ("ember_input_elements_total", (("kind", "padding"), ("model", "masked")))
    ]
    assert padding > 0


def _error(call) -> InferenceServerException:  # type: ignore[no-untyped-def]
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def test_bad_requests_are_400_and_name_the_problem(
    client: http.InferenceServerClient, server: BackgroundServer
) -> None:
    feeds = dense_feeds(2, seed=4)
    unknown = _error(lambda: client.infer("nope", _inputs(feeds)))
    assert unknown.status() == "404" and "unknown model 'nope'" in unknown.message()
    wrong_name = _error(
        lambda: client.infer("dense", _inputs({"x": feeds["x"], "idz": feeds["ids"]}))
    )
    assert (
        wrong_name.status() == "400"
        and "missing ['ids'], unexpected ['idz']" in wrong_name.message()
    )
    wrong_shape = _error(
        lambda: client.infer("dense", _inputs({**feeds, "x": np.zeros((2, 5), np.float32)}))
    )
    assert "input 'x': expected shape [batch, 4], given [2, 5]" in wrong_shape.message()
    wrong_type = _error(
        lambda: client.infer("dense", _inputs({**feeds, "x": feeds["x"].astype(np.float64)}))
    )
    assert "input 'x': expected datatype FP32, given FP64" in wrong_type.message()
    out_of_range = _error(
        lambda: client.infer("dense", _inputs({**feeds, "ids": np.full((2, 2), 9, np.int64)}))
    )
    assert out_of_range.status() == "400" and "Gather" in out_of_range.message()
    no_output = _error(
        lambda: client.infer("dense", _inputs(feeds), outputs=[http.InferRequestedOutput("z")])
    )
    assert "has no outputs ['z']" in no_output.message()
    status, body = _post(server, "/v2/models/dense/infer", b"{not json")
    assert status == 400 and "not JSON" in body["error"]
    status, body = _post(
        server,
        "/v2/models/dense/infer",
        json.dumps(
            {
                "inputs": [
                    {"name": "x", "shape": [1, 4], "datatype": "INT64", "data": [1.5, 2, 3, 4]}
                ]
            }
        ).encode(),
    )
    assert status == 400 and "expected datatype FP32, given INT64" in body["error"]
    status, body = _post(server, "/v2/models/mixing/infer", b" " * 3000)
    assert status == 413 and "more than the 2000 allowed" in body["error"]
    # The server carries on.
    assert client.infer("dense", _inputs(feeds)).as_numpy("y").shape == (2, 3)


@contextmanager
def _gated(
    repository: ModelRepository, name: str, queue_limit: int
) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Model `name` behind a batcher (batch 1, `queue_limit`) whose runs wait for a gate:
    yields the gate and the event set once a run has started; the old batcher comes back."""
    gate, entered = threading.Event(), threading.Event()
    served = repository.models[name]

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        entered.set()
        gate.wait(30)
        return served.run(feeds)

    original = repository.batchers[name]
    repository.batchers[name] = DynamicBatcher(
        run, BatchPolicy(max_batch_size=1, queue_limit=queue_limit), served.input_names, name=name
    )
    try:
        yield gate, entered
    finally:
        gate.set()
        repository.batchers[name].close()
        repository.batchers[name] = original


def _wait_for(condition: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    """Polls `condition` until it holds, failing the test after `seconds` instead of hanging.

    It yields to gevent's hub, not just to the OS: the client's `async_infer` requests are
    greenlets that run only while this thread is in gevent. `async_infer` yields for 10 ms
    only, and a request whose connection or send takes longer (a loaded machine) never
    reached the server while the test waited on a threading.Event (seen: a CI run spinning
    forever on the queue below)."""
    import gevent

    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {seconds:g} s")
        gevent.sleep(0.01)


def test_full_queue_answers_503_at_once(
    client: http.InferenceServerClient, repository: ModelRepository
) -> None:
    with _gated(repository, "mixing", queue_limit=1) as (gate, entered):
        x = {"x": np.ones((1, 4), np.float32)}
        running = client.async_infer("mixing", _inputs(x))
        _wait_for(entered.is_set, "the first request running")
        queued = client.async_infer("mixing", _inputs(x))
        _wait_for(lambda: repository.batchers["mixing"].queued >= 1, "the second one queued")
        refused = _error(lambda: client.infer("mixing", _inputs(x)))
        assert refused.status() == "503" and "queue is full" in refused.message()
        timed_out = _error(lambda: client.infer("mixing", _inputs(x), timeout=1))
        assert timed_out.status() == "503" and "queue is full" in timed_out.message()
        gate.set()
        for p in (running, queued):
            np.testing.assert_array_equal(p.get_result().as_numpy("y"), np.zeros((1, 4)))


def test_request_timeout_answers_503(
    client: http.InferenceServerClient, repository: ModelRepository
) -> None:
    with _gated(repository, "mixing", queue_limit=4) as (gate, entered):
        x = {"x": np.ones((1, 4), np.float32)}
        running = client.async_infer("mixing", _inputs(x))
        _wait_for(entered.is_set, "the first request running")
        late = _error(lambda: client.infer("mixing", _inputs(x), timeout=50_000))  # 50 ms
        assert late.status() == "503" and "request timeout" in late.message()
        gate.set()
        running.get_result()


def test_graceful_shutdown_finishes_requests_in_flight(tmp_path: Path) -> None:
    onnx.save(dense_model(), str(tmp_path / "dense.onnx"))
    repository = load_repository(tmp_path, cpus=2, warmup=False)
    server = BackgroundServer(repository)
    with _gated(repository, "dense", queue_limit=8) as (gate, entered):
        _stop_while_busy(server, repository, gate, entered)


def _stop_while_busy(
    server: BackgroundServer,
    repository: ModelRepository,
    gate: threading.Event,
    entered: threading.Event,
) -> None:
    client = http.InferenceServerClient(server.url, concurrency=4)
    feeds = [dense_feeds(1, seed=i) for i in range(3)]
    pending = [client.async_infer("dense", _inputs(f)) for f in feeds]
    _wait_for(entered.is_set, "the first request running")
    _wait_for(lambda: repository.batchers["dense"].queued >= 2, "the other two queued")
    stopper = threading.Thread(target=server.stop)
    stopper.start()  # as SIGTERM: no new connections, the requests in flight finish
    for _ in range(3000):  # until the server has stopped listening, the requests still held
        try:
            socket.create_connection((server.host, server.port), timeout=1).close()
        except OSError:
            break
        threading.Event().wait(0.01)
    else:
        pytest.fail("the server kept listening after stop()")
    assert repository.batchers["dense"].queued == 2  # still in flight
    gate.set()
    for f, p in zip(feeds, pending):
        np.testing.assert_allclose(
            p.get_result().as_numpy("y"), repository.models["dense"].run(f)["y"], rtol=1e-5
        )
    stopper.join(60)
    assert not stopper.is_alive() and not repository.ready


async def _asgi(app, method: str, path: str, body: bytes) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    """One request to the ASGI application `app`, as uvicorn would send it."""
    scope = {"type": "http", "method": method, "path": path, "headers": [], "query_string": b""}
    scope |= {"http_version": "1.1", "scheme": "http", "root_path": "", "raw_path": path.encode()}
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(content)


def test_infer_requests_bypass_fastapi(repository: ModelRepository) -> None:
    """Infer requests are answered by the fast path, never by FastAPI's middleware and routing
    (their CPU per request was more than the handler's); other routes still go to FastAPI."""
    app = create_app(repository)
    fastapi_app, delegated = app.app, []

    async def spy(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        delegated.append(scope.get("path"))
        await fastapi_app(scope, receive, send)

    app.app = spy
    feeds = dense_feeds(1, seed=7)
    tensors = [
        {
            "name": n,
            "shape": list(a.shape),
            "datatype": DATATYPES[a.dtype],
            "data": a.ravel().tolist(),
        }
        for n, a in feeds.items()
    ]
    body = json.dumps({"inputs": tensors}).encode()
    status, answer = asyncio.run(_asgi(app, "POST", "/v2/models/dense/versions/1/infer", body))
    (y,) = [o for o in answer["outputs"] if o["name"] == "y"]
    expected = repository.models["dense"].run(feeds)["y"]
    assert status == 200 and np.allclose(np.array(y["data"]).reshape(y["shape"]), expected)
    status, answer = asyncio.run(_asgi(app, "POST", "/v2/models/nope/infer", body))
    assert status == 404 and "unknown model 'nope'" in answer["error"]
    status, answer = asyncio.run(_asgi(app, "POST", "/v2/models/dense/versions/2/infer", body))
    assert status == 404 and "no version '2'" in answer["error"]
    assert delegated == []
    status, answer = asyncio.run(_asgi(app, "GET", "/v2", b""))
    assert status == 200 and answer["name"] == "ember" and delegated == ["/v2"]


def test_startup_heap_is_frozen_out_of_the_collector(repository: ModelRepository) -> None:
    """After startup the loaded models are out of the garbage collector's reach, so a full
    collection does not walk their objects (the compiled variants' IR: a 0.3-0.5 s pause with
    the benchmark's BERT encoder, the batched server's p99)."""
    model = repository.models["dense"].model
    try:
        assert freeze_startup_heap() > 0
        assert not any(tracked is model for tracked in gc.get_objects())
    finally:
        gc.unfreeze()
    assert any(tracked is model for tracked in gc.get_objects())
