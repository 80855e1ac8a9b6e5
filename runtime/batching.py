"""Dynamic batching: gather concurrent requests to one model into one call, split the results.

Pure runtime (numpy and the standard library), so `ember serve` and the Ray integration share it
with artifacts loaded by the thin runtime.

    batcher = DynamicBatcher(model.run, BatchPolicy(max_batch_size=8), name="resnet")
    future = batcher.submit({"input": x})     # x: [rows, ...]; Overloaded when the queue is full
    outputs = future.result()                 # this request's rows only
    batcher.close()                           # finishes what is queued, then stops the workers

Axis 0 of every input and output is the batch axis (as in Triton and KServe). A request of
`rows` rows joins a batch with the requests that wait for the same model with the same shapes
apart from axis 0 (and, with `SequencePadding`, the same length bucket). A batch is run when it
holds `max_batch_size` rows or when its oldest request has waited `max_queue_delay` seconds
(a full batch of another shape does not wait behind the oldest's while it forms);
its rows are then padded up to the smallest preferred batch size that holds them (repeating the
last row), so a model specialised per shape compiles only a few variants, and the padding is
sliced off every output. A model that runs every shape with one program (`any_shape`: compiled
once) is not padded: its batches run at their own size, their sequences at their longest
request's length. With `SequencePadding`, rows that would be such padding are first
given to the oldest waiting requests of shorter buckets (padded to the batch's length): the
batch runs as many rows either way, and those requests are answered without a run of their
own. Batching assumes rows are independent (no op mixes rows of the batch axis), the
assumption every batching server makes; the server checks it on seeded inputs before turning
batching on for a model (tools/serve.py).

A batch whose run fails with more than one request in it is run again request by request, so
one bad request fails alone and its neighbours still get their answers.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from ember.runtime.errors import EmberError, InputError

log = logging.getLogger("ember.serve.batching")

Feeds = Mapping[str, np.ndarray]
Outputs = dict[str, np.ndarray]


class Overloaded(EmberError, RuntimeError):
    """The server cannot take this request now (its queue is full, or it is shutting down);
    retrying later may succeed (HTTP 503)."""


class RequestTimeout(EmberError, RuntimeError):
    """A request waited in the queue past its deadline and was dropped without running."""


@dataclass(frozen=True)
class SequencePadding:
    """A variable-length axis that may be padded because the model masks the padding.

    `inputs`: each padded input -> (its sequence axis, the value padding is filled with; the
    mask input's is 0, so the model ignores padded positions). `outputs`: each output with a
    sequence axis -> that axis, sliced back to the request's own length. `buckets`: the lengths
    requests are padded up to (ascending); a request longer than the last bucket is not padded
    and batches only with requests of its exact length.
    """

    inputs: Mapping[str, tuple[int, float]]
    outputs: Mapping[str, int]
    buckets: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ValueError("sequence padding needs at least one input to pad")
        if not self.buckets or list(self.buckets) != sorted(set(self.buckets)):
            raise ValueError(f"sequence buckets must be ascending and distinct, got {self.buckets}")
        if self.buckets[0] < 1:
            raise ValueError(f"sequence buckets must be >= 1, got {self.buckets}")
        for name, (axis, _) in self.inputs.items():
            if axis < 1:
                raise ValueError(f"sequence axis of input '{name}' must be >= 1 (0 is the batch)")
        for name, axis in self.outputs.items():
            if axis < 1:
                raise ValueError(f"sequence axis of output '{name}' must be >= 1 (0 is the batch)")

    def length(self, feeds: Feeds) -> int:
        """The request's sequence length; InputError if its padded inputs disagree."""
        lengths = {name: feeds[name].shape[axis] for name, (axis, _) in self.inputs.items()}
        if len(set(lengths.values())) != 1:
            raise InputError(f"the sequence inputs must have one length, given {lengths}")
        return next(iter(lengths.values()))

    def bucket(self, length: int) -> int:
        """The length a request of `length` is padded to (itself past the last bucket)."""
        index = bisect.bisect_left(self.buckets, length)
        return self.buckets[index] if index < len(self.buckets) else length


@dataclass(frozen=True)
class BatchPolicy:
    """How one model's requests are batched and queued.

    `max_batch_size` 1 turns batching off (requests still queue, up to `queue_limit`, and run
    on `instances` workers). `preferred_batch_sizes`: the sizes batches are padded up to
    (max_batch_size is always one). `max_queue_delay`: seconds the oldest request waits for
    others to join. `queue_limit`: requests waiting at most; one more is refused at once
    (Overloaded). `instances`: batches run concurrently. `any_shape`: the model runs every
    batch size and sequence length with one program (compiled once, runtime extents), so a
    batch runs at its own size, not padded up to a preferred one, and its sequences only to
    its longest request, not to their bucket: padding would be work, not a saved compile.
    """

    max_batch_size: int = 8
    preferred_batch_sizes: tuple[int, ...] = ()  # () : the powers of two up to max_batch_size
    max_queue_delay: float = 0.002
    queue_limit: int = 256
    instances: int = 1
    sequence: SequencePadding | None = None
    any_shape: bool = False

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "queue_limit", "instances"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not 0 <= self.max_queue_delay <= 60:
            raise ValueError(f"max_queue_delay must be 0 to 60 seconds, got {self.max_queue_delay}")
        for size in self.preferred_batch_sizes:
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(f"preferred batch sizes must be integers >= 1, got {size!r}")
        if any(size > self.max_batch_size for size in self.preferred_batch_sizes):
            raise ValueError(
                f"preferred batch sizes {list(self.preferred_batch_sizes)} exceed "
                f"max_batch_size {self.max_batch_size}"
            )

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """The sizes batches are padded to, ascending; max_batch_size included."""
        preferred = self.preferred_batch_sizes or tuple(
            1 << i for i in range(self.max_batch_size.bit_length())
        )
        return tuple(sorted({*preferred, self.max_batch_size}))

    def padded_rows(self, rows: int) -> int:
        """The batch size `rows` rows are padded up to (`rows` itself for a model that runs
        any shape)."""
        if self.any_shape:
            return rows
        sizes = self.batch_sizes
        return sizes[bisect.bisect_left(sizes, rows)] if rows <= sizes[-1] else rows


@dataclass
class BatchStats:
    """One run of the model, reported to `on_batch` (the server's metrics)."""

    requests: int
    rows: int  # the requests' own rows
    padded_rows: int  # rows actually run (preferred size)
    real_elements: int  # input elements the requests sent
    padded_elements: int  # input elements run, padding included
    queue_seconds: list[float]  # per request: submit -> start of the run
    compute_seconds: float  # stacking, the model call and splitting
    failed: bool
    # Where the time went (tools/serve.py's metrics; docs/serving.md "Where the latency goes"):
    # The oldest request's arrival -> the batch was complete (full, or the queue delay over);
    # the rest of its queue time it waited for a free worker.
    formation_seconds: float = 0.0
    model_seconds: float = 0.0  # the model call alone (compute minus the copies)
    # The model call's wall time its calling thread spent off the CPU: preempted, or asleep
    # at a barrier waiting for another compute thread (only the calling thread is measured).
    model_stall_seconds: float = 0.0


@dataclass(eq=False)  # identity: requests are removed from the queue by identity
class _Request:
    feeds: dict[str, np.ndarray]
    rows: int
    key: Hashable
    length: int | None  # sequence length, when padded along a sequence axis
    # The key without the length bucket (requests with equal groups differ at most in their
    # bucket, so a shorter one can be padded to a longer one's length), and the bucket.
    group: Hashable
    bucket: int | None
    enqueued: float
    deadline: float | None
    future: Future[Outputs] = field(default_factory=Future)
    # When its batch was complete: full (the last member's arrival) or the oldest member's
    # delay over; the batch may wait longer for a free worker (time.monotonic).
    ready: float = 0.0


def concatenate(
    requests: Sequence[Feeds],
    names: Sequence[str],
    rows: int,
    sequence: SequencePadding | None = None,
    length: int | None = None,
) -> dict[str, np.ndarray]:
    """The requests' inputs stacked on axis 0 and padded to `rows` rows (repeating the last
    row), each padded input of `sequence` also padded along its axis to `length`."""
    batch = {}
    for name in names:
        parts = [np.asarray(r[name]) for r in requests]
        if sequence is not None and name in sequence.inputs and length is not None:
            axis, value = sequence.inputs[name]
            parts = [_pad_axis(p, axis, length, value) for p in parts]
        given = sum(p.shape[0] for p in parts)
        if given < rows:
            last = parts[-1][-1:]
            parts.append(np.repeat(last, rows - given, axis=0))
        batch[name] = np.ascontiguousarray(np.concatenate(parts, axis=0))
    return batch


def _pad_axis(array: np.ndarray, axis: int, length: int, value: float) -> np.ndarray:
    missing = length - array.shape[axis]
    if missing <= 0:
        return array
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, missing)
    return np.pad(array, widths, constant_values=np.asarray(value, dtype=array.dtype))


def split(
    outputs: Mapping[str, np.ndarray],
    rows: Sequence[int],
    sequence: SequencePadding | None = None,
    lengths: Sequence[int | None] | None = None,
) -> list[Outputs]:
    """Each request's rows of every output (copies: no request holds the batch alive), each
    sequence output of `sequence` cut back to the request's length."""
    total = sum(rows)
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] < total:
            raise InputError(
                f"output '{name}' has shape {list(array.shape)}: no batch axis of at least "
                f"{total} rows to split; serve this model with max_batch_size 1"
            )
    results: list[Outputs] = []
    start = 0
    for index, count in enumerate(rows):
        result = {}
        for name, array in outputs.items():
            part = array[start : start + count]
            length = lengths[index] if lengths is not None else None
            if sequence is not None and name in sequence.outputs and length is not None:
                part = np.take(part, np.arange(length), axis=sequence.outputs[name])
            result[name] = np.array(part, copy=True)
        results.append(result)
        start += count
    return results


def run_in_chunks(
    run: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]],
    requests: Sequence[Feeds],
    names: Sequence[str],
    batch: int,
) -> list[Outputs]:
    """Run `requests` (each of any rows) through a model compiled for a static batch of
    `batch` rows: their rows in chunks of `batch`, the last chunk padded (repeating its last
    row); each request gets its own rows of every output. What the Ray integration does with
    an artifact (its batch is fixed when it is compiled)."""
    rows = [int(np.asarray(r[names[0]]).shape[0]) if names else 1 for r in requests]
    stacked = {n: np.concatenate([np.asarray(r[n]) for r in requests]) for n in names}
    total = sum(rows)
    if total == 0 or batch < 1:
        raise InputError(f"nothing to run: {total} rows in batches of {batch}")
    chunks: list[Mapping[str, np.ndarray]] = []
    for start in range(0, total, batch):
        part = {n: a[start : start + batch] for n, a in stacked.items()}
        chunks.append(run(concatenate([part], names, batch)))
    whole = {n: np.concatenate([c[n] for c in chunks])[:total] for n in chunks[0]}
    return split(whole, rows)


class DynamicBatcher:
    """Queues requests to one model and runs them in batches on `policy.instances` threads.

    `run(feeds) -> outputs` runs the model once (it must be safe to call from several threads,
    as ember's Executable is). `on_batch(stats)` is called after every run (metrics).
    """

    def __init__(
        self,
        run: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]],
        policy: BatchPolicy,
        input_names: Sequence[str],
        *,
        name: str = "model",
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self._run = run
        self.policy = policy
        self.input_names = list(input_names)
        self.name = name
        self._on_batch = on_batch
        self._pending: deque[_Request] = deque()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._closing = False
        self.batch_sizes_seen: dict[int, int] = {}  # rows per run -> runs (tests, logs)
        self._workers = [
            threading.Thread(target=self._work, name=f"ember-batch-{name}-{i}", daemon=True)
            for i in range(policy.instances)
        ]
        for worker in self._workers:
            worker.start()

    @property
    def queued(self) -> int:
        with self._lock:
            return len(self._pending)

    # -- submitting ----------------------------------------------------------------------------
    def submit(self, feeds: Feeds, timeout: float | None = None) -> Future[Outputs]:
        """Queue one request (its arrays already checked by the caller); its future gets its
        outputs. Overloaded at once when the queue is full or the batcher is closing;
        InputError when the request has more rows than a batch holds."""
        arrays = {name: np.asarray(feeds[name]) for name in self.input_names}
        rows = self._rows(arrays)
        sequence = self.policy.sequence
        length = sequence.length(arrays) if sequence is not None else None
        key = self._key(arrays, length)
        bucket = sequence.bucket(length) if sequence is not None and length is not None else None
        group = self._key(arrays, None) if bucket is not None else key
        now = time.monotonic()
        deadline = now + timeout if timeout else None
        request = _Request(arrays, rows, key, length, group, bucket, now, deadline)
        with self._lock:
            if self._closing:
                raise Overloaded(f"model '{self.name}' is shutting down")
            if len(self._pending) >= self.policy.queue_limit:
                raise Overloaded(
                    f"model '{self.name}': the queue is full ({self.policy.queue_limit} "
                    f"requests waiting); retry later"
                )
            self._pending.append(request)
            self._changed.notify()
        return request.future

    def _rows(self, arrays: Mapping[str, np.ndarray]) -> int:
        if not arrays:
            return 1
        rows = {name: (a.shape[0] if a.ndim else None) for name, a in arrays.items()}
        if len(set(rows.values())) != 1 or None in rows.values():
            raise InputError(
                f"model '{self.name}' batches on axis 0: every input needs the same size "
                f"there, given {rows}"
            )
        count = next(iter(rows.values()))
        assert count is not None
        if count > self.policy.max_batch_size:
            raise InputError(
                f"model '{self.name}': a request of {count} rows exceeds the max batch size "
                f"{self.policy.max_batch_size}"
            )
        return count

    def _key(self, arrays: Mapping[str, np.ndarray], length: int | None) -> Hashable:
        """Requests with equal keys can share a batch: dtypes and shapes past axis 0, the
        sequence axes replaced by the length bucket (by -1 when `length` is None: the key
        of the request's group, whatever its bucket)."""
        sequence = self.policy.sequence
        key = []
        for name, array in arrays.items():
            shape = list(array.shape[1:])
            if sequence is not None and name in sequence.inputs:
                shape[sequence.inputs[name][0] - 1] = (
                    sequence.bucket(length) if length is not None else -1
                )
            key.append((name, array.dtype.str, tuple(shape)))
        return tuple(key)

    # -- running -------------------------------------------------------------------------------
    def _take_batch(self) -> list[_Request] | None:
        """Wait for a batch: the oldest request and those that can join it, once the batch is
        full or the oldest has waited max_queue_delay; while the oldest's batch is still
        forming, a full batch of another shape (length bucket) behind it runs rather than the
        worker idling (the oldest then waits at most one run past its delay). None when closed
        and drained."""
        policy = self.policy
        with self._lock:
            while True:
                while not self._pending:
                    if self._closing:
                        return None
                    self._changed.wait()
                head = self._pending[0]
                chosen = self._compatible(head)
                rows = sum(r.rows for r in chosen)
                wait = head.enqueued + policy.max_queue_delay - time.monotonic()
                if rows < policy.max_batch_size and wait > 0 and not self._closing:
                    behind = self._full_batch_behind(head)
                    if behind is None:
                        self._changed.wait(timeout=wait)
                        continue
                    head, chosen, rows = behind[0], behind, policy.max_batch_size
                deadline = head.enqueued + policy.max_queue_delay
                full = rows >= policy.max_batch_size
                ready = min(chosen[-1].enqueued if full else deadline, time.monotonic())
                chosen += self._fill_padding(head, rows)
                for request in chosen:
                    self._pending.remove(request)
                    request.ready = ready
                return chosen

    def _full_batch_behind(self, head: _Request) -> list[_Request] | None:
        """The oldest full batch of a shape other than `head`'s, if one is waiting."""
        rows: dict[Hashable, int] = {}
        oldest: dict[Hashable, _Request] = {}
        tried: set[Hashable] = set()  # keys whose requests' rows do not pack to a full batch
        for request in self._pending:
            key = request.key
            if key == head.key or key in tried:
                continue
            oldest.setdefault(key, request)
            rows[key] = rows.get(key, 0) + request.rows
            if rows[key] >= self.policy.max_batch_size:
                chosen = self._compatible(oldest[key])
                if sum(r.rows for r in chosen) >= self.policy.max_batch_size:
                    return chosen
                tried.add(key)
        return None

    def _compatible(self, head: _Request) -> list[_Request]:
        chosen, rows = [], 0
        for request in self._pending:
            if request.key == head.key and rows + request.rows <= self.policy.max_batch_size:
                chosen.append(request)
                rows += request.rows
                if rows == self.policy.max_batch_size:
                    break
        return chosen

    def _fill_padding(self, head: _Request, rows: int) -> list[_Request]:
        """The oldest waiting requests of buckets shorter than `head`'s that fit in the rows
        the batch would be padded with (its preferred size minus `rows`): run at the batch's
        length under the mask, they cost no more rows than the padding they replace."""
        if head.bucket is None:
            return []
        free = self.policy.padded_rows(rows) - rows
        taken: list[_Request] = []
        for request in self._pending:
            if free == 0:
                break
            if (
                request.group == head.group
                and request.bucket is not None
                and request.bucket < head.bucket
                and request.rows <= free
            ):
                taken.append(request)
                free -= request.rows
        return taken

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            now = time.monotonic()
            live = []
            for request in batch:
                if not request.future.set_running_or_notify_cancel():
                    continue  # its caller gave up (cancelled) while it waited
                if request.deadline is not None and now > request.deadline:
                    request.future.set_exception(
                        RequestTimeout(
                            f"model '{self.name}': the request waited "
                            f"{now - request.enqueued:.3f} s in the queue, past its timeout"
                        )
                    )
                else:
                    live.append(request)
            if not live:
                continue
            try:
                self._run_batch(live, individually_on_failure=True)
            except Exception as error:  # a bug here must not leave requests waiting forever
                log.exception("model %s: the batcher failed", self.name)
                for request in live:
                    if not request.future.done():
                        request.future.set_exception(error)

    def _run_batch(self, batch: list[_Request], individually_on_failure: bool) -> None:
        sequence = self.policy.sequence
        rows = sum(r.rows for r in batch)
        padded_rows = self.policy.padded_rows(rows)
        length = None
        if sequence is not None and batch[0].length is not None:
            longest = max(r.length or 0 for r in batch)
            length = longest if self.policy.any_shape else sequence.bucket(longest)
        started = time.monotonic()
        failed = False
        feeds: dict[str, np.ndarray] = {}
        model_seconds = stall_seconds = 0.0
        try:
            feeds = concatenate(
                [r.feeds for r in batch], self.input_names, padded_rows, sequence, length
            )
            call_started, call_cpu = time.monotonic(), time.thread_time()
            outputs = self._run(feeds)
            model_seconds = time.monotonic() - call_started
            stall_seconds = max(0.0, model_seconds - (time.thread_time() - call_cpu))
            results = split(outputs, [r.rows for r in batch], sequence, [r.length for r in batch])
        except Exception as error:  # the model's (or a bug's): the requests' answer, not ours
            failed = True
            if len(batch) > 1 and individually_on_failure:
                log.info(
                    "model %s: a batch of %d requests failed (%s); running them one by one",
                    self.name,
                    len(batch),
                    error,
                    extra={"model": self.name, "requests": len(batch)},
                )
                for request in batch:
                    self._run_batch([request], individually_on_failure=False)
                return
            for request in batch:
                request.future.set_exception(error)
        else:
            for request, result in zip(batch, results):
                request.future.set_result(result)
        finally:
            elapsed = time.monotonic() - started
        with self._lock:
            self.batch_sizes_seen[rows] = self.batch_sizes_seen.get(rows, 0) + 1
        if self._on_batch is not None:
            real = sum(int(a.size) for r in batch for a in r.feeds.values())
            padded = sum(int(a.size) for a in feeds.values()) or real
            self._on_batch(
                BatchStats(
                    requests=len(batch),
                    rows=rows,
                    padded_rows=padded_rows,
                    real_elements=real,
                    padded_elements=padded,
                    queue_seconds=[started - r.enqueued for r in batch],
                    compute_seconds=elapsed,
                    failed=failed,
                    formation_seconds=max(0.0, batch[0].ready - batch[0].enqueued),
                    model_seconds=model_seconds,
                    model_stall_seconds=stall_seconds,
                )
            )

    # -- stopping ------------------------------------------------------------------------------
    def close(self, timeout: float | None = None) -> None:
        """Refuse new requests, finish the queued ones, stop the workers."""
        with self._lock:
            self._closing = True
            self._changed.notify_all()
        for worker in self._workers:
            worker.join(timeout)
