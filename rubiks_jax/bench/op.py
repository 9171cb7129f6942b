"""Op suite: forward, backward and forward+backward of rubiks_shift, impl="ffi" against impl="xla"
in one run.

Modes: "fwd" (y), "bwd" (the input and shift gradients alone, from the residuals), "fwd+bwd"
(both, as in training). Effective bandwidth is measured against the bytes the op must move (its
memory floor): forward reads x and writes y; the backward reads dy and x and writes dx. So forward
moves |x| + |y| elements, backward 2|x| + |y| and forward+backward 3|x| + 2|y|. A streaming
copy-like kernel (y = 2x) timed in the same run gives the machine's achievable bandwidth, hence the
floor time of each entry.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rubiks_jax.bench.timing import machine_description, time_fn
from rubiks_jax.ops import ffi_available, rubiks_shift

PAPER_SHAPE = (8, 8, 56, 56, 72)  # (N, T, H, W, C): the paper's latency benchmark
SMALL_SHAPE = (2, 8, 14, 14, 32)
QUICK_SHAPE = (2, 4, 8, 8, 16)


def _inputs(shape, dtype):
    c = shape[-1]

    def make(i):
        kx, ks, kd = jax.random.split(jax.random.PRNGKey(1000 + i), 3)
        x = jax.random.normal(kx, shape, jnp.float32).astype(dtype)
        s = jax.random.uniform(ks, (c, 3), jnp.float32, -1.0, 1.0)
        dy = jax.random.normal(kd, shape, jnp.float32).astype(dtype)
        return x, s, dy

    return make


def _fns(impl):
    fwd = jax.jit(lambda x, s, dy: rubiks_shift(x, s, impl=impl))

    @jax.jit
    def bwd(x, s, dy):
        # y is unused, so XLA drops the forward: what remains is the backward alone (input and
        # shift gradients from the residuals x and shift).
        _, vjp = jax.vjp(lambda a, b: rubiks_shift(a, b, impl=impl), x, s)
        return vjp(dy)

    @jax.jit
    def fwd_bwd(x, s, dy):
        y, vjp = jax.vjp(lambda a, b: rubiks_shift(a, b, impl=impl), x, s)
        return (y,) + vjp(dy)

    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd_bwd}


def run(repeats: int | None = None, quick: bool = False) -> dict:
    if not ffi_available():
        raise SystemExit("the op suite compares impl='ffi' with impl='xla': build the kernels first")
    shapes = [QUICK_SHAPE] if quick else [SMALL_SHAPE, PAPER_SHAPE]
    dtypes = [jnp.float32, jnp.bfloat16]
    rows = []
    for shape in shapes:
        n_rep = repeats or (3 if quick else (20 if shape == SMALL_SHAPE else 7))
        for dtype in dtypes:
            make = _inputs(shape, dtype)
            itemsize = np.dtype(dtype).itemsize
            elems = int(np.prod(shape))
            copy = time_fn(jax.jit(lambda x, s, dy: x * 2), make, n_rep)
            copy_bw = 2 * elems * itemsize / copy.median_s
            floor_bytes = {"fwd": 2 * elems * itemsize, "bwd": 3 * elems * itemsize,
                           "fwd+bwd": 5 * elems * itemsize}
            for impl in ("ffi", "xla"):
                for mode, fn in _fns(impl).items():
                    t = time_fn(fn, make, n_rep)
                    rows.append(dict(shape=list(shape), dtype=np.dtype(dtype).name, mode=mode,
                                     impl=impl, **t.as_dict(), bytes=floor_bytes[mode],
                                     gbps=floor_bytes[mode] / t.median_s / 1e9,
                                     floor_s=floor_bytes[mode] / copy_bw,
                                     copy_gbps=copy_bw / 1e9))
    by_key = {(tuple(r["shape"]), r["dtype"], r["mode"], r["impl"]): r for r in rows}
    for r in rows:
        xla = by_key[(tuple(r["shape"]), r["dtype"], r["mode"], "xla")]
        r["speedup_vs_xla"] = xla["median_s"] / r["median_s"]
        r["x_floor"] = r["median_s"] / r["floor_s"]
    return {"suite": "op", "machine": machine_description(), "rows": rows}


def format_table(result: dict) -> str:
    lines = [f"rubiks_shift op benchmark on {result['machine']}",
             "(N,T,H,W,C)          dtype     mode     impl  median ms  [min, max] ms     GB/s  "
             "x floor  speedup vs xla"]
    for r in result["rows"]:
        lines.append(
            f"{str(tuple(r['shape'])):20s} {r['dtype']:9s} {r['mode']:8s} {r['impl']:4s} "
            f"{r['median_s'] * 1e3:10.2f}  [{r['min_s'] * 1e3:7.2f}, {r['max_s'] * 1e3:7.2f}] "
            f"{r['gbps']:8.2f} {r['x_floor']:8.1f} {r['speedup_vs_xla']:10.2f}x")
    copy = {(tuple(r["shape"]), r["dtype"]): r["copy_gbps"] for r in result["rows"]}
    lines.append("floor = bytes the op must move / bandwidth of y = 2x measured in this run: " +
                 ", ".join(f"{s} {d}: {bw:.1f} GB/s" for (s, d), bw in copy.items()))
    return "\n".join(lines)
