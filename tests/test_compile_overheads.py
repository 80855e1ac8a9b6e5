"""What the compile driver remembers between compiles to save time gives what it gave before:
the parsed pipeline text (passes/pipeline.py), the loaded dialect tables (core/context.py),
and the kernel signatures lower-kernels-to-loops skips for a kernel alone of its class."""

from __future__ import annotations

import pytest

from ember.passes.pipeline import _PARSED, DEFAULT_PIPELINE, parse_passes
from ember.runtime.errors import PassOptionError


def test_a_parsed_pipeline_gives_new_passes_equal_to_a_fresh_parse() -> None:
    spec = DEFAULT_PIPELINE.replace("lower-kernels-to-loops", "lower-kernels-to-loops{threads=2}")
    first, second = parse_passes(spec), parse_passes(spec)
    _PARSED.clear()
    fresh = parse_passes(spec)
    assert first == second == fresh
    assert [type(p) for p in first] == [type(p) for p in fresh]
    assert not any(a is b for a, b in zip(first, second))
    assert first[-1].threads == 2  # type: ignore[attr-defined]


def test_a_bad_pipeline_fails_every_time() -> None:
    for _ in range(2):
        with pytest.raises(PassOptionError, match="vector-width=7"):
            parse_passes("lower-kernels-to-loops{vector-width=7}")
        with pytest.raises(ValueError, match="Unrecognized passes"):
            parse_passes("canonicalize,no-such-pass")


def test_a_pipeline_parsed_with_other_passes_registered_is_parsed_again() -> None:
    class Renamed(type(parse_passes("dce")[0])):  # type: ignore[misc]
        name = "dce"

    assert type(parse_passes("dce", {"dce": lambda: Renamed})[0]) is Renamed
    assert type(parse_passes("dce")[0]) is not Renamed


def test_contexts_copy_one_loaded_table_and_stay_independent() -> None:
    """make_context copies a template (core/context.py): each context has the tables loading
    the dialects gives, and what one context loads does not reach the next."""
    from xdsl.context import Context
    from xdsl.dialects.test import Test

    from ember.core.context import make_context

    first = make_context()
    fresh = Context()
    for dialect in first._loaded_dialects.values():
        fresh.load_dialect(dialect)
    assert list(first.loaded_ops) == list(fresh.loaded_ops)
    assert list(first.loaded_attrs) == list(fresh.loaded_attrs)
    assert list(first.loaded_types) == list(fresh.loaded_types)
    first.load_dialect(Test)
    assert first.get_optional_op("test.op") is not None
    assert make_context().get_optional_op("test.op") is None


def test_kernels_of_one_class_share_a_function_and_a_lone_one_gets_its_own() -> None:
    """lower-kernels-to-loops prints signatures only for classes with several kernels: two
    equal matmuls (other weights) still share one function, the lone elementwise has one."""
    import numpy as np
    from onnx import helper, numpy_helper
    from xdsl.dialects import func

    from ember.engine.compile import run_pipeline

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), f"w{i}")
        for i in range(2)
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["a"]),
        helper.make_node("MatMul", ["x", "w1"], ["b"]),
        helper.make_node("Relu", ["x"], ["r"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two_matmuls",
        [helper.make_tensor_value_info("x", 1, [2, 8])],
        [helper.make_tensor_value_info(name, 1, [2, 8]) for name in "abr"],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    module = run_pipeline(model)[0]
    callees = [o.callee.root_reference.data for o in module.walk() if isinstance(o, func.CallOp)]
    private = [o.sym_name.data for o in module.walk() if isinstance(o, func.FuncOp)][1:]
    assert callees.count("matmul_1") == 2, callees
    assert sorted(private) == sorted(set(callees)), (private, callees)
