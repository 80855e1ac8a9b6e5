"""ember's own thread team: one libgomp team for a whole model run, parallel regions are jobs.

Launching every parallel region with its own `GOMP_parallel` costs a futex wake-up (~20 µs)
whenever libgomp's idle thread fell asleep between regions (after GOMP_SPINCOUNT spins,
runtime/threads.py), which on small models is most regions. So the entry function, run with
more than one thread, starts ONE libgomp team for the run (`emit_team_entry`): thread 0 runs
the real entry body (serial kernels, control flow, every allocation: exactly what one thread
ran before), the other threads wait for jobs in `ember_team_worker`. A parallel region calls
`ember_team_run(fn, ctx, threads)`: on the thread that owns the active team it posts the job
{fn, ctx}, runs fn (the outlined region, whose threads claim chunks from a counter in ctx)
itself, closes the job and waits for the workers that joined it; anywhere else (a kernel run
on its own, a concurrent run of the same program from another thread) it is today's
`GOMP_parallel(fn, ctx, threads)`.

The team record `ember_team` (i64 words; the words written by different threads on their own
64-byte lines) lives in the unit that defines `ember_num_threads` (the entry unit), so each
loaded program (its own MCJIT engine or shared library) has its own; in a shared library it
and the functions here are hidden.

    OWNER    pthread_self() of the thread running the entry with the team, 0 when none
    JOB      2g+1 while job g is open, 2g+2 once closed, EXIT when the run is over
    FN, CTX  the open job (written before JOB opens it)
    JOINED   workers that announced themselves for a job (cumulative over the run)
    LEFT     workers done with the job they joined (cumulative)
    SLEEPERS workers asleep on JOB; ASLEEP: thread 0 asleep on LEFT

Why no worker ever touches a dead ctx, and thread 0 never waits for a worker that does not
work (every access below is sequentially consistent, so all threads agree on one order of
them):
- A worker increments JOINED and only then reads JOB; it reads FN/CTX and runs the job only if
  that read shows an open job. Thread 0 closes the job (JOB := 2g+2) after its own claim loop
  and returns (so its stack, and ctx on it, may be reused) only once it read LEFT == JOINED,
  reading LEFT first. A worker W that saw job g open incremented JOINED before that read, so
  before the close, so before thread 0's reads: thread 0's JOINED includes W. Every leave that
  thread 0's LEFT counts followed its own join, which precedes thread 0's later JOINED read,
  so LEFT == JOINED implies W's leave is among them: W finished with ctx (its last write, the
  LEFT increment, follows its region work, so thread 0 also sees W's results).
- A worker that joins after the close reads a closed JOB (or a later job, which it then runs
  legitimately: it joined before that job closed, so thread 0 waits for it there), touches no
  ctx and leaves. Thread 0 may count it or not: if its join is counted, LEFT == JOINED needs
  its leave too (a short wait, nothing in between); if not, its leave is not counted either
  (the leave follows the join), so it never makes the counts equal early.
- A worker that was descheduled and never joined is in neither count: thread 0 does not wait
  for it. Its chunks are claimed by whoever runs.
- FN and CTX are only rewritten when the next job is posted, after LEFT == JOINED: no joined
  worker is reading them then, and a worker reads them only after joining and seeing JOB open.
- Jobs do not nest: a region reached while thread 0 runs a job sees JOB open and runs
  alone on thread 0 (workers reaching one run it alone too: they do not own the team, and a
  GOMP_parallel inside a parallel region has one thread).
- The run ends with JOB := EXIT (after the last job's wait); workers return and
  GOMP_parallel's own barrier ends the team. A kernel that records an error (status record)
  returns normally, so an error ends the run the same way. OWNER is cleared after the team.

Waiting, measured on a 2-core znver5 host shared with other processes (docs/performance.md):
- A worker between jobs spins on JOB with `pause` (SPIN_PAUSES rounds, ~50 µs), then calls
  `sched_yield` (YIELDS rounds, 0 by default: measured below), then sleeps on a futex on JOB:
  SLEEPERS counts the sleepers, and thread 0 wakes them (one FUTEX_WAKE) after it changes JOB
  to post a job or EXIT. A worker increments SLEEPERS and then rereads JOB, thread 0 stores
  JOB and then reads SLEEPERS: one of them sees the other's write, and FUTEX_WAIT sleeps only
  while JOB still holds the value the worker saw, so no post is missed. Thread 0 never waits
  for a sleeping worker: the wake-up is one syscall, and the worker joins the job when it
  runs. A worker that never sleeps (spinning, then yielding) loses under contention: a
  yielded thread stays runnable but is scheduled late, and the job is over when it comes
  back (ResNet-50 with a busy process: 83-132 ms against 44 ms per-region GOMP_parallel).
- Thread 0 waiting for joined workers spins LEAD_SPIN_PAUSES rounds, then sets ASLEEP and
  sleeps on a futex on LEFT (the low 32 bits of the word); a leaving worker that reads ASLEEP
  set wakes it, the same store-then-read pairing as above (ASLEEP, then LEFT; LEFT, then ASLEEP).
  A sleeping thread 0 frees its core for a worker the scheduler preempted mid-chunk.
"""

from __future__ import annotations

import llvmlite.ir as ir

I32 = ir.IntType(32)
I64 = ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()

TEAM_SYMBOL = "ember_team"
RUN_SYMBOL = "ember_team_run"
WORKER_SYMBOL = "ember_team_worker"
# void(ptr ctx): an outlined parallel region, as GOMP_parallel calls it.
REGION_TYPE = ir.FunctionType(VOID, [PTR])
RUN_TYPE = ir.FunctionType(VOID, [PTR, PTR, I32])

# Word indices in the team record: the words of one 64-byte line are written by one side
# (ASLEEP, thread 0's, shares LEFT's line: a leaving worker reads it next).
OWNER, JOB, FN, CTX, JOINED, SLEEPERS, LEFT, ASLEEP = 0, 8, 9, 10, 16, 17, 24, 25
TEAM_WORDS = 32
EXIT = -2  # even: never an open job
# A worker between jobs: `pause` rounds (~50 ns each on znver5: 50 µs, libgomp's spin at
# GOMP_SPINCOUNT 1000), then `sched_yield` rounds, then a futex sleep that the next post
# ends. No yields: on a contended host a yield gives the core away for a scheduler slice and
# leaves the worker runnable but late for the next job, where a sleeper is woken at once
# (ResNet-50 at 2 threads beside a busy process: 41-72 ms with 0 yields, 88-92 ms with 2 or 8;
# docs/performance.md).
SPIN_PAUSES = 1000
YIELDS = 0
# `pause` rounds thread 0 spins waiting for joined workers before it sleeps on a futex:
# libgomp's barrier at GOMP_SPINCOUNT 1000 (runtime/threads.py).
LEAD_SPIN_PAUSES = 1000
SYS_FUTEX = 202  # x86-64
FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE = 128, 129


def _hide(value: ir.GlobalValue, hidden: bool) -> None:
    # llvmlite has no visibility field; "hidden" in the linkage slot prints as `hidden`
    # (external linkage, hidden visibility), as for kernels in a shared library.
    if hidden:
        value.linkage = "hidden"


def team_record(module: ir.Module, define: bool, hidden: bool) -> ir.GlobalVariable:
    """`ember_team`, defined (zeroed, 64-byte aligned) or declared external."""
    existing = module.globals.get(TEAM_SYMBOL)
    if existing is not None:
        return existing
    record = ir.GlobalVariable(module, ir.ArrayType(I64, TEAM_WORDS), TEAM_SYMBOL)
    record.align = 64
    if define:
        record.initializer = ir.Constant(record.value_type, None)
        _hide(record, hidden)
    return record


def declare_run(module: ir.Module, hidden: bool) -> ir.Function:
    existing = module.globals.get(RUN_SYMBOL)
    if existing is not None:
        return existing
    fn = ir.Function(module, RUN_TYPE, RUN_SYMBOL)
    _hide(fn, hidden)
    return fn


def _declare(module: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(ret, args), name)


def _word(b: ir.IRBuilder, record: ir.Value, index: int) -> ir.Value:
    return b.gep(record, [I32(0), I32(index)])


def _load(b: ir.IRBuilder, record: ir.Value, index: int) -> ir.Value:
    return b.load_atomic(_word(b, record, index), "seq_cst", 8, typ=I64)


def _store(b: ir.IRBuilder, value: ir.Value, record: ir.Value, index: int) -> None:
    b.store_atomic(value, _word(b, record, index), "seq_cst", 8)


def _self(b: ir.IRBuilder) -> ir.Value:
    return b.call(_declare(b.module, "pthread_self", I64, []), [])


def _wait_round(b: ir.IRBuilder, rounds: ir.Value) -> ir.Value:
    """One round of a worker's wait: `pause` for the first SPIN_PAUSES rounds, then
    `sched_yield`. Returns the next round count."""
    module = b.module
    with b.if_else(b.icmp_unsigned("<", rounds, I32(SPIN_PAUSES))) as (spin, give_up):
        with spin:
            b.call(_declare(module, "llvm.x86.sse2.pause", VOID, []), [])
        with give_up:
            b.call(_declare(module, "sched_yield", I32, []), [])
    return b.add(rounds, I32(1))  # at SPIN_PAUSES + YIELDS the worker sleeps instead


def define_team(module: ir.Module, hidden: bool) -> ir.Function:
    """Define the team record, `ember_team_run` and `ember_team_worker`; return the former."""
    record = team_record(module, True, hidden)
    run = declare_run(module, hidden)
    _emit_run(run, record)
    worker = ir.Function(module, ir.FunctionType(VOID, []), WORKER_SYMBOL)
    worker.linkage = "internal"
    _emit_worker(worker, record)
    return run


def _emit_run(run: ir.Function, record: ir.Value) -> None:
    run.attributes.add("nounwind")
    fn, ctx, threads = run.args
    b = ir.IRBuilder(run.append_basic_block("entry"))
    post = run.append_basic_block("post")
    gomp = run.append_basic_block("gomp")
    owned = b.icmp_unsigned("==", _load(b, record, OWNER), _self(b))
    b.cbranch(owned, post, gomp)

    b.position_at_end(gomp)
    launch = _declare(b.module, "GOMP_parallel", VOID, [PTR, PTR, I32, I32])
    b.call(launch, [fn, ctx, threads, I32(0)])
    b.ret_void()

    # Only thread 0 writes JOB, FN and CTX while the team lives. A region reached inside a
    # job (a function with a region of its own called from a region's body) finds JOB open:
    # it runs on this thread alone, as a nested GOMP_parallel would.
    b.position_at_end(post)
    closed = _load(b, record, JOB)
    fn_word = b.ptrtoint(fn, I64)
    nested = run.append_basic_block("nested")
    publish = run.append_basic_block("publish")
    b.cbranch(b.icmp_unsigned("!=", b.and_(closed, I64(1)), I64(0)), nested, publish)
    b.position_at_end(nested)
    b.call(b.inttoptr(fn_word, REGION_TYPE.as_pointer()), [ctx])
    b.ret_void()
    b.position_at_end(publish)
    b.store(fn_word, _word(b, record, FN))
    b.store(b.ptrtoint(ctx, I64), _word(b, record, CTX))
    _store(b, b.add(closed, I64(1)), record, JOB)
    _wake_sleepers(b, record)
    # Thread 0 claims chunks like any worker (the cast gives llvmlite the callee's type).
    b.call(b.inttoptr(fn_word, REGION_TYPE.as_pointer()), [ctx])
    _store(b, b.add(closed, I64(2)), record, JOB)
    wait = run.append_basic_block("wait")
    idle = run.append_basic_block("idle")
    spin = run.append_basic_block("spin")
    sleep = run.append_basic_block("sleep")
    block = run.append_basic_block("block")
    woken = run.append_basic_block("woken")
    done = run.append_basic_block("done")
    entry_block = b.block
    b.branch(wait)
    b.position_at_end(wait)
    rounds = b.phi(I32)
    rounds.add_incoming(I32(0), entry_block)
    left = _load(b, record, LEFT)  # LEFT before JOINED: see the module docstring
    joined = _load(b, record, JOINED)
    b.cbranch(b.icmp_unsigned("==", left, joined), done, idle)
    b.position_at_end(idle)
    b.cbranch(b.icmp_unsigned("<", rounds, I32(LEAD_SPIN_PAUSES)), spin, sleep)
    b.position_at_end(spin)
    b.call(_declare(b.module, "llvm.x86.sse2.pause", VOID, []), [])
    rounds.add_incoming(b.add(rounds, I32(1)), spin)
    b.branch(wait)
    # A joined worker is still at work: sleep until a worker leaves (see the docstring).
    b.position_at_end(sleep)
    _store(b, I64(1), record, ASLEEP)
    left = _load(b, record, LEFT)
    joined = _load(b, record, JOINED)
    b.cbranch(b.icmp_unsigned("==", left, joined), woken, block)
    b.position_at_end(block)
    _futex(b, _word(b, record, LEFT), FUTEX_WAIT_PRIVATE, b.zext(b.trunc(left, I32), I64))
    b.branch(woken)
    b.position_at_end(woken)
    _store(b, I64(0), record, ASLEEP)
    rounds.add_incoming(rounds, woken)
    b.branch(wait)
    b.position_at_end(done)
    b.ret_void()


def _wake_sleepers(b: ir.IRBuilder, record: ir.Value) -> None:
    """After a change of JOB: wake the workers sleeping on it, if any (one syscall)."""
    with b.if_then(b.icmp_unsigned("!=", _load(b, record, SLEEPERS), I64(0))):
        _futex(b, _word(b, record, JOB), FUTEX_WAKE_PRIVATE, I64(2**31 - 1))


def _futex(b: ir.IRBuilder, word: ir.Value, op: int, value: ir.Value) -> None:
    """futex(word, op, value, NULL) on the low 32 bits of an i64 word (x86-64 Linux)."""
    syscall = _declare_variadic(b.module, "syscall", I64, [I64])
    b.call(syscall, [I64(SYS_FUTEX), b.ptrtoint(word, I64), I64(op), value, I64(0)])


def _declare_variadic(
    module: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]
) -> ir.Function:
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(ret, args, var_arg=True), name)


def _emit_worker(worker: ir.Function, record: ir.Value) -> None:
    worker.attributes.add("nounwind")
    b = ir.IRBuilder(worker.append_basic_block("entry"))
    loop = worker.append_basic_block("loop")
    look = worker.append_basic_block("look")
    join = worker.append_basic_block("join")
    run = worker.append_basic_block("run")
    leave = worker.append_basic_block("leave")
    idle = worker.append_basic_block("idle")
    finished = worker.append_basic_block("exit")
    start = b.block
    b.branch(loop)

    b.position_at_end(loop)
    seen = b.phi(I64, name="seen")  # the last job this worker ran (0: none; jobs are odd)
    rounds = b.phi(I32, name="rounds")
    seen.add_incoming(I64(0), start)
    rounds.add_incoming(I32(0), start)
    job = _load(b, record, JOB)
    b.cbranch(b.icmp_signed("==", job, I64(EXIT)), finished, look)

    b.position_at_end(look)
    is_open = b.icmp_unsigned("!=", b.and_(job, I64(1)), I64(0))
    fresh = b.and_(is_open, b.icmp_unsigned("!=", job, seen))
    b.cbranch(fresh, join, idle)

    b.position_at_end(join)
    b.atomic_rmw("add", _word(b, record, JOINED), I64(1), "seq_cst")
    current = _load(b, record, JOB)  # after joining: thread 0 now waits for this worker
    still_open = b.icmp_unsigned("!=", b.and_(current, I64(1)), I64(0))
    b.cbranch(still_open, run, leave)

    b.position_at_end(run)
    region = b.inttoptr(b.load(_word(b, record, FN), typ=I64), REGION_TYPE.as_pointer())
    b.call(region, [b.inttoptr(b.load(_word(b, record, CTX), typ=I64), PTR)])
    b.branch(leave)

    b.position_at_end(leave)
    b.atomic_rmw("add", _word(b, record, LEFT), I64(1), "seq_cst")
    wake = worker.append_basic_block("wake")
    next_job = worker.append_basic_block("next")
    b.cbranch(b.icmp_unsigned("!=", _load(b, record, ASLEEP), I64(0)), wake, next_job)
    b.position_at_end(wake)
    _futex(b, _word(b, record, LEFT), FUTEX_WAKE_PRIVATE, I64(1))
    b.branch(next_job)
    b.position_at_end(next_job)
    seen.add_incoming(b.select(still_open, current, job), next_job)
    rounds.add_incoming(I32(0), next_job)
    b.branch(loop)

    b.position_at_end(idle)
    awake = worker.append_basic_block("awake")
    sleep = worker.append_basic_block("sleep")
    block = worker.append_basic_block("block")
    woken = worker.append_basic_block("woken")
    b.cbranch(b.icmp_unsigned("<", rounds, I32(SPIN_PAUSES + YIELDS)), awake, sleep)
    b.position_at_end(awake)
    next_rounds = _wait_round(b, rounds)
    seen.add_incoming(seen, b.block)
    rounds.add_incoming(next_rounds, b.block)
    b.branch(loop)
    # Sleep until thread 0 posts (it wakes JOB's sleepers after changing JOB).
    b.position_at_end(sleep)
    b.atomic_rmw("add", _word(b, record, SLEEPERS), I64(1), "seq_cst")
    b.cbranch(b.icmp_unsigned("==", _load(b, record, JOB), job), block, woken)
    b.position_at_end(block)
    _futex(b, _word(b, record, JOB), FUTEX_WAIT_PRIVATE, b.zext(b.trunc(job, I32), I64))
    b.branch(woken)
    b.position_at_end(woken)
    b.atomic_rmw("sub", _word(b, record, SLEEPERS), I64(1), "seq_cst")
    seen.add_incoming(seen, woken)
    rounds.add_incoming(I32(0), woken)
    b.branch(loop)

    b.position_at_end(finished)
    b.ret_void()


def emit_team_entry(
    module: ir.Module,
    entry: ir.Function,
    body: ir.Function,
    num_threads: ir.GlobalVariable,
) -> None:
    """Define `entry` as: with `ember_num_threads` > 1 and no team already running this
    program, one team for the call (thread 0 runs `body`, the others `ember_team_worker`);
    otherwise `body` directly. `body` has `entry`'s type and returns nothing; `define_team`
    ran on `module` first."""
    record = module.globals[TEAM_SYMBOL]
    worker = module.globals[WORKER_SYMBOL]
    entry.attributes.add("nounwind")
    args = list(entry.args)
    packed_type = ir.LiteralStructType([a.type for a in args])

    # void team(ptr packed): what each thread of the run's team runs.
    team = ir.Function(module, REGION_TYPE, f"{entry.name}.team")
    team.linkage = "internal"
    team.attributes.add("nounwind")
    tb = ir.IRBuilder(team.append_basic_block("entry"))
    lead = team.append_basic_block("lead")
    work = team.append_basic_block("work")
    thread = tb.call(_declare(module, "omp_get_thread_num", I32, []), [])
    tb.cbranch(tb.icmp_signed("==", thread, I32(0)), lead, work)
    tb.position_at_end(lead)
    unpacked = [
        tb.load(tb.gep(team.args[0], [I32(0), I32(i)], source_etype=packed_type), typ=a.type)
        for i, a in enumerate(args)
    ]
    tb.call(body, unpacked)
    _store(tb, I64(EXIT), record, JOB)  # after the last job's wait: no job is open
    _wake_sleepers(tb, record)
    tb.ret_void()
    tb.position_at_end(work)
    tb.call(worker, [])
    tb.ret_void()

    b = ir.IRBuilder(entry.append_basic_block("entry"))
    packed = b.alloca(packed_type)
    claim = entry.append_basic_block("claim")
    launch = entry.append_basic_block("launch")
    alone = entry.append_basic_block("alone")
    threads = b.load(num_threads, typ=I32)
    b.cbranch(b.icmp_signed(">", threads, I32(1)), claim, alone)

    # The team is this call's only if OWNER was 0: a concurrent call of the same program
    # (another thread, same engine or library) runs alone, its regions on GOMP_parallel.
    b.position_at_end(claim)
    me = _self(b)
    swap = b.cmpxchg(_word(b, record, OWNER), I64(0), me, "seq_cst", "seq_cst")
    b.cbranch(b.extract_value(swap, 1), launch, alone)

    b.position_at_end(launch)
    # No worker of an earlier run is alive (its GOMP_parallel returned): a fresh record.
    for index in (JOB, JOINED, SLEEPERS, LEFT, ASLEEP):
        _store(b, I64(0), record, index)
    for i, a in enumerate(args):
        b.store(a, b.gep(packed, [I32(0), I32(i)]))
    gomp = _declare(module, "GOMP_parallel", VOID, [PTR, PTR, I32, I32])
    b.call(gomp, [team, packed, threads, I32(0)])
    _store(b, I64(0), record, OWNER)
    b.ret_void()

    b.position_at_end(alone)
    b.call(body, args)
    b.ret_void()
