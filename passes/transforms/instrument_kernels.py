"""instrument-kernels: time every kernel call of the entry function with the CPU cycle counter.

A loops-level pass (run after lower-kernels-to-loops; not in the default pipeline). Each
`func.call` in the entry function is bracketed by calls of LLVM's `llvm.readcyclecounter`
(rdtsc on x86: constant rate, shared by all cores), and the difference is added to slot i of
a trailing `memref<(N+1)xi64>` argument, i being the call site's position; slot N gets the
cycles of the whole entry function, so that a caller can turn cycles into seconds against
its own wall clock and check that the sites add up. Adding rather than storing keeps the
counters meaningful when a caller runs the program several times on one buffer.

The entry function records what each slot is in `ember.profile_sites`: one dictionary per
call site with the callee, a human summary of the kernel (the kernel lowering's
`ember.kernel_summary` when it set one, else the callee's operand shapes), its floating
point operations (`ember.kernel_flops`, 0 when unknown), its operand shapes and the ONNX node
the call comes from (`op_type` and `node` of the call's `ember.origin`, empty when unknown,
and `absorbed`: the nodes fused into it).
"""

from __future__ import annotations

from xdsl.context import Context
from xdsl.dialects import arith, func, memref
from xdsl.dialects.builtin import (
    ArrayAttr,
    DictionaryAttr,
    IndexType,
    IntegerAttr,
    MemRefType,
    ModuleOp,
    StringAttr,
    i64,
)
from xdsl.ir import Operation, Region, SSAValue
from xdsl.passes import ModulePass

from ember.passes.program import (
    STATUS_ROLE,
    absorbed_nodes,
    append_argument,
    argument_with_role,
    entry_function,
    origin_of,
)

CYCLE_COUNTER = "llvm.readcyclecounter"
PROFILE_ROLE = "profile"
PROFILE_SITES = "ember.profile_sites"
# Set by kernel lowerings on the functions they build (see gemm_common.describe_kernel).
KERNEL_SUMMARY = "ember.kernel_summary"
KERNEL_FLOPS = "ember.kernel_flops"


def _shape_text(value: SSAValue) -> str:
    ty = value.type
    if isinstance(ty, MemRefType):
        return "x".join("?" if d < 0 else str(d) for d in ty.get_shape()) or "scalar"
    return str(ty)


def _site(call: func.CallOp, callee: func.FuncOp | None, status: SSAValue | None) -> DictionaryAttr:
    name = call.callee.root_reference.data
    summary = None if callee is None else callee.attributes.get(KERNEL_SUMMARY)
    flops = None if callee is None else callee.attributes.get(KERNEL_FLOPS)
    # The operands in destination-passing style: inputs..., output last (then the status
    # record, for a kernel that checks its data).
    shapes = [_shape_text(v) for v in call.arguments if v is not status]
    shape_text = f"{', '.join(shapes[:-1])} -> {shapes[-1]}" if len(shapes) > 1 else "".join(shapes)
    if not isinstance(summary, StringAttr):
        summary = StringAttr(shape_text)
    origin = origin_of(call)
    return DictionaryAttr(
        {
            "callee": StringAttr(name),
            "summary": summary,
            "flops": flops if isinstance(flops, IntegerAttr) else IntegerAttr(0, i64),
            "shapes": StringAttr(shape_text),
            "op_type": StringAttr(origin.get("op_type", "")),
            "node": StringAttr(origin.get("node", "")),
            "absorbed": ArrayAttr([StringAttr(n) for n in absorbed_nodes(call)]),
        }
    )


class InstrumentKernels(ModulePass):
    """Brackets each kernel call of the entry with cycle-counter reads summed into a profile arg."""

    name = "instrument-kernels"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        fn = entry_function(op)
        if PROFILE_SITES in fn.attributes:
            raise ValueError("instrument-kernels: the entry function is already instrumented")
        functions = {f.sym_name.data: f for f in op.ops if isinstance(f, func.FuncOp)}
        if CYCLE_COUNTER not in functions:
            counter = func.FuncOp(CYCLE_COUNTER, ([], [i64]), Region(), "private")
            op.body.block.add_op(counter)
        block = fn.body.block
        # Calls inside loop and branch bodies too: their slots sum over iterations.
        calls = [c for c in fn.walk() if isinstance(c, func.CallOp)]
        profile = append_argument(fn, MemRefType(i64, [len(calls) + 1]), PROFILE_ROLE)

        def stamp(before: Operation) -> SSAValue:
            read = func.CallOp(CYCLE_COUNTER, [], [i64])
            before.parent_block().insert_op_before(read, before)  # type: ignore[union-attr]
            return read.res[0]

        def accumulate(slot: int, start: SSAValue, end: SSAValue, before: Operation) -> None:
            index = arith.ConstantOp(IntegerAttr(slot, IndexType()))
            elapsed = arith.SubiOp(end, start)
            old = memref.LoadOp.get(profile, [index.result])
            total = arith.AddiOp(old.res, elapsed.result)
            store = memref.StoreOp.get(total.result, profile, [index.result])
            for new in (index, elapsed, old, total, store):
                before.parent_block().insert_op_before(new, before)  # type: ignore[union-attr]

        sites = []
        status = argument_with_role(fn, STATUS_ROLE)
        first = block.first_op
        assert first is not None
        entry_start = stamp(first)
        for slot, call in enumerate(calls):
            start = stamp(call)
            following = call.next_op
            assert following is not None, "the entry function ends with func.return"
            accumulate(slot, start, stamp(following), following)
            callee = functions.get(call.callee.root_reference.data)
            sites.append(_site(call, callee, status))
        ret = block.last_op
        assert isinstance(ret, func.ReturnOp)
        accumulate(len(calls), entry_start, stamp(ret), ret)
        fn.attributes[PROFILE_SITES] = ArrayAttr(sites)


def profile_sites(fn: func.FuncOp) -> list[dict[str, str | int | list[str]]] | None:
    """The call sites an instrumented entry function profiles, in slot order (None if not)."""
    sites = fn.attributes.get(PROFILE_SITES)
    if not isinstance(sites, ArrayAttr):
        return None
    result: list[dict[str, str | int | list[str]]] = []
    for site in sites.data:
        assert isinstance(site, DictionaryAttr)
        callee, summary, flops = (site.data[k] for k in ("callee", "summary", "flops"))
        assert isinstance(callee, StringAttr) and isinstance(summary, StringAttr)
        assert isinstance(flops, IntegerAttr)
        origin = {
            key: value.data if isinstance(value := site.data.get(key), StringAttr) else ""
            for key in ("shapes", "op_type", "node")
        }
        absorbed = site.data.get("absorbed")
        fused = [a.data for a in absorbed.data] if isinstance(absorbed, ArrayAttr) else []
        result.append(
            {
                "callee": callee.data,
                "summary": summary.data,
                "flops": flops.value.data,
                **origin,
                "absorbed": fused,
            }
        )
    return result
