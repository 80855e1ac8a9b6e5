"""The Python cost of one inference call: each API layer against the native entry point called
directly through ctypes on the same buffers, and onnxruntime's `run`, on a one-Add [1, 16]
model, the Silero-style VAD model (tools/model_zoo.py) and squeezenet (the onnx wheel's light
model), 1 thread.

    python benchmarks/call_overhead.py                    # all three models
    python benchmarks/call_overhead.py --models tiny --rounds 9 --calls 5000

Times are process CPU time (robust against other processes on a shared machine) per call:
each round times a block of --calls calls (10 for squeezenet) of every runner in turn
(tools/bench.alternating_ms), and the table gives the median and the minimum over --rounds
rounds. "- entry" is the median over rounds of (layer - native entry): the run path's own
cost. Also prints the minor page faults per call. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ember  # noqa: E402
from ember.runtime.artifact import load  # noqa: E402
from ember.runtime.executable import ALIGNMENT, Executable, aligned_empty  # noqa: E402
from ember.runtime.status import new_status  # noqa: E402
from ember.tools.bench import alternating_ms, onnxruntime_session  # noqa: E402
from ember.tools.model_zoo import light_model_path, vad_model  # noqa: E402


def tiny_model() -> onnx.ModelProto:
    """y = x + b, [1, 16] float32: kernels of well under a microsecond."""
    tensor = helper.make_tensor_value_info
    bias = helper.make_tensor("b", TensorProto.FLOAT, [1, 16], np.ones(16, np.float32))
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "b"], ["y"])],
        "tiny",
        [tensor("x", TensorProto.FLOAT, [1, 16])],
        [tensor("y", TensorProto.FLOAT, [1, 16])],
        [bias],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


class EntryRunner:
    """The native entry called on fixed buffers: no checks, no allocation (the floor)."""

    def __init__(self, model: Executable, feeds: dict[str, np.ndarray]) -> None:
        self.inputs = [np.ascontiguousarray(feeds[name]) for name in model.input_names]
        self.outputs = [aligned_empty(s.shape, s.dtype) for s in model.manifest.outputs]
        self.arena = aligned_empty((max(model.manifest.arena_bytes, ALIGNMENT),))
        self.status = new_status()
        buffers = (*self.inputs, *self.outputs, self.arena, model._weights)
        self.args = [a.ctypes.data for a in buffers]
        if model.status_sites is not None:
            self.args.append(self.status.ctypes.data)
        self.entry = model._entry

    def __call__(self) -> None:
        self.entry(*self.args)


def minor_faults(run: Callable[[], object], calls: int = 50) -> float:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        run()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def runners_for(name: str, workdir: Path) -> tuple[dict[str, Callable[[], object]], int]:
    """The runners of model `name` and how many calls make one timed block."""
    if name == "squeezenet":
        model_path = str(light_model_path("squeezenet"))
        proto = onnx.load(model_path)
    else:
        proto = tiny_model() if name == "tiny" else vad_model()
        model_path = str(workdir / f"{name}.onnx")
        onnx.save(proto, model_path)
    model = ember.compile(proto, threads=1, progress=False)
    assert isinstance(model, Executable)
    rng = np.random.default_rng(0)
    feeds = {
        s.name: rng.random(s.shape).astype(s.dtype)
        if s.dtype.startswith("float")
        else np.full(s.shape, 16000, s.dtype)  # the VAD's sample rate
        for s in model.manifest.inputs
    }
    arrays = [feeds[n] for n in model.input_names]
    options = ember.SessionOptions()
    options.intra_op_num_threads = 1
    session = ember.InferenceSession(model_path, options)
    reference = onnxruntime_session(proto, 1)
    runners: dict[str, Callable[[], object]] = {
        "native entry (ctypes)": EntryRunner(model, feeds),
        "CompiledModel.run(dict)": lambda: model.run(feeds),
        "CompiledModel(*arrays)": lambda: model(*arrays),
        "InferenceSession.run(None, dict)": lambda: session.run(None, feeds),
    }
    if name == "tiny":
        config = ember.Config(model_path)
        config.set_cpu_math_library_num_threads(1)
        config.set_cache_dir(workdir / "cache")
        config.switch_progress(False)
        predictor = ember.create_predictor(config)
        runners["Predictor.run([arrays])"] = lambda: predictor.run(arrays)
        artifact = load(config.artifact_path(), 1)
        runners["runtime.load(...).run(dict)"] = lambda: artifact.run(feeds)
    runners["onnxruntime run(None, dict)"] = lambda: reference.run(None, feeds)
    return runners, 10 if name == "squeezenet" else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,vad,squeezenet")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=2000, help="calls per block (tiny, vad)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            runners, block = runners_for(name, Path(tmp))
            block = block or args.calls
            blocks = {
                label: (lambda run=run, block=block: [run() for _ in range(block)])
                for label, run in runners.items()
            }
            times = alternating_ms(blocks, args.rounds, warmup=1, threads=1)
            per_call = {label: [1e3 * t / block for t in ts] for label, ts in times.items()}
            floor = per_call["native entry (ctypes)"]
            print(f"\n{name} (µs per call, {block} calls a block, {args.rounds} rounds)\n")
            print("| runner | median | min | - entry | minor faults |")
            print("|---|---:|---:|---:|---:|")
            for label, ts in per_call.items():
                own = statistics.median(t - f for t, f in zip(ts, floor))
                faults = minor_faults(runners[label])
                print(
                    f"| {label} | {statistics.median(ts):.2f} | {min(ts):.2f} | {own:.2f} | "
                    f"{faults:.2f} |"
                )


if __name__ == "__main__":
    main()
