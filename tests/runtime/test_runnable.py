"""runtime/runnable.py: the API every model shares (names, run, the positional call, threads),
implemented once for the runtime's models and ember.compile's wrappers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

import ember
from ember.engine.compile import CompiledModel
from ember.engine.specialize import SpecializingModel, VariantModel
from ember.engine.staging import StagedModel
from ember.engine.structured import StructuredModel
from ember.runtime.artifact import LoadedArtifact, VariantArtifact
from ember.runtime.polymorphic import BatchLoop
from ember.runtime.runnable import RunnableModel, checked_threads
from ember.tools.symbolic_zoo import symbolic_model


class _Swap(RunnableModel):
    """Two inputs, two outputs, given back in the other order."""

    threads = 1

    @property
    def input_names(self) -> list[str]:
        return ["a", "b"]

    @property
    def output_names(self) -> list[str]:
        return ["second", "first"]

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        return {"first": feeds["a"], "second": feeds["b"]}

    def set_num_threads(self, threads: int) -> None:
        self.threads = checked_threads(threads)


@pytest.mark.parametrize(
    "model_class",
    [
        CompiledModel,
        SpecializingModel,
        StagedModel,
        StructuredModel,
        BatchLoop,
        LoadedArtifact,
        VariantArtifact,
    ],
)
def test_every_model_has_the_shared_api(model_class: type) -> None:
    assert issubclass(model_class, RunnableModel)


def test_the_positional_call_takes_inputs_and_gives_outputs_in_order() -> None:
    model = _Swap()
    assert model(1, 2) == [2, 1]
    with pytest.raises(ember.InputError, match=r"expected 2 inputs \['a', 'b'\], given 1"):
        model(1)


@pytest.mark.parametrize("threads", [0, -1, True, 1.5, "2"])
def test_a_thread_count_is_an_integer_of_at_least_one(threads: object) -> None:
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        checked_threads(threads)
    assert checked_threads(np.int64(3)) == 3


def test_a_variant_model_refuses_a_bad_thread_count_before_compiling_anything() -> None:
    model = ember.compile(symbolic_model(), threads=1)
    assert isinstance(model, VariantModel) and model.compiles == 0 and model.report is None
    with pytest.raises(ValueError, match="threads must be an integer >= 1, got 0"):
        model.set_num_threads(0)
    model.set_num_threads(2)
    assert model.threads == 2 and model.compiles == 0
