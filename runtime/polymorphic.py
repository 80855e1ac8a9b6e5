"""Batch-polymorphic programs: one program compiled at batch 1 serves every batch size.

A model proven batch-separable at compile time (passes/analysis/batch_separable.py: no op
mixes samples along the batch axis) is compiled once with its batch dim pinned to 1. A run of
batch n calls that program n times, the k-th call on the k-th sample's block of every batched
input and of every output (pointer offsets into the caller's arrays: nothing is copied), all
calls sharing one arena. The status record is checked after each call; each call still runs
its kernels on the program's threads.

Part of the thin runtime (numpy and ctypes only): `ember.runtime.load` serves an artifact whose
manifest declares its batch dim polymorphic (`extra.batch_polymorphic`) through this class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ember.runtime.dims import check_in_range
from ember.runtime.documents import Field
from ember.runtime.errors import InputError
from ember.runtime.executable import Executable, OutputPlan, TensorSpec
from ember.runtime.runnable import RunnableModel

# The manifest's `extra` section of a batch-polymorphic artifact:
# {"dim": "batch", "inputs": [names whose leading axis is the batch], "range": [low, high]}.
POLYMORPHIC_KEY = "batch_polymorphic"


class BatchLoop(RunnableModel):
    """A program compiled at batch 1, run at any batch as one call per sample.

    `batched_inputs` are the inputs whose leading axis is the batch dim `dim` (their manifest
    shape is their batch-1 shape); every output is batched (the proof requires it). Batch n
    multiplies the leading dim of each by n. `dim_range` (low, high) bounds n. The API of every
    model (runtime/runnable.py), the batch-1 program's other attributes too.
    """

    def __init__(
        self,
        program: Executable,
        batched_inputs: Sequence[str],
        dim: str = "batch",
        dim_range: tuple[int, int] | None = None,
    ) -> None:
        self.program = program
        self.dim = dim
        self.dim_range = dim_range
        self.batched_inputs = tuple(batched_inputs)
        known = set(program.input_names)
        unknown = [name for name in self.batched_inputs if name not in known]
        if unknown or not self.batched_inputs:
            raise ValueError(f"batched inputs {unknown or '[]'} are not inputs of the program")
        for spec in program.manifest.inputs:
            if spec.name in self.batched_inputs and not spec.shape:
                raise ValueError(f"batched input '{spec.name}' is a scalar")
        if any(not spec.shape for spec in program.manifest.outputs):
            raise ValueError("a batch-polymorphic program has no scalar outputs")
        # Per run: each buffer's step between samples, and the outputs of the last batch size.
        self._input_steps = [
            s.nbytes if s.name in self.batched_inputs else 0 for s in program.manifest.inputs
        ]
        self._output_steps = [s.nbytes for s in program.manifest.outputs]
        self._output_keys = tuple(s.name for s in program.manifest.outputs)
        self._last_outputs: tuple[int, OutputPlan] | None = None

    # -- the Executable API --------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        # Everything else (an artifact's `path` and `info`, `output_specs`, ...) is the batch-1
        # program's.
        if name == "program":
            raise AttributeError(name)
        return getattr(self.program, name)

    @property
    def manifest(self) -> Any:
        return self.program.manifest

    @property
    def input_names(self) -> list[str]:
        return self.program.input_names

    @property
    def output_names(self) -> list[str]:
        return self.program.output_names

    @property
    def threads(self) -> int:
        return self.program.threads

    @property
    def report(self) -> Any:
        return getattr(self.program, "report", None)

    def set_num_threads(self, threads: int) -> None:
        self.program.set_num_threads(threads)

    def output_specs_for(self, batch: int) -> list[TensorSpec]:
        return [
            TensorSpec(s.name, (s.shape[0] * batch, *s.shape[1:]), s.dtype)
            for s in self.program.manifest.outputs
        ]

    # -- running -------------------------------------------------------------------------------
    def batch_of(self, shapes: Mapping[str, Sequence[int]]) -> int:
        """The batch size the input `shapes` give, every input checked (InputError)."""
        batch: tuple[int, str] | None = None
        for spec in self.program.manifest.inputs:
            shape = tuple(shapes[spec.name])
            if spec.name not in self.batched_inputs:
                if shape != spec.shape:
                    raise InputError(
                        f"input '{spec.name}': expected shape {list(spec.shape)}, "
                        f"given {list(shape)}"
                    )
                continue
            expected = f"[{self.dim}, {', '.join(str(d) for d in spec.shape[1:])}]".replace(
                ", ]", "]"
            )
            if len(shape) != len(spec.shape) or shape[1:] != spec.shape[1:]:
                raise InputError(
                    f"input '{spec.name}': expected shape {expected}, given {list(shape)}"
                )
            if batch is not None and batch[0] != shape[0]:
                raise InputError(
                    f"inputs '{batch[1]}' and '{spec.name}' share dim '{self.dim}' (axis 0) but "
                    f"were given {batch[0]} and {shape[0]}"
                )
            batch = (shape[0], spec.name)
        assert batch is not None
        if self.dim_range is not None:
            check_in_range(
                {self.dim: self.dim_range},
                self.dim,
                batch[0],
                f"input '{batch[1]}' given {list(shapes[batch[1]])}",
                InputError,
            )
        return batch[0]

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        inputs = self.program.checked_inputs(feeds, shapes=False)
        batch = self.batch_of({name: a.shape for name, a in zip(self.input_names, inputs)})
        last = self._last_outputs
        if last is None or last[0] != batch:
            last = self._last_outputs = (batch, OutputPlan(self.output_specs_for(batch)))
        outputs, _ = last[1].allocate()
        self.program.call_per_sample(inputs, outputs, self._input_steps, self._output_steps, batch)
        return dict(zip(self._output_keys, outputs))


def polymorphic_section(dim: str, inputs: Sequence[str], dim_range: tuple[int, int] | None) -> dict:
    """The manifest's `extra.batch_polymorphic` section (written by engine/aot.py)."""
    return {
        "dim": dim,
        "inputs": list(inputs),
        "range": None if dim_range is None else list(dim_range),
    }


def serve_per_sample(program: Executable, where: str) -> Executable | BatchLoop:
    """`program` itself, or, when its manifest declares its batch dim polymorphic, a BatchLoop
    over it (the section checked: ArtifactError naming the field)."""
    section = program.manifest.extra.get(POLYMORPHIC_KEY)
    if section is None:
        return program
    fields = Field(section, where, f"extra.{POLYMORPHIC_KEY}")
    dim = fields["dim"].as_str()
    specs = {spec.name: spec for spec in program.manifest.inputs}
    names = []
    for entry in fields["inputs"].as_list(len(specs)):
        name = entry.as_str()
        if name not in specs or not specs[name].shape or specs[name].shape[0] != 1:
            entry.fail("an input of the program whose leading dim is 1 (its batch-1 shape)")
        names.append(name)
    if not names:
        fields["inputs"].fail("a non-empty array")
    if program.bounded or any(not spec.shape for spec in program.manifest.outputs):
        fields.fail("no section: a program with scalar or data-dependent outputs")
    dim_range = None
    if fields["range"].value is not None:
        pair = fields["range"].as_list(2)
        if len(pair) != 2:
            fields["range"].fail("[low, high] or null")
        low, high = pair[0].as_int(), pair[1].as_int()
        if low > high:
            fields["range"].fail("[low, high] with low <= high")
        dim_range = (low, high)
    return BatchLoop(program, names, dim, dim_range)
