"""`ember serve` under load: a closed-loop load generator on localhost, batching off and on.

    python benchmarks/serve.py                                  # ResNet-18 and BERT, c = 1, 8, 32
    python benchmarks/serve.py --models bert --requests 10000 --duration 600 --concurrency 32 \
        --batching on                                           # the soak run
    python benchmarks/serve.py --models resnet --image-size 64 --requests 100 --duration 10

For each model the server runs in its own process (`ember serve`), once with batching off
(--max-batch-size 1) and once on (--max-batch-size 8, preferred sizes 1,2,4,8), with the same
threads. C clients (tritonclient.http.aio, binary tensors) each send a request, wait for its
answer and send the next (closed loop) until --requests requests or --duration seconds, at each
concurrency. Reported per point: throughput, p50 / p99 latency, failures, whether every request
was answered exactly once, and, from the server's /metrics, the mean rows per run and the
padding ratio (padded input elements / all input elements run); the server's resident memory
after warm-up and at the end shows whether it stays flat.

Models (seeded weights, built by ember.tests.models, made batch-symbolic by
ember.tests.serve.models): ResNet-18 ([batch, 3, S, S]) and a BERT encoder ([batch, seq]) fed
mixed sequence lengths (--seq-lengths). The BERT encoder has no attention mask, so requests of
different lengths never share a batch (padding them would change the answers): the server
batches equal lengths only. Not a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
    model = bert_with_symbolic_shapes(
        models.bert_encoder(layers=args.bert_layers, seq=max(lengths), hidden=args.bert_hidden,
                            heads=4, vocab=1000, seed=0)
    )  # fmt: skip
    pool = [
        {"input_ids": rng.integers(0, 1000, (1, lengths[i % len(lengths)])).astype(np.int64)}
        for i in range(64)
    ]
    return model, pool


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    repo: Path, port: int, batching: bool, args: argparse.Namespace
) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "ember.tools.cli", "serve", str(repo), "--port", str(port),
        "--log-level", "warning", "--max-batch-size", "8" if batching else "1",
        "--preferred-batch-sizes", "1,2,4,8" if batching else "1",
        "--max-queue-delay-ms", str(args.max_queue_delay_ms), "--queue-limit", "1024",
    ]  # fmt: skip
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


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def metrics(port: int, model: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model") == model:
                key = sample.name + "".join(
                    f"|{v}" for k, v in sorted(sample.labels.items()) if k not in ("model", "le")
                )
                if "le" not in sample.labels:
                    values[key] = sample.value
    return values


async def closed_loop(
    port: int, model: str, pool: list[dict[str, np.ndarray]], concurrency: int,
    requests: int, duration: float,
) -> dict[str, float]:  # fmt: skip
    import tritonclient.http.aio as aio
    from tritonclient.http import InferInput

    datatypes = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}
    client = aio.InferenceServerClient(f"127.0.0.1:{port}", conn_limit=concurrency)
    latencies: list[float] = []
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
                tensor.set_data_from_numpy(array, binary_data=True)
                inputs.append(tensor)
            started = time.perf_counter()
            try:
                result = await client.infer(model, inputs, request_id=str(index))
            except Exception:
                failures += 1
                continue
            latencies.append(time.perf_counter() - started)
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
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        if latencies
        else float("nan"),
    }


def bench_model(name: str, args: argparse.Namespace, workdir: Path) -> list[dict]:
    model, pool = build(name, args)
    repo = workdir / name
    (repo / name).mkdir(parents=True)
    onnx.save(model, str(repo / name / "model.onnx"))
    if name == "bert":  # compile every (batch size, length) before the clients start
        config = {"warmup_dims": {"seq": args.seq_lengths}}
        (repo / name / "config.json").write_text(json.dumps(config))
    rows = []
    for batching in [mode == "on" for mode in args.batching]:
        port = free_port()
        server = start_server(repo, port, batching, args)
        try:
            # Warm-up: compiles every (batch size, length) the run will meet.
            asyncio.run(closed_loop(port, name, pool, 32, args.warmup, 600))
            rss_warm = resident_mb(server.pid)
            before = metrics(port, name)
            for concurrency in args.concurrency:
                point = asyncio.run(
                    closed_loop(port, name, pool, concurrency, args.requests, args.duration)
                )
                after = metrics(port, name)
                runs = after["ember_batch_size_count"] - before.get("ember_batch_size_count", 0)
                rows_run = after["ember_batch_size_sum"] - before.get("ember_batch_size_sum", 0)
                padding = after.get("ember_input_elements_total|padding", 0) - before.get(
                    "ember_input_elements_total|padding", 0
                )
                real = after.get("ember_input_elements_total|request", 0) - before.get(
                    "ember_input_elements_total|request", 0
                )
                before = after
                point |= {
                    "model": name,
                    "batching": "on" if batching else "off",
                    "concurrency": concurrency,
                    "rows_per_run": rows_run / runs if runs else float("nan"),
                    "padding_ratio": padding / (padding + real) if real else float("nan"),
                }
                rows.append(point)
                print(_row(point), flush=True)
            rss_end = resident_mb(server.pid)
            print(f"  server memory: {rss_warm:.0f} MB after warm-up, {rss_end:.0f} MB at the end")
            rows[-1]["rss_warm_mb"], rows[-1]["rss_end_mb"] = rss_warm, rss_end
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    return rows


def _row(p: dict) -> str:
    return (
        f"{p['model']:7} batching {p['batching']:3}  c={p['concurrency']:<3} "
        f"{p['throughput']:8.1f} req/s  p50 {p['p50_ms']:8.1f} ms  p99 {p['p99_ms']:8.1f} ms  "
        f"rows/run {p['rows_per_run']:4.1f}  padding {p['padding_ratio']:.2f}  "
        f"answered {p['answered']}/{p['sent']} once: {p['exactly_once']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet,bert")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--requests", type=int, default=400, help="per point, at most")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per point, at most")
    parser.add_argument("--warmup", type=int, default=64, help="requests before measuring")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seq-lengths", default="64,128")
    parser.add_argument("--bert-layers", type=int, default=4)
    parser.add_argument("--bert-hidden", type=int, default=256)
    parser.add_argument("--batching", default="off,on", help="modes to run: off, on or both")
    parser.add_argument("--max-queue-delay-ms", type=float, default=5.0)
    parser.add_argument("--startup-timeout", type=float, default=900.0)
    parser.add_argument("--json", help="also write the points to this file")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.seq_lengths = [int(s) for s in args.seq_lengths.split(",")]
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
