"""ember on Ray: a Ray Serve deployment and a Ray Data `map_batches` callable.

Both run an AOT artifact (`ember compile`) with the thin runtime (numpy + ctypes: the Ray
workers need neither xDSL nor llvmlite), and both batch with the artifact's own static batch:
an artifact compiled for `--input-shape x=8x3x224x224` takes 8 rows per run, and any number of
rows is cut into runs of 8, the last one padded (runtime/batching.py, `run_in_chunks`).

    import ray
    from ray import serve
    from ember.integrations.ray import EmberPredictor, deployment, pack_artifact

    artifact = pack_artifact("resnet.ember")          # the folder's files, to ship to any node
    handle = serve.run(deployment(artifact, num_replicas=2, threads=1))
    outputs = handle.infer.remote({"input": x}).result()   # x: [rows, 3, 224, 224]

    ds = ray.data.from_items([{"input": image} for image in images])
    scored = ds.map_batches(
        EmberPredictor, fn_constructor_kwargs={"artifact": artifact}, batch_size=64,
        concurrency=2, num_cpus=1,
    )

`pack_artifact` reads the artifact's files into memory so Ray ships them with the deployment
or the task to whichever node runs it (each replica writes them to a temporary folder and
loads them there, checksums checked as always); a plain path works too when every node sees
the same file system. The same code runs on a multi-node cluster: `ray.init(address="auto")`
(or `ray start --address=...` on each node, then run the script on the head). docs/serving.md.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

from ember.runtime.batching import run_in_chunks
from ember.runtime.errors import ArtifactError, InputError

ArtifactSource = str | os.PathLike[str] | Mapping[str, bytes]
# Files an artifact folder may hold (what `ember compile` writes); nothing else is packed.
_ARTIFACT_FILES = ("manifest.json", "model.so", "weights.bin", "ember.h")


def pack_artifact(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """The files of the artifact folder at `path`, by name (to send to other nodes)."""
    folder = Path(path)
    if not (folder / "manifest.json").is_file():
        raise ArtifactError(f"{folder}: not an ember artifact (no manifest.json)")
    return {
        name: (folder / name).read_bytes() for name in _ARTIFACT_FILES if (folder / name).is_file()
    }


class _LoadedArtifact:
    """An artifact loaded in this worker: from a path, or unpacked from `pack_artifact`."""

    def __init__(self, artifact: ArtifactSource, threads: int) -> None:
        from ember.runtime import load

        self._folder: str | None = None
        if isinstance(artifact, Mapping):
            unknown = sorted(set(artifact) - set(_ARTIFACT_FILES))
            if unknown:
                raise ArtifactError(f"packed artifact: unexpected files {unknown}")
            self._folder = tempfile.mkdtemp(prefix="ember-artifact-")
            for name, data in artifact.items():
                Path(self._folder, name).write_bytes(data)
            path: str | os.PathLike[str] = self._folder
        else:
            path = artifact
        self.executable = load(path, threads=threads)
        inputs = self.executable.manifest.inputs
        self.input_names = [s.name for s in inputs]
        self.output_names = self.executable.output_names
        self.batch = inputs[0].shape[0] if inputs and inputs[0].shape else 1

    def run(self, requests: Sequence[Mapping[str, Any]]) -> list[dict[str, np.ndarray]]:
        arrays = [self._arrays(r) for r in requests]
        return run_in_chunks(self.executable.run, arrays, self.input_names, self.batch)

    def _arrays(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if not isinstance(feeds, Mapping):
            raise InputError(
                f"expected a dict of input name -> array, given {type(feeds).__name__}"
            )
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise InputError(f"missing inputs {missing}; the model takes {self.input_names}")
        return {n: np.asarray(feeds[n]) for n in self.input_names}

    def __del__(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


class EmberModel:
    """The body of a Ray Serve deployment: `infer(feeds)` batches concurrent calls with Serve's
    `@serve.batch` (up to `max_batch_size` requests, waiting at most `batch_wait_timeout_s`),
    then runs them in chunks of the artifact's batch. HTTP: POST a JSON object
    `{"inputs": {name: nested list}}` to the route; the answer is `{"outputs": {name: list}}`.
    """

    def __init__(
        self,
        artifact: ArtifactSource,
        threads: int = 1,
        max_batch_size: int | None = None,
        batch_wait_timeout_s: float = 0.005,
    ) -> None:
        self.model = _LoadedArtifact(artifact, threads)
        self.batch_sizes: list[int] = []  # requests per batched call (tests, debugging)
        self.infer_batch.set_max_batch_size(max_batch_size or max(self.model.batch, 1))
        self.infer_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def infer(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """One request's outputs ({name: array}); batched with concurrent ones."""
        return await self.infer_batch(feeds)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def infer_batch(self, requests: list[Mapping[str, Any]]) -> list[dict[str, np.ndarray]]:
        self.batch_sizes.append(len(requests))
        return self.model.run(requests)

    def stats(self) -> dict[str, Any]:
        return {"batch_sizes": list(self.batch_sizes), "artifact_batch": self.model.batch}

    async def __call__(self, request: Any) -> dict[str, Any]:
        document = await request.json()
        inputs = document.get("inputs") if isinstance(document, dict) else None
        if not isinstance(inputs, dict):
            raise InputError('expected a JSON object {"inputs": {name: nested list}}')
        dtypes = {s.name: s.dtype for s in self.model.executable.manifest.inputs}
        feeds = {n: np.asarray(v, dtype=dtypes.get(n)) for n, v in inputs.items()}
        outputs = await self.infer(feeds)
        return {"outputs": {n: a.tolist() for n, a in outputs.items()}}


def deployment(
    artifact: ArtifactSource,
    *,
    num_replicas: int = 1,
    threads: int = 1,
    max_batch_size: int | None = None,
    batch_wait_timeout_s: float = 0.005,
    name: str = "ember",
) -> Any:
    """A Ray Serve application of `artifact`: `num_replicas` replicas of EmberModel, each
    reserving `threads` CPUs for its `threads` compute threads (so Ray never packs more
    threads onto a node than it has cores). Pass it to `serve.run`."""
    return (
        serve.deployment(EmberModel, name=name)
        .options(num_replicas=num_replicas, ray_actor_options={"num_cpus": threads})
        .bind(artifact, threads, max_batch_size, batch_wait_timeout_s)
    )


class EmberPredictor:
    """A callable class for Ray Data's `map_batches`: each batch (a dict of columns, numpy
    format) gets one column per model output; the input columns are kept unless `drop_inputs`.
    Rows run in chunks of the artifact's static batch."""

    def __init__(self, artifact: ArtifactSource, threads: int = 1, drop_inputs: bool = False):
        self.model = _LoadedArtifact(artifact, threads)
        self.drop_inputs = drop_inputs

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # A column of equal-shape tensors arrives as one array; ragged ones as an object array.
        feeds = {
            n: np.stack(list(batch[n])) if batch[n].dtype == object else batch[n]
            for n in self.model.input_names
            if n in batch
        }
        (outputs,) = self.model.run([feeds])
        kept = {} if self.drop_inputs else dict(batch)
        return kept | outputs
