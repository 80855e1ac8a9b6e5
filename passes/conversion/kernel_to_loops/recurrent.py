"""kernel.recurrent -> the time loop of an LSTM / GRU / RNN layer.

The input projection (X @ W^T + biases, every step at once) is a separate packed GEMM; this
kernel owns what must run step by step. Per direction:

    y_h[d] (and y_c[d]) = initial state (or zeros)
    scf.for s in [0, T):                       t = s, or T-1-s for the reverse direction
        workspace[d] = y_h[d] @ R^T[d] + x_proj[t]   step GEMM: gemm_common's register-blocked
                                                    micro-kernel, R^T packed per gate
        gate kernel over [B, H] in SIMD vectors:    activations (codegen/mathlib.py), clip,
            peepholes, cell update; writes y[t, d], y_h[d], y_c[d]

y_h / y_c are the running state, so a sequence whose length (sequence_lens) has passed simply
stops updating them while y gets zeros; a sequence of length 0 ends with zero y_h / y_c (as in
onnxruntime). Lengths outside [0, T] are invalid ONNX: the kernel checks each row's length
once, before its time loops, and reports one outside through the run's status record
(LENGTH_OUT_OF_RANGE; the runtime raises KernelError, as onnxruntime refuses them at run
time). It still runs (a longer length acts as T, a negative one as 0, so no access leaves the
buffers), and the run's outputs are discarded.

GRU without linear_before_reset needs r before its h-gate product: its step is GEMM(z, r),
r * H_{t-1}, GEMM(h), gate kernel. Directions and batch rows recur independently, so threads
take whole time loops (scf.parallel over directions x chunks of rows), never one step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from xdsl.dialects import arith, func
from xdsl.dialects.builtin import IndexType
from xdsl.ir import SSAValue

from ember.core.target import Target
from ember.dialects import kernel
from ember.dialects.graph import RECURRENT_ACTIVATIONS, RECURRENT_GATES
from ember.dialects.weight_layouts import gemm_blocking, recurrent_layout
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, Value, kernel_function
from ember.passes.conversion.kernel_to_loops.checks import checked_kernel_function, record_error
from ember.passes.conversion.kernel_to_loops.gemm_common import (
    ACTIVATION_PARAM_COUNTS,
    Activation,
    Epilogue,
    GemmPanel,
    ceil_div,
    describe_kernel,
    gemm_panel,
    if_else,
    k_block,
    load_lanes,
    memref_shape,
    split_static,
    store_lanes,
    vector_activation,
)
from ember.passes.conversion.kernel_to_loops.registry import lowering
from ember.passes.conversion.kernel_to_loops.simd import work_units
from ember.runtime.status import LENGTH_OUT_OF_RANGE

# bias(b, gate, row, column, lanes): the vector added to GEMM outputs [row, gate*H + column...].
StepBias = Callable[[LoopBuilder, SSAValue, SSAValue, SSAValue, int], SSAValue]


@dataclass
class _Layer:
    """Shapes, buffers and per-direction activations of one kernel.recurrent function."""

    op: kernel.RecurrentOp
    cell: str
    seq: int
    dirs: int
    batch: int
    hidden: int
    gates: int
    vw: int
    mr: int
    nr: int
    packed: bool
    args: dict[int, SSAValue]
    activations: list[list[Activation]]
    # The batch rows one work unit runs: [row0, row0 + rows) (rows static, row0 may not be).
    row0: Value = 0
    rows: int = 0

    def buf(self, value: SSAValue | None) -> SSAValue | None:
        return None if value is None else self.args[id(value)]

    def reverse(self, d: int) -> bool:
        return self.op.direction.data == "reverse" or d == 1


def _check_weight(op: kernel.RecurrentOp, layer_shape: tuple[int, int, int], vw: int) -> bool:
    """Whether r is packed (else plain); raises on a layout that does not fit the layer. The
    panel width NR is the packing's (any multiple of the lanes `vw`: packed for another
    vector width, e.g. by a convert-graph-to-kernel option, each panel is NR/vw vectors)."""
    dirs, gates, hidden = layer_shape
    r_shape = memref_shape(op.r)
    layout = op.weight_layout.data
    if layout == "plain":
        if r_shape != (dirs, gates, hidden, hidden):
            raise ValueError(f"kernel.recurrent: plain r {r_shape} for {layer_shape}")
        return False
    nr = r_shape[-1] if r_shape else 0
    packed_shape = (dirs, gates, ceil_div(hidden, nr), hidden, nr) if nr else ()
    if layout != recurrent_layout(nr) or nr % vw or r_shape != packed_shape:
        raise ValueError(
            f"kernel.recurrent: r {r_shape} in layout '{layout}', expected "
            f"[dirs, gates, ceil(H/NR), H, NR] in 'recurrent_panel<NR>', NR a multiple of {vw}"
        )
    return True


@lowering(kernel.RecurrentOp)
def lower_recurrent(op: kernel.RecurrentOp, target: Target, name: str) -> func.FuncOp:
    cell = op.cell.data
    seq, dirs, batch, hidden = memref_shape(op.y)
    gates = RECURRENT_GATES[cell]
    blocking = gemm_blocking(target)
    packed = _check_weight(op, (dirs, gates, hidden), blocking.vw)
    nr = memref_shape(op.r)[-1] if packed else blocking.nr

    names = [a.data for a in op.activations.data]  # type: ignore[attr-defined]
    params = [float(v) for v in op.activation_params.get_values()]
    per_direction = RECURRENT_ACTIVATIONS[cell]
    activations = [
        [
            vector_activation(
                names[i],
                params[2 * i : 2 * i + ACTIVATION_PARAM_COUNTS.get(names[i], 0)],
                op.name,
            )
            for i in range(d * per_direction, (d + 1) * per_direction)
        ]
        for d in range(dirs)
    ]

    operands = [
        op.x_proj,
        op.r,
        op.recurrent_bias,
        op.sequence_lens,
        op.initial_h,
        op.initial_c,
        op.peepholes,
        op.workspace,
        op.y,
        op.y_h,
        op.y_c,
    ]
    present = [v for v in operands if v is not None]
    arg_types = [v.type for v in present]
    if op.sequence_lens is None:
        fn, body = kernel_function(name, arg_types)  # type: ignore[arg-type]
    else:
        fn, body, status = checked_kernel_function(name, arg_types)
    layer = _Layer(
        op=op,
        cell=cell,
        seq=seq,
        dirs=dirs,
        batch=batch,
        hidden=hidden,
        gates=gates,
        vw=blocking.vw,
        mr=blocking.mr,
        nr=nr,
        packed=packed,
        args={id(v): a for v, a in zip(present, fn.args[: len(present)], strict=True)},
        activations=activations,
        rows=batch,
    )
    if op.sequence_lens is not None:
        _check_lengths(body, layer.args[id(op.sequence_lens)], status, seq, batch)
    # Work units: directions x chunks of batch rows. Rows (and directions) recur independently,
    # so a unit runs its whole time loop with no synchronisation: threads split the batch
    # when the directions alone do not occupy them.
    chunks = min(batch, ceil_div(target.threads, dirs)) if target.threads > 1 else 1
    rows_per_chunk = ceil_div(batch, chunks)
    chunks = ceil_div(batch, rows_per_chunk)
    if dirs * chunks == 1:
        _direction(body, layer, 0)
    elif target.threads == 1:
        for d in range(dirs):
            _direction(body, layer, d)
    else:

        def chunk_of(b: LoopBuilder, d: int, c: SSAValue) -> None:
            def emit(b: LoopBuilder, rows: int) -> None:
                _direction(b, replace(layer, row0=b.mul(c, rows_per_chunk), rows=rows), d)

            full = batch // rows_per_chunk
            split_static(b, c, full, chunks, emit, rows_per_chunk, batch % rows_per_chunk)

        def unit(b: LoopBuilder, u: SSAValue) -> None:
            if dirs == 1:
                chunk_of(b, 0, u)
                return
            c = b.rem(u, chunks)
            if_else(
                b,
                b.cmp_index("ult", u, chunks),
                lambda t: chunk_of(t, 0, c),
                lambda e: chunk_of(e, 1, c),
            )

        flops = 2 * seq * dirs * batch * gates * hidden * hidden
        work_units(body, target, flops, dirs * chunks, unit)
    body.ret()
    summary = (
        f"{cell} {op.direction.data} T={seq} B={batch} H={hidden} "
        f"({'packed' if packed else 'plain'} R)"
    )
    describe_kernel(fn, summary, 2 * seq * dirs * batch * gates * hidden * hidden)
    return fn


def _check_lengths(b: LoopBuilder, lens: SSAValue, status: SSAValue, seq: int, batch: int) -> None:
    """Report the first sequence length outside [0, seq] (before any thread starts)."""

    def row(b: LoopBuilder, bi: SSAValue) -> None:
        length = _index_of(b, b.load(lens, [bi]))
        # Unsigned: a negative length compares as huge, so one compare covers both ends.
        bad = b.cmp_index("ugt", length, seq)
        b.if_(bad, lambda eb: record_error(eb, status, LENGTH_OUT_OF_RANGE, length, seq, bi))

    b.for_range(0, batch, 1, row)


def _each_vector(b: LoopBuilder, layer: _Layer, emit: Callable[..., None]) -> None:
    """emit(b, row, h0, lanes) over the unit's rows x hidden in SIMD vectors (a masked tail)."""
    full, tail, vw = layer.hidden // layer.vw, layer.hidden % layer.vw, layer.vw

    def row(b: LoopBuilder, bi: SSAValue) -> None:
        if full:
            b.for_range(0, full * vw, vw, lambda ib, h0: emit(ib, bi, h0, vw))
        if tail:
            emit(b, bi, b.index(full * vw), tail)

    end = layer.row0 + layer.rows if isinstance(layer.row0, int) else b.add(layer.row0, layer.rows)
    b.for_range(layer.row0, end, 1, row)


def _direction(b: LoopBuilder, layer: _Layer, d: int) -> None:
    """The whole time loop of direction d (static), from the initial state to y_h / y_c."""
    op, vw, hidden, gates = layer.op, layer.vw, layer.hidden, layer.gates
    x_proj, r_bias = layer.buf(op.x_proj), layer.buf(op.recurrent_bias)
    workspace, y_h = layer.buf(op.workspace), layer.buf(op.y_h)
    assert x_proj is not None and workspace is not None and y_h is not None

    def ld(b: LoopBuilder, buf: SSAValue, idx: list[Value], lanes: int) -> SSAValue:
        return load_lanes(b, buf, idx, lanes, vw)

    def init(b: LoopBuilder, bi: SSAValue, h0: SSAValue, lanes: int) -> None:
        for source, state in ((op.initial_h, op.y_h), (op.initial_c, op.y_c)):
            src, dst = layer.buf(source), layer.buf(state)
            if dst is None:
                continue
            v = b.splat(0.0, vw) if src is None else ld(b, src, [d, bi, h0], lanes)
            store_lanes(b, v, dst, [d, bi, h0], lanes, vw)

    _each_vector(b, layer, init)

    def step(b: LoopBuilder, s: SSAValue) -> None:
        t = b.sub(layer.seq - 1, s) if layer.reverse(d) else s

        def projection(b: LoopBuilder, g: SSAValue, row: SSAValue, col: SSAValue, lanes: int):
            column = b.add(b.add(b.mul(g, hidden), col), d * gates * hidden)
            return ld(b, x_proj, [t, row, column], lanes)

        def recurrent_bias(b: LoopBuilder, g: SSAValue, row: SSAValue, col: SSAValue, lanes):
            if r_bias is None:
                return b.splat(0.0, vw)
            return ld(b, r_bias, [d, col], lanes)

        if layer.cell == "lstm" or layer.cell == "rnn":
            _step_gemm(b, layer, d, y_h, 0, 0, gates, projection)
            _gates(b, layer, d, t)
        elif op.linear_before_reset is not None:
            _step_gemm(b, layer, d, y_h, 0, 0, 2, projection)
            _step_gemm(b, layer, d, y_h, 0, 2, 3, recurrent_bias)
            _gates(b, layer, d, t)
        else:
            _step_gemm(b, layer, d, y_h, 0, 0, 2, projection)
            _gru_reset(b, layer, d)
            _step_gemm(b, layer, d, workspace, 3 * hidden, 2, 3, projection)
            _gates(b, layer, d, t)

    b.for_range(0, layer.seq, 1, step)
    lens = layer.buf(op.sequence_lens)
    if lens is None:
        return

    def empty_sequences(b: LoopBuilder, bi: SSAValue, h0: SSAValue, lanes: int) -> None:
        # A sequence of length 0 has no last step: its y_h / y_c are zeros, not the initial
        # state (onnxruntime's reading; ONNX says only "the last output value").
        ran = b.cmp_index("sgt", _index_of(b, b.load(lens, [bi])), 0)
        for state in (y_h, layer.buf(op.y_c)):
            if state is not None:
                value = ld(b, state, [d, bi, h0], lanes)
                store_lanes(
                    b, b.select(ran, value, b.splat(0.0, vw)), state, [d, bi, h0], lanes, vw
                )

    _each_vector(b, layer, empty_sequences)


def _index_of(b: LoopBuilder, value: SSAValue) -> SSAValue:
    return b.insert(arith.IndexCastOp(value, IndexType())).results[0]


def _step_gemm(
    b: LoopBuilder,
    layer: _Layer,
    d: int,
    a_buf: SSAValue,
    a_col: int,
    gate_lo: int,
    gate_hi: int,
    bias: StepBias,
) -> None:
    """workspace[d, :, g*H:(g+1)*H] = a_buf[d, :, a_col:a_col+H] @ R^T[d, g] + bias, g in range."""
    hidden, vw, nr = layer.hidden, layer.vw, layer.nr
    r = layer.buf(layer.op.r)
    workspace = layer.buf(layer.op.workspace)
    assert r is not None and workspace is not None
    full_panels, tail_cols = hidden // nr, hidden % nr
    kc = k_block(hidden, nr)

    def panel(b: LoopBuilder, g: SSAValue, p: SSAValue, cols: int) -> None:
        n0 = b.mul(p, nr)
        columns = [b.add(n0, j * vw) for j in range(ceil_div(cols, vw))]
        gate_columns = [b.add(b.mul(g, hidden), c) for c in columns]

        def row(b: LoopBuilder, m0: SSAValue, i: int) -> SSAValue:
            return b.add(b.add(m0, i), layer.row0)

        def load_a(b: LoopBuilder, m0: SSAValue, k: SSAValue, i: int) -> SSAValue:
            return b.load(a_buf, [d, row(b, m0, i), b.add(k, a_col)])

        def load_b(b: LoopBuilder, k: SSAValue, j: int, k_lo: Value) -> SSAValue:
            if layer.packed:
                return b.vload(r, [d, g, p, k, j * vw], vw)
            return load_lanes(b, r, [d, g, k, columns[j]], min(vw, cols - j * vw), vw)

        def out_index(b: LoopBuilder, m0: SSAValue, i: int, j: int) -> list[Value]:
            return [d, row(b, m0, i), gate_columns[j]]

        def add(b: LoopBuilder, m0: SSAValue, i: int, j: int) -> SSAValue:
            return bias(b, g, row(b, m0, i), columns[j], min(vw, cols - j * vw))

        spec = GemmPanel(
            k_extent=hidden,
            kc=kc,
            m=layer.rows,
            mr=layer.mr,
            cols=cols,
            vw=vw,
            epilogue=Epilogue(workspace, None, None, vw),
            load_a=load_a,
            load_b=load_b,
            out_index=out_index,
            bias=add,
        )
        gemm_panel(b, spec, b.index(0), 1)

    panels = ceil_div(hidden, nr)

    def unit(b: LoopBuilder, u: SSAValue) -> None:
        g = b.add(b.floordiv(u, panels), gate_lo)
        p = b.rem(u, panels)
        split_static(b, p, full_panels, panels, lambda b, cols: panel(b, g, p, cols), nr, tail_cols)

    b.for_range(0, (gate_hi - gate_lo) * panels, 1, unit)


def _clip(b: LoopBuilder, layer: _Layer, v: SSAValue) -> SSAValue:
    if layer.op.clip is None:
        return v
    bound = layer.op.clip.value.data
    return b.minf(b.maxf(v, b.splat(-bound, layer.vw)), b.splat(bound, layer.vw))


def _gru_reset(b: LoopBuilder, layer: _Layer, d: int) -> None:
    """workspace[d, :, 3H:4H] = f(clip(r pre-activation)) * H_{t-1} (GRU, r before Rh)."""
    hidden, vw = layer.hidden, layer.vw
    workspace, y_h = layer.buf(layer.op.workspace), layer.buf(layer.op.y_h)
    assert workspace is not None and y_h is not None
    f = layer.activations[d][0]

    def emit(b: LoopBuilder, bi: SSAValue, h0: SSAValue, lanes: int) -> None:
        pre = load_lanes(b, workspace, [d, bi, b.add(h0, hidden)], lanes, vw)
        h_prev = load_lanes(b, y_h, [d, bi, h0], lanes, vw)
        reset = b.mulf(f(b, _clip(b, layer, pre)), h_prev)
        store_lanes(b, reset, workspace, [d, bi, b.add(h0, 3 * hidden)], lanes, vw)

    _each_vector(b, layer, emit)


def _gates(b: LoopBuilder, layer: _Layer, d: int, t: SSAValue) -> None:
    """One step's fused gate kernel: activations and state update, y / y_h / y_c written."""
    op, hidden, vw = layer.op, layer.hidden, layer.vw
    workspace, y, y_h, y_c = (layer.buf(v) for v in (op.workspace, op.y, op.y_h, op.y_c))
    x_proj, peepholes, lens = (layer.buf(v) for v in (op.x_proj, op.peepholes, op.sequence_lens))
    assert workspace is not None and y is not None and y_h is not None and x_proj is not None
    acts = layer.activations[d]

    def emit(b: LoopBuilder, bi: SSAValue, h0: SSAValue, lanes: int) -> None:
        def ld(buf: SSAValue, idx: list[Value]) -> SSAValue:
            return load_lanes(b, buf, idx, lanes, vw)

        def pre(gate: int) -> SSAValue:
            return ld(workspace, [d, bi, b.add(h0, gate * hidden)])

        def act(index: int, v: SSAValue) -> SSAValue:
            return acts[index](b, _clip(b, layer, v))

        one = b.splat(1.0, vw)
        h_prev = ld(y_h, [d, bi, h0])
        c_new = c_prev = None
        if layer.cell == "lstm":
            assert y_c is not None
            c_prev = ld(y_c, [d, bi, h0])
            x_i, x_o, x_f, x_c = (pre(g) for g in range(4))
            if peepholes is not None:
                p_i, p_o, p_f = (ld(peepholes, [d, b.add(h0, k * hidden)]) for k in range(3))
                x_i = b.fma(p_i, c_prev, x_i)
                x_f = b.fma(p_f, c_prev, x_f)
            i = act(0, x_i)
            forget = b.subf(one, i) if op.input_forget is not None else act(0, x_f)
            c_new = b.addf(b.mulf(forget, c_prev), b.mulf(i, act(1, x_c)))
            if peepholes is not None:
                x_o = b.fma(p_o, c_new, x_o)
            h_new = b.mulf(act(0, x_o), acts[2](b, c_new))
        elif layer.cell == "gru":
            z = act(0, pre(0))
            if op.linear_before_reset is not None:
                r = act(0, pre(1))
                column = b.add(h0, (d * 3 + 2) * hidden)
                x_h = ld(x_proj, [t, bi, column])
                candidate = act(1, b.fma(r, pre(2), x_h))
            else:
                candidate = act(1, pre(2))
            # (1 - z) * h~ + z * H_{t-1} = h~ + z * (H_{t-1} - h~)
            h_new = b.fma(z, b.subf(h_prev, candidate), candidate)
        else:
            h_new = act(0, pre(0))

        y_value = h_new
        if lens is not None:
            valid = b.cmp_index("slt", t, _index_of(b, b.load(lens, [bi])))
            y_value = b.select(valid, h_new, b.splat(0.0, vw))
            h_new = b.select(valid, h_new, h_prev)
            if c_new is not None and c_prev is not None:
                c_new = b.select(valid, c_new, c_prev)
        store_lanes(b, y_value, y, [t, d, bi, h0], lanes, vw)
        store_lanes(b, h_new, y_h, [d, bi, h0], lanes, vw)
        if c_new is not None and y_c is not None:
            store_lanes(b, c_new, y_c, [d, bi, h0], lanes, vw)

    _each_vector(b, layer, emit)
