"""`ember serve` under load: a closed-loop load generator on localhost, batching off and on.

    python benchmarks/serve.py                                  # ResNet-18 and BERT, c = 1, 8, 32
    python benchmarks/serve.py --models bert --requests 10000 --duration 600 --concurrency 32 \
        --batching on                                           # the soak run
    python benchmarks/serve.py --models resnet --image-size 64 --requests 100 --duration 10
    python benchmarks/serve.py --models bert --scenario queries  # short requests, 8-32 tokens

For each model two servers run, each in its own process (`ember serve`): batching off
(--max-batch-size 1) and on (--max-batch-size 8, preferred sizes 1,2,4,8), with the same
threads. Both stay up and the points alternate between them (off, on, off, on, ... for
--repeat rounds), so a change of the machine's load (a shared machine) falls on both modes
alike; the summary gives each mode's medians and the median of the on/off throughput ratios of
the pairs run back to back. C clients (tritonclient.http.aio, binary tensors) each send a
request, wait for its answer and send the next (closed loop) until --requests requests or
--duration seconds, at each concurrency. Reported per point: throughput, p50 / p99 latency
(and p99 past the first 2C requests), failures, whether every request was answered exactly
once; from the server's /metrics: rows per run, the padding ratio (padded input elements / all
input elements run), queue and run time (mean, p99), the model call's time and how much of it
its thread was off the CPU, batch formation time, compiles and full garbage collections (and
the time they stopped the server) during the point; the server's CPU time per request and its
event loop's share of it (/proc: independent of how much CPU the machine's other users leave
it); the server's memory after warm-up and at the end shows whether it stays flat: its
proportional set size (PSS: each page once, however many times it is mapped) and its resident
set (RSS), which counts a weight shared by N compiled variants N times, once per mapping
(engine/weight_pool.py), and so grows as each variant's first run touches its mapping.

Models (seeded weights, built by ember.tools.model_zoo, made batch-symbolic by
ember.tools.symbolic_zoo): ResNet-18 ([batch, 3, S, S]) and a BERT encoder ([batch, seq]) fed
mixed sequence lengths (--seq-lengths). Two BERT scenarios (--scenario):

- `mixed` (the default): lengths 64 and 128, an encoder without an attention mask, so requests
  of different lengths never share a batch (padding them would change the answers): the
  server batches equal lengths only.
- `queries`: short requests, as a search or sentence-similarity service gets them, lengths
  8, 12, 16, 24 and 32 in turn; the encoder takes an attention mask and the batched server
  pads each request to its length bucket (--buckets, default one per length, 8,12,16,24,32:
  the encoder is compiled once, so a bucket costs no compile; `--buckets 8,16,32` makes
  requests of different lengths share a batch, padded under the mask) (`sequence` in its
  config.json). The unbatched server gets one bucket per length: every request runs at its
  own length, no padding (its best case).

--bert-layers, --bert-hidden and --bert-heads size the encoder (12, 768, 12: BERT-base's).
Not a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnx

# The test helpers build the seeded-weight models; benchmarks reuse them rather than copy them.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ember.tools import model_zoo as models  # noqa: E402
from ember.tools.symbolic_zoo import bert_with_symbolic_shapes, with_symbolic_batch  # noqa: E402

# BERT's request mixes: scenario -> (lengths, in turn; buckets, or 'none': no attention mask).
SCENARIOS = {"mixed": ("64,128", "none"), "queries": ("8,12,16,24,32", "8,12,16,24,32")}


def build(
    name: str, args: argparse.Namespace
) -> tuple[onnx.ModelProto, list[dict[str, np.ndarray]]]:
    """The model and a pool of seeded single-row requests for it."""
    rng = np.random.default_rng(0)
    if name == "resnet":
        model = with_symbolic_batch(models.resnet18(seed=0, image_size=args.image_size))
        shape = (1, 3, args.image_size, args.image_size)
        pool = [{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(64)]
        return model, pool
    lengths = args.seq_lengths
    masked = bool(args.buckets)
    model = bert_with_symbolic_shapes(
        models.bert_encoder(layers=args.bert_layers, seq=max(lengths), hidden=args.bert_hidden,
                            heads=args.bert_heads, vocab=1000, seed=0, attention_mask=masked)
    )  # fmt: skip
    pool = []
    for i in range(64):
        length = lengths[i % len(lengths)]
        request = {"input_ids": rng.integers(0, 1000, (1, length)).astype(np.int64)}
        if masked:
            request["attention_mask"] = np.ones((1, length), np.int64)
        pool.append(request)
    return model, pool


def model_config(
    name: str, model: onnx.ModelProto, batching: bool, args: argparse.Namespace
) -> dict | None:
    """The model's config.json: for BERT, the (batch size, length) variants to compile ahead,
    and with --buckets the sequence padding under the attention mask (the unbatched server
    gets a bucket per length: each request runs at its own length)."""
    if name != "bert":
        return None
    if not args.buckets:
        return {"warmup_dims": {"seq": args.seq_lengths}}
    hidden = model.graph.output[0].name  # [batch, seq, hidden]; the pooled output has no seq
    return {
        "sequence": {
            "inputs": {"input_ids": [1, 0], "attention_mask": [1, 0]},
            "outputs": {hidden: 1},
            "buckets": args.buckets if batching else sorted(set(args.seq_lengths)),
        }
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    repo: Path, port: int, batching: bool, args: argparse.Namespace
) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "ember.tools.cli", "serve", str(repo), "--port", str(port),
        "--log-level", "warning",
        "--max-batch-size", str(args.max_batch_size) if batching else "1",
        "--preferred-batch-sizes", args.preferred_batch_sizes if batching else "1",
        "--max-queue-delay-ms", str(args.max_queue_delay_ms), "--queue-limit", "1024",
        "--instances", str(args.instances),
    ]  # fmt: skip
    if args.threads_per_instance:
        command += ["--threads-per-instance", str(args.threads_per_instance)]
    server = subprocess.Popen(command)
    deadline = time.monotonic() + args.startup_timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1)
            return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("the server did not become ready in time")


def memory_mb(pid: int) -> tuple[float, float]:
    """(PSS, RSS) of process `pid` in MB. The variants of a model map one copy of each shared
    weight (a memfd) into each of their blobs: RSS counts every mapping of a page, PSS the
    page once, so PSS is the memory the server holds."""

    def field(path: str, name: str) -> float:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name):
                return int(line.split()[1]) / 1024
        return float("nan")

    return field(f"/proc/{pid}/smaps_rollup", "Pss:"), field(f"/proc/{pid}/status", "VmRSS:")


def metrics(port: int, model: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # The model's series, and the server-wide ones (garbage collector pauses).
            if sample.labels.get("model", model) == model:
                key = sample.name + "".join(
                    f"|{v}" for k, v in sorted(sample.labels.items()) if k not in ("model", "le")
                )
                if "le" in sample.labels:
                    key += f"|le={sample.labels['le']}"
                values[key] = sample.value
    return values


def cpu_seconds(pid: int, thread: int | None = None, system_only: bool = False) -> float:
    """User + system CPU time of process `pid` (all its threads) so far, or of its thread
    `thread` alone (the server's main thread, `pid`, runs the event loop: HTTP, parsing,
    answering; the others are the batchers' threads and their compute threads); with
    `system_only` the system (kernel) part alone: system calls, futex waits and wake-ups."""
    where = f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat"
    fields = Path(where).read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[12]) if system_only else int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def delta(after: dict[str, float], before: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def histogram_quantile(
    after: dict[str, float], before: dict[str, float], name: str, q: float
) -> float:
    """The q-quantile of histogram `name` over the window (the upper bound of the bucket it
    falls in, as Prometheus' histogram_quantile without the interpolation), in ms."""
    prefix = f"{name}_bucket|le="
    bounds = sorted(
        (float(k[len(prefix) :]), delta(after, before, k)) for k in after if k.startswith(prefix)
    )
    total = bounds[-1][1] if bounds else 0.0
    for bound, count in bounds:
        if total and count >= q * total:
            return 1000 * bound
    return float("nan")


def percentile(latencies: list[float], q: float) -> float:
    """The q-quantile of `latencies` (seconds), in ms."""
    ordered = sorted(latencies)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.nan


async def closed_loop(
    port: int, model: str, pool: list[dict[str, np.ndarray]], concurrency: int,
    requests: int, duration: float, json_outputs: list[str] | None = None,
) -> dict[str, float]:  # fmt: skip
    """With `json_outputs` (the model's output names) the tensors travel as JSON both ways,
    as a client without the binary tensor extension sends them; else binary both ways
    (tritonclient's default for outputs)."""
    import tritonclient.http.aio as aio
    from tritonclient.http import InferInput, InferRequestedOutput

    datatypes = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}
    client = aio.InferenceServerClient(f"127.0.0.1:{port}", conn_limit=concurrency)
    latencies: list[float] = []
    steady: list[float] = []
    answered: dict[str, int] = {}
    failures = 0
    next_index = 0
    stop_at = time.monotonic() + duration

    async def user() -> None:
        nonlocal next_index, failures
        while next_index < requests and time.monotonic() < stop_at:
            index = next_index
            next_index += 1
            feeds = pool[index % len(pool)]
            inputs = []
            for name, array in feeds.items():
                tensor = InferInput(name, list(array.shape), datatypes[array.dtype])
                tensor.set_data_from_numpy(array, binary_data=json_outputs is None)
                inputs.append(tensor)
            outputs = None
            if json_outputs is not None:
                outputs = [InferRequestedOutput(n, binary_data=False) for n in json_outputs]
            started = time.perf_counter()
            try:
                result = await client.infer(model, inputs, outputs=outputs, request_id=str(index))
            except Exception:
                failures += 1
                continue
            latencies.append(time.perf_counter() - started)
            if index >= 2 * concurrency:  # past the first requests (new connections, ...)
                steady.append(latencies[-1])
            answer = result.get_response().get("id", "")
            answered[answer] = answered.get(answer, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await client.close()
    sent = next_index
    latencies.sort()
    return {
        "sent": sent,
        "answered": len(latencies),
        "failures": failures,
        "exactly_once": set(answered) <= {str(i) for i in range(sent)}
        and all(n == 1 for n in answered.values())
        and len(answered) + failures == sent,
        "throughput": len(latencies) / elapsed,
        "elapsed_s": elapsed,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": percentile(latencies, 0.99),
        "p99_steady_ms": percentile(steady, 0.99),
    }


def bench_model(name: str, args: argparse.Namespace, workdir: Path) -> list[dict]:
    model, pool = build(name, args)
    json_outputs = [o.name for o in model.graph.output] if args.json_tensors else None
    repos = {}
    for mode in args.batching:  # a repository per server: their configs may differ
        repos[mode] = workdir / f"{name}-{mode}"
        (repos[mode] / name).mkdir(parents=True)
        onnx.save(model, str(repos[mode] / name / "model.onnx"))
        # BERT: every (batch size, length) is compiled before the clients start.
        config = model_config(name, model, mode == "on", args)
        if config is not None:
            (repos[mode] / name / "config.json").write_text(json.dumps(config))
    # Both servers stay up and the points alternate between them (off, on, off, on, ...), so a
    # change of the machine's load (shared machines) falls on both modes alike.
    servers: dict[str, tuple[subprocess.Popen, int]] = {}
    rows: list[dict] = []
    try:
        for mode in args.batching:
            port = free_port()
            servers[mode] = (start_server(repos[mode], port, mode == "on", args), port)
        warm: dict[str, tuple[float, float]] = {}
        for mode, (server, port) in servers.items():
            # Warm-up: the server compiled every (batch size, length) ahead; this runs each once.
            asyncio.run(closed_loop(port, name, pool, 32, args.warmup, 600))
            warm[mode] = memory_mb(server.pid)
        # --simultaneous: both servers under load at once, each by its own clients, so every
        # instant of the machine's load falls on both (they then share the machine's CPU).
        groups = [list(servers.items())] if args.simultaneous else [[s] for s in servers.items()]
        for repeat in range(args.repeat):
            for concurrency in args.concurrency:
                for group in groups:
                    started = {
                        mode: (
                            metrics(port, name),
                            cpu_seconds(server.pid),
                            cpu_seconds(server.pid, server.pid),
                            cpu_seconds(server.pid, system_only=True),
                        )
                        for mode, (server, port) in group
                    }
                    client_before = time.process_time()

                    async def load(group: list = group, concurrency: int = concurrency) -> list:
                        return await asyncio.gather(
                            *(
                                closed_loop(
                                    port,
                                    name,
                                    pool,
                                    concurrency,
                                    args.requests,
                                    args.duration,
                                    json_outputs,
                                )
                                for _, (_, port) in group
                            )
                        )

                    points = asyncio.run(load())
                    client_cpu = time.process_time() - client_before
                    answered = max(sum(p["answered"] for p in points), 1)
                    for (mode, (server, port)), point in zip(group, points):
                        before, cpu_before, loop_before, system_before = started[mode]
                        after, cpu_after = metrics(port, name), cpu_seconds(server.pid)
                        loop_after = cpu_seconds(server.pid, server.pid)
                        system_after = cpu_seconds(server.pid, system_only=True)
                        point |= describe_window(before, after, point["answered"])
                        point |= {
                            "model": name,
                            "batching": mode,
                            "concurrency": concurrency,
                            "repeat": repeat,
                            "server_cpu_ms_per_request": 1000
                            * (cpu_after - cpu_before)
                            / max(point["answered"], 1),
                            "event_loop_cpu_ms_per_request": 1000
                            * (loop_after - loop_before)
                            / max(point["answered"], 1),
                            "system_cpu_ms_per_request": 1000
                            * (system_after - system_before)
                            / max(point["answered"], 1),
                            # The share of the machine the server got: throughput is this
                            # divided by the CPU per request, so the on/off throughput ratio
                            # is the CPU ratio (the work batching saves) times the ratio of
                            # these (how much of the machine each server happened to get).
                            "server_cores": (cpu_after - cpu_before) / point["elapsed_s"],
                            "client_cpu_ms_per_request": 1000 * client_cpu / answered,
                            "load_average": os.getloadavg()[0],
                        }
                        rows.append(point)
                        print(_row(point), flush=True)
        for mode, (server, _) in servers.items():
            end = memory_mb(server.pid)
            print(
                f"  {mode}: server memory (PSS) {warm[mode][0]:.0f} MB after warm-up, "
                f"{end[0]:.0f} MB at the end (RSS {warm[mode][1]:.0f} -> {end[1]:.0f} MB)"
            )
            last = [r for r in rows if r["batching"] == mode][-1]
            last["pss_warm_mb"], last["pss_end_mb"] = warm[mode][0], end[0]
            last["rss_warm_mb"], last["rss_end_mb"] = warm[mode][1], end[1]
    finally:
        for server, _ in servers.values():
            server.send_signal(signal.SIGTERM)
        for server, _ in servers.values():
            server.wait(60)
    summarize(rows)
    return rows


def describe_window(before: dict[str, float], after: dict[str, float], answered: int) -> dict:
    """What the server's /metrics say about one point: rows per run, padding, where the time
    went (queue wait and run time, mean and p99), compiles and full garbage collections during
    the point."""
    runs = delta(after, before, "ember_batch_size_count")
    padding = delta(after, before, "ember_input_elements_total|padding")
    real = delta(after, before, "ember_input_elements_total|request")
    queued = delta(after, before, "ember_queue_seconds_count")
    return {
        "rows_per_run": delta(after, before, "ember_batch_size_sum") / runs if runs else math.nan,
        "padding_ratio": padding / (padding + real) if real else math.nan,
        "queue_mean_ms": 1000 * delta(after, before, "ember_queue_seconds_sum") / queued
        if queued
        else math.nan,
        "queue_p99_ms": histogram_quantile(after, before, "ember_queue_seconds", 0.99),
        "run_mean_ms": 1000 * delta(after, before, "ember_compute_seconds_sum") / runs
        if runs
        else math.nan,
        "run_p99_ms": histogram_quantile(after, before, "ember_compute_seconds", 0.99),
        "server_p99_ms": histogram_quantile(after, before, "ember_request_seconds", 0.99),
        "formation_mean_ms": 1000 * delta(after, before, "ember_batch_formation_seconds_sum") / runs
        if runs
        else math.nan,
        "model_mean_ms": 1000 * delta(after, before, "ember_model_seconds_sum") / runs
        if runs
        else math.nan,
        "stall_mean_ms": 1000 * delta(after, before, "ember_model_stall_seconds_sum") / runs
        if runs
        else math.nan,
        "stall_p99_ms": histogram_quantile(after, before, "ember_model_stall_seconds", 0.99),
        "compiles": delta(after, before, "ember_model_compiles"),
        # Full collections (generation 2) during the point and the time they stopped the server.
        "gc_full": delta(after, before, "ember_gc_pause_seconds_count|2"),
        "gc_full_ms": 1000 * delta(after, before, "ember_gc_pause_seconds_sum|2"),
    }


def summarize(rows: list[dict]) -> None:
    """Per concurrency: the median over repeats of each mode's figures, and the median of the
    on/off throughput ratios of the pairs run back to back."""
    for concurrency in sorted({r["concurrency"] for r in rows}):
        at = [r for r in rows if r["concurrency"] == concurrency]
        for mode in ("off", "on"):
            mine = [r for r in at if r["batching"] == mode]
            if mine:
                print(
                    f"  c={concurrency} batching {mode}: median of {len(mine)}: "
                    f"{statistics.median(r['throughput'] for r in mine):.1f} req/s, "
                    f"p50 {statistics.median(r['p50_ms'] for r in mine):.1f} ms, "
                    f"p99 {statistics.median(r['p99_ms'] for r in mine):.1f} ms (past the "
                    f"first requests {statistics.median(r['p99_steady_ms'] for r in mine):.1f}), "
                    f"server CPU {statistics.median(r['server_cpu_ms_per_request'] for r in mine):.2f} ms/request "
                    f"(event loop {statistics.median(r['event_loop_cpu_ms_per_request'] for r in mine):.2f}) "
                    f"on {statistics.median(r['server_cores'] for r in mine):.2f} cores, "
                    f"rows/run {statistics.median(r['rows_per_run'] for r in mine):.1f}, "
                    f"padding {statistics.median(r['padding_ratio'] for r in mine):.2f}, "
                    f"load {statistics.median(r['load_average'] for r in mine):.1f}"
                )
        pairs: dict[int, dict[str, dict]] = {}
        for r in at:
            pairs.setdefault(r["repeat"], {})[r["batching"]] = r
        both = [p for p in pairs.values() if {"on", "off"} <= set(p)]
        # Throughput on/off = (CPU per request off/on: the work batching saves, whatever the
        # machine's load) x (cores on/off: the share of the machine each server got).
        for label, figure, inverse in (
            ("throughput on/off", "throughput", False),
            ("server CPU per request off/on (load-robust)", "server_cpu_ms_per_request", True),
            ("server cores used on/off", "server_cores", False),
        ):
            ratios = sorted(
                (p["off"][figure] / p["on"][figure]) if inverse else
                (p["on"][figure] / p["off"][figure])
                for p in both
            )  # fmt: skip
            if ratios:
                listed = ", ".join(f"{x:.2f}" for x in ratios)
                print(
                    f"  c={concurrency}: {label}, median of {len(ratios)} pairs: "
                    f"{statistics.median(ratios):.2f} ({listed})"
                )


def simulate_closed_loop(
    max_batch: int, spread: float, clients: int = 32, requests: int = 30000, seed: int = 0
) -> tuple[float, float]:
    """(p50, p99) latency of a model of the closed loop: `clients` users, requests alternating
    between two lengths that cost 1 and 2 per row, one worker running the oldest request with
    the oldest requests of its length (up to `max_batch` rows, the batcher's policy), each run's
    time multiplied by a lognormal factor of spread `spread` (the machine's noise). In units of
    one short row. Shows how a run's noise reaches the tail with and without batching."""
    import random

    draw = random.Random(seed)
    cost = (1.0, 2.0)
    now, sent = 0.0, clients
    queue = [(0.0, i, i % 2) for i in range(clients)]  # (arrival, index, length kind)
    latencies: list[float] = []
    while len(latencies) < requests:
        head = queue[0]
        batch = [r for r in queue if r[2] == head[2]][:max_batch]
        for request in batch:
            queue.remove(request)
        now += sum(cost[r[2]] for r in batch) * draw.lognormvariate(0, spread)
        for request in batch:
            latencies.append(now - request[0])
            queue.append((now, sent, sent % 2))
            sent += 1
    return percentile(latencies, 0.5), percentile(latencies, 0.99)


def kernel_costs(args: argparse.Namespace, threads: int, runs: int) -> None:
    """What batching can save in the model itself: the BERT encoder compiled as the server
    compiles it, CPU time per row (time.process_time, median of `runs`) of a request alone at
    each length and of a batch of --max-batch-size rows at each length and bucket. The server's
    CPU per request cannot fall below the batched figures, nor the unbatched one below the
    alone figures (plus the server's own work, ~0.5-1 ms)."""
    import ember

    model, _ = build("bert", args)
    compiled = ember.compile(model, threads=threads, batch_polymorphic=False)
    rng = np.random.default_rng(0)
    lengths = sorted({*args.seq_lengths, *args.buckets})
    for batch in (1, args.max_batch_size):
        for length in lengths:
            feeds = {"input_ids": rng.integers(0, 1000, (batch, length)).astype(np.int64)}
            if args.buckets:
                feeds["attention_mask"] = np.ones((batch, length), np.int64)
            compiled.run(feeds)
            times = []
            for _ in range(runs):
                started = time.process_time()
                compiled.run(feeds)
                times.append(time.process_time() - started)
            print(
                f"threads {threads}, batch {batch:2} x {length:3} tokens: "
                f"{1000 * statistics.median(times) / batch:7.2f} ms CPU per row",
                flush=True,
            )


def _row(p: dict) -> str:
    return (
        f"{p['model']:7} batching {p['batching']:3}  c={p['concurrency']:<3} "
        f"{p['throughput']:8.1f} req/s  p50 {p['p50_ms']:8.1f} ms  p99 {p['p99_ms']:8.1f} ms "
        f"(past the first {2 * p['concurrency']}: {p['p99_steady_ms']:.0f})  "
        f"rows/run {p['rows_per_run']:4.1f}  padding {p['padding_ratio']:.2f}  "
        f"answered {p['answered']}/{p['sent']} once: {p['exactly_once']}\n"
        f"    server: queue mean {p['queue_mean_ms']:.1f} p99 {p['queue_p99_ms']:.0f} ms, "
        f"run mean {p['run_mean_ms']:.1f} p99 {p['run_p99_ms']:.0f} ms (model call "
        f"{p['model_mean_ms']:.1f}, of which off-CPU {p['stall_mean_ms']:.1f} p99 "
        f"{p['stall_p99_ms']:.0f}), batch formed in {p['formation_mean_ms']:.1f} ms,\n    "
        f"arrival-to-answer p99 {p['server_p99_ms']:.0f} ms, "
        f"CPU {p['server_cpu_ms_per_request']:.2f} ms/request (event loop "
        f"{p['event_loop_cpu_ms_per_request']:.2f}, kernel {p['system_cpu_ms_per_request']:.2f}; "
        f"{p['server_cores']:.2f} cores; client "
        f"{p['client_cpu_ms_per_request']:.1f}), compiles {p['compiles']:.0f}, "
        f"full GCs {p['gc_full']:.0f} ({p['gc_full_ms']:.0f} ms), load {p['load_average']:.1f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet,bert")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--requests", type=int, default=400, help="per point, at most")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per point, at most")
    parser.add_argument("--warmup", type=int, default=64, help="requests before measuring")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        default="mixed",
        help="BERT's requests: mixed (64, 128 tokens, no mask) or queries (8-32, masked)",
    )
    parser.add_argument("--seq-lengths", help="BERT request lengths, in turn (the scenario's)")
    parser.add_argument(
        "--buckets",
        help="BERT: pad requests to these lengths under an attention mask (the scenario's; "
        "'none': an encoder without a mask, equal lengths batched only)",
    )
    parser.add_argument("--bert-layers", type=int, default=4)
    parser.add_argument("--bert-hidden", type=int, default=256)
    parser.add_argument("--bert-heads", type=int, default=4)
    parser.add_argument("--max-batch-size", type=int, default=8, help="batching on")
    parser.add_argument(
        "--preferred-batch-sizes", help="batching on; default: the powers of two up to the max"
    )
    parser.add_argument("--batching", default="off,on", help="modes to run: off, on or both")
    parser.add_argument("--instances", type=int, default=1, help="of the model, both modes")
    parser.add_argument(
        "--threads-per-instance", type=int, help="default: the server's (cores / instances)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of alternating off/on points (medians)"
    )
    parser.add_argument("--max-queue-delay-ms", type=float, default=5.0)
    parser.add_argument("--startup-timeout", type=float, default=900.0)
    parser.add_argument("--json", help="also write the points to this file")
    parser.add_argument(
        "--json-tensors",
        action="store_true",
        help="the clients send and receive tensors as JSON (default: the binary extension)",
    )
    parser.add_argument(
        "--simultaneous",
        action="store_true",
        help="load both servers at once (each its own clients) instead of alternating",
    )
    parser.add_argument(
        "--simulate", action="store_true", help="only the closed-loop model: p99/p50 by noise"
    )
    parser.add_argument(
        "--kernel-costs",
        type=int,
        metavar="RUNS",
        help="only the BERT encoder in-process: CPU per row alone and batched, per length",
    )
    args = parser.parse_args(argv)
    if args.simulate:
        for spread in (0.0, 0.5, 1.0):
            ratios = []
            for max_batch in (8, 1):
                p50, p99 = simulate_closed_loop(max_batch, spread)
                ratios.append(f"max batch {max_batch}: p99/p50 {p99 / p50:.2f}")
            print(f"run-time spread {spread}: " + ", ".join(ratios))
        return 0
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    lengths, buckets = SCENARIOS[args.scenario]
    args.seq_lengths = [int(s) for s in (args.seq_lengths or lengths).split(",")]
    buckets = args.buckets or buckets
    args.buckets = [] if buckets == "none" else [int(b) for b in buckets.split(",")]
    if args.buckets and max(args.seq_lengths) > args.buckets[-1]:
        parser.error(f"--buckets {buckets} must reach the longest request, {max(args.seq_lengths)}")
    args.preferred_batch_sizes = args.preferred_batch_sizes or ",".join(
        str(1 << i)
        for i in range(args.max_batch_size.bit_length())
        if 1 << i <= args.max_batch_size
    )
    if args.kernel_costs:
        for threads in (1, 2):
            kernel_costs(args, threads, args.kernel_costs)
        return 0
    args.batching = args.batching.split(",")
    if not set(args.batching) <= {"off", "on"}:
        parser.error(f"--batching takes off, on or off,on; got {args.batching}")
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} (shared machines: noisy)")
    points = []
    with tempfile.TemporaryDirectory(prefix="ember-serve-bench-") as workdir:
        for name in args.models.split(","):
            points += bench_model(name, args, Path(workdir))
    if args.json:
        Path(args.json).write_text(json.dumps(points, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
