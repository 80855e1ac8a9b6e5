"""ember.integrations.ray on a local Ray instance: a Ray Serve deployment and Ray Data
`map_batches`, each compared with the artifact run directly (rtol 1e-5: a row may sit at
another position of its batch, where a kernel's vector tiles can round differently; padding rows
never leak into a request's answer).

Slow (Ray's local start-up is ~10-15 s of a ~30 s test on 2 cores) and needs the `ray` extra:
    pip install -e ".[test,ray]" && python -m pytest tests/serve/test_ray.py --runslow
"""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ember.runtime import load
from ember.tests.runtime.util import compile_model, small_convnet

# Ray is imported by the fixture, not here: collecting this module (every run, in every xdist
# worker) would otherwise import ray and ray.serve, ~0.9 s of CPU each, for tests that run
# only with --runslow.
pytestmark = pytest.mark.slow

ARTIFACT_BATCH = 4


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ray")
    return compile_model(small_convnet(batch=ARTIFACT_BATCH), folder, threads=1)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[int]:
    """A local Ray instance; Serve's HTTP proxy on a free localhost port (yielded)."""
    ray = pytest.importorskip("ray")
    serve = pytest.importorskip("ray.serve")

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()
    ray.shutdown()


def _direct(artifact: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """The artifact run on `x` ([rows, ...]) in chunks of its batch, the last padded by hand."""
    executable = load(artifact, threads=1)
    outputs: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(x), ARTIFACT_BATCH):
        chunk = x[start : start + ARTIFACT_BATCH]
        padded = np.concatenate([chunk] + [chunk[-1:]] * (ARTIFACT_BATCH - len(chunk)))
        for name, value in executable.run({"x": padded}).items():
            outputs.setdefault(name, []).append(value[: len(chunk)])
    return {name: np.concatenate(parts) for name, parts in outputs.items()}


def test_serve_deployment_batches_and_matches(local_ray: int, artifact: Path) -> None:
    from ray import serve

    from ember.integrations.ray import deployment, pack_artifact

    handle = serve.run(
        deployment(pack_artifact(artifact), threads=1, batch_wait_timeout_s=0.2),
        name="ember",
        route_prefix="/ember",
    )
    xs = np.random.default_rng(0).standard_normal((10, 1, 8, 10, 10)).astype(np.float32)
    responses = [handle.infer.remote({"x": x}) for x in xs]
    results = [r.result(timeout_s=60) for r in responses]
    expected = _direct(artifact, xs[:, 0])
    for i, result in enumerate(results):
        for name, value in result.items():
            np.testing.assert_allclose(value, expected[name][i : i + 1], rtol=1e-5, atol=1e-6)
    stats = handle.stats.remote().result(timeout_s=60)
    assert max(stats["batch_sizes"]) > 1 and sum(stats["batch_sizes"]) == len(xs)
    # The same deployment over HTTP, JSON in and out.
    body = json.dumps({"inputs": {"x": xs[0].tolist()}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{local_ray}/ember", data=body)
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())["outputs"]
    np.testing.assert_allclose(answer["logits"], expected["logits"][:1], rtol=1e-5, atol=1e-6)


def test_data_map_batches_matches(local_ray: int, artifact: Path) -> None:
    import ray

    from ember.integrations.ray import EmberPredictor

    xs = np.random.default_rng(1).standard_normal((11, 8, 10, 10)).astype(np.float32)
    dataset = ray.data.from_items([{"id": i, "x": x} for i, x in enumerate(xs)])
    scored = dataset.map_batches(
        EmberPredictor,
        fn_constructor_kwargs={"artifact": str(artifact)},
        batch_size=5,
        concurrency=1,
        num_cpus=1,
    ).take_all()
    expected = _direct(artifact, xs)
    assert sorted(row["id"] for row in scored) == list(range(len(xs)))
    for row in scored:
        for name in ("logits", "features"):
            np.testing.assert_allclose(row[name], expected[name][row["id"]], rtol=1e-5, atol=1e-6)
