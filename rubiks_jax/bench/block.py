"""Block suite: the paper's layer-level latency comparison in one run (docs/DESIGN.md, "Layers and
models").

The 3D-conv block, the TSM block (fixed temporal shift + 3x3 2-D conv) and the RubiksShift block,
72 channels in and out, at (N, T, H, W, C) = (8, 8, 56, 56, 72), in float32 and bfloat16:
- "fwd": inference (BatchNorm on running statistics), y = block(x);
- "fwd+bwd": training mode (batch statistics), the gradient of sum(y * dy) with respect to the
  parameters and x, as one training step's share of work for that block.
Each row carries the block's multiply-adds and parameters (rubiks_jax.flops) and its latency
ratio to the RubiksShift block measured in the same run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rubiks_jax import flops
from rubiks_jax.bench.timing import default_repeats, machine_description, time_fn
from rubiks_jax.layers.baselines import layer_blocks

PAPER_SHAPE = (8, 8, 56, 56, 72)  # (N, T, H, W, C)
QUICK_SHAPE = (2, 4, 16, 16, 24)
REFERENCE = "rubiks_shift"


def _inputs(shape, dtype):
    def make(i):
        kx, kd = jax.random.split(jax.random.PRNGKey(2000 + i))
        x = jax.random.normal(kx, shape, jnp.float32).astype(dtype)
        dy = jax.random.normal(kd, shape, jnp.float32).astype(dtype)
        return x, dy

    return make


def block_fns(block, variables) -> dict:
    """Jitted forward (inference) and forward+backward (training-mode gradient) of a block."""
    params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}

    @jax.jit
    def fwd(x, dy):
        return block.apply(variables, x, train=False)

    @jax.jit
    def fwd_bwd(x, dy):
        def loss(p, x):
            y, _ = block.apply({"params": p, **state}, x, train=True, mutable=["batch_stats"])
            return jnp.sum(y.astype(jnp.float32) * dy.astype(jnp.float32))

        return jax.grad(loss, argnums=(0, 1))(params, x)

    return {"fwd": fwd, "fwd+bwd": fwd_bwd}


def run(repeats: int | None = None, quick: bool = False) -> dict:
    shape = QUICK_SHAPE if quick else PAPER_SHAPE
    channels = shape[-1]
    n_rep = repeats or default_repeats(cpu=3 if quick else 5, gpu=50)
    rows = []
    for dtype in (jnp.float32, jnp.bfloat16):
        make = _inputs(shape, dtype)
        for name, block in layer_blocks(channels, dtype=dtype).items():
            macs, n_params = flops.totals(flops.count(block, (1,) + shape[1:]))
            variables = block.init(jax.random.PRNGKey(0), jnp.zeros(shape, dtype))
            for mode, fn in block_fns(block, variables).items():
                t = time_fn(fn, make, n_rep)
                rows.append(dict(shape=list(shape), dtype=np.dtype(dtype).name, block=name,
                                 mode=mode, **t.as_dict(), macs_per_clip=macs, params=n_params))
    ref = {(r["dtype"], r["mode"]): r["median_s"] for r in rows if r["block"] == REFERENCE}
    for r in rows:
        r["x_rubiks_shift"] = r["median_s"] / ref[(r["dtype"], r["mode"])]
    return {"suite": "block", "machine": machine_description(), "rows": rows}


def format_table(result: dict) -> str:
    shape = tuple(result["rows"][0]["shape"])
    lines = [f"block benchmark on {result['machine']}",
             f"input (N,T,H,W,C) = {shape}; GMACs and params per block for one clip",
             "block          dtype     mode      median ms  [min, max] ms       GMACs   params  "
             "time / rubiks_shift"]
    for r in result["rows"]:
        lines.append(
            f"{r['block']:14s} {r['dtype']:9s} {r['mode']:8s} {r['median_s'] * 1e3:10.2f}  "
            f"[{r['min_s'] * 1e3:8.2f}, {r['max_s'] * 1e3:8.2f}] {r['macs_per_clip'] / 1e9:8.3f} "
            f"{r['params']:8d} {r['x_rubiks_shift']:10.2f}x")
    return "\n".join(lines)
