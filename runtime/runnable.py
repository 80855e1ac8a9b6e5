"""The API every runnable model shares, compiled in this process or loaded from an artifact.

`ember.compile`'s models (CompiledModel, SpecializingModel, StagedModel, StructuredModel),
`ember.runtime.load`'s (LoadedArtifact, VariantArtifact) and the batch loop over either
(BatchLoop) answer to the same names, so code that runs one runs any:

    model.input_names, model.output_names        # graph inputs / outputs, in order
    model.run({"x": x})                          # {output name: value}
    y, = model(x)                                # positional: outputs in output_names order
    model.threads, model.set_num_threads(2)

It lives in runtime/ because the runtime's own models implement it and runtime/ imports nothing
of the compiler; engine/'s wrappers build on it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np

from ember.runtime.errors import InputError


def checked_threads(threads: object) -> int:
    """`threads` as an int, or ValueError: a thread count is an integer >= 1 (not a bool)."""
    if isinstance(threads, bool) or not isinstance(threads, int | np.integer) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    return int(threads)


class RunnableModel(ABC):
    """A model that runs: its input and output names, `run` on a dict of inputs, the positional
    call, and the number of threads its kernels use."""

    threads: int

    @property
    @abstractmethod
    def input_names(self) -> list[str]:
        """The inputs a run takes, in the order the positional call takes them."""

    @property
    @abstractmethod
    def output_names(self) -> list[str]:
        """The outputs a run gives, in the order the positional call returns them."""

    @abstractmethod
    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """{output name: value} for {input name: value}; InputError names what is wrong."""

    @abstractmethod
    def set_num_threads(self, threads: int) -> None:
        """The threads every later run uses (ValueError unless an integer >= 1)."""

    def __call__(self, *values: Any) -> list[Any]:
        names = self.input_names
        if len(values) != len(names):
            raise InputError(f"expected {len(names)} inputs {names}, given {len(values)}")
        results = self.run(dict(zip(names, values)))
        return [results[name] for name in self.output_names]
