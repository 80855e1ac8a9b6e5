"""Translate a loops-level module (func/scf/arith/math/memref/vector) into `llvmlite.ir`.

xDSL has no usable conversion of these dialects to the llvm dialect, so ember emits LLVM IR
itself, in one linear walk over the ops.

Conventions at the LLVM level:
- A memref is a bare pointer to its first element (any layout offset is already applied by
  the op that produced the view). Indices are linearized with the strides of the memref type
  (row-major for the identity layout) where they are static. A memref with `?` dims gets its
  sizes as `index` values (dialects/extents.py: extent arguments, the size operands of
  alloc/view/reinterpret_cast/subview); where its strides depend on them (`memref<?x?xf32>`)
  they are computed once where the memref is defined (`_Layout`), and `memref.dim` reads a
  size. A memref whose strides are static (`memref<?x768xf32>`) is addressed as a static one.
- `index` is i64. Public functions have external linkage and the plain C ABI; private ones
  are internal, except kernels compiled as units of their own (units.py), which are external
  under a renamed symbol. A function argument gets `noalias` if its arg attrs hold `llvm.noalias`.
- Float arithmetic carries the fast-math flags `contract reassoc` (never nnan/ninf: NaN
  semantics matter for ONNX conformance). Float min/max (`arith.maximumf` -> `llvm.maximum`,
  NaN-propagating) add `nsz`: the sign of a zero result is then unspecified, which lets x86
  lower `llvm.maximum(x, 0)` to one `vmaxps` and a two-variable one to vmaxps + vcmpunordps +
  blend, instead of an extra sign-bit blend to order -0 below +0.
- `scf.parallel` is outlined into `void @<fn>__parallel_<k>(ptr ctx)`, where ctx points to a
  struct of captured values and a shared counter; the threads claim chunks of the flattened
  iteration space from the counter (CHUNKS_PER_THREAD per thread, an atomic add each), and
  the region runs on several threads when `ember_num_threads` > 1: as a job of the run's
  thread team (codegen/team.py: the entry function starts one libgomp team per call), or
  with its own `GOMP_parallel` where no team runs (a kernel called on its own).
  A program exports `i32 ember_num_threads` (default 1) and `ember_set_num_threads(i32)`,
  defined in its entry unit with the team record and `ember_team_run`.
"""

from __future__ import annotations

import platform
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import llvmlite.ir as ir
from xdsl.dialects import func, memref, scf, vector
from xdsl.dialects.builtin import (
    BFloat16Type,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    DictionaryAttr,
    Float16Type,
    Float32Type,
    Float64Type,
    FloatAttr,
    IndexType,
    IntegerAttr,
    IntegerType,
    MemRefType,
    ModuleOp,
    NoneAttr,
    VectorType,
)
from xdsl.ir import Attribute, Block, BlockArgument, Operation, OpResult, SSAValue

from ember.codegen import mathlib, team
from ember.core.target import Target
from ember.dialects.extents import dynamic_dims, extent_arguments


class BFloatType(ir.types._BaseFloatType):
    """LLVM's `bfloat`, which llvmlite.ir lacks."""

    null = "0.0"
    intrinsic_name = "bf16"

    def __str__(self) -> str:
        return "bfloat"

    def format_constant(self, value: float) -> str:
        bits = struct.unpack("<I", struct.pack("<f", value))[0]
        if value != value:
            return "0xR7FC0"
        bits += 0x7FFF + ((bits >> 16) & 1)  # round to nearest even
        return f"0xR{(bits >> 16) & 0xFFFF:04X}"


BFloatType._create_instance()

# The attribute passes/program.py uses to mark the program's entry function.
ENTRY_MARK = "ember.input_names"

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()
FAST = ("contract", "reassoc")
# float min/max: which of -0.0 and +0.0 they return is left open (see the module docstring)
FAST_MINMAX = (*FAST, "nsz")
_FLOAT_TYPES = (ir.FloatType, ir.DoubleType, ir.HalfType, BFloatType)
_DYNAMIC_INDEX = -(2**63)


def llvm_type(t: Attribute) -> ir.Type:
    """The LLVM type of an xDSL type (memrefs are opaque pointers)."""
    if isinstance(t, IndexType):
        return I64
    if isinstance(t, IntegerType):
        return ir.IntType(t.width.data)
    if isinstance(t, Float32Type):
        return ir.FloatType()
    if isinstance(t, Float64Type):
        return ir.DoubleType()
    if isinstance(t, Float16Type):
        return ir.HalfType()
    if isinstance(t, BFloat16Type):
        return BFloatType()
    if isinstance(t, MemRefType):
        return PTR
    if isinstance(t, VectorType):
        shape = t.get_shape()
        if len(shape) != 1 or t.get_num_scalable_dims():
            raise NotImplementedError(f"codegen: only 1-D fixed vectors are supported, got {t}")
        return ir.VectorType(llvm_type(t.get_element_type()), shape[0])
    raise NotImplementedError(f"codegen: unsupported type {t}")


def _element(ty: ir.Type) -> ir.Type:
    return ty.element if isinstance(ty, ir.VectorType) else ty


def _is_float(ty: ir.Type) -> bool:
    return isinstance(_element(ty), _FLOAT_TYPES)


def _splat(ty: ir.Type, scalar: ir.Constant) -> ir.Constant:
    if isinstance(ty, ir.VectorType):
        return ir.Constant(ty, [scalar] * ty.count)
    return scalar


def _const(ty: ir.Type, value: float | int) -> ir.Constant:
    """A scalar or splat-vector constant, integers normalized to the signed range of `ty`."""
    element = _element(ty)
    if isinstance(element, ir.IntType):
        width = element.width
        value = int(value) & ((1 << width) - 1)
        if width > 1 and value >= 1 << (width - 1):
            value -= 1 << width
    return _splat(ty, ir.Constant(element, value))


def _byte_size(ty: ir.Type) -> int:
    if isinstance(ty, ir.IntType):
        return max(1, ty.width // 8)
    if isinstance(ty, ir.VectorType):
        return ty.count * _byte_size(ty.element)
    return {ir.FloatType: 4, ir.DoubleType: 8, ir.HalfType: 2, BFloatType: 2}[type(ty)]


def _type_strides(t: MemRefType) -> list[int] | None:
    """The strides of a memref type when all of them are static (also with `?` dims, as
    `memref<?x768xf32>` has), else None."""
    strides = t.get_strides()
    if strides is None or any(s is None or s == _DYNAMIC_INDEX for s in strides):
        return None
    return [int(s) for s in strides]  # type: ignore[arg-type]


# A size or stride of a memref: a Python int where static, an i64 value where known at run
# time, None where this function does not know it (a `?` dim no extent argument names).
Extent = int | ir.Value | None


@dataclass
class _Layout:
    """Sizes and strides of one memref value whose type does not give them all statically."""

    sizes: list[Extent]
    strides: list[Extent]

    def runtime_values(self) -> list[ir.Value]:
        """The values a parallel region must receive to address this memref."""
        found: dict[int, ir.Value] = {}
        for x in (*self.sizes, *self.strides):
            if isinstance(x, ir.Value) and not isinstance(x, ir.Constant):
                found.setdefault(id(x), x)
        return list(found.values())

    def rebound(self, mapping: Mapping[int, ir.Value]) -> _Layout:
        """This layout with each run-time value replaced by `mapping[id(value)]`."""

        def swap(x: Extent) -> Extent:
            return mapping.get(id(x), x) if isinstance(x, ir.Value) else x

        return _Layout([swap(x) for x in self.sizes], [swap(x) for x in self.strides])


def _layout_offset(t: MemRefType) -> int:
    offset = t.get_offset()
    return int(offset) if isinstance(offset, int) else 0


Handler = Callable[["_FunctionEmitter", Operation], None]
_HANDLERS: dict[str, Handler] = {}


def _handles(*names: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for name in names:
            _HANDLERS[name] = fn
        return fn

    return register


# arith binary ops: name -> (llvmlite builder method, flags)
_INT_BINOPS = {
    "arith.addi": "add",
    "arith.subi": "sub",
    "arith.muli": "mul",
    "arith.divsi": "sdiv",
    "arith.divui": "udiv",
    "arith.remsi": "srem",
    "arith.remui": "urem",
    "arith.andi": "and_",
    "arith.ori": "or_",
    "arith.xori": "xor",
    "arith.shli": "shl",
    "arith.shrsi": "ashr",
    "arith.shrui": "lshr",
}
_FLOAT_BINOPS = {
    "arith.addf": "fadd",
    "arith.subf": "fsub",
    "arith.mulf": "fmul",
    "arith.divf": "fdiv",
    "arith.remf": "frem",
}
# binary ops that are LLVM intrinsics overloaded on the operand type
_INTRINSIC_BINOPS = {
    "arith.minsi": "llvm.smin",
    "arith.maxsi": "llvm.smax",
    "arith.minui": "llvm.umin",
    "arith.maxui": "llvm.umax",
    "arith.maximumf": "llvm.maximum",
    "arith.minimumf": "llvm.minimum",
    "arith.maxnumf": "llvm.maxnum",
    "arith.minnumf": "llvm.minnum",
    "math.powf": "llvm.pow",
}
_FLOAT_MINMAX = frozenset(
    (
        "llvm.maximum",
        "llvm.minimum",
        "llvm.maxnum",
        "llvm.minnum",
        "llvm.vector.reduce.fmaximum",
        "llvm.vector.reduce.fminimum",
        "llvm.vector.reduce.fmax",
        "llvm.vector.reduce.fmin",
    )
)
_CASTS = {
    "arith.sitofp": "sitofp",
    "arith.uitofp": "uitofp",
    "arith.fptosi": "fptosi",
    "arith.fptoui": "fptoui",
    "arith.extf": "fpext",
    "arith.truncf": "fptrunc",
    "arith.extsi": "sext",
    "arith.extui": "zext",
    "arith.trunci": "trunc",
    "arith.bitcast": "bitcast",
    "vector.bitcast": "bitcast",
    # xdsl 0.74's arith casts verify on scalars only; kernels cast vectors with these.
    "llvm.sitofp": "sitofp",
    "llvm.zext": "zext",
    "llvm.sext": "sext",
    "llvm.trunc": "trunc",
}
_CMPI = ["eq", "ne", "slt", "sle", "sgt", "sge", "ult", "ule", "ugt", "uge"]
_CMPI_LLVMLITE = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_CMPF = ["false", "oeq", "ogt", "oge", "olt", "ole", "one", "ord"]
_CMPF += ["ueq", "ugt", "uge", "ult", "ule", "une", "uno", "true"]

# math unary ops lowered to an LLVM intrinsic on the same type (vectors are scalarized by LLVM)
_MATH_INTRINSICS = {
    "math.exp": "llvm.exp",
    "math.log": "llvm.log",
    "math.sqrt": "llvm.sqrt",
    "math.absf": "llvm.fabs",
    "math.floor": "llvm.floor",
    "math.ceil": "llvm.ceil",
    "math.round": "llvm.round",
    "math.roundeven": "llvm.roundeven",
    "math.trunc": "llvm.trunc",
    "math.sin": "llvm.sin",
    "math.cos": "llvm.cos",
    "math.tanh": "llvm.tanh",
    "math.exp2": "llvm.exp2",
    "math.log2": "llvm.log2",
    "math.log10": "llvm.log10",
}
# f32 (scalar or vector) uses ember's polynomial approximations for these
_MATH_APPROX = {"math.exp": "exp", "math.log": "log", "math.erf": "erf", "math.tanh": "tanh"}
# no LLVM intrinsic: libm, one call per lane
_MATH_LIBM = {"math.erf": "erf", "math.log1p": "log1p", "math.expm1": "expm1"}
_MATH_LIBM |= {
    f"math.{name}": name
    for name in ("tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh")
}

_REDUCTIONS_FLOAT = {
    "add": "llvm.vector.reduce.fadd",
    "mul": "llvm.vector.reduce.fmul",
    "maxnumf": "llvm.vector.reduce.fmax",
    "minnumf": "llvm.vector.reduce.fmin",
    "maximumf": "llvm.vector.reduce.fmaximum",
    "minimumf": "llvm.vector.reduce.fminimum",
}
_REDUCTIONS_INT = {
    "add": "llvm.vector.reduce.add",
    "mul": "llvm.vector.reduce.mul",
    "and": "llvm.vector.reduce.and",
    "or": "llvm.vector.reduce.or",
    "xor": "llvm.vector.reduce.xor",
    "minsi": "llvm.vector.reduce.smin",
    "maxsi": "llvm.vector.reduce.smax",
    "minui": "llvm.vector.reduce.umin",
    "maxui": "llvm.vector.reduce.umax",
}
# how the optional accumulator of vector.reduction is combined with the reduced value
_COMBINE = {
    "add": ("arith.addi", "arith.addf"),
    "mul": ("arith.muli", "arith.mulf"),
    "and": ("arith.andi", None),
    "or": ("arith.ori", None),
    "xor": ("arith.xori", None),
    "minsi": ("arith.minsi", None),
    "maxsi": ("arith.maxsi", None),
    "minui": ("arith.minui", None),
    "maxui": ("arith.maxui", None),
    "maxnumf": (None, "arith.maxnumf"),
    "minnumf": (None, "arith.minnumf"),
    "maximumf": (None, "arith.maximumf"),
    "minimumf": (None, "arith.minimumf"),
}


class ModuleEmitter:
    """Owns the LLVM module and everything shared between functions.

    By default every function of the ember module is translated (one LLVM module for the whole
    program). A compilation unit passes `define`: only those bodies are emitted here, plus the
    private helpers they call that are not in `symbols` (internal copies, so LLVM can still
    inline them); every other callee is declared. `symbols` renames functions that live in
    their own unit and must therefore be linkable across units; `hidden` keeps those out of a
    shared library's exports. Only the unit with `define_runtime` defines the thread-count
    global and its setter, the others reference it.
    """

    def __init__(
        self,
        target: Target,
        name: str = "ember",
        *,
        symbols: Mapping[str, str] | None = None,
        hidden: bool = False,
        define_runtime: bool = True,
    ):
        self.target = target
        self.module = ir.Module(name=name)
        self.functions: dict[str, ir.Function] = {}
        self._symbols = dict(symbols or {})
        self._hidden = hidden
        self._ops: dict[str, func.FuncOp] = {}
        self._defined: set[str] | None = None
        self._pending: list[func.FuncOp] = []
        self._outlined = 0
        self._num_threads: ir.GlobalVariable | None = None
        self._define_runtime = define_runtime
        self._team_run: ir.Function | None = None
        if define_runtime:
            self._num_threads = ir.GlobalVariable(self.module, I32, "ember_num_threads")
            self._num_threads.initializer = ir.Constant(I32, 1)
            self._emit_set_num_threads()

    @property
    def num_threads(self) -> ir.GlobalVariable:
        """`ember_num_threads`, declared external in units that do not define it."""
        if self._num_threads is None:
            self._num_threads = ir.GlobalVariable(self.module, I32, "ember_num_threads")
        return self._num_threads

    @property
    def team_run(self) -> ir.Function:
        """`ember_team_run(fn, ctx, threads)` (codegen/team.py), defined with the team record
        in the unit that defines `ember_num_threads`, declared in the others."""
        if self._team_run is None:
            if self._define_runtime:
                self._team_run = team.define_team(self.module, self._hidden)
            else:
                self._team_run = team.declare_run(self.module, self._hidden)
        return self._team_run

    def _emit_set_num_threads(self) -> None:
        fn = ir.Function(self.module, ir.FunctionType(VOID, [I32]), "ember_set_num_threads")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        n = fn.args[0]
        b.store(b.select(b.icmp_signed("<", n, I32(1)), I32(1), n), self.num_threads)
        b.ret_void()

    def declare(self, name: str, ret: ir.Type, args: Sequence[ir.Type]) -> ir.Function:
        """An external C function (libm, libgomp, libc), declared once."""
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        return ir.Function(self.module, ir.FunctionType(ret, list(args)), name)

    def intrinsic(
        self, base: str, ret: ir.Type, args: Sequence[ir.Type], overloads: Sequence[ir.Type]
    ) -> ir.Function:
        return mathlib.intrinsic(
            self.module, base, list(overloads), ir.FunctionType(ret, list(args))
        )

    def outlined_name(self, parent: str) -> str:
        self._outlined += 1
        return f"{parent}__parallel_{self._outlined}"

    def emit(self, module: ModuleOp, define: Sequence[str] | None = None) -> ir.Module:
        """Translate `module`, or with `define` only those functions (and their helpers)."""
        funcs = module_functions(module)
        self._ops = {op.sym_name.data: op for op in funcs}
        if define is None:
            # Declare everything first, in module order, so calls may go forward.
            for op in funcs:
                self.callee(op.sym_name.data)
            self._pending = [op for op in funcs if op.body.blocks]
        else:
            self._defined = set(define)
            for name in define:
                if name not in self._ops or not self._ops[name].body.blocks:
                    raise ValueError(f"codegen: no function body @{name} to emit")
                self.callee(name)
        while self._pending:
            op = self._pending.pop(0)
            fn = self.functions[op.sym_name.data]
            if ENTRY_MARK in op.attributes:
                # Defined with the entry: the kernels' units call it.
                _ = self.team_run
                if isinstance(fn.return_value.type, ir.VoidType):
                    fn = self._entry_with_team(fn)
            _FunctionEmitter(self, fn).emit_body(op)
        return self.module

    def _entry_with_team(self, entry: ir.Function) -> ir.Function:
        """Make `entry` run the program with one thread team for the call (codegen/team.py);
        return the function that gets the program's body."""
        body = ir.Function(self.module, entry.function_type, f"{entry.name}.body")
        body.linkage = "internal"
        # Called from two places (with and without a team): never inlined twice.
        body.attributes.add("noinline")
        body.attributes.add("nounwind")
        for outer, inner in zip(entry.args, body.args, strict=True):
            for attribute in outer.attributes:
                inner.add_attribute(attribute)
        team.emit_team_entry(self.module, entry, body, self.num_threads)
        return body

    def _emits_body(self, op: func.FuncOp) -> bool:
        if not op.body.blocks:
            return False
        name = op.sym_name.data
        if self._defined is None or name in self._defined:
            return True
        # A private helper of this unit (a callee that has no unit of its own).
        return is_private(op) and name not in self._symbols

    def callee(self, name: str) -> ir.Function | None:
        """The LLVM function for the ember function `name`, declared (and queued) on first use."""
        existing = self.functions.get(name)
        if existing is not None:
            return existing
        op = self._ops.get(name)
        if op is None:
            return None
        body = self._emits_body(op)
        fn = self.functions[name] = self._declare_function(op, body)
        if body:
            self._pending.append(op)
        return fn

    def _declare_function(self, op: func.FuncOp, body: bool) -> ir.Function:
        name = op.sym_name.data
        symbol = self._symbols.get(name, name)
        inputs = [llvm_type(t) for t in op.function_type.inputs.data]
        outputs = [llvm_type(t) for t in op.function_type.outputs.data]
        if len(outputs) > 1:
            raise NotImplementedError(f"codegen: func.func @{name} returns {len(outputs)} values")
        fnty = ir.FunctionType(outputs[0] if outputs else VOID, inputs)
        existing = self.module.globals.get(symbol)
        if existing is not None:
            raise ValueError(f"codegen: symbol @{symbol} is defined twice")
        fn = ir.Function(self.module, fnty, symbol)
        if name in self._symbols and self._hidden:
            # llvmlite has no visibility field; "hidden" in the linkage slot prints as
            # `define hidden ...` (external linkage, hidden visibility).
            fn.linkage = "hidden"
        if not body:
            return fn
        fn.attributes.add("nounwind")
        if is_private(op) and name not in self._symbols:
            fn.linkage = "internal"
        if op.arg_attrs is not None:
            for arg, attrs in zip(fn.args, op.arg_attrs.data, strict=True):
                if isinstance(attrs, DictionaryAttr) and "llvm.noalias" in attrs.data:
                    arg.add_attribute("noalias")
        return fn


def is_private(op: func.FuncOp) -> bool:
    """`func.func private`: internal to its LLVM module unless it is a unit of its own."""
    return op.sym_visibility is not None and op.sym_visibility.data == "private"


def module_functions(module: ModuleOp) -> list[func.FuncOp]:
    """The module's functions; anything else at the top level is an error."""
    funcs: list[func.FuncOp] = []
    for op in module.ops:
        if not isinstance(op, func.FuncOp):
            raise NotImplementedError(
                f"codegen: unsupported top-level op '{op.name}' (only func.func)"
            )
        funcs.append(op)
    return funcs


class _FunctionEmitter:
    """Emits one LLVM function; allocas go to a dedicated entry block."""

    def __init__(self, m: ModuleEmitter, fn: ir.Function, in_parallel: bool = False):
        self.m = m
        self.fn = fn
        self.in_parallel = in_parallel
        self.values: dict[SSAValue, ir.Value] = {}
        # Memref values whose sizes or strides their type does not give statically.
        self.layouts: dict[SSAValue, _Layout] = {}
        # Whether a non-temporal store was emitted: the function then fences before it
        # returns (see `fence_streamed_stores`).
        self.streamed = False
        self.allocas = ir.IRBuilder(fn.append_basic_block("entry"))
        self.b = ir.IRBuilder(fn.append_basic_block("body"))

    # -- driver ------------------------------------------------------------------------------
    def emit_body(self, op: func.FuncOp) -> None:
        if len(op.body.blocks) != 1:
            raise NotImplementedError(
                f"codegen: func.func @{op.sym_name.data} has {len(op.body.blocks)} blocks "
                "(unstructured control flow is not supported)"
            )
        block = op.body.blocks[0]
        for arg, value in zip(block.args, self.fn.args, strict=True):
            self.values[arg] = value
        self.bind_extent_arguments(op)
        self.emit_ops(block)
        self.finish()

    def bind_extent_arguments(self, op: func.FuncOp) -> None:
        """Sizes of the memref arguments' `?` dims from the `ember.extent_of` arguments."""
        args = op.body.block.args
        bound: dict[tuple[int, int], ir.Value] = {}
        for position, pairs in extent_arguments(op):
            for pair in pairs:
                bound[pair] = self.fn.args[position]
        for a, arg in enumerate(args):
            if isinstance(arg.type, MemRefType):
                shape = arg.type.get_shape()
                sizes = [n if n >= 0 else bound.get((a, d)) for d, n in enumerate(shape)]
                self.define(arg, sizes)

    def alloca(self, ty: ir.Type, align: int, name: str = "") -> ir.Value:
        """A stack slot in the entry block (hoisted: allocated once per call or thread)."""
        slot = self.allocas.alloca(ty, name=name)
        slot.align = align
        slot.type = PTR  # llvmlite types allocas as typed pointers; the module uses opaque ones
        return slot

    def finish(self) -> None:
        self.allocas.branch(self.fn.blocks[1])

    def fence_streamed_stores(self) -> None:
        """Non-temporal stores are weakly ordered (x86): an sfence before returning makes
        them visible before whatever follows the call (the team barrier, the next kernel).
        Not `fence seq_cst`: LLVM emits it as a locked `or` on some CPUs (znver), which the
        x86 manuals do not promise to order against write-combining stores."""
        if not self.streamed:
            return
        if platform.machine().lower() in ("x86_64", "amd64", "i686", "x86"):
            self.b.call(self.m.declare("llvm.x86.sse.sfence", VOID, []), [])
        else:  # code is built for the host (codegen/build.py): a full barrier elsewhere
            self.b.fence("seq_cst")

    def emit_ops(self, block: Block) -> None:
        for op in block.ops:
            self.emit_op(op)

    def emit_op(self, op: Operation) -> None:
        handler = _HANDLERS.get(op.name)
        if handler is None:
            raise NotImplementedError(
                f"codegen: unsupported op '{op.name}' in function '{self.fn.name}'"
            )
        handler(self, op)

    def emit_region_block(self, block: Block, args: Sequence[ir.Value]) -> list[ir.Value]:
        """Emit a single-block scf region; returns the values its terminator yields."""
        for arg, value in zip(block.args, args, strict=True):
            self.values[arg] = value
        terminator = block.last_op
        for op in block.ops:
            if op is terminator and op.name in ("scf.yield", "scf.reduce"):
                return [self.get(v) for v in op.operands]
            self.emit_op(op)
        return []

    def get(self, value: SSAValue) -> ir.Value:
        return self.values[value]

    def set(self, op: Operation, *values: ir.Value) -> None:
        for result, value in zip(op.results, values, strict=True):
            self.values[result] = value

    def call_intrinsic(
        self, base: str, args: Sequence[ir.Value], ret: ir.Type | None = None, fast: bool = True
    ) -> ir.Value:
        """Call an intrinsic overloaded on the type of its first argument."""
        ty = args[0].type
        fn = self.m.intrinsic(base, ret or ty, [a.type for a in args], [ty])
        flags = FAST_MINMAX if base in _FLOAT_MINMAX else FAST
        return self.b.call(fn, list(args), fastmath=flags if fast and _is_float(ty) else ())

    # -- memory addressing -------------------------------------------------------------------
    def define(
        self, value: SSAValue, sizes: Sequence[Extent], strides: Sequence[Extent] | None = None
    ) -> None:
        """Record the sizes (and strides, given or row-major) of a memref value as it is
        defined; nothing for a memref whose type holds them all. Strides that depend on
        run-time sizes are computed here, once, where the value is defined."""
        t = value.type
        assert isinstance(t, MemRefType)
        static = _type_strides(t)
        if static is not None and not any(d < 0 for d in t.get_shape()):
            return
        if strides is None:
            if static is not None:
                strides = list(static)
            elif isinstance(t.layout, NoneAttr):
                strides = self.row_major_strides(sizes)
            else:  # a strided layout: its static strides, the `?` ones unknown here
                declared = t.get_strides() or [None] * len(sizes)
                strides = [s if isinstance(s, int) and s >= 0 else None for s in declared]
        self.layouts[value] = _Layout(list(sizes), list(strides))

    def row_major_strides(self, sizes: Sequence[Extent]) -> list[Extent]:
        strides: list[Extent] = [1] * len(sizes)
        for d in reversed(range(len(sizes) - 1)):
            strides[d] = self.multiply(strides[d + 1], sizes[d + 1])
        return strides

    def multiply(self, a: Extent, b: Extent) -> Extent:
        """a * b of two sizes: folded when both are static, None when either is unknown."""
        if a is None or b is None:
            return None
        if isinstance(a, int) and isinstance(b, int):
            return a * b
        if isinstance(a, int) and a == 1:
            return b
        if isinstance(b, int) and b == 1:
            return a
        wide = [I64(x) if isinstance(x, int) else x for x in (a, b)]
        return self.b.mul(wide[0], wide[1], flags=["nsw"])

    def layout(self, buffer: SSAValue) -> _Layout:
        """Sizes and strides of a memref value (None where not known here)."""
        known = self.layouts.get(buffer)
        if known is not None:
            return known
        t = buffer.type
        assert isinstance(t, MemRefType)
        strides = _type_strides(t)
        sizes: list[Extent] = [n if n >= 0 else None for n in t.get_shape()]
        return _Layout(sizes, list(strides) if strides is not None else [None] * len(sizes))

    def strides(self, op: Operation, buffer: SSAValue) -> list[int | ir.Value]:
        t = buffer.type
        if not isinstance(t, MemRefType):
            raise NotImplementedError(f"codegen: '{op.name}' on non-memref {t}")
        static = _type_strides(t)
        if static is not None:
            return list(static)
        strides = self.layout(buffer).strides
        if any(s is None for s in strides):
            raise NotImplementedError(
                f"codegen: '{op.name}' in '{self.fn.name}' needs static strides or the sizes "
                f"they depend on, got {t} (a `?` dim without an extent argument or size "
                "operand, or a strided layout with `?` strides)"
            )
        return strides  # type: ignore[return-value]

    def size(self, op: Operation, buffer: SSAValue, dim: int) -> ir.Value:
        sizes = self.layout(buffer).sizes
        if not 0 <= dim < len(sizes):
            raise NotImplementedError(f"codegen: '{op.name}' of dim {dim} of {buffer.type}")
        size = sizes[dim]
        if size is None:
            raise NotImplementedError(
                f"codegen: '{op.name}' in '{self.fn.name}': the size of dim {dim} of "
                f"{buffer.type} is not known here (no extent argument or size operand)"
            )
        return I64(size) if isinstance(size, int) else size

    def element_ptr(self, op: Operation, buffer: SSAValue, indices: Sequence[SSAValue]) -> ir.Value:
        t = buffer.type
        strides = self.strides(op, buffer)
        linear = self.linearize([self.get(i) for i in indices], strides)
        base = self.get(buffer)
        if linear is None:
            return base
        assert isinstance(t, MemRefType)
        element = llvm_type(t.get_element_type())
        return self.b.gep(base, [linear], inbounds=True, source_etype=element)

    def linearize(
        self, indices: Sequence[ir.Value], strides: Sequence[int | ir.Value]
    ) -> ir.Value | None:
        linear: ir.Value | None = None
        for index, stride in zip(indices, strides, strict=True):
            if isinstance(stride, int) and stride == 0:
                continue
            if isinstance(index, ir.Constant) and index.constant == 0:
                continue
            if isinstance(stride, int):
                term = index if stride == 1 else self.b.mul(index, I64(stride), flags=["nsw"])
            else:
                term = self.b.mul(index, stride, flags=["nsw"])
            linear = term if linear is None else self.b.add(linear, term, flags=["nsw"])
        return linear

    def offset_ptr(self, base: ir.Value, element: ir.Type, offset: int | ir.Value) -> ir.Value:
        if isinstance(offset, int):
            if offset == 0:
                return base
            offset = I64(offset)
        return self.b.gep(base, [offset], inbounds=True, source_etype=element)

    # -- loops -------------------------------------------------------------------------------
    def emit_loop(
        self,
        lower: ir.Value,
        upper: ir.Value,
        step: ir.Value,
        inits: Sequence[ir.Value],
        body: Callable[[ir.Value, list[ir.Value]], list[ir.Value]],
        name: str = "for",
    ) -> list[ir.Value]:
        """`for (iv = lower; iv < upper; iv += step)` with loop-carried values as phis."""
        b = self.b
        preheader = b.block
        header = self.fn.append_basic_block(f"{name}.header")
        body_block = self.fn.append_basic_block(f"{name}.body")
        exit_block = self.fn.append_basic_block(f"{name}.exit")
        b.branch(header)
        b.position_at_end(header)
        iv = b.phi(lower.type, name="iv")
        iv.add_incoming(lower, preheader)
        carried = []
        for init in inits:
            phi = b.phi(init.type)
            phi.add_incoming(init, preheader)
            carried.append(phi)
        b.cbranch(b.icmp_signed("<", iv, upper), body_block, exit_block)
        b.position_at_end(body_block)
        yielded = body(iv, list(carried))
        latch = b.block
        iv.add_incoming(b.add(iv, step, flags=["nsw"]), latch)
        for phi, value in zip(carried, yielded, strict=True):
            phi.add_incoming(value, latch)
        b.branch(header)
        b.position_at_end(exit_block)
        return list(carried)

    def trip_count(self, lower: ir.Value, upper: ir.Value, step: ir.Value) -> ir.Value:
        b = self.b
        span = b.add(b.sub(upper, lower), b.sub(step, I64(1)))
        count = b.sdiv(span, step)
        return b.select(b.icmp_signed("<", count, I64(0)), I64(0), count)


# -- func ---------------------------------------------------------------------------------------
@_handles("func.return")
def _return(self: _FunctionEmitter, op: Operation) -> None:
    self.fence_streamed_stores()
    if op.operands:
        self.b.ret(self.get(op.operands[0]))
    else:
        self.b.ret_void()


@_handles("func.call")
def _call(self: _FunctionEmitter, op: Operation) -> None:
    assert isinstance(op, func.CallOp)
    name = op.callee.root_reference.data
    callee = self.m.callee(name)
    if callee is None:
        raise ValueError(f"codegen: func.call to undefined function @{name} in '{self.fn.name}'")
    result = self.b.call(callee, [self.get(a) for a in op.arguments])
    if op.results:
        self.set(op, result)


@_handles("llvm.call_intrinsic")
def _call_intrinsic(self: _FunctionEmitter, op: Operation) -> None:
    """A target intrinsic by its full LLVM name (e.g. `llvm.x86.avx512.vpdpbusd.512`),
    declared with the op's operand and result types: the one way kernels reach
    instructions that LLVM's generic IR does not express (the int8 dot products)."""
    args = [self.get(v) for v in op.operands]
    ret = llvm_type(op.results[0].type) if op.results else VOID
    fn = self.m.declare(op.properties["intrin"].data, ret, [a.type for a in args])  # type: ignore[attr-defined]
    result = self.b.call(fn, args)
    if op.results:
        self.set(op, result)


# -- arith --------------------------------------------------------------------------------------
@_handles("arith.constant")
def _constant(self: _FunctionEmitter, op: Operation) -> None:
    value = op.properties["value"]
    ty = llvm_type(op.results[0].type)
    if isinstance(value, IntegerAttr | FloatAttr):
        self.set(op, _const(ty, value.value.data))
        return
    if isinstance(value, DenseIntOrFPElementsAttr) and isinstance(ty, ir.VectorType):
        values = value.get_values()
        if len(values) == 1:
            self.set(op, _const(ty, values[0]))
        else:
            self.set(op, ir.Constant(ty, [_const(ty.element, v) for v in values]))
        return
    raise NotImplementedError(f"codegen: arith.constant of {value} is not supported")


@_handles(*_INT_BINOPS)
def _int_binop(self: _FunctionEmitter, op: Operation) -> None:
    method = getattr(self.b, _INT_BINOPS[op.name])
    self.set(op, method(self.get(op.operands[0]), self.get(op.operands[1])))


@_handles(*_FLOAT_BINOPS)
def _float_binop(self: _FunctionEmitter, op: Operation) -> None:
    method = getattr(self.b, _FLOAT_BINOPS[op.name])
    self.set(op, method(self.get(op.operands[0]), self.get(op.operands[1]), flags=FAST))


@_handles(*_INTRINSIC_BINOPS)
def _intrinsic_binop(self: _FunctionEmitter, op: Operation) -> None:
    args = [self.get(v) for v in op.operands]
    self.set(op, self.call_intrinsic(_INTRINSIC_BINOPS[op.name], args))


@_handles("arith.negf")
def _negf(self: _FunctionEmitter, op: Operation) -> None:
    self.set(op, self.b.fneg(self.get(op.operands[0]), flags=FAST))


@_handles("arith.cmpi")
def _cmpi(self: _FunctionEmitter, op: Operation) -> None:
    predicate = _CMPI[op.properties["predicate"].value.data]
    lhs, rhs = self.get(op.operands[0]), self.get(op.operands[1])
    if predicate in ("eq", "ne"):
        result = self.b.icmp_signed(_CMPI_LLVMLITE[predicate], lhs, rhs)
    elif predicate[0] == "s":
        result = self.b.icmp_signed(_CMPI_LLVMLITE[predicate[1:]], lhs, rhs)
    else:
        result = self.b.icmp_unsigned(_CMPI_LLVMLITE[predicate[1:]], lhs, rhs)
    self.set(op, result)


@_handles("arith.cmpf")
def _cmpf(self: _FunctionEmitter, op: Operation) -> None:
    predicate = _CMPF[op.properties["predicate"].value.data]
    lhs, rhs = self.get(op.operands[0]), self.get(op.operands[1])
    if predicate in ("false", "true"):
        ty = llvm_type(op.results[0].type)
        self.set(op, _const(ty, predicate == "true"))
        return
    self.set(op, self.b.fcmp_ordered(predicate, lhs, rhs, flags=FAST))


@_handles("arith.select")
def _select(self: _FunctionEmitter, op: Operation) -> None:
    cond, lhs, rhs = (self.get(v) for v in op.operands)
    self.set(op, self.b.select(cond, lhs, rhs))


@_handles("arith.index_cast")
def _index_cast(self: _FunctionEmitter, op: Operation) -> None:
    value = self.get(op.operands[0])
    ty = llvm_type(op.results[0].type)
    source, dest = _element(value.type).width, _element(ty).width
    if source == dest:
        self.set(op, value)
    elif source < dest:
        self.set(op, self.b.sext(value, ty))
    else:
        self.set(op, self.b.trunc(value, ty))


def _with_element(ty: ir.Type, element: ir.Type) -> ir.Type:
    return ir.VectorType(element, ty.count) if isinstance(ty, ir.VectorType) else element


def _to_bfloat(self: _FunctionEmitter, value: ir.Value, ty: ir.Type) -> ir.Value:
    """f32/f64 -> bf16 rounding to nearest even, in integer ops: LLVM would call
    __truncsfbf2, which the JIT cannot resolve."""
    b = self.b
    if not isinstance(_element(value.type), ir.FloatType):
        value = b.fptrunc(value, _with_element(value.type, ir.FloatType()))
    i32 = _with_element(value.type, I32)
    bits = b.bitcast(value, i32)
    lsb = b.and_(b.lshr(bits, _const(i32, 16)), _const(i32, 1))
    rounded = b.lshr(b.add(bits, b.add(lsb, _const(i32, 0x7FFF))), _const(i32, 16))
    nan = b.fcmp_unordered("uno", value, value)
    rounded = b.select(nan, _const(i32, 0x7FC0), rounded)
    return b.bitcast(b.trunc(rounded, _with_element(i32, ir.IntType(16))), ty)


def _from_bfloat(self: _FunctionEmitter, value: ir.Value, ty: ir.Type) -> ir.Value:
    b = self.b
    i32 = _with_element(value.type, I32)
    bits = b.zext(b.bitcast(value, _with_element(value.type, ir.IntType(16))), i32)
    wide = b.bitcast(b.shl(bits, _const(i32, 16)), _with_element(value.type, ir.FloatType()))
    return wide if wide.type == ty else b.fpext(wide, ty)


@_handles(*_CASTS)
def _cast(self: _FunctionEmitter, op: Operation) -> None:
    value = self.get(op.operands[0])
    ty = llvm_type(op.results[0].type)
    if op.name == "arith.truncf" and isinstance(_element(ty), BFloatType):
        self.set(op, _to_bfloat(self, value, ty))
    elif op.name == "arith.extf" and isinstance(_element(value.type), BFloatType):
        self.set(op, _from_bfloat(self, value, ty))
    elif op.name == "arith.truncf" and isinstance(_element(value.type), ir.DoubleType):
        # f64 -> f16 through f32: LLVM would call __truncdfhf2, which the JIT cannot resolve
        # (the rounding twice can differ from once in the last f16 bit on exact ties).
        narrow = self.b.fptrunc(value, _with_element(value.type, ir.FloatType()))
        self.set(op, narrow if narrow.type == ty else self.b.fptrunc(narrow, ty))
    else:
        self.set(op, getattr(self.b, _CASTS[op.name])(value, ty))


# -- math ---------------------------------------------------------------------------------------
def _scalarized(
    self: _FunctionEmitter, value: ir.Value, fn: Callable[[ir.Value], ir.Value]
) -> ir.Value:
    if not isinstance(value.type, ir.VectorType):
        return fn(value)
    result: ir.Value = ir.Constant(value.type, ir.Undefined)
    for lane in range(value.type.count):
        element = self.b.extract_element(value, I32(lane))
        result = self.b.insert_element(result, fn(element), I32(lane))
    return result


def _unary_math(self: _FunctionEmitter, name: str, value: ir.Value) -> ir.Value:
    element = _element(value.type)
    if isinstance(element, ir.HalfType | BFloatType):
        # No half-precision libm or approximations: compute in f32 and round once.
        wide_ty: ir.Type = ir.FloatType()
        if isinstance(value.type, ir.VectorType):
            wide_ty = ir.VectorType(wide_ty, value.type.count)
        wide = _unary_math(self, name, self.b.fpext(value, wide_ty))
        return self.b.fptrunc(wide, value.type)
    b = self.b
    if name in _MATH_APPROX and isinstance(element, ir.FloatType):
        fn = mathlib.approximation(self.m.module, _MATH_APPROX[name], value.type)
        return b.call(fn, [value])
    if name == "math.rsqrt":
        root = self.call_intrinsic("llvm.sqrt", [value])
        return b.fdiv(_const(value.type, 1.0), root, flags=FAST)
    if name in _MATH_INTRINSICS:
        return self.call_intrinsic(_MATH_INTRINSICS[name], [value])
    if name in _MATH_LIBM:
        suffix = "f" if isinstance(element, ir.FloatType) else ""
        libm = self.m.declare(_MATH_LIBM[name] + suffix, element, [element])
        return _scalarized(self, value, lambda x: b.call(libm, [x]))
    raise NotImplementedError(f"codegen: unsupported op '{name}' in function '{self.fn.name}'")


@_handles(*_MATH_INTRINSICS, *_MATH_APPROX, *_MATH_LIBM, "math.rsqrt")
def _math_unary(self: _FunctionEmitter, op: Operation) -> None:
    value = self.get(op.operands[0])
    if not _is_float(value.type):
        raise NotImplementedError(f"codegen: '{op.name}' on {op.operands[0].type}")
    self.set(op, _unary_math(self, op.name, value))


@_handles("math.fma", "vector.fma")
def _fma(self: _FunctionEmitter, op: Operation) -> None:
    self.set(op, self.call_intrinsic("llvm.fma", [self.get(v) for v in op.operands]))


# -- scf ----------------------------------------------------------------------------------------
@_handles("scf.for")
def _for(self: _FunctionEmitter, op: Operation) -> None:
    assert isinstance(op, scf.ForOp)
    block = op.body.block

    def body(iv: ir.Value, carried: list[ir.Value]) -> list[ir.Value]:
        return self.emit_region_block(block, [iv, *carried])

    results = self.emit_loop(
        self.get(op.lb),
        self.get(op.ub),
        self.get(op.step),
        [self.get(v) for v in op.iter_args],
        body,
    )
    self.set(op, *results)


@_handles("scf.if")
def _if(self: _FunctionEmitter, op: Operation) -> None:
    assert isinstance(op, scf.IfOp)
    b = self.b
    then_block = self.fn.append_basic_block("if.then")
    has_else = bool(op.false_region.blocks)
    else_block = self.fn.append_basic_block("if.else") if has_else else None
    merge = self.fn.append_basic_block("if.end")
    b.cbranch(self.get(op.cond), then_block, else_block or merge)
    incoming: list[tuple[list[ir.Value], ir.Block]] = []
    for region, start in ((op.true_region, then_block), (op.false_region, else_block)):
        if start is None:
            continue
        b.position_at_end(start)
        yielded = self.emit_region_block(region.blocks[0], [])
        incoming.append((yielded, b.block))
        b.branch(merge)
    b.position_at_end(merge)
    results = []
    for i, result in enumerate(op.results):
        phi = b.phi(llvm_type(result.type))
        for yielded, pred in incoming:
            phi.add_incoming(yielded[i], pred)
        results.append(phi)
    self.set(op, *results)


@_handles("scf.while")
def _while(self: _FunctionEmitter, op: Operation) -> None:
    """`before` computes the condition (scf.condition) and the values handed to `after`,
    whose scf.yield feeds `before` again; the results are those of the last scf.condition."""
    assert isinstance(op, scf.WhileOp)
    b = self.b
    preheader = b.block
    header = self.fn.append_basic_block("while.before")
    body_block = self.fn.append_basic_block("while.after")
    exit_block = self.fn.append_basic_block("while.exit")
    b.branch(header)
    b.position_at_end(header)
    phis = []
    for value in op.arguments:
        phi = b.phi(llvm_type(value.type))
        phi.add_incoming(self.get(value), preheader)
        phis.append(phi)
    before = op.before_region.block
    for arg, phi in zip(before.args, phis, strict=True):
        self.values[arg] = phi
    condition = before.last_op
    assert isinstance(condition, scf.ConditionOp)
    for inner in before.ops:
        if inner is not condition:
            self.emit_op(inner)
    forwarded = [self.get(v) for v in condition.args]
    b.cbranch(self.get(condition.condition), body_block, exit_block)
    b.position_at_end(body_block)
    yielded = self.emit_region_block(op.after_region.block, forwarded)
    for phi, value in zip(phis, yielded, strict=True):
        phi.add_incoming(value, b.block)
    b.branch(header)
    b.position_at_end(exit_block)
    self.set(op, *forwarded)


# Chunks per thread of a parallel region's iterations: enough that a slowed thread's share
# is taken over, few enough that the claims (one atomic add each) cost nothing.
CHUNKS_PER_THREAD = 4
# Regions of at most this many iterations per thread claim them one at a time: their units
# are coarse (a conv's band or panel, of unequal cost at tails and cold caches), and the
# thread that is free first takes the next one. (ResNet-50's 1x1 convs at 28x28 have 25
# panels, the last one half wide: one at a time they split 12.5/12.5, in 8 chunks 13/11.5.)
SINGLE_CLAIMS_PER_THREAD = 16


def claim_ranges(total: int, threads: int) -> list[tuple[int, int]]:
    """The chunks [begin, end) the threads of a region claim in turn, in this order: one
    chunk alone; one per iteration up to SINGLE_CLAIMS_PER_THREAD per thread; else threads x
    CHUNKS_PER_THREAD chunks whose sizes differ by at most one, the larger ones first. Equal
    units then split within one unit of even whatever the count (chunks of ceil(total /
    chunks) left ResNet-50's 14 units of a 3x3 64->64 conv as 7 chunks, 4 against 3 on 2
    threads; alternating sizes would line up with alternating threads). Mirrors what
    `_outline_parallel` emits."""
    if threads <= 1:
        chunks = 1
    elif total <= threads * SINGLE_CLAIMS_PER_THREAD:
        chunks = max(total, 1)
    else:
        chunks = threads * CHUNKS_PER_THREAD
    size, larger = divmod(total, chunks)
    starts = [t * size + min(t, larger) for t in range(chunks + 1)]
    return list(zip(starts[:-1], starts[1:], strict=True))


@_handles("scf.parallel")
def _parallel(self: _FunctionEmitter, op: Operation) -> None:
    assert isinstance(op, scf.ParallelOp)
    if op.initVals:
        raise NotImplementedError(
            f"codegen: scf.parallel with reductions in '{self.fn.name}' is not supported"
        )
    if self.in_parallel:
        _serial_parallel(self, op)
    else:
        _outline_parallel(self, op)


def _serial_parallel(self: _FunctionEmitter, op: scf.ParallelOp) -> None:
    """A parallel loop nested in a parallel region: plain nested loops."""
    lowers = [self.get(v) for v in op.lowerBound]
    uppers = [self.get(v) for v in op.upperBound]
    steps = [self.get(v) for v in op.step]
    block = op.body.block

    def nest(depth: int, ivs: list[ir.Value]) -> None:
        if depth == len(lowers):
            self.emit_region_block(block, ivs)
            return

        def body(iv: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
            nest(depth + 1, [*ivs, iv])
            return []

        self.emit_loop(lowers[depth], uppers[depth], steps[depth], [], body, name="par")

    nest(0, [])


def _captured_values(op: Operation) -> list[SSAValue]:
    """Values used inside `op`'s regions but defined outside of it, in first-use order."""
    inner_ops = [inner for inner in op.walk() if inner is not op]
    # Blocks inside `op`: a value is captured unless its defining block is one of them.
    inside = {id(block) for region in op.regions for block in region.blocks}
    inside.update(id(block) for inner in inner_ops for r in inner.regions for block in r.blocks)
    seen: dict[SSAValue, None] = {}
    for inner in inner_ops:
        for operand in inner.operands:
            if operand in seen:
                continue
            if isinstance(operand, OpResult):
                block = operand.op.parent_block()
            else:
                assert isinstance(operand, BlockArgument)
                block = operand.block
            if block is None or id(block) not in inside:
                seen[operand] = None
    return list(seen)


def _outline_parallel(self: _FunctionEmitter, op: scf.ParallelOp) -> None:
    m, b = self.m, self.b
    bounds = [*op.lowerBound, *op.upperBound, *op.step]
    used = list(dict.fromkeys([*bounds, *_captured_values(op)]))
    # Constants are not passed through the context struct: the outlined body sees them as
    # immediates, so LLVM can still fold and unroll with them.
    constants = {v: self.get(v) for v in used if isinstance(self.get(v), ir.Constant)}
    captures = [v for v in used if v not in constants]
    # Run-time sizes and strides of the captured memrefs with `?` dims travel along.
    shaped = [v for v in captures if v in self.layouts]
    extents = list({id(x): x for v in shaped for x in self.layouts[v].runtime_values()}.values())
    fields = [*(llvm_type(v.type) for v in captures), *(x.type for x in extents)]
    # The last field is the shared counter of the next unclaimed chunk (claim_ranges).
    ctx_type = ir.LiteralStructType([*fields, I64])

    outlined = ir.Function(
        m.module, ir.FunctionType(VOID, [PTR]), m.outlined_name(self.fn.name.split("__")[0])
    )
    outlined.linkage = "internal"
    outlined.attributes.add("nounwind")
    inner = _FunctionEmitter(m, outlined, in_parallel=True)
    inner.values.update(constants)
    ib = inner.b
    for i, value in enumerate(captures):
        field = ib.gep(outlined.args[0], [I32(0), I32(i)], source_etype=ctx_type)
        inner.values[value] = ib.load(field, typ=ctx_type.elements[i])
    inside: dict[int, ir.Value] = {}
    for i, extent in enumerate(extents, start=len(captures)):
        field = ib.gep(outlined.args[0], [I32(0), I32(i)], source_etype=ctx_type)
        inside[id(extent)] = ib.load(field, typ=ctx_type.elements[i])
    for value in shaped:
        inner.layouts[value] = self.layouts[value].rebound(inside)
    rank = len(op.lowerBound)
    lowers = [inner.get(v) for v in op.lowerBound]
    steps = [inner.get(v) for v in op.step]
    counts = [
        inner.trip_count(lo, inner.get(up), st)
        for lo, up, st in zip(lowers, op.upperBound, steps, strict=True)
    ]
    total = counts[0]
    for count in counts[1:]:
        total = ib.mul(total, count, flags=["nsw"])
    # Dynamic chunks (claim_ranges): each thread claims the next chunk number from the
    # shared counter until none are left, so a thread that is descheduled (a shared
    # machine) or given costlier units (edge tiles, tails) does not hold the others at the
    # barrier. Consecutive iterations stay together in a chunk (units are ordered for cache
    # reuse).
    threads = ib.sext(ib.call(m.declare("omp_get_num_threads", I32, []), []), I64)
    singles = ib.icmp_signed(
        "<=", total, ib.mul(threads, I64(SINGLE_CLAIMS_PER_THREAD), flags=["nsw"])
    )
    chunks = ib.select(singles, total, ib.mul(threads, I64(CHUNKS_PER_THREAD), flags=["nsw"]))
    chunks = ib.select(ib.icmp_signed(">", threads, I64(1)), chunks, I64(1))
    chunks = ib.select(ib.icmp_signed(">", chunks, I64(1)), chunks, I64(1))
    size = ib.udiv(total, chunks)
    larger = ib.urem(total, chunks)
    counter = ib.gep(outlined.args[0], [I32(0), I32(len(fields))], source_etype=ctx_type)
    claim = outlined.append_basic_block("claim")
    work = outlined.append_basic_block("work")
    done = outlined.append_basic_block("done")
    ib.branch(claim)
    ib.position_at_end(claim)
    ticket = ib.atomic_rmw("add", counter, I64(1), "monotonic")
    ib.cbranch(ib.icmp_signed("<", ticket, chunks), work, done)
    ib.position_at_end(work)
    # Chunk t starts at t * size + min(t, larger): the first `larger` chunks hold size + 1.
    shorter = ib.select(ib.icmp_unsigned("<", ticket, larger), ticket, larger)
    begin = ib.add(ib.mul(ticket, size, flags=["nsw"]), shorter, flags=["nsw"])
    one_more = ib.zext(ib.icmp_unsigned("<", ticket, larger), I64)
    end = ib.add(begin, ib.add(size, one_more, flags=["nsw"]), flags=["nsw"])

    def body(flat: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        ivs: list[ir.Value] = [flat] * rank
        rest = flat
        for d in reversed(range(rank)):
            if d > 0:
                ivs[d] = ib.urem(rest, counts[d])
                rest = ib.udiv(rest, counts[d])
            else:
                ivs[d] = rest
        ivs = [
            ib.add(lo, ib.mul(iv, st, flags=["nsw"]), flags=["nsw"])
            for lo, iv, st in zip(lowers, ivs, steps, strict=True)
        ]
        inner.emit_region_block(op.body.block, ivs)
        return []

    inner.emit_loop(begin, end, I64(1), [], body, name="chunk")
    ib.branch(claim)
    ib.position_at_end(done)
    inner.fence_streamed_stores()
    ib.ret_void()
    inner.finish()

    # Caller: pack the captures, then run the outlined body on the team (or directly).
    ctx = self.alloca(ctx_type, 8, name="par.ctx")
    for i, value in enumerate(captures):
        b.store(self.get(value), b.gep(ctx, [I32(0), I32(i)], source_etype=ctx_type))
    for i, extent in enumerate(extents, start=len(captures)):
        b.store(extent, b.gep(ctx, [I32(0), I32(i)], source_etype=ctx_type))
    b.store(I64(0), b.gep(ctx, [I32(0), I32(len(fields))], source_etype=ctx_type))
    total = None
    for lo, up, st in zip(op.lowerBound, op.upperBound, op.step, strict=True):
        count = self.trip_count(self.get(lo), self.get(up), self.get(st))
        total = count if total is None else b.mul(total, count, flags=["nsw"])
    assert total is not None
    requested = b.load(m.num_threads, typ=I32)
    total32 = b.trunc(b.select(b.icmp_signed("<", total, I64(1 << 30)), total, I64(1 << 30)), I32)
    nthreads = b.select(b.icmp_signed("<", requested, total32), requested, total32)
    with b.if_else(b.icmp_signed(">", nthreads, I32(1))) as (threads, alone):
        with threads:
            # A job for the run's thread team, or GOMP_parallel without one (codegen/team.py).
            b.call(m.team_run, [outlined, ctx, nthreads])
        with alone:
            b.call(outlined, [ctx])


@_handles("scf.yield", "scf.reduce")
def _misplaced_terminator(self: _FunctionEmitter, op: Operation) -> None:
    raise NotImplementedError(f"codegen: '{op.name}' outside of its scf parent in '{self.fn.name}'")


# -- memref -------------------------------------------------------------------------------------
def _alignment(element: ir.Type) -> int:
    return _byte_size(element)


@_handles("memref.load")
def _memref_load(self: _FunctionEmitter, op: Operation) -> None:
    assert isinstance(op, memref.LoadOp)
    ty = llvm_type(op.res.type)
    ptr = self.element_ptr(op, op.memref, op.indices)
    self.set(op, self.b.load(ptr, typ=ty, align=_alignment(ty)))


@_handles("memref.store")
def _memref_store(self: _FunctionEmitter, op: Operation) -> None:
    assert isinstance(op, memref.StoreOp)
    value = self.get(op.value)
    ptr = self.element_ptr(op, op.memref, op.indices)
    self.b.store(value, ptr, align=_alignment(value.type))


# MLIR's arith::AtomicRMWKind values (the `kind` of memref.atomic_rmw) that have an integer
# atomicrmw in LLVM.
_ATOMIC_RMW = {1: "add", 2: "xchg", 4: "max", 5: "umax", 7: "min", 8: "umin", 11: "or", 12: "and"}


@_handles("memref.atomic_rmw")
def _memref_atomic_rmw(self: _FunctionEmitter, op: Operation) -> None:
    """An integer read-modify-write of one element, sequentially consistent; yields the old
    value (kernels use it to record an error once when several threads fail together)."""
    assert isinstance(op, memref.AtomicRMWOp)
    kind = op.kind.value.data
    if kind not in _ATOMIC_RMW or not isinstance(op.value.type, IntegerType):
        raise NotImplementedError(
            f"codegen: memref.atomic_rmw kind {kind} on {op.value.type} in '{self.fn.name}'"
        )
    ptr = self.element_ptr(op, op.memref, op.indices)
    self.set(op, self.b.atomic_rmw(_ATOMIC_RMW[kind], ptr, self.get(op.value), "seq_cst"))


def _sizes_from(
    self: _FunctionEmitter, static: Sequence[int], dynamic: Sequence[SSAValue]
) -> list[Extent]:
    """Static sizes with each `?` (DYNAMIC_INDEX or any negative) taken from the next of
    `dynamic`, the operands that give them."""
    given = iter(dynamic)
    sizes: list[Extent] = [n if n >= 0 else self.get(next(given)) for n in static]
    if next(given, None) is not None:
        raise NotImplementedError(f"codegen: more size operands than `?` dims in '{self.fn.name}'")
    return sizes


def _element_count(self: _FunctionEmitter, op: Operation) -> tuple[ir.Type, int | ir.Value]:
    """Element type and count of an alloc/alloca result (an i64 value for `?` dims)."""
    t = op.results[0].type
    assert isinstance(t, MemRefType)
    sizes = _sizes_from(self, t.get_shape(), op.operands)
    self.define(op.results[0], sizes)
    count: Extent = 1
    for size in sizes:
        count = self.multiply(count, size)
    assert count is not None
    return llvm_type(t.get_element_type()), count


@_handles("memref.alloca")
def _alloca(self: _FunctionEmitter, op: Operation) -> None:
    element, count = _element_count(self, op)
    if not isinstance(count, int):
        raise NotImplementedError(f"codegen: memref.alloca with dynamic sizes in '{self.fn.name}'")
    # Hoisted to the entry block: one stack slot per function (per thread when outlined),
    # which LLVM can promote and never re-grows inside loops.
    self.set(op, self.alloca(ir.ArrayType(element, count), max(64, _alignment(element))))


@_handles("memref.alloc")
def _alloc(self: _FunctionEmitter, op: Operation) -> None:
    element, count = _element_count(self, op)
    aligned_alloc = self.m.declare("aligned_alloc", PTR, [I64, I64])
    if isinstance(count, int):
        size: ir.Value = I64(-(-count * _byte_size(element) // 64) * 64 or 64)
    else:  # a multiple of 64 (aligned_alloc wants one), at least 64
        b = self.b
        raw = b.mul(count, I64(_byte_size(element)), flags=["nsw"])
        size = b.and_(b.add(raw, I64(63), flags=["nsw"]), I64(-64))
        size = b.select(b.icmp_signed("<", size, I64(64)), I64(64), size)
    self.set(op, self.b.call(aligned_alloc, [I64(64), size]))


@_handles("memref.dealloc")
def _dealloc(self: _FunctionEmitter, op: Operation) -> None:
    self.b.call(self.m.declare("free", VOID, [PTR]), [self.get(op.operands[0])])


@_handles("memref.dim")
def _dim(self: _FunctionEmitter, op: Operation) -> None:
    """The size of one dim of a memref: a constant, or the value its extent argument or its
    defining op's size operand gave (dialects/extents.py); no code."""
    assert isinstance(op, memref.DimOp)
    index = self.get(op.index)
    if not isinstance(index, ir.Constant):
        raise NotImplementedError(f"codegen: memref.dim at a run-time dim in '{self.fn.name}'")
    self.set(op, self.size(op, op.source, int(index.constant)))


@_handles("memref.view")
def _view(self: _FunctionEmitter, op: Operation) -> None:
    assert isinstance(op, memref.ViewOp)
    source_type = op.source.type
    assert isinstance(source_type, MemRefType)
    if not (
        isinstance(source_type.get_element_type(), IntegerType)
        and _byte_size(llvm_type(source_type.get_element_type())) == 1
    ):
        raise NotImplementedError(
            f"codegen: memref.view source must be memref<Nxi8>, got {source_type}"
        )
    result_type = op.result.type
    assert isinstance(result_type, MemRefType)
    self.define(op.result, _sizes_from(self, result_type.get_shape(), op.sizes))
    shift = self.get(op.byte_shift)
    self.set(op, self.offset_ptr(self.get(op.source), ir.IntType(8), shift))


@_handles("memref.reinterpret_cast")
def _reinterpret_cast(self: _FunctionEmitter, op: Operation) -> None:
    assert isinstance(op, memref.ReinterpretCastOp)
    source_type = op.source.type
    assert isinstance(source_type, MemRefType)
    if op.sizes or op.strides:
        self.define(
            op.result,
            _sizes_from(self, op.static_sizes.get_values(), op.sizes),
            _sizes_from(self, op.static_strides.get_values(), op.strides),
        )
    element = llvm_type(source_type.get_element_type())
    offsets = op.static_offsets.get_values()
    # The new offset is relative to the base of the allocation, our pointer to the source's
    # first element already includes the source's own offset.
    if offsets and offsets[0] != _DYNAMIC_INDEX:
        self.set(
            op,
            self.offset_ptr(self.get(op.source), element, offsets[0] - _layout_offset(source_type)),
        )
        return
    offset = self.get(op.offsets[0])
    delta = self.b.sub(offset, I64(_layout_offset(source_type)))
    self.set(op, self.offset_ptr(self.get(op.source), element, delta))


@_handles("memref.subview")
def _subview(self: _FunctionEmitter, op: Operation) -> None:
    assert isinstance(op, memref.SubviewOp)
    source_type, result_type = op.source.type, op.result.type
    assert isinstance(source_type, MemRefType) and isinstance(result_type, MemRefType)
    strides = self.strides(op, op.source)
    offsets = _sizes_from(self, op.static_offsets.get_values(), op.offsets)
    element = llvm_type(source_type.get_element_type())
    if all(isinstance(x, int) for x in (*offsets, *strides)):
        offset = sum(o * s for o, s in zip(offsets, strides, strict=True))  # type: ignore[operator]
        self.set(op, self.offset_ptr(self.get(op.source), element, offset))
    else:
        linear = self.linearize([I64(o) if isinstance(o, int) else o for o in offsets], strides)
        self.set(op, self.offset_ptr(self.get(op.source), element, linear or 0))
    if _type_strides(result_type) is not None and not dynamic_dims(result_type):
        return
    if len(result_type.get_shape()) != len(source_type.get_shape()):
        raise NotImplementedError(
            f"codegen: rank-reducing memref.subview to {result_type} in '{self.fn.name}'"
        )
    steps = _sizes_from(self, op.static_strides.get_values(), op.strides)
    self.define(
        op.result,
        _sizes_from(self, op.static_sizes.get_values(), op.sizes),
        [self.multiply(s, k) for s, k in zip(strides, steps, strict=True)],
    )


@_handles("memref.cast")
def _cast(self: _FunctionEmitter, op: Operation) -> None:
    """Same pointer; a cast to `?` dims keeps the source's sizes and strides."""
    source, result = op.operands[0], op.results[0]
    self.set(op, self.get(source))
    assert isinstance(result.type, MemRefType)
    if dynamic_dims(result.type) or _type_strides(result.type) is None:
        known = self.layout(source)
        shape = result.type.get_shape()  # type: ignore[attr-defined]
        sizes = [n if n >= 0 else known.sizes[d] for d, n in enumerate(shape)]
        self.define(result, sizes, known.strides)


@_handles("memref.collapse_shape", "memref.expand_shape")
def _same_pointer(self: _FunctionEmitter, op: Operation) -> None:
    result_type = op.results[0].type
    assert isinstance(result_type, MemRefType)
    if dynamic_dims(result_type) or _type_strides(result_type) is None:
        raise NotImplementedError(
            f"codegen: '{op.name}' to {result_type} (`?` dims) in '{self.fn.name}'"
        )
    self.set(op, self.get(op.operands[0]))


# -- vector -------------------------------------------------------------------------------------
@_handles("vector.load")
def _vector_load(self: _FunctionEmitter, op: Operation) -> None:
    assert isinstance(op, vector.LoadOp)
    ty = llvm_type(op.result.type)
    ptr = self.element_ptr(op, op.base, op.indices)
    if _element(ty) == I1:  # bools are bytes in memory; a <N x i1> load would read packed bits
        wide = ir.VectorType(I8, ty.count)
        loaded = self.b.load(ptr, typ=wide, align=1)
        self.set(op, self.b.icmp_unsigned("!=", loaded, ir.Constant(wide, None)))
        return
    # Element alignment only: buffers (numpy arrays, arena slices) need not be vector-aligned.
    self.set(op, self.b.load(ptr, typ=ty, align=_alignment(_element(ty))))


@_handles("vector.store")
def _vector_store(self: _FunctionEmitter, op: Operation) -> None:
    assert isinstance(op, vector.StoreOp)
    value = self.get(op.vector)
    ptr = self.element_ptr(op, op.base, op.indices)
    if _element(value.type) == I1:  # one byte per bool, as scalar i1 stores and numpy have it
        value = self.b.zext(value, ir.VectorType(I8, value.type.count))
    if not op.nontemporal.value.data:
        self.b.store(value, ptr, align=_alignment(_element(value.type)))
        return
    # Non-temporal (streaming) store: no read-for-ownership of the line. The instruction
    # needs a vector-aligned address and buffers need not be aligned, so it is taken only
    # when the address is (a plain store otherwise).
    width = value.type.count * _byte_size(_element(value.type))
    address = self.b.ptrtoint(ptr, I64)
    aligned = self.b.icmp_unsigned("==", self.b.and_(address, I64(width - 1)), I64(0))
    with self.b.if_else(aligned) as (streamed, plain):
        with streamed:
            store = self.b.store(value, ptr, align=width)
            store.set_metadata("nontemporal", self.m.module.add_metadata([I32(1)]))
        with plain:
            self.b.store(value, ptr, align=_alignment(_element(value.type)))
    self.streamed = True


@_handles("vector.maskedload")
def _masked_load(self: _FunctionEmitter, op: Operation) -> None:
    assert isinstance(op, vector.MaskedLoadOp)
    ty = llvm_type(op.result.type)
    ptr = self.element_ptr(op, op.base, op.indices)
    mask, passthru = self.get(op.mask), self.get(op.pass_thru)
    bools = _element(ty) == I1  # bools are bytes in memory, as in vector.load
    if bools:
        ty = ir.VectorType(I8, ty.count)
        passthru = self.b.zext(passthru, ty)
    fn = self.m.intrinsic("llvm.masked.load", ty, [PTR, I32, mask.type, ty], [ty, PTR])
    loaded = self.b.call(fn, [ptr, I32(_alignment(_element(ty))), mask, passthru])
    self.set(op, self.b.icmp_unsigned("!=", loaded, ir.Constant(ty, None)) if bools else loaded)


@_handles("vector.maskedstore")
def _masked_store(self: _FunctionEmitter, op: Operation) -> None:
    """A masked store, except that a mask of exactly lane 0 stores lane 0 as a scalar.

    LLVM 22 (x86 AVX-512) miscompiles llvm.masked.store with a constant one-lane mask of a
    truncated vector (`trunc <16 x i32> to <16 x i8>`, also i64->i32/i16/i8, i16->i8): it
    becomes a scalar store of the untruncated lane (a 4-byte `movl` for one byte), clobbering
    the bytes after it. Masks of vector.create_mask whose bound is 1 (known here or at run
    time: a branch, folded away when LLVM learns the bound) therefore never reach it.
    """
    assert isinstance(op, vector.MaskedStoreOp)
    value = self.get(op.value_to_store)
    ptr = self.element_ptr(op, op.base, op.indices)
    if _element(value.type) == I1:  # one byte per bool, as in vector.store
        value = self.b.zext(value, ir.VectorType(I8, value.type.count))
    ty = value.type
    align = _alignment(_element(ty))

    def store_masked() -> None:
        fn = self.m.intrinsic("llvm.masked.store", VOID, [ty, PTR, I32, mask.type], [ty, PTR])
        self.b.call(fn, [value, ptr, I32(align), mask])

    def store_lane_zero() -> None:
        self.b.store(self.b.extract_element(value, I32(0)), ptr, align=align)

    mask = self.get(op.mask)
    creator = op.mask.owner
    if not isinstance(creator, vector.CreateMaskOp) or len(creator.operands) != 1:
        store_masked()
        return
    bound = self.get(creator.operands[0])
    if not isinstance(bound, ir.Constant):
        with self.b.if_else(self.b.icmp_signed("==", bound, ir.Constant(bound.type, 1))) as (
            one_lane,
            more_lanes,
        ):
            with one_lane:
                store_lane_zero()
            with more_lanes:
                store_masked()
        return
    lanes = int(bound.constant)
    if lanes >= ty.count:
        self.b.store(value, ptr, align=align)
    elif lanes == 1:
        store_lane_zero()
    elif lanes > 1:
        store_masked()


@_handles("vector.create_mask")
def _create_mask(self: _FunctionEmitter, op: Operation) -> None:
    ty = llvm_type(op.results[0].type)
    if len(op.operands) != 1:
        raise NotImplementedError("codegen: vector.create_mask is supported on 1-D vectors only")
    lanes = ir.Constant(ir.VectorType(I64, ty.count), [I64(i) for i in range(ty.count)])
    bound = _broadcast(self, self.get(op.operands[0]), ir.VectorType(I64, ty.count))
    self.set(op, self.b.icmp_signed("<", lanes, bound))


def _broadcast(self: _FunctionEmitter, scalar: ir.Value, ty: ir.VectorType) -> ir.Value:
    if isinstance(scalar, ir.Constant):
        return ir.Constant(ty, [scalar] * ty.count)
    undef = ir.Constant(ty, ir.Undefined)
    first = self.b.insert_element(undef, scalar, I32(0))
    zeros = ir.Constant(ir.VectorType(I32, ty.count), [I32(0)] * ty.count)
    return self.b.shuffle_vector(first, undef, zeros)


@_handles("vector.broadcast")
def _vector_broadcast(self: _FunctionEmitter, op: Operation) -> None:
    source = self.get(op.operands[0])
    ty = llvm_type(op.results[0].type)
    self.set(op, source if source.type == ty else _broadcast(self, source, ty))


def _position(self: _FunctionEmitter, op: Operation) -> ir.Value | None:
    positions = op.properties["static_position"]
    assert isinstance(positions, DenseArrayBase)
    values = positions.get_values()
    if not values:
        return None
    if len(values) != 1:
        raise NotImplementedError(f"codegen: '{op.name}' on multi-dimensional vectors")
    if values[0] == _DYNAMIC_INDEX:
        return self.get(op.operands[-1])
    return I64(values[0])


@_handles("vector.extract")
def _vector_extract(self: _FunctionEmitter, op: Operation) -> None:
    source = self.get(op.operands[0])
    position = _position(self, op)
    self.set(op, source if position is None else self.b.extract_element(source, position))


@_handles("vector.insert")
def _vector_insert(self: _FunctionEmitter, op: Operation) -> None:
    value, dest = self.get(op.operands[0]), self.get(op.operands[1])
    position = _position(self, op)
    self.set(op, value if position is None else self.b.insert_element(dest, value, position))


@_handles("vector.shuffle")
def _vector_shuffle(self: _FunctionEmitter, op: Operation) -> None:
    mask = op.properties["mask"]
    assert isinstance(mask, DenseArrayBase)
    lanes = mask.get_values()
    v1, v2 = self.get(op.operands[0]), self.get(op.operands[1])
    if not isinstance(v1.type, ir.VectorType) or v1.type != v2.type:
        raise NotImplementedError("codegen: vector.shuffle needs two 1-D vectors of one type")
    constant = ir.Constant(ir.VectorType(I32, len(lanes)), [I32(i) for i in lanes])
    self.set(op, self.b.shuffle_vector(v1, v2, constant))


@_handles("vector.reduction")
def _vector_reduction(self: _FunctionEmitter, op: Operation) -> None:
    assert isinstance(op, vector.ReductionOp)
    # A single flag when parsed, a collection of flags when built in Python.
    flags = op.kind.data
    flag = next(iter(flags)) if isinstance(flags, list | tuple | set | frozenset) else flags
    kind = str(getattr(flag, "value", flag))
    source = self.get(op.vector)
    element = _element(source.type)
    acc = self.get(op.acc) if op.acc is not None else None
    b = self.b
    if _is_float(element):
        base = _REDUCTIONS_FLOAT.get(kind)
        if base is None:
            raise NotImplementedError(f"codegen: vector.reduction <{kind}> on floats")
        if kind in ("add", "mul"):
            # The start value folds the accumulator in; reassoc allows a tree reduction.
            start = acc if acc is not None else _const(element, -0.0 if kind == "add" else 1.0)
            fn = self.m.intrinsic(base, element, [element, source.type], [source.type])
            self.set(op, b.call(fn, [start, source], fastmath=FAST))
            return
        combine = _COMBINE[kind][1]
    else:
        base = _REDUCTIONS_INT.get(kind)
        if base is None:
            raise NotImplementedError(f"codegen: vector.reduction <{kind}> on integers")
        combine = _COMBINE[kind][0]
    fn = self.m.intrinsic(base, element, [source.type], [source.type])
    flags = FAST_MINMAX if base in _FLOAT_MINMAX else FAST
    result = b.call(fn, [source], fastmath=flags if _is_float(element) else ())
    if acc is not None:
        assert combine is not None
        result = _combine(self, combine, acc, result)
    self.set(op, result)


def _combine(self: _FunctionEmitter, name: str, a: ir.Value, b: ir.Value) -> ir.Value:
    if name in _INT_BINOPS:
        return getattr(self.b, _INT_BINOPS[name])(a, b)
    if name in _FLOAT_BINOPS:
        return getattr(self.b, _FLOAT_BINOPS[name])(a, b, flags=FAST)
    return self.call_intrinsic(_INTRINSIC_BINOPS[name], [a, b])


def emit_module(module: ModuleOp, target: Target) -> ir.Module:
    """Translate a loops-level module to an LLVM module (one LLVM function per func.func)."""
    return ModuleEmitter(target).emit(module)


def supported_ops() -> list[str]:
    """Names of every op the emitter translates."""
    return sorted(_HANDLERS)


__all__ = [
    "BFloatType",
    "ModuleEmitter",
    "emit_module",
    "llvm_type",
    "supported_ops",
]
