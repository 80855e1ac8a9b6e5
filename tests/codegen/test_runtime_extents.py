"""Codegen of memrefs with `?` dims (runtime extents, dialects/extents.py): sizes from extent
arguments and size operands, `memref.dim`, strides computed once, parallel regions.

Each function is compiled once and run at several sizes (including ones that are not
multiples of a vector); results are compared bit-exactly with numpy (copies and scalings by
2, exact in float32).
"""

from __future__ import annotations

import ctypes
import re

import numpy as np
import pytest

from ember.codegen.jit import JitModule
from ember.codegen.llvm_emitter import emit_module
from ember.core.target import host_target
from ember.tests.codegen.util import parse

SIZES = [(1, 1), (1, 7), (3, 16), (5, 33), (100, 17)]


def jit(text: str, name: str, pointers: int, sizes: int, threads: int = 1):
    module = JitModule(parse(text), host_target(threads))
    module.function("ember_set_num_threads", [ctypes.c_int32])(threads)
    fn = module.function(name, [ctypes.c_void_p] * pointers + [ctypes.c_int64] * sizes)
    return module, fn


# A 2-D scaling of memref<?x?xf32>: both sizes are extent arguments (one argument is the size
# of dim 0 of %x and of %y), the row loop is a parallel region (the strides travel into the
# outlined function), the column loop reads its bound with memref.dim.
SCALE = """
func.func @scale(%x: memref<?x?xf32>, %y: memref<?x?xf32>,
                 %m: index {ember.extent_of = array<i64: 0, 0, 1, 0>},
                 %n: index {ember.extent_of = array<i64: 0, 1, 1, 1>}) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %rows = memref.dim %x, %c0 : memref<?x?xf32>
  %cols = memref.dim %y, %c1 : memref<?x?xf32>
  %two = arith.constant 2.0 : f32
  "scf.parallel"(%c0, %rows, %c1) <{operandSegmentSizes = array<i32: 1, 1, 1, 0>}> ({
  ^bb0(%i: index):
    scf.for %j = %c0 to %cols step %c1 {
      %v = memref.load %x[%i, %j] : memref<?x?xf32>
      %w = arith.mulf %v, %two : f32
      memref.store %w, %y[%i, %j] : memref<?x?xf32>
    }
    scf.reduce
  }) : (index, index, index) -> ()
  func.return
}
"""


@pytest.mark.parametrize("threads", [1, 2])
def test_two_dynamic_dims_one_program_every_size(threads: int) -> None:
    _, fn = jit(SCALE, "scale", 2, 2, threads)
    rng = np.random.default_rng(0)
    for shape in [*SIZES, (300, 129)]:
        x = rng.standard_normal(shape).astype(np.float32)
        y = np.full_like(x, np.nan)
        fn(x.ctypes.data, y.ctypes.data, *shape)
        np.testing.assert_array_equal(y, 2 * x)


def test_strides_are_computed_once_per_function() -> None:
    """memref<?x?x?xf32>: the outer stride (sizes 1 x 2) is one multiplication where the
    function starts, before any loop; the accesses inside the loops use it."""
    text = """
func.func @f(%x: memref<?x?x?xf32>, %a: index {ember.extent_of = array<i64: 0, 0>},
             %b: index {ember.extent_of = array<i64: 0, 1>},
             %c: index {ember.extent_of = array<i64: 0, 2>}) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  scf.for %i = %c0 to %a step %c1 {
    scf.for %j = %c0 to %b step %c1 {
      %v = memref.load %x[%i, %j, %c1] : memref<?x?x?xf32>
      memref.store %v, %x[%i, %j, %c0] : memref<?x?x?xf32>
    }
  }
  func.return
}"""
    llvm = str(emit_module(parse(text), host_target(1)))
    function = llvm[llvm.index('define void @"f"') :].split("\n}")[0]
    # Arguments: %".1" the pointer, %".2" .. %".4" the sizes of dims 0..2.
    stride = re.findall(r'(%"\.\d+") = mul nsw i64 %"\.4", %"\.3"', function)
    assert len(stride) == 1, function
    assert function.index(stride[0] + " = mul") < function.index("for.header")
    assert function.count(f'mul nsw i64 %"iv", {stride[0]}') == 2  # the load and the store


# Views with `?` dims: memref.alloc of run-time size, memref.view of an arena at a run-time
# offset, a dynamic subview (a run-time window of rows) and a cast to a static type.
VIEWS = """
func.func @views(%x: memref<?x4xf32>, %y: memref<?x4xf32>, %arena: memref<?xi8>,
                 %m: index {ember.extent_of = array<i64: 0, 0, 1, 0>}) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c4 = arith.constant 4 : index
  %c64 = arith.constant 64 : index
  %rows = memref.dim %x, %c0 : memref<?x4xf32>
  %t = memref.view %arena[%c64][%rows] : memref<?xi8> to memref<?x4xf32>
  %h = memref.alloc(%rows) : memref<?x4xf32>
  scf.for %i = %c0 to %rows step %c1 {
    scf.for %j = %c0 to %c4 step %c1 {
      %v = memref.load %x[%i, %j] : memref<?x4xf32>
      memref.store %v, %t[%i, %j] : memref<?x4xf32>
      memref.store %v, %h[%i, %j] : memref<?x4xf32>
    }
  }
  %rest = arith.subi %rows, %c1 : index
  %tail = memref.subview %h[%c1, 0] [%rest, 4] [1, 1] : memref<?x4xf32> to memref<?x4xf32, strided<[4, 1], offset: ?>>
  %n = memref.dim %tail, %c0 : memref<?x4xf32, strided<[4, 1], offset: ?>>
  scf.for %i = %c0 to %n step %c1 {
    scf.for %j = %c0 to %c4 step %c1 {
      %a = memref.load %tail[%i, %j] : memref<?x4xf32, strided<[4, 1], offset: ?>>
      %b = memref.load %t[%i, %j] : memref<?x4xf32>
      %s = arith.addf %a, %b : f32
      memref.store %s, %y[%i, %j] : memref<?x4xf32>
    }
  }
  %first = "memref.cast"(%h) : (memref<?x4xf32>) -> memref<1x4xf32>
  %last = arith.subi %rows, %c1 : index
  scf.for %j = %c0 to %c4 step %c1 {
    %v = memref.load %first[%c0, %j] : memref<1x4xf32>
    memref.store %v, %y[%last, %j] : memref<?x4xf32>
  }
  memref.dealloc %h : memref<?x4xf32>
  func.return
}
"""


def test_views_with_dynamic_sizes() -> None:
    _, fn = jit(VIEWS, "views", 3, 1)
    rng = np.random.default_rng(1)
    for m in (1, 2, 7, 33):
        x = rng.standard_normal((m, 4)).astype(np.float32)
        y = np.full_like(x, np.nan)
        arena = np.zeros(64 + x.nbytes, np.uint8)
        fn(x.ctypes.data, y.ctypes.data, arena.ctypes.data, m)
        expected = np.empty_like(x)
        expected[:-1] = x[1:] + x[:-1]
        expected[-1] = x[0]
        np.testing.assert_array_equal(y, expected)
        np.testing.assert_array_equal(arena[64:].view(np.float32).reshape(m, 4), x)


def test_static_strides_address_as_static() -> None:
    """memref<?x768xf32> has static strides: its loads are the same GEP as memref<5x768xf32>
    (only the signature differs: the extent argument)."""
    body = """
  %c0 = arith.constant 0 : index
  %c3 = arith.constant 3 : index
  %v = memref.load %x[%c3, %c0] : TYPE
  memref.store %v, %x[%c0, %c3] : TYPE
  func.return
}"""
    static = "func.func @f(%x: memref<5x768xf32>) {" + body.replace("TYPE", "memref<5x768xf32>")
    dynamic = (
        "func.func @f(%x: memref<?x768xf32>, %m: index {ember.extent_of = array<i64: 0, 0>}) {"
        + body.replace("TYPE", "memref<?x768xf32>")
    )
    target = host_target(1)

    def function_body(text: str) -> str:
        """The body's instructions, values renamed in order of appearance (the extent
        argument shifts LLVM's numbering by one)."""
        llvm = str(emit_module(parse(text), target))
        body = llvm[llvm.index("{", llvm.index('define void @"f"')) :].split("\n}\n")[0]
        names: dict[str, str] = {}
        return re.sub(r'%"\.\d+"', lambda m: names.setdefault(m[0], f"%v{len(names)}"), body)

    assert function_body(static) == function_body(dynamic)


def test_unknown_size_is_a_clear_error() -> None:
    """A `?` dim that no extent argument names: memref.dim of it, or an access needing a
    stride computed from it, is refused naming the op and the type."""
    text = """
func.func @f(%x: memref<?x?xf32>) {
  %c0 = arith.constant 0 : index
  %v = memref.load %x[%c0, %c0] : memref<?x?xf32>
  memref.store %v, %x[%c0, %c0] : memref<?x?xf32>
  func.return
}"""
    with pytest.raises(NotImplementedError, match=r"memref.load.*memref<\?x\?xf32>"):
        emit_module(parse(text), host_target(1))
    text = """
func.func @f(%x: memref<?x8xf32>, %y: memref<1xindex>) {
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x8xf32>
  memref.store %n, %y[%c0] : memref<1xindex>
  func.return
}"""
    with pytest.raises(NotImplementedError, match=r"memref.dim.*dim 0 of memref<\?x8xf32>"):
        emit_module(parse(text), host_target(1))
