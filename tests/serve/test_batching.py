"""The dynamic batcher alone (runtime/batching.py), on numpy stand-ins for a model.

These test the batcher's own logic (grouping, padding, splitting, backpressure, failures), so the
"model" is a numpy function that records each batch it is given; the compiled-model path is
tested through the server in test_serve.py. A gate (threading.Event) holds the worker inside a
run so that the queue's content is known when it is released: no test depends on timing.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

import numpy as np
import pytest

from ember.runtime.batching import (
    BatchPolicy,
    BatchStats,
    DynamicBatcher,
    Overloaded,
    RequestTimeout,
    SequencePadding,
    concatenate,
    split,
)
from ember.runtime.errors import InputError

# A batcher thread that dies would leave requests waiting: fail the test instead.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


class GatedModel:
    """y = 2x + row index check; the first run waits for `gate` (when given)."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate
        self.entered = threading.Event()
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(30)
        x = feeds["x"]
        if np.any(x < 0):
            raise InputError("negative input")  # stands in for a kernel refusing one request
        with self.lock:
            self.batches.append(x.shape[0])
        return {"y": 2 * x, "total": x.sum(axis=1)}


def _x(value: float, rows: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, 3), value, np.float32)}


def test_concurrent_requests_are_batched_and_answered_once_each() -> None:
    gate = threading.Event()
    model = GatedModel(gate)
    policy = BatchPolicy(max_batch_size=8, preferred_batch_sizes=(1, 2, 4, 8), queue_limit=64)
    batcher = DynamicBatcher(model, policy, ["x"], name="gated")
    first = batcher.submit(_x(100))
    assert model.entered.wait(30)  # the worker holds request 100 inside the run
    futures = {i: batcher.submit(_x(i, rows=1 + i % 3)) for i in range(20)}
    gate.set()
    assert first.result(30)["y"][0, 0] == 200
    for i, future in futures.items():
        result = future.result(30)
        assert result["y"].shape == (1 + i % 3, 3)
        np.testing.assert_array_equal(result["y"], np.full((1 + i % 3, 3), 2 * i, np.float32))
        np.testing.assert_array_equal(result["total"], np.full(1 + i % 3, 3 * i, np.float32))
    batcher.close()
    # Queued while the gate held the worker, the 20 requests (40 rows) ran in full batches.
    assert max(batcher.batch_sizes_seen) == 8
    # Every run had a preferred size of rows (padding included).
    assert set(model.batches) <= {1, 2, 4, 8}


def test_padding_rows_are_sliced_off() -> None:
    model = GatedModel()
    policy = BatchPolicy(max_batch_size=8, preferred_batch_sizes=(4, 8), max_queue_delay=0)
    batcher = DynamicBatcher(model, policy, ["x"])
    result = batcher.submit(_x(3, rows=1)).result(30)
    batcher.close()
    assert model.batches == [4]  # one row padded to the smallest preferred size
    assert result["y"].shape == (1, 3)


def test_full_queue_is_refused_at_once() -> None:
    gate = threading.Event()
    model = GatedModel(gate)
    batcher = DynamicBatcher(model, BatchPolicy(max_batch_size=1, queue_limit=2), ["x"])
    running = batcher.submit(_x(1))
    assert model.entered.wait(30)
    queued = [batcher.submit(_x(2)), batcher.submit(_x(3))]
    with pytest.raises(Overloaded, match="queue is full"):
        batcher.submit(_x(4))
    gate.set()
    assert [f.result(30)["y"][0, 0] for f in [running, *queued]] == [2, 4, 6]
    batcher.close()


def test_one_bad_request_fails_alone() -> None:
    gate = threading.Event()
    model = GatedModel(gate)
    batcher = DynamicBatcher(model, BatchPolicy(max_batch_size=8), ["x"])
    blocker = batcher.submit(_x(0))
    assert model.entered.wait(30)
    good = [batcher.submit(_x(i)) for i in (1, 2, 3)]
    bad = batcher.submit(_x(-1))
    gate.set()
    blocker.result(30)
    assert [f.result(30)["y"][0, 0] for f in good] == [2, 4, 6]
    with pytest.raises(InputError, match="negative input"):
        bad.result(30)
    batcher.close()


def test_timeout_in_queue_and_close_drains() -> None:
    gate = threading.Event()
    model = GatedModel(gate)
    batcher = DynamicBatcher(model, BatchPolicy(max_batch_size=1), ["x"])
    running = batcher.submit(_x(1))
    assert model.entered.wait(30)
    expired = batcher.submit(_x(2), timeout=1e-9)  # its deadline passes while it waits
    waiting = batcher.submit(_x(3))
    closer = threading.Thread(target=batcher.close)
    closer.start()  # close while requests are queued: they still run
    gate.set()
    closer.join(30)
    assert running.result(30)["y"][0, 0] == 2
    assert waiting.result(30)["y"][0, 0] == 6
    with pytest.raises(RequestTimeout, match="past its timeout"):
        expired.result(30)
    with pytest.raises(Overloaded, match="shutting down"):
        batcher.submit(_x(4))


def test_cancelled_request_is_not_run() -> None:
    gate = threading.Event()
    model = GatedModel(gate)
    batcher = DynamicBatcher(model, BatchPolicy(max_batch_size=1), ["x"])
    batcher.submit(_x(1))
    assert model.entered.wait(30)
    given_up: Future = batcher.submit(_x(5))
    assert given_up.cancel()
    # Regression: a request both cancelled and past its deadline killed the worker thread.
    expired_and_cancelled = batcher.submit(_x(6), timeout=1e-9)
    assert expired_and_cancelled.cancel()
    after = batcher.submit(_x(7))
    gate.set()
    assert after.result(30)["y"][0, 0] == 14
    batcher.close()
    assert model.batches == [1, 1]


def test_request_rows_are_checked() -> None:
    batcher = DynamicBatcher(GatedModel(), BatchPolicy(max_batch_size=4), ["x", "z"])
    with pytest.raises(InputError, match="exceeds the max batch size 4"):
        batcher.submit({"x": np.zeros((5, 3)), "z": np.zeros((5, 1))})
    with pytest.raises(InputError, match="same size there"):
        batcher.submit({"x": np.zeros((2, 3)), "z": np.zeros((3, 1))})
    batcher.close()


def test_sequence_padding_buckets_and_slices() -> None:
    padding = SequencePadding(
        inputs={"tokens": (1, 0.0), "mask": (1, 0.0)}, outputs={"hidden": 1}, buckets=(4, 8)
    )
    assert [padding.bucket(n) for n in (1, 4, 5, 8, 9)] == [4, 4, 8, 8, 9]
    requests = [
        {"tokens": np.ones((1, n, 2), np.float32), "mask": np.ones((1, n), np.float32)}
        for n in (5, 7)
    ]
    batch = concatenate(requests, ["tokens", "mask"], rows=2, sequence=padding, length=8)
    assert batch["tokens"].shape == (2, 8, 2)
    np.testing.assert_array_equal(batch["mask"].sum(axis=1), [5, 7])
    outputs = {"hidden": batch["tokens"] * 3, "pooled": batch["mask"].sum(axis=1, keepdims=True)}
    parts = split(outputs, [1, 1], padding, [5, 7])
    assert [p["hidden"].shape for p in parts] == [(1, 5, 2), (1, 7, 2)]
    assert [p["pooled"].tolist() for p in parts] == [[[5.0]], [[7.0]]]


def test_sequence_requests_batch_by_bucket() -> None:
    gate = threading.Event()
    seen: list[tuple[int, ...]] = []

    def pooled(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        gate.wait(30)
        seen.append(feeds["tokens"].shape)
        mask = feeds["mask"][..., None]
        return {"pooled": (feeds["tokens"] * mask).sum(axis=1) / mask.sum(axis=1)}

    padding = SequencePadding({"tokens": (1, 0.0), "mask": (1, 0.0)}, {}, buckets=(4, 8))
    policy = BatchPolicy(max_batch_size=8, preferred_batch_sizes=(1, 2, 4, 8), sequence=padding)
    batcher = DynamicBatcher(pooled, policy, ["tokens", "mask"])
    rng = np.random.default_rng(0)
    lengths = [3, 4, 5, 7, 2, 8]
    feeds = [
        {
            "tokens": rng.standard_normal((1, n, 2)).astype(np.float32),
            "mask": np.ones((1, n), np.float32),
        }
        for n in lengths
    ]
    futures = [batcher.submit(f) for f in feeds]
    gate.set()
    for f, future in zip(feeds, futures):
        expected = f["tokens"].mean(axis=1)
        np.testing.assert_allclose(future.result(30)["pooled"], expected, rtol=1e-6)
    batcher.close()
    # Lengths <= 4 ran padded to 4, the others to 8.
    assert {shape[1] for shape in seen} == {4, 8}


def _run_queued(lengths: list[int]) -> tuple[list[tuple[int, int]], list[BatchStats]]:
    """Requests of `lengths` to a masked-mean stand-in with buckets (4, 8): the first holds
    the worker while the others queue; each answer is checked against the request alone.
    Returns the (rows, length) of each run and its stats."""
    gate, entered = threading.Event(), threading.Event()
    seen: list[tuple[int, int]] = []

    def pooled(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        entered.set()
        gate.wait(30)
        seen.append(feeds["tokens"].shape[:2])
        mask = feeds["mask"][..., None]
        return {
            "pooled": (feeds["tokens"] * mask).sum(axis=1) / mask.sum(axis=1),
            "hidden": feeds["tokens"] * 2,
        }

    padding = SequencePadding({"tokens": (1, 0.0), "mask": (1, 0.0)}, {"hidden": 1}, (4, 8))
    policy = BatchPolicy(
        max_batch_size=8, preferred_batch_sizes=(1, 2, 4, 8), max_queue_delay=0, sequence=padding
    )
    reported: list[BatchStats] = []
    batcher = DynamicBatcher(pooled, policy, ["tokens", "mask"], on_batch=reported.append)
    rng = np.random.default_rng(1)
    feeds = [
        {
            "tokens": rng.standard_normal((1, n, 2)).astype(np.float32),
            "mask": np.ones((1, n), np.float32),
        }
        for n in lengths
    ]
    futures = [batcher.submit(feeds[0])]
    assert entered.wait(30)
    futures += [batcher.submit(f) for f in feeds[1:]]
    gate.set()
    for f, future in zip(feeds, futures):
        result = future.result(30)
        np.testing.assert_allclose(result["pooled"], f["tokens"].mean(axis=1), rtol=1e-6)
        np.testing.assert_array_equal(result["hidden"], f["tokens"] * 2)  # cut to its length
    batcher.close()
    return seen, reported


def test_padding_rows_go_to_shorter_requests() -> None:
    """Rows a batch would pad with (copies of its last row, up to a preferred size) are given
    to the oldest waiting requests of shorter buckets, padded to the batch's length under the
    mask: the batch runs as many rows, and they need no run of their own."""
    # Bucket 8's 7, 6, 5 make 3 rows, padded to 4: the 3 (bucket 4) takes the free row.
    seen, reported = _run_queued([8, 7, 6, 5, 3, 2])
    assert seen == [(1, 8), (4, 8), (1, 4)]
    assert [(s.requests, s.rows, s.padded_rows) for s in reported] == [
        (1, 1, 1),
        (4, 4, 4),
        (1, 1, 1),
    ]


def test_longer_requests_never_take_padding_rows() -> None:
    # Bucket 4's 3, 2, 1 are padded to 4 rows with a copy: the 7 waiting would lengthen
    # every row to 8, so it runs in its own batch.
    seen, _ = _run_queued([8, 3, 2, 1, 7])
    assert seen == [(1, 8), (4, 4), (1, 8)]


def test_policy_is_checked() -> None:
    with pytest.raises(ValueError, match="exceed max_batch_size"):
        BatchPolicy(max_batch_size=4, preferred_batch_sizes=(8,))
    with pytest.raises(ValueError, match="queue_limit"):
        BatchPolicy(queue_limit=0)
    assert BatchPolicy(max_batch_size=6, preferred_batch_sizes=(1, 4)).batch_sizes == (1, 4, 6)
    with pytest.raises(ValueError, match="ascending"):
        SequencePadding({"x": (1, 0)}, {}, buckets=(8, 4))


def test_batch_stats_split_the_time_of_each_run() -> None:
    # What the server's latency metrics are built from: every span is measured on one
    # monotonic clock, so the parts nest (no durations are asserted, only their order).
    gate = threading.Event()
    model = GatedModel(gate)
    reported: list[BatchStats] = []
    policy = BatchPolicy(max_batch_size=4, preferred_batch_sizes=(4,), queue_limit=16)
    batcher = DynamicBatcher(model, policy, ["x"], on_batch=reported.append)
    first = batcher.submit(_x(1))
    assert model.entered.wait(30)
    queued = [batcher.submit(_x(i)) for i in range(2, 6)]  # one full batch waits
    gate.set()
    for future in [first, *queued]:
        future.result(30)
    batcher.close()
    assert [(s.requests, s.rows, s.padded_rows) for s in reported] == [(1, 1, 4), (4, 4, 4)]
    for stats in reported:
        assert 0 <= stats.model_stall_seconds <= stats.model_seconds <= stats.compute_seconds
        # The oldest request waited for the batch to be complete, then for a free worker.
        assert 0 <= stats.formation_seconds <= stats.queue_seconds[0]
    # A lone request's batch is complete when the queue delay is over, not later.
    assert reported[0].formation_seconds <= policy.max_queue_delay + 1e-9  # float rounding
    # The full batch was complete when its last request came, while the worker was busy: its
    # oldest request then waited for the worker, the rest of the first run.
    assert reported[1].formation_seconds < reported[1].queue_seconds[0]
    # ... its requests all came while the first run's model call held the worker.
    assert reported[1].formation_seconds <= reported[0].model_seconds


def test_the_oldest_request_runs_next_whatever_its_shape() -> None:
    """No shape (length bucket) starves: each run takes the oldest waiting request and the
    oldest that can share its batch, so a request waits for at most the runs of the requests
    queued before it (docs/serving.md: the batched p99 tail was not queueing)."""
    gate, entered = threading.Event(), threading.Event()
    runs: list[list[int]] = []

    def record(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        entered.set()
        gate.wait(30)
        runs.append([int(v) for v in feeds["x"][:, 0]])
        return {"y": feeds["x"]}

    policy = BatchPolicy(max_batch_size=2, preferred_batch_sizes=(1, 2), max_queue_delay=0)
    batcher = DynamicBatcher(record, policy, ["x"])
    # Two shapes, arriving interleaved (as the benchmark's lengths 64 and 128 do): 0 runs
    # alone, and while it runs the queue fills with 1..8.
    futures = [batcher.submit({"x": np.full((1, 3), 0, np.float32)})]
    assert entered.wait(30)
    futures += [batcher.submit({"x": np.full((1, 3 + i % 2), i, np.float32)}) for i in range(1, 9)]
    gate.set()
    for i, future in enumerate(futures):
        assert future.result(30)["y"][0, 0] == i
    batcher.close()
    assert runs == [[0], [1, 3], [2, 4], [5, 7], [6, 8]]


def test_a_full_batch_does_not_wait_behind_one_still_forming() -> None:
    """While the oldest request's batch waits for company (its queue delay, here far longer
    than the test), a full batch of another shape behind it runs: the worker does not idle.
    The oldest still runs when its delay is over (here: when the batcher closes)."""
    gate, entered = threading.Event(), threading.Event()
    runs: list[list[int]] = []

    def record(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        entered.set()
        gate.wait(30)
        runs.append([int(v) for v in feeds["x"][:, 0]])
        return {"y": feeds["x"]}

    policy = BatchPolicy(max_batch_size=2, preferred_batch_sizes=(1, 2), max_queue_delay=60)
    batcher = DynamicBatcher(record, policy, ["x"])
    futures = [batcher.submit({"x": np.full((2, 3), 0, np.float32)})]  # full: runs at once
    assert entered.wait(30)
    futures.append(batcher.submit({"x": np.full((1, 3), 1, np.float32)}))  # forming, 60 s
    futures += [batcher.submit({"x": np.full((1, 4), i, np.float32)}) for i in (2, 3)]
    gate.set()
    # The full batch of width 4 is answered while the width-3 request still waits for company.
    assert [f.result(30)["y"][0, 0] for f in futures[2:]] == [2, 3]
    assert not futures[1].done()
    batcher.close()  # closing ends the wait: the lone request runs
    assert futures[1].result(30)["y"][0, 0] == 1
    assert runs == [[0, 0], [2, 3], [1]]


def test_a_model_that_runs_any_shape_gets_batches_unpadded() -> None:
    """With `any_shape` (one program runs every shape: a model compiled once) a batch runs at
    its own size and its sequences at its longest request's length: padding up to a preferred
    size or a bucket's length would only add rows and positions to compute."""
    gate, entered = threading.Event(), threading.Event()
    seen: list[tuple[int, int]] = []

    def pooled(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        entered.set()
        gate.wait(30)
        seen.append(feeds["tokens"].shape[:2])
        mask = feeds["mask"][..., None]
        return {
            "pooled": (feeds["tokens"] * mask).sum(axis=1) / mask.sum(axis=1),
            "hidden": feeds["tokens"] * 2,
        }

    padding = SequencePadding({"tokens": (1, 0.0), "mask": (1, 0.0)}, {"hidden": 1}, (4, 8))
    policy = BatchPolicy(max_batch_size=8, max_queue_delay=0, sequence=padding, any_shape=True)
    assert [policy.padded_rows(n) for n in (1, 3, 5, 8)] == [1, 3, 5, 8]
    reported: list[BatchStats] = []
    batcher = DynamicBatcher(pooled, policy, ["tokens", "mask"], on_batch=reported.append)
    rng = np.random.default_rng(2)
    lengths = [8, 6, 5, 7, 3, 2, 1]
    feeds = [
        {
            "tokens": rng.standard_normal((1, n, 2)).astype(np.float32),
            "mask": np.ones((1, n), np.float32),
        }
        for n in lengths
    ]
    futures = [batcher.submit(feeds[0])]
    assert entered.wait(30)
    futures += [batcher.submit(f) for f in feeds[1:]]
    gate.set()
    for f, future in zip(feeds, futures):
        result = future.result(30)
        np.testing.assert_allclose(result["pooled"], f["tokens"].mean(axis=1), rtol=1e-6)
        np.testing.assert_array_equal(result["hidden"], f["tokens"] * 2)
    batcher.close()
    # Bucket 8's 6, 5, 7: 3 rows at length 7 (not 4 rows at 8, no shorter request in a free
    # row); bucket 4's 3, 2, 1: 3 rows at length 3.
    assert seen == [(1, 8), (3, 7), (3, 3)]
    assert [(s.rows, s.padded_rows) for s in reported] == [(1, 1), (3, 3), (3, 3)]
    # Only the padding up to each batch's longest request is run: 3 positions in each batch
    # (7 - 6 + 7 - 5, 3 - 2 + 3 - 1), of 2 token elements and 1 mask element each.
    assert [s.padded_elements - s.real_elements for s in reported] == [0, 3 * 3, 3 * 3]
