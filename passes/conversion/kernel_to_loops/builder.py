"""A small builder for writing kernels in scf/arith/memref/vector/math.

Kernel lowerings read like the loops they produce:

    fn, b = kernel_function("relu_1024", [buf, buf])
    def body(b: LoopBuilder, i: SSAValue) -> None:
        x = b.vload(fn.args[0], [i], 8)
        b.vstore(b.maxf(x, b.splat(0.0, 8)), fn.args[1], [i])
    b.for_range(0, 1024, 8, body)
    b.ret()

Integer arguments (bounds, steps, constants) may be Python ints; they become `arith.constant`
of index type. Loop bodies are callbacks that receive a builder positioned inside the body.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from xdsl.builder import Builder
from xdsl.dialects import arith, func, math, memref, scf, vector
from xdsl.dialects.builtin import (
    AnyFloat,
    DenseIntOrFPElementsAttr,
    FloatAttr,
    IndexType,
    IntegerAttr,
    MemRefType,
    VectorType,
    f32,
)
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue
from xdsl.rewriter import InsertPoint

from ember.dialects.extents import append_extent_arguments, is_dynamic

Value = SSAValue | int
LoopBody = Callable[..., Sequence[SSAValue] | None]


class LoopBuilder:
    """Appends ops at an insertion point; `for_range`/`parallel_range` open nested builders.

    Constants are created once per function, at the start of the outermost block (which
    dominates every nested loop body): kernels use the same few sizes thousands of times, and
    each xDSL op costs time to build, verify, print and emit.
    """

    def __init__(self, block: Block, *, _root: LoopBuilder | None = None):
        self.block = block
        self._builder = Builder(InsertPoint.at_end(block))
        self._entry: Block = block if _root is None else _root._entry
        self._constants: dict[tuple[object, Attribute], SSAValue] = (
            {} if _root is None else _root._constants
        )

    def before(self, op: Operation) -> LoopBuilder:
        """A builder inserting before `op` (anywhere in this function), sharing constants: for
        passes that add code around existing ops."""
        parent = op.parent_block()
        assert parent is not None, "the op must be in a block"
        b = self.nested(parent)
        b._builder = Builder(InsertPoint.before(op))
        return b

    def nested(self, block: Block) -> LoopBuilder:
        """A builder appending to `block` (a region nested in this one), sharing constants."""
        return LoopBuilder(block, _root=self)

    def insert(self, op: Operation) -> Operation:
        self._builder.insert(op)
        return op

    # -- constants ---------------------------------------------------------------------------
    def _constant(self, attr: Attribute, key: tuple[object, Attribute]) -> SSAValue:
        value = self._constants.get(key)
        if value is None:
            op = arith.ConstantOp(attr)
            first = self._entry.first_op
            if first is None:
                self._entry.add_op(op)
            else:
                self._entry.insert_op_before(op, first)
            value = self._constants[key] = op.results[0]
        return value

    def index(self, value: Value) -> SSAValue:
        if isinstance(value, SSAValue):
            return value
        return self._constant(IntegerAttr(value, IndexType()), (value, IndexType()))

    def const(self, value: float | int, type: Attribute = f32) -> SSAValue:
        if isinstance(type, AnyFloat):
            attr: Attribute = FloatAttr(float(value), type)
            # Keyed by the float's bits so that 0.0 and -0.0 stay distinct.
            key: object = ("f", float(value).hex())
        else:
            attr = IntegerAttr(int(value), type)  # type: ignore[arg-type]
            key = int(value)
        return self._constant(attr, (key, type))

    def splat(self, value: float | SSAValue, width: int, type: Attribute = f32) -> SSAValue:
        scalar = value if isinstance(value, SSAValue) else self.const(value, type)
        return self.insert(vector.BroadcastOp(scalar, VectorType(scalar.type, [width]))).results[0]

    def lane_numbers(self, width: int, type: Attribute) -> SSAValue:
        """The constant vector<width x type> [0, 1, ..., width - 1]."""
        vtype = VectorType(type, [width])
        values = [float(k) if isinstance(type, AnyFloat) else k for k in range(width)]
        attr = DenseIntOrFPElementsAttr.from_list(vtype, values)
        return self._constant(attr, (("lanes", width), type))

    # -- index arithmetic ----------------------------------------------------------------------
    def add(self, a: Value, b: Value) -> SSAValue:
        return self.insert(arith.AddiOp(self.index(a), self.index(b))).results[0]

    def sub(self, a: Value, b: Value) -> SSAValue:
        return self.insert(arith.SubiOp(self.index(a), self.index(b))).results[0]

    def mul(self, a: Value, b: Value) -> SSAValue:
        return self.insert(arith.MuliOp(self.index(a), self.index(b))).results[0]

    def floordiv(self, a: Value, b: Value) -> SSAValue:
        return self.insert(arith.DivUIOp(self.index(a), self.index(b))).results[0]

    def rem(self, a: Value, b: Value) -> SSAValue:
        return self.insert(arith.RemUIOp(self.index(a), self.index(b))).results[0]

    def min_index(self, a: Value, b: Value) -> SSAValue:
        return self.insert(arith.MinSIOp(self.index(a), self.index(b))).results[0]

    def max_index(self, a: Value, b: Value) -> SSAValue:
        return self.insert(arith.MaxSIOp(self.index(a), self.index(b))).results[0]

    def cmp_index(self, predicate: str, a: Value, b: Value) -> SSAValue:
        return self.insert(arith.CmpiOp(self.index(a), self.index(b), predicate)).results[0]

    def select(self, cond: SSAValue, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.insert(arith.SelectOp(cond, a, b)).results[0]

    # -- float arithmetic (scalars or vectors) ---------------------------------------------------
    def addf(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.insert(arith.AddfOp(a, b)).results[0]

    def subf(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.insert(arith.SubfOp(a, b)).results[0]

    def mulf(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.insert(arith.MulfOp(a, b)).results[0]

    def divf(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.insert(arith.DivfOp(a, b)).results[0]

    def maxf(self, a: SSAValue, b: SSAValue) -> SSAValue:
        """max(a, b), NaN if either is NaN (arith.maximumf), like ONNX Max/Relu/MaxPool.

        Never arith.maxnumf: it returns the non-NaN operand, so a Relu or max pool would turn
        a NaN into a number (docs/architecture.md, "Non-finite values")."""
        return self.insert(arith.MaximumfOp(a, b)).results[0]

    def minf(self, a: SSAValue, b: SSAValue) -> SSAValue:
        """min(a, b), NaN if either is NaN (arith.minimumf); see `maxf`."""
        return self.insert(arith.MinimumfOp(a, b)).results[0]

    def fma(self, a: SSAValue, b: SSAValue, acc: SSAValue) -> SSAValue:
        """a * b + acc, fused (vector operands)."""
        return self.insert(vector.FMAOp(a, b, acc)).results[0]

    def exp(self, a: SSAValue) -> SSAValue:
        return self.insert(math.ExpOp(a)).results[0]

    def sqrt(self, a: SSAValue) -> SSAValue:
        return self.insert(math.SqrtOp(a)).results[0]

    def reduce(self, kind: str, v: SSAValue) -> SSAValue:
        """Horizontal reduction of a vector: kind is a vector.CombiningKindFlag value
        ("add", "mul", "maximumf", "minimumf", "maxsi", ...)."""
        # Built by hand: xdsl 0.74's ReductionOp.__init__ gives the result the vector's type
        # instead of the element type.
        reduction = vector.ReductionOp.create(
            operands=[v],
            result_types=[v.type.get_element_type()],  # type: ignore[attr-defined]
            properties={
                "kind": vector.CombiningKindAttr(vector.CombiningKindFlag(kind)),
                "fastmath": arith.FastMathFlagsAttr("none"),
            },
        )
        return self.insert(reduction).results[0]

    # -- memory --------------------------------------------------------------------------------
    def dim(self, buffer: SSAValue, dim: int) -> Value:
        """The size of `dim` of `buffer`: a Python int where static, else `memref.dim` (an
        index value that codegen resolves to the size the function was given)."""
        size = buffer.type.get_shape()[dim]  # type: ignore[attr-defined]
        if not is_dynamic(size):
            return size
        return self.insert(memref.DimOp(buffer, self.index(dim))).results[0]

    def element_count(self, buffer: SSAValue, dims: Sequence[int] | None = None) -> Value:
        """The product of the sizes of `dims` of `buffer` (all dims by default): a Python int
        when they are static, else one index value (static factors folded into one)."""
        rank = len(buffer.type.get_shape())  # type: ignore[attr-defined]
        static, count = 1, None
        for d in range(rank) if dims is None else dims:
            size = self.dim(buffer, d)
            if isinstance(size, int):
                static *= size
            else:
                count = size if count is None else self.mul(count, size)
        if count is None:
            return static
        return count if static == 1 else self.mul(count, static)

    def load(self, buffer: SSAValue, indices: Sequence[Value]) -> SSAValue:
        return self.insert(memref.LoadOp.get(buffer, [self.index(i) for i in indices])).results[0]

    def store(self, value: SSAValue, buffer: SSAValue, indices: Sequence[Value]) -> None:
        self.insert(memref.StoreOp.get(value, buffer, [self.index(i) for i in indices]))

    def vload(self, buffer: SSAValue, indices: Sequence[Value], width: int) -> SSAValue:
        element = buffer.type.get_element_type()  # type: ignore[attr-defined]
        return self.insert(
            vector.LoadOp(buffer, [self.index(i) for i in indices], VectorType(element, [width]))
        ).results[0]

    def vstore(self, value: SSAValue, buffer: SSAValue, indices: Sequence[Value]) -> None:
        self.insert(vector.StoreOp(value, buffer, [self.index(i) for i in indices]))

    # -- control flow --------------------------------------------------------------------------
    def for_range(
        self,
        lower: Value,
        upper: Value,
        step: Value,
        body: LoopBody,
        iter_args: Sequence[SSAValue] = (),
    ) -> list[SSAValue]:
        """scf.for; `body(builder, iv, *iter_values)` returns the next iter values (if any)."""
        block = Block(arg_types=[IndexType(), *(v.type for v in iter_args)])
        inner = self.nested(block)
        yielded = body(inner, *block.args) or ()
        inner.insert(scf.YieldOp(*yielded))
        loop = scf.ForOp(self.index(lower), self.index(upper), self.index(step), iter_args, block)
        self.insert(loop)
        return list(loop.results)

    def parallel_range(self, lower: Value, upper: Value, step: Value, body: LoopBody) -> None:
        """scf.parallel over one dimension; codegen distributes it over the thread pool."""
        block = Block(arg_types=[IndexType()])
        inner = self.nested(block)
        body(inner, block.args[0])
        inner.insert(scf.ReduceOp())
        self.insert(
            scf.ParallelOp([self.index(lower)], [self.index(upper)], [self.index(step)], [block])
        )

    def if_(self, cond: SSAValue, then: Callable[[LoopBuilder], None]) -> None:
        block = Block()
        inner = self.nested(block)
        then(inner)
        inner.insert(scf.YieldOp())
        self.insert(scf.IfOp(cond, [], Region(block)))

    def ret(self) -> None:
        self.insert(func.ReturnOp())


def kernel_function(name: str, arg_types: Sequence[MemRefType]) -> tuple[func.FuncOp, LoopBuilder]:
    """A `func.func` taking memrefs (bare pointers at the ABI level) and returning nothing.

    Runtime extents: for every `?` dim of `arg_types` the function takes one more `index`
    argument, after the memrefs, marked with the memref and dim it is the size of
    (dialects/extents.py); a lowering reads sizes with `LoopBuilder.dim`, a call passes
    `memref.dim` of its operands (lower-kernels-to-loops). Static memrefs add nothing.
    """
    block = Block(arg_types=list(arg_types))
    fn = func.FuncOp(name, (list(arg_types), []), Region(block))
    append_extent_arguments(fn)
    return fn, LoopBuilder(block)
