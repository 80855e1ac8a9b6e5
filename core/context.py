"""The compile context: what a pass reads besides the IR, the program's weights and the Target.

Every pass is an xDSL `ModulePass`, applied as `pass.apply(ctx, module)`. An `EmberContext`
is the xDSL `Context` that carries, besides the loaded dialects, the program's `WeightStore`
(passes read and add weights: folding, packing) and the compilation `Target` (passes choose
tile sizes, vector widths and weight layouts for the machine). A pass option overrides a
target value for one pass (`lower-kernels-to-loops{vector-width=8}`, passes/options.py); an
option left unset takes the context's.

The one module of core/ that sits above the dialects: `make_context` loads them
(tests/test_layering.py allows exactly this edge; no dialect imports this module).
"""

from __future__ import annotations

from functools import cache

from xdsl.context import Context

from ember.core.target import Target
from ember.dialects.weights import WeightStore


class EmberContext(Context):
    """An xDSL context with ember's dialects loaded and the program's weights attached."""

    def __init__(
        self, weights: WeightStore | None = None, target: Target | None = None, **kwargs: object
    ):
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.weights = weights if weights is not None else WeightStore()
        self.target = target if target is not None else Target()

    def clone(self) -> EmberContext:
        base = super().clone()
        ctx = EmberContext(self.weights.copy(), self.target)
        ctx.__dict__.update(
            {k: v for k, v in base.__dict__.items() if k not in ("weights", "target")}
        )
        return ctx


def make_context(weights: WeightStore | None = None, target: Target | None = None) -> EmberContext:
    """A context that can parse and verify every dialect ember's IR uses."""
    loaded = _loaded_dialects()
    # Copies of one context's tables, as xDSL's Context.clone makes: loading ten dialects
    # op by op was ~0.3 ms of every compile.
    return EmberContext(
        weights,
        target,
        allow_unregistered=loaded.allow_unregistered,
        _loaded_dialects=loaded._loaded_dialects.copy(),
        _loaded_ops=loaded._loaded_ops.copy(),
        _loaded_attrs=loaded._loaded_attrs.copy(),
        _loaded_types=loaded._loaded_types.copy(),
        _registered_dialects=loaded._registered_dialects.copy(),
    )


@cache
def _loaded_dialects() -> Context:
    """A context with ember's dialects loaded, the template every `make_context` copies."""
    from xdsl.dialects.arith import Arith
    from xdsl.dialects.builtin import Builtin
    from xdsl.dialects.func import Func
    from xdsl.dialects.llvm import LLVM
    from xdsl.dialects.math import Math
    from xdsl.dialects.memref import MemRef
    from xdsl.dialects.scf import Scf
    from xdsl.dialects.vector import Vector

    from ember.dialects.graph import Graph
    from ember.dialects.kernel import Kernel

    ctx = Context()
    # LLVM: loops-level kernels reach target intrinsics by llvm.call_intrinsic (int8 dot
    # products, prefetches), which `ember opt` must parse back.
    dialects = (Builtin, Func, Arith, Math, MemRef, Scf, Vector, LLVM, Graph, Kernel)
    for dialect in dialects:
        ctx.load_dialect(dialect)
    return ctx


def compile_context(ctx: Context, pass_name: str) -> EmberContext:
    """`ctx` as the EmberContext every ember pass runs in; a TypeError naming the pass if it
    is a plain xDSL Context (the weights and the target would be missing)."""
    if not isinstance(ctx, EmberContext):
        raise TypeError(
            f"pass '{pass_name}' needs an EmberContext (ember.core.context.make_context), "
            f"not a {type(ctx).__name__}"
        )
    return ctx
