"""Compile once for conv networks (issue 10): sizes that are affine floors of the symbolic
dims (a convolution's or pooling's output, `runtime/once.py`'s Term), derived from the ops'
attributes and checked at every probe; Concat and Slice with run-time extents; a text
detector (symbolic batch, height and width: stride-2 convs, Resize x2, a crop, Concat,
Sigmoid) and a recognizer (a symbolic width reshaped into a sequence, a MatMul classifier)
compiled once and served at many shapes, in-process and from one artifact.

Tolerance: against onnxruntime, max |ember - ort| <= 1e-4 x max |ort| per output (float32
convolutions and GEMMs with K <= 144 summed in another order, sigmoid)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import ember
from ember.engine.compile_once import (
    CompileOnceRefusal,
    Extent,
    fit_dim,
    probe_sizes,
    spatial_symbols,
)
from ember.engine.shapes import pin_model
from ember.runtime.documents import Field
from ember.runtime.once import Term, _read_extent, affine, strided
from ember.tests.oracle import assert_close, onnxruntime_outputs
from ember.tools.symbolic_zoo import (
    cropped_text_detector_model,
    ffn_block_model,
    recognizer_model,
    text_detector_model,
)

REL_TOL = 1e-4
HIDDEN = 40


# -- size expressions ----------------------------------------------------------------------------
def _conv_size(n: int, kernel: int, stride: int, pads: int, dilation: int) -> int:
    return (n + pads - dilation * (kernel - 1) - 1) // stride + 1


def test_chained_strided_sizes_are_one_floor_of_the_dim() -> None:
    """floor((floor((x + p) / a) + q) / b) = floor((x + p + q a) / (a b)): every chain of
    convolutions and poolings is one Term, equal to the layer-by-layer sizes wherever they
    are all >= 1 (and the Term's smallest size is where that starts)."""
    layers = [(3, 2, 2, 1), (7, 2, 6, 1), (3, 1, 2, 2), (2, 2, 0, 1), (5, 3, 1, 1), (1, 1, 0, 1)]
    for chain in itertools.product(layers, repeat=3):
        size = Extent(1, ("H",))
        for kernel, stride, pads, dilation in chain:
            offset = pads - dilation * (kernel - 1) - 1
            size = strided(size, offset, stride)  # type: ignore[assignment]
            assert size is not None
        smallest = max(t.smallest() for t in size.terms) if size.terms else 1
        for n in range(1, 200):
            sizes = [n]
            for kernel, stride, pads, dilation in chain:
                sizes.append(_conv_size(sizes[-1], kernel, stride, pads, dilation))
            valid = all(s >= 1 for s in sizes)
            assert (n >= smallest) == valid or not size.terms, (chain, n)
            if valid:
                assert size.value({"H": n}) == sizes[-1], (chain, n, str(size))


def test_affine_terms_have_one_normal_form() -> None:
    assert affine("H", 2, 0, 1) == Extent(2, ("H",))
    assert affine("H", 2, 3, 4) == affine("H", 1, 1, 2) == Extent(1, (), (Term("H", 1, 1, 2),))
    assert str(affine("H", 1, 1, 2)) == "(H+1)//2"
    term = affine("W", 1, 3, 4)
    product = term.times(Extent(1, ("N",))).times(2)
    assert str(product) == "N*((W+3)//4)*2"
    assert product.value({"N": 3, "W": 17}) == 3 * 5 * 2
    # The manifest's JSON reads back as the same expression; a term not in normal form or of
    # an unknown dim is refused naming the field.
    assert _read_extent(Field(product.to_json(), "m", "e"), ["N", "W"]) == product
    bad = {"factor": 1, "dims": [], "terms": [{"dim": "W", "scale": 2, "offset": 0, "divisor": 4}]}
    with pytest.raises(ember.ArtifactError, match="normal form"):
        _read_extent(Field(bad, "m", "e"), ["N", "W"])
    bad["terms"][0] = {"dim": "H", "scale": 1, "offset": 1, "divisor": 2}
    with pytest.raises(ember.ArtifactError, match="one of the dims"):
        _read_extent(Field(bad, "m", "e"), ["N", "W"])


def test_spatial_dims_are_probed_large_with_spread_residues() -> None:
    model = cropped_text_detector_model()
    pinning = pin_model(model, None)
    symbols = ["N", "H", "W"]
    assert spatial_symbols(model, pinning, symbols) == ["H", "W"]
    probes = probe_sizes(symbols, {}, ["H", "W"])
    assert [p["N"] for p in probes] == [2, 3, 5]
    assert len({p["H"] % 4 for p in probes}) == 3 and min(p["H"] for p in probes) > 64
    # 32x smaller maps still differ between the probes.
    assert len({(p["H"] + 31) // 32 for p in probes}) == 3
    # A range that does not hold them: primes within it, as for any dim.
    assert [p["H"] for p in probe_sizes(symbols, {"H": (8, 40)}, ["H", "W"])] == [11, 13, 17]


def test_fit_refuses_two_expressions_that_agree_at_every_probe() -> None:
    probes = [{"H": 67}, {"H": 71}, {"H": 79}]  # all odd: (H+1)//2 = (H+2)//2 there
    from ember.engine.compile_once import _Fitter

    fitter = _Fitter(probes, ["H"])
    fitter.note([affine("H", 1, 1, 2), affine("H", 1, 2, 2)])
    with pytest.raises(CompileOnceRefusal, match="several expressions"):
        fitter.fit([34, 36, 40])
    # A hint from the op (its attributes) decides.
    assert fitter.fit([34, 36, 40], [affine("H", 1, 1, 2)]) == affine("H", 1, 1, 2)
    # Sizes equal at every probe stay a `?` when the op says they vary (a 32x smaller map).
    deep = affine("H", 1, 31, 32)
    assert fitter.fit([3, 3, 3], [deep]) == deep
    assert fit_dim([3, 3, 3], probes, ["H"]) == 3


# -- Concat and Slice with run-time extents --------------------------------------------------------
def _ffn_with(tail: list[onnx.NodeProto], out_dims: list[int | str | None]) -> onnx.ModelProto:
    model = ffn_block_model(HIDDEN, 72, tail, out_dims)  # type: ignore[arg-type]
    for name, value in (("zero", [0]), ("one", [1]), ("big", [1000]), ("axis1", [1])):
        model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
    model.graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), "two"))
    return model


@pytest.mark.parametrize(
    "tail, out_dims",
    [
        # along a fixed axis, and along the symbolic one (the output is 2 x seq)
        ([helper.make_node("Concat", ["y", "y"], ["out"], axis=2)], ["batch", "seq", 2 * HIDDEN]),
        ([helper.make_node("Concat", ["y", "y"], ["out"], axis=1)], ["batch", None, HIDDEN]),
        # seq - 1 rows from the second; every second row from the first
        ([helper.make_node("Slice", ["y", "one", "big", "axis1"], ["out"])], ["batch", None, HIDDEN]),
        (
            [helper.make_node("Slice", ["y", "zero", "big", "axis1", "two"], ["out"])],
            ["batch", None, HIDDEN],
        ),
    ],
    ids=["concat-fixed-axis", "concat-symbolic-axis", "slice-from-1", "slice-step-2"],
)  # fmt: skip
def test_concat_and_slice_compile_once(
    tail: list[onnx.NodeProto], out_dims: list[int | str | None]
) -> None:
    model = _ffn_with(tail, out_dims)
    compiled = ember.compile(model, threads=1)
    for k, (batch, seq) in enumerate([(2, 3), (3, 5), (1, 9), (4, 17), (2, 4), (1, 2)]):
        rng = np.random.default_rng(k)
        inputs = {"x": rng.standard_normal((batch, seq, HIDDEN)).astype(np.float32)}
        assert_close(compiled.run(inputs), onnxruntime_outputs(model, inputs), REL_TOL)
    assert compiled.compile_once_refusal is None and compiled.compiles == 1


def test_transpose_of_the_last_two_dims_is_tiled_at_run_time() -> None:
    """[b, s, h] -> [b, h, s] and back (the blocked layout's reorders are this swap of the
    last two dims): lanes x lanes tiles in registers, ragged rows and columns element by
    element, the tiles over two threads."""
    tail = [
        helper.make_node("Transpose", ["y"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Relu", ["t"], ["rt"]),
        helper.make_node("Transpose", ["rt"], ["back"], perm=[0, 2, 1]),
        helper.make_node("Add", ["back", "y"], ["out"]),
    ]
    model = ffn_block_model(HIDDEN, 72, tail, ["batch", "seq", HIDDEN])
    compiled = ember.compile(model, threads=2)
    for k, (batch, seq) in enumerate([(2, 3), (3, 5), (1, 16), (4, 17), (1, 33), (3, 200)]):
        rng = np.random.default_rng(k)
        inputs = {"x": rng.standard_normal((batch, seq, HIDDEN)).astype(np.float32)}
        assert_close(compiled.run(inputs), onnxruntime_outputs(model, inputs), REL_TOL)
    assert compiled.compile_once_refusal is None and compiled.compiles == 1


# -- refusals ------------------------------------------------------------------------------------
def test_resize_to_a_size_read_from_a_shape_is_refused_and_specialised() -> None:
    """Resize of the deeper map to the shallower one's size (the ratio is 2 for even maps,
    not a whole number for odd ones: index tables computed at compile time) is refused
    naming the node, and specialised per shape."""
    model = text_detector_model()
    compiled = ember.compile(model, threads=1)
    for k, (h, w) in enumerate([(17, 23), (16, 20)]):
        x = np.random.default_rng(k).standard_normal((1, 3, h, w)).astype(np.float32)
        assert_close(compiled.run({"x": x}), onnxruntime_outputs(model, {"x": x}), REL_TOL)
    reason = compiled.compile_once_refusal or ""
    assert "differ in their ops" in reason and "ONNX node 'up' (Resize)" in reason, reason
    assert compiled.compiles == 2


def _dump(path: Path) -> dict[str, object]:
    return json.loads(path.read_text())
