"""Op suite: forward, backward and forward+backward of rubiks_shift, impl="ffi" (the kernels)
against impl="xla" (the fast pure-XLA path) in one run, as device time per call; the readable oracle
impl="reference" is timed too, for the record (forward and forward+backward, fewer samples).

Modes: "fwd" (y), "bwd" (the input and shift gradients alone, from the residuals), "fwd+bwd"
(both, as in training). Each entry is timed as K back-to-back calls inside one jitted loop, divided
by K (`timing.time_per_call`): one call of the op lasts about as long as its dispatch from Python
on a GPU, and the loop removes the dispatch. Each call's outputs feed the next call's inputs, so
XLA can neither hoist nor merge calls (tests/bench/test_bench.py checks the compiled loop).

Effective bandwidth is measured against the bytes the op must move (its memory floor): forward
reads x and writes y; the backward reads dy and x and writes dx. So forward moves |x| + |y|
elements, backward 2|x| + |y| and forward+backward 3|x| + 2|y|. The floor time of each entry is
those bytes at the bandwidth of the fastest pass that reads one tensor and writes another, timed
the same way in the same run:
- CPU: x -> -x into a separate buffer (`ffi_kernels.stream_negate`, two calls per trip like the
  kernels), with streaming and with plain stores; the faster counts. An in-place x -> -x (XLA, one
  call per trip) is timed too and reported, not used: in place, a CPU pays no read for ownership
  and keeps a single tensor's lines in its cache, which no op that writes a new tensor can do (it
  ran at 2.6-3x the out-of-place rate at the paper shape in float32 on the Intel VM).
- GPU: the in-place x -> -x (a GPU's stores read nothing, so in place costs what out of place does).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rubiks_jax.bench.timing import machine_description, on_accelerator, time_per_call
from rubiks_jax.ops import ffi_available, ffi_kernels, rubiks_shift

PAPER_SHAPE = (8, 8, 56, 56, 72)  # (N, T, H, W, C): the paper's latency benchmark
SMALL_SHAPE = (2, 8, 14, 14, 32)
QUICK_SHAPE = (2, 4, 8, 8, 16)

# Calls per loop trip (timing.loop_calls). Kernels: two, else XLA copies each output into the
# loop state. Pure XLA (xla, reference): one, as XLA:CPU would fuse two consecutive calls into one
# program (the reference ran 1.6x slower per call at the paper shape, measured; the fast path would
# recompute the first call inside the second's gathers); the cost is one copy of a tensor per call
# (the output into the loop state). The floors: the in-place flip one (two elementwise calls would
# be fused into a single pass), the out-of-place one two (a custom call, like the kernels).
CALLS_PER_TRIP = {"ffi": 2, "xla": 1, "reference": 1, "inplace": 1, "stream": 2, "plain": 2}
# Every mode of the kernels and of the fast pure-XLA path; the reference (over a second per call at
# the paper shape) only forward and forward+backward, with at most REFERENCE_REPEATS samples.
MODES = {"ffi": ("fwd", "bwd", "fwd+bwd"), "xla": ("fwd", "bwd", "fwd+bwd"),
         "reference": ("fwd", "fwd+bwd")}
REFERENCE_REPEATS = 3
# Wall time one sample of K calls should last (K is calibrated for it). On a GPU a sample only
# has to dwarf one dispatch (~10-50 us). On the CPU each sample also pays once for first touching
# the fresh buffers the loop allocates (~2 us per 4 KiB page: ~30 ms for one 58 MB tensor at the
# paper shape, against ~20 ms for one f32 forward), so its samples must be far longer.
TARGET_S = {"gpu": 0.02, "cpu": 0.5}


def _inputs(shape, dtype):
    c = shape[-1]

    def make(i):
        kx, ks, kd = jax.random.split(jax.random.PRNGKey(1000 + i), 3)
        x = jax.random.normal(kx, shape, jnp.float32).astype(dtype)
        s = jax.random.uniform(ks, (c, 3), jnp.float32, -1.0, 1.0)
        dy = jax.random.normal(kd, shape, jnp.float32).astype(dtype)
        return x, s, dy

    return make


Carry = tuple[jax.Array, jax.Array, jax.Array]  # (x, shift, dy), as made by _inputs

# Scale of the shift's update between calls: XLA must keep any nonzero factor, and 1e-30 times a
# value of order 1 rounds away against a float32 shift above 1e-23, so the shift keeps its value.
_NUDGE = 1e-30


def _nudge(shift: jax.Array, v: jax.Array) -> jax.Array:
    """shift + a negligible multiple of v ((C, 3) float32): a new shift for XLA, the same value."""
    return shift + _NUDGE * v


def _steps(impl: str) -> dict[str, Callable[[Carry], Carry]]:
    """One call of each mode as a loop step (x, shift, dy) -> the next call's (x, shift, dy).

    Stride 1 and no padding, so y, dx, x and dy share a shape and each output feeds an input of
    the next call whole: a real data dependency that consumes every output element at no extra
    cost (a partial read would let XLA compute only part of the pure-XLA op). The shift also
    changes every call (by a nudge that leaves its value as it is), so nothing that depends on the
    shift alone (the pure-XLA op's full-size gather indices) can be hoisted out of the loop
    either. The values drift (zero padding shifts
    content out: all zeros after ~100 calls at the small shape, no denormals); the kernels' cost
    does not depend on them (a CPU forward on zeros or on denormals times as on random data).
    """

    def op(a: jax.Array, b: jax.Array) -> jax.Array:
        return rubiks_shift(a, b, impl=impl)

    def fwd(carry: Carry) -> Carry:
        x, s, dy = carry
        y = op(x, s)
        # The shift is nudged by itself, not by an element of y: a second consumer of y changes
        # how XLA:CPU fuses a pure-XLA forward (the reference's ran 3.5x faster at the paper shape,
        # measured), so that op would no longer be the one a plain jitted call runs.
        return y, _nudge(s, s), dy

    def bwd(carry: Carry) -> Carry:
        # y is unused, so XLA drops the forward: what remains is the backward alone (input and
        # shift gradients from the residuals x and shift).
        x, s, dy = carry
        _, vjp = jax.vjp(op, x, s)
        dx, ds = vjp(dy)
        # x stays, loop-invariant: the only new output of its shape is dx, already the next dy
        # (one buffer read as both inputs would flatter the call), and rotating x <- dy makes
        # XLA copy a buffer per call. Every call still gets a new dy and shift, so no kernel can
        # be hoisted (nor anything of the pure-XLA op: its compiled loop leaves nothing outside).
        return x, _nudge(s, ds), dx

    def fwd_bwd(carry: Carry) -> Carry:
        x, s, dy = carry
        y, vjp = jax.vjp(op, x, s)
        dx, ds = vjp(dy)
        return y, _nudge(s, ds), dx

    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd_bwd}


def _negate_bits(x: jax.Array) -> jax.Array:
    """-x as a flip of the sign bit on x's bits (an unsigned integer of its width): the same
    values as -x at the cost of one integer op per element, whatever the float type. XLA:CPU's own
    float negation ran 2-3x slower at the paper shape in float32 and 3.5-8x in bfloat16 (measured on
    a Sapphire Rapids VM): it would put the floor below what the memory allows."""
    bits = {2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}[x.dtype.itemsize]
    sign = np.array(1 << (8 * x.dtype.itemsize - 1), bits)
    return jax.lax.bitcast_convert_type(jax.lax.bitcast_convert_type(x, bits) ^ sign, x.dtype)


def _inplace_step(carry: Carry) -> Carry:
    """x -> -x in place (XLA updates the loop state): one read and one write of x per call."""
    x, s, dy = carry
    return _negate_bits(x), s, dy


def _out_of_place_step(streaming: bool) -> Callable[[Carry], Carry]:
    """x -> -x into a new buffer (the CPU kernels' stream_negate): one read of x, one write."""

    def step(carry: Carry) -> Carry:
        x, s, dy = carry
        return ffi_kernels.stream_negate(x, streaming), s, dy

    return step


def _floor_steps() -> tuple[dict[str, Callable[[Carry], Carry]], tuple[str, ...]]:
    """The passes timed for the floor, and which of them may set it (see the module docstring)."""
    if on_accelerator():
        return {"inplace": _inplace_step}, ("inplace",)
    return ({"stream": _out_of_place_step(True), "plain": _out_of_place_step(False),
             "inplace": _inplace_step}, ("stream", "plain"))


def add_arguments(parser) -> None:
    parser.add_argument("--impls", default=",".join(MODES),
                        help=f"comma-separated, of {', '.join(MODES)} (default: all; speedups "
                             "need the baselines in the same run)")


def run(repeats: int | None = None, quick: bool = False, impls: str | None = None) -> dict:
    chosen = impls.split(",") if impls else list(MODES)
    for impl in chosen:
        if impl not in MODES:
            raise SystemExit(f"--impls: unknown impl {impl!r} (expected {', '.join(MODES)})")
    if not ffi_available():
        raise SystemExit("the op suite compares impl='ffi' with the pure-XLA impls: build the "
                         "kernels first")
    shapes = [QUICK_SHAPE] if quick else [SMALL_SHAPE, PAPER_SHAPE]
    dtypes = [jnp.float32, jnp.bfloat16]
    target_s = TARGET_S["gpu" if on_accelerator() else "cpu"]
    # Quick runs only check that everything runs: a fixed K = 2, one compile per entry.
    iters = 2 if quick else None
    rows = []
    for shape in shapes:
        n_rep = repeats or (3 if quick else 7)
        for dtype in dtypes:
            make = _inputs(shape, dtype)
            itemsize = np.dtype(dtype).itemsize
            elems = int(np.prod(shape))
            steps, eligible = _floor_steps()
            passes = {name: time_per_call(step, make, n_rep, target_s, CALLS_PER_TRIP[name],
                                          iters=iters) for name, step in steps.items()}
            floor_passes = {name: 2 * elems * itemsize / t.median_s / 1e9  # GB/s
                            for name, t in passes.items()}
            floor_kind = max(eligible, key=floor_passes.get)
            floor_bw = floor_passes[floor_kind] * 1e9
            floor_bytes = {"fwd": 2 * elems * itemsize, "bwd": 3 * elems * itemsize,
                           "fwd+bwd": 5 * elems * itemsize}
            for impl, modes in ((i, MODES[i]) for i in MODES if i in chosen):
                reps = min(n_rep, REFERENCE_REPEATS) if impl == "reference" else n_rep
                for mode in modes:
                    t = time_per_call(_steps(impl)[mode], make, reps, target_s,
                                      CALLS_PER_TRIP[impl], iters=iters)
                    rows.append(dict(shape=list(shape), dtype=np.dtype(dtype).name, mode=mode,
                                     impl=impl, **t.as_dict(), bytes=floor_bytes[mode],
                                     gbps=floor_bytes[mode] / t.median_s / 1e9,
                                     floor_s=floor_bytes[mode] / floor_bw,
                                     floor_kind=floor_kind, floor_gbps=floor_bw / 1e9,
                                     floor_iters=passes[floor_kind].iters,
                                     floor_passes_gbps=floor_passes))
    # Speedups are t(baseline) / t(row), both medians of this run; None where the baseline was not
    # timed (the reference's backward alone).
    by_key = {(tuple(r["shape"]), r["dtype"], r["mode"], r["impl"]): r for r in rows}
    for r in rows:
        for baseline in ("xla", "reference"):
            base = by_key.get((tuple(r["shape"]), r["dtype"], r["mode"], baseline))
            r[f"speedup_vs_{baseline}"] = (None if base is None
                                           else base["median_s"] / r["median_s"])
        r["x_floor"] = r["median_s"] / r["floor_s"]
    return {"suite": "op", "machine": machine_description(), "timing": "per call: one jitted loop "
            "of K back-to-back calls per sample, its time / K", "rows": rows}


def _ratio(value: float | None, width: int) -> str:
    return f"{value:{width - 1}.2f}x" if value is not None else f"{'-':>{width}s}"


def format_table(result: dict) -> str:
    lines = [f"rubiks_shift op benchmark on {result['machine']}",
             "per-call device time: each sample is one jitted loop of K back-to-back calls, / K",
             "speedup vs X = median time of impl X / median time of the row, same shape, dtype and "
             "mode, this run (- where X was not timed)",
             "(N,T,H,W,C)          dtype     mode     impl        median us  [min, max] us        "
             "      GB/s  x floor  speedup vs xla  vs reference      K"]
    for r in result["rows"]:
        lines.append(
            f"{str(tuple(r['shape'])):20s} {r['dtype']:9s} {r['mode']:8s} {r['impl']:9s} "
            f"{r['median_s'] * 1e6:11.1f}  [{r['min_s'] * 1e6:9.1f}, {r['max_s'] * 1e6:9.1f}] "
            f"{r['gbps']:8.2f} {r['x_floor']:8.1f} {_ratio(r['speedup_vs_xla'], 15)} "
            f"{_ratio(r['speedup_vs_reference'], 13)} {r['iters']:6d}")
    floors = {(tuple(r["shape"]), r["dtype"]): r for r in result["rows"]}
    lines.append("floor = bytes the op must move / bandwidth of the fastest out-of-place x -> -x "
                 "(stream: streaming stores, plain: plain stores; inplace: XLA's in-place x -> -x, "
                 "the floor on a GPU, for the record on a CPU) timed the same way in this run:")
    for (shape, dtype), r in floors.items():
        passes = ", ".join(f"{name} {gbps:.1f}" for name, gbps in r["floor_passes_gbps"].items())
        lines.append(f"  {shape} {dtype}: {r['floor_kind']} {r['floor_gbps']:.1f} GB/s "
                     f"(K={r['floor_iters']}); passes in GB/s: {passes}")
    return "\n".join(lines)
