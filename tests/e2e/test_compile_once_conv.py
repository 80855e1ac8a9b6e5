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
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.core.size_choices import SizeChoiceMismatch, SizeChoices, choices_in, size_choice
from ember.engine.aot import compile_artifact, resolve_target
from ember.engine.compile_once import (
    CompileOnceRefusal,
    Extent,
    fit_dim,
    probe_sizes,
    spatial_symbols,
)
from ember.engine.shapes import pin_model
from ember.runtime import load
from ember.runtime.artifact import MANIFEST_FILE, OnceArtifact
from ember.runtime.documents import Field
from ember.runtime.once import ONCE_KEY, Term, _read_extent, affine, floor_of, strided
from ember.tests.oracle import assert_close, onnxruntime_outputs
from ember.tests.runtime.util import run_without_compiler
from ember.tools.symbolic_zoo import (
    cropped_text_detector_model,
    ffn_block_model,
    recognizer_model,
    resnet50_symbolic_image,
    text_detector_model,
    upsampled_fpn_model,
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


def test_convolutions_over_multiples_of_floors_nest_terms() -> None:
    """Convolutions and poolings over a size upsampled x2 or x3 (nearest Resize: a multiple
    of a floor) nest one term in another: equal to the layer-by-layer sizes wherever they
    are all >= 1, and those sizes start at or above the smallest size of every term."""
    layers = [(3, 2, 2, 1), (3, 1, 0, 1), (2, 2, 0, 1), (5, 3, 1, 1), (1, 1, 2, 1)]
    upsamples = [2, 3]
    steps: list[tuple[str, tuple[int, ...]]] = [("conv", c) for c in layers]
    steps += [("up", (k,)) for k in upsamples]
    nested = 0
    for chain in itertools.product(steps, repeat=4):
        size: Extent | None = Extent(1, ("H",))
        for kind, parameters in chain:
            assert size is not None
            if kind == "up":
                size = size.times(parameters[0])
            else:
                kernel, stride, pads, dilation = parameters
                size = strided(size, pads - dilation * (kernel - 1) - 1, stride)
        assert size is not None, chain
        nested += any(not isinstance(t.inner, str) for t in size.terms)
        smallest = max([1, *(t.smallest() for t in size.terms)])
        for n in range(1, 120):
            sizes = [n]
            for kind, parameters in chain:
                if kind == "up":
                    sizes.append(sizes[-1] * parameters[0])
                else:
                    sizes.append(_conv_size(sizes[-1], *parameters))
            if all(s >= 1 for s in sizes):
                assert n >= smallest, (chain, n, str(size))
                assert size.value({"H": n}) == sizes[-1], (chain, n, str(size))
    assert nested > 100  # the chains do nest terms


def test_nested_terms_have_one_normal_form_and_read_back() -> None:
    """A conv's output over 2 * ((H+3)//4): normal forms (an affine inner term substituted,
    a floor of a floor composed), the manifest's JSON read back as the same expression, a
    nested term not in normal form refused naming the field."""
    quarter = affine("H", 1, 3, 4)
    up = quarter.times(2)
    same = strided(up, 2 - 2 - 1, 1)  # 3x3, pads 1: the size kept
    assert same == up
    valid = strided(up, -3, 1)  # 3x3, no pads: 2 * ((H+3)//4) - 2
    assert str(valid) == "(2*((H+3)//4)-2)"
    assert strided(up, -1, 2) == quarter  # 3x3, stride 2, pads 1: back down
    # floor((4*((H+3)//4) - 4 - 1 + 3) / 3): a term of an affine term, substituted.
    down = strided(valid.times(2), -1, 3)
    assert down == floor_of(quarter.terms[0], 4, -2, 3) and str(down) == "(4*((H+3)//4)-2)//3"
    assert floor_of(down.terms[0], 1, 1, 3) == floor_of(quarter.terms[0], 4, 1, 9)
    product = down.times(Extent(1, ("N",)))
    assert _read_extent(Field(product.to_json(), "m", "e"), ["N", "H"]) == product
    # 2*q - 2 >= 1 and (4*q - 2)//3 >= 1 from q = (H+3)//4 = 2, H = 5.
    assert down.terms[0].smallest() == valid.terms[0].smallest() == 5
    corrupted = [
        # An affine inner term (must be substituted) and a floor of a floor (composed).
        {"term": {"dim": "H", "scale": 2, "offset": -2, "divisor": 1}, "scale": 1,
         "offset": 1, "divisor": 2},
        {"term": {"dim": "H", "scale": 1, "offset": 3, "divisor": 4}, "scale": 1,
         "offset": 1, "divisor": 2},
    ]  # fmt: skip
    for term in corrupted:
        with pytest.raises(ember.ArtifactError, match="normal form"):
            _read_extent(Field({"factor": 1, "dims": [], "terms": [term]}, "m", "e"), ["H"])
    deep: dict[str, object] = {"dim": "H", "scale": 1, "offset": 1, "divisor": 2}
    for _ in range(9):
        deep = {"term": deep, "scale": 2, "offset": 1, "divisor": 3}
    with pytest.raises(ember.ArtifactError, match="nested at most"):
        _read_extent(Field({"factor": 1, "dims": [], "terms": [deep]}, "m", "e"), ["H"])


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
    # Moved up past the bottom of a range, their residues kept.
    moved = probe_sizes(symbols, {"H": (224, 1024)}, ["H", "W"])
    assert [p["H"] for p in moved] == [259, 334, 409] and [p["W"] for p in moved] == [71, 148, 225]
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


def test_size_choices_are_recorded_once_and_replayed() -> None:
    """Kernel choices made from sizes (a conv's channel block by its output width) are
    recorded at the largest probe and replayed at the others; asked in another order, the
    probes differ and compile once is refused."""
    log = SizeChoices()
    with choices_in(log):
        assert size_choice("conv a", lambda: 32) == 32
        assert size_choice("conv b", lambda: None) is None
    log.replay()
    with choices_in(log):
        assert size_choice("conv a", lambda: 16) == 32  # the recorded choice
        assert size_choice("conv b", lambda: 16) is None
    assert size_choice("conv a", lambda: 16) == 16  # outside compile once: computed
    log.replay()
    with choices_in(log), pytest.raises(SizeChoiceMismatch, match="conv b"):
        size_choice("conv b", lambda: 16)


def test_the_recognizers_unified_program_has_floor_sizes() -> None:
    """The three probes' kernel programs of the recognizer as one: the convs' outputs
    `[N, 4, 16, (W+1)//2]` and `[N, 8, 8, (W+3)//4]` derived from their strides and pads,
    the sequence `[N, (W+3)//4, 64]` through the Reshape and Transpose, the entry's
    extents the dims and the output's term."""
    from ember.core.target import host_target
    from ember.engine.compile import run_pipeline
    from ember.engine.compile_once import bufferize_extents, model_symbols, split_pipeline, unify
    from ember.passes.pipeline import DEFAULT_PIPELINE
    from ember.passes.program import entry_function

    model = recognizer_model()
    pinning = pin_model(model, None)
    symbols = model_symbols(pinning)
    probes = probe_sizes(symbols, pinning.ranges, spatial_symbols(model, pinning, symbols))
    assert [(p["N"], p["W"]) for p in probes] == [(2, 67), (3, 142), (5, 217)]
    per_probe, _ = split_pipeline(DEFAULT_PIPELINE)
    programs = []
    for probe in probes:
        shapes = {"x": [probe["N"], 1, 32, probe["W"]]}
        module, ctx, *_ = run_pipeline(model, host_target(1), per_probe, input_shapes=shapes)
        programs.append((module, ctx))
    unified = unify(programs, probes, symbols)
    n, half, quarter = Extent(1, ("N",)), affine("W", 1, 1, 2), affine("W", 1, 3, 4)
    dims = [unified.extents[v] for v in unified.extents]
    assert [n, 4, 16, half] in dims and [n, 8, 8, quarter] in dims
    assert [n, 64, quarter] in dims and [n, quarter, 64] in dims
    assert unified.minimums == {"W": 1}
    assert bufferize_extents(unified) == [n, Extent(1, ("W",)), quarter]
    text = str(entry_function(unified.module))
    assert "memref<?x4x16x?xf32>" in text and "arith.divsi" in text


# -- Concat and Slice with run-time extents --------------------------------------------------------
def test_concat_and_slice_compile_once() -> None:
    """Concat along a fixed axis and along the symbolic one (2 x seq rows), Slice of seq - 1
    rows from the second and of every second row, a Transpose [b, s, h] -> [b, h, s] and
    back (the blocked layout's reorders are this swap of the last two dims: lanes x lanes
    tiles in registers, ragged rows and columns element by element): one model compiled
    once, 6 shapes."""

    def ints(name: str, value: list[int]) -> onnx.TensorProto:
        return numpy_helper.from_array(np.array(value, np.int64), name)

    tail = [
        helper.make_node("Concat", ["y", "y"], ["wide"], axis=2),
        helper.make_node("Concat", ["y", "y"], ["long"], axis=1),
        helper.make_node("Slice", ["y", "one", "big", "axis1"], ["rest"]),
        helper.make_node("Slice", ["long", "zero", "big", "axis1", "two"], ["every_second"]),
        helper.make_node("Transpose", ["every_second"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Relu", ["t"], ["rt"]),
        helper.make_node("Transpose", ["rt"], ["out"], perm=[0, 2, 1]),
    ]
    model = ffn_block_model(HIDDEN, 72, tail, ["batch", "seq", HIDDEN])
    for name, dims in (
        ("wide", ["batch", "seq", 2 * HIDDEN]),
        ("long", ["batch", None, HIDDEN]),
        ("rest", ["batch", None, HIDDEN]),
    ):
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
    model.graph.initializer.extend(
        [
            ints("zero", [0]),
            ints("one", [1]),
            ints("two", [2]),
            ints("big", [1000]),
            ints("axis1", [1]),
        ]
    )
    compiled = ember.compile(model, threads=1)
    for k, (batch, seq) in enumerate([(2, 3), (3, 5), (1, 16), (4, 17), (1, 33), (3, 200)]):
        rng = np.random.default_rng(k)
        inputs = {"x": rng.standard_normal((batch, seq, HIDDEN)).astype(np.float32)}
        got = compiled.run(inputs)
        assert got["rest"].shape == (batch, seq - 1, HIDDEN)
        assert_close(got, onnxruntime_outputs(model, inputs), REL_TOL)
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


# -- conv networks ---------------------------------------------------------------------------------
def _images(shape: tuple[int, ...], seed: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def test_text_detector_compiles_once() -> None:
    """Symbolic batch, height and width: stride-2 convs ((H+1)//2, (H+3)//4), Resize x2 of
    the deeper map, its crop to the shallower one's size, Concat, a 1x1 conv and Sigmoid;
    sizes not multiples of the vector width (down to a 1 x 1 image), two threads."""
    model = cropped_text_detector_model()
    compiled = ember.compile(model, threads=2)
    shapes = [(1, 3, 17, 23), (2, 3, 32, 32), (1, 3, 5, 7), (3, 3, 64, 40), (1, 3, 1, 1),
              (2, 3, 33, 65), (1, 3, 100, 9)]  # fmt: skip
    for k, shape in enumerate(shapes):
        inputs = _images(shape, k)
        got = compiled.run(inputs)
        assert got["score"].shape == (shape[0], 1, (shape[2] + 1) // 2, (shape[3] + 1) // 2)
        assert_close(got, onnxruntime_outputs(model, inputs), REL_TOL)
    assert compiled.compile_once_refusal is None and compiled.compiles == 1


@pytest.fixture(scope="module")
def fpn_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("once_fpn") / "fpn"
    compile_artifact(
        upsampled_fpn_model(),
        out,
        target=resolve_target("host", 1),
        batch_polymorphic=True,
        compile_once=True,
    )
    return out


_FPN_SHAPES = [(1, 3, 17, 23), (2, 3, 32, 32), (1, 3, 5, 7), (3, 3, 64, 41), (1, 3, 6, 5),
               (2, 3, 33, 65), (1, 3, 100, 9)]  # fmt: skip


def _fpn_sizes(n: int) -> tuple[int, int, int]:
    """The score's, valid's and down's size for an image size n (q = ceil(n / 4))."""
    q = (n + 3) // 4
    return 2 * q, 2 * q - 2, q


def _check_fpn_runs(runner: object) -> None:
    """`runner` (compiled or loaded) at odd and even sizes down to the smallest."""
    model = upsampled_fpn_model()
    for k, shape in enumerate(_FPN_SHAPES):
        inputs = _images(shape, k)
        got = runner.run(inputs)  # type: ignore[attr-defined]
        for name, axis in (("score", 0), ("valid", 1), ("down", 2)):
            sizes = (_fpn_sizes(shape[2])[axis], _fpn_sizes(shape[3])[axis])
            assert got[name].shape[2:] == sizes, (name, shape)
        assert_close(got, onnxruntime_outputs(model, inputs), REL_TOL)


def test_convs_after_resize_x2_compile_once(fpn_artifact: Path, tmp_path: Path) -> None:
    """A feature-pyramid top-down path (Resize x2 of the deeper map and of its lateral 1x1
    conv, added, then 3x3 convs with pads, without and with stride 2): convolutions over
    2 * ((H+3)//4), their sizes nested terms. Compiled once as one artifact (format 6: a
    term of a term), served at odd and even sizes down to the smallest (H, W >= 5: the
    unpadded conv's 2q - 2 >= 1). In process: the next test, and by default the same
    model resized to a Shape (test_resize_to_a_shape_that_doubles_...[half_pixel...])."""
    model = upsampled_fpn_model()
    loaded = load(fpn_artifact)
    assert isinstance(loaded, OnceArtifact)
    _check_fpn_runs(loaded)
    document = json.loads((fpn_artifact / MANIFEST_FILE).read_text())
    section = document["extra"][ONCE_KEY]
    assert document["format_version"] == 6 and section["minimums"] == {"H": 5, "W": 5}
    assert "floor((2 * floor((1 * H + 3) / 4) + -2) / 1)" in (fpn_artifact / "ember.h").read_text()
    inputs = _images((2, 3, 13, 30), 20)
    got = run_without_compiler(fpn_artifact, inputs, tmp_path)
    assert_close(got, onnxruntime_outputs(model, inputs), REL_TOL)
    with pytest.raises(ember.InputError, match="dim 'H' .* is 4, less than 5"):
        loaded.run(_images((1, 3, 4, 9), 0))


# With --runslow: under per-test branch coverage of tests/e2e the whole test (the artifact
# and this in-process compile) reached nothing the others do not (docs/testing.md).
@pytest.mark.slow
def test_convs_after_resize_x2_compile_once_in_process() -> None:
    """The same, compiled once in this process on two threads."""
    compiled = ember.compile(upsampled_fpn_model(), threads=2)
    _check_fpn_runs(compiled)
    assert compiled.compile_once_refusal is None and compiled.compiles == 1


def test_a_nested_term_changed_in_the_manifest_is_refused(
    fpn_artifact: Path, tmp_path: Path
) -> None:
    """The nested terms are checked like the others: an inner term's offset changed, an
    inner term that is not in normal form, or format 5 on an artifact with nested terms is
    an ArtifactError."""
    document = json.loads((fpn_artifact / MANIFEST_FILE).read_text())
    # valid's height: 2 * ((H+3)//4) - 2, a term of a term.
    height = document["extra"][ONCE_KEY]["outputs"]["valid"][2]
    assert height["terms"][0]["term"] == {"dim": "H", "scale": 1, "offset": 3, "divisor": 4}
    path = ("outputs", "valid", 2, "terms", 0, "term")
    for key, value, message in [
        ("offset", 7, "compile_once"),
        ("divisor", 1, "normal form"),
        (None, 5, "artifact format 5, this runtime reads format 6"),
    ]:
        copy = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(fpn_artifact, copy)
        changed = json.loads((copy / MANIFEST_FILE).read_text())
        if key is None:
            changed["format_version"] = value
        else:
            target = changed["extra"][ONCE_KEY]
            for step in path:
                target = target[step]
            target[key] = value
        (copy / MANIFEST_FILE).write_text(json.dumps(changed))
        with pytest.raises(ember.ArtifactError, match=message):
            load(copy)


def _fpn_resized_to_a_shape(coordinates: str, nearest: str) -> onnx.ModelProto:
    """upsampled_fpn_model with its deeper map resized to the lateral map's size read from
    its Shape (sizes, not scales: exactly twice its own at every shape)."""
    model = upsampled_fpn_model()
    nodes = [n for n in model.graph.node if n.output[0] != "up"]
    after = next(k for k, n in enumerate(nodes) if n.output[0] == "lateral_up") + 1
    nodes[after:after] = [
        helper.make_node("Shape", ["lateral_up"], ["lateral_shape"]),
        helper.make_node("Resize", ["f2", "", "", "lateral_shape"], ["up"], mode="nearest",
                         coordinate_transformation_mode=coordinates, nearest_mode=nearest),
    ]  # fmt: skip
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


@pytest.mark.parametrize(
    ("coordinates", "nearest", "once"),
    [
        ("half_pixel", "round_prefer_floor", True),
        ("asymmetric", "floor", True),
        ("align_corners", "round_prefer_floor", False),
    ],
)
def test_resize_to_a_shape_that_doubles_compiles_once_when_its_index_is_o_div_2(
    coordinates: str, nearest: str, once: bool
) -> None:
    """A nearest Resize to another map's size read from a Shape, twice its input's at every
    shape: compiled once when output o reads input o // 2 at every size by its coordinate
    mode and rounding (half_pixel rounded, asymmetric floored), else refused naming the
    modes (align_corners: not proven) and specialised; right at odd and even sizes."""
    model = _fpn_resized_to_a_shape(coordinates, nearest)
    compiled = ember.compile(model, threads=1)
    shapes = [(1, 3, 17, 23), (2, 3, 32, 32), (1, 3, 6, 5), (1, 3, 41, 11), (2, 3, 9, 30)]
    for k, shape in enumerate(shapes[: 5 if once else 2]):
        inputs = _images(shape, k)
        assert_close(compiled.run(inputs), onnxruntime_outputs(model, inputs), REL_TOL)
    if once:
        assert compiled.compile_once_refusal is None and compiled.compiles == 1
    else:
        reason = compiled.compile_once_refusal or ""
        assert f"'{coordinates}' and nearest_mode '{nearest}'" in reason, reason
        assert "not provably at every size" in reason and compiled.compiles == 2


@pytest.fixture(scope="module")
def recognizer_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("once_conv") / "recognizer"
    compile_artifact(
        recognizer_model(),
        out,
        target=resolve_target("host", 1),
        batch_polymorphic=True,
        dim_ranges={"N": (1, 16)},
        compile_once=True,
    )
    return out


def test_recognizer_compiles_once_and_its_artifact_serves_every_width(
    recognizer_artifact: Path, tmp_path: Path
) -> None:
    """The recognizer's symbolic width becomes a sequence ((W+3)//4 steps: a Reshape of
    [N, 8, 8, w] to [N, 64, w], a Transpose, a MatMul classifier): ONE artifact (format 5:
    its extents have terms) serves every shape in-process and in a process without the
    compiler."""
    model = recognizer_model()
    document = json.loads((recognizer_artifact / MANIFEST_FILE).read_text())
    section = document["extra"][ONCE_KEY]
    assert document["format_version"] == 5 and section["symbols"] == ["N", "W"]
    assert section["outputs"]["logits"] == [
        {"factor": 1, "dims": ["N"]},
        {"factor": 1, "dims": [], "terms": [{"dim": "W", "scale": 1, "offset": 3, "divisor": 4}]},
        10,
    ]
    assert section["minimums"] == {"W": 1}
    assert "floor((1 * W + 3) / 4)" in (recognizer_artifact / "ember.h").read_text()
    loaded = load(recognizer_artifact)
    assert isinstance(loaded, OnceArtifact)
    shapes = [(1, 1, 32, 17), (2, 1, 32, 40), (1, 1, 32, 1), (3, 1, 32, 101), (2, 1, 32, 8),
              (16, 1, 32, 5)]  # fmt: skip
    for k, shape in enumerate(shapes):
        inputs = _images(shape, k)
        got = loaded.run(inputs)
        assert got["logits"].shape == (shape[0], (shape[3] + 3) // 4, 10)
        assert_close(got, onnxruntime_outputs(model, inputs), REL_TOL)
    for k, shape in enumerate([(2, 1, 32, 29), (1, 1, 32, 64)]):
        inputs = _images(shape, 10 + k)
        got = run_without_compiler(recognizer_artifact, inputs, tmp_path)
        assert_close(got, onnxruntime_outputs(model, inputs), REL_TOL)
    with pytest.raises(ember.InputError, match="dim 'N' is 17, outside its range 1..16"):
        loaded.run(_images((17, 1, 32, 8), 0))
    with pytest.raises(ember.InputError, match=r"expected shape \[N, 1, 32, W\]"):
        loaded.run(_images((1, 1, 31, 8), 0))


def test_a_term_changed_in_the_manifest_is_refused(
    recognizer_artifact: Path, tmp_path: Path
) -> None:
    """The section is checked field by field against the library's own copy: a term, a
    minimum, or format 4 on an artifact whose extents have terms is an ArtifactError."""
    changes = [
        (("outputs", "logits", 1, "terms", 0, "offset"), 1, "compile_once"),
        (("minimums", "W"), 0, r"compile_once.minimums.W"),
        (("minimums",), {}, r"compile_once.minimums"),
    ]
    for path, value, message in [
        *changes,
        (None, 4, "artifact format 4, this runtime reads format 5"),
    ]:
        copy = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(recognizer_artifact, copy)
        document = json.loads((copy / MANIFEST_FILE).read_text())
        if path is None:
            document["format_version"] = value
        else:
            target = document["extra"][ONCE_KEY]
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
        (copy / MANIFEST_FILE).write_text(json.dumps(document))
        with pytest.raises(ember.ArtifactError, match=message):
            load(copy)


def test_an_image_smaller_than_every_convolution_takes_is_an_input_error() -> None:
    """A 3x3 conv without padding, then a 2x2 one of stride 2: (H-2)//2 x (W-2)//2 maps, so
    H and W >= 4 (the model's `minimums`): a smaller image is refused naming the dim before
    any kernel runs. GlobalAveragePool of the map: a mean over its run-time pixels."""
    rng = np.random.default_rng(5)
    first = numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w1")
    second = numpy_helper.from_array(rng.standard_normal((4, 4, 2, 2)).astype(np.float32), "w2")
    model = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("Conv", ["x", "w1"], ["c"], kernel_shape=[3, 3]),
                helper.make_node("Conv", ["c", "w2"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
                helper.make_node("GlobalAveragePool", ["y"], ["pooled"]),
            ],
            "valid_conv",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, "H", "W"])],
            [
                helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, None, None]),
                helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", 4, 1, 1]),
            ],
            [first, second],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    compiled = ember.compile(model, threads=1)
    for k, shape in enumerate([(1, 2, 4, 4), (2, 2, 9, 13), (1, 2, 30, 5)]):
        inputs = _images(shape, k)
        assert_close(compiled.run(inputs), onnxruntime_outputs(model, inputs), REL_TOL)
    assert compiled.compile_once_refusal is None and compiled.compiles == 1
    with pytest.raises(ember.InputError, match="dim 'W' .* is 3, less than 4"):
        compiled.run(_images((1, 2, 8, 3), 0))


@pytest.mark.slow
def test_resnet50_with_symbolic_batch_height_and_width_compiles_once() -> None:
    """ResNet-50 (the onnx wheel's light model, its final pool global) with symbolic N, H,
    W: blocked convs and reorders, the NCHW stem conv and max pool, the global pool, all
    with run-time sizes, on two threads. Compared on the pooled features (relative 1e-4):
    the light model's random weights make its logits ~1e17 and its softmax meaningless."""
    model = resnet50_symbolic_image()
    pooled = next(n for n in model.graph.node if n.op_type == "GlobalAveragePool").output[0]
    model.graph.output.append(helper.make_tensor_value_info(pooled, TensorProto.FLOAT, None))
    compiled = ember.compile(model, threads=2)
    for k, shape in enumerate(
        [(1, 3, 224, 224), (2, 3, 97, 131), (1, 3, 320, 320), (3, 3, 33, 40)]
    ):
        inputs = {"gpu_0/data_0": _images(shape, k)["x"]}
        got = compiled.run(inputs)[pooled]
        assert_close({pooled: got}, {pooled: onnxruntime_outputs(model, inputs)[pooled]}, REL_TOL)
    assert compiled.compile_once_refusal is None and compiled.compiles == 1
