"""Model suite: training and inference clips/s of RubiksNet tiny..large against TSM-ResNet50.

All models see the same batch of (B, T, H, W, 3) clips in one run. "train" is a whole training
step: forward in training mode (batch statistics), softmax cross-entropy, backward, and the
library's optimizer update (rubiks_jax.optim.make_optimizer: SGD with the decay / no-decay / shift
groups and the shift-gradient normalisation); "infer" is the forward pass on running statistics.
Each row carries multiply-adds and parameters for one clip (rubiks_jax.flops) beside its speed.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rubiks_jax import flops
from rubiks_jax.bench.timing import default_repeats, machine_description, on_accelerator, time_fn
from rubiks_jax.models import TIERS, create_model
from rubiks_jax.optim import make_optimizer

NUM_CLASSES = 174  # Something-Something-v2
BASELINE = "TSM-ResNet50"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=None,
                        help="clips per step (default 8 on an accelerator, 4 on the CPU)")
    parser.add_argument("--size", type=int, default=None,
                        help="frame height = width, a multiple of 32 (default 224 on an "
                             "accelerator, 128 on the CPU)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")


def models(frames: int, dtype) -> dict:
    """The RubiksNet tiers and the TSM-ResNet50 baseline, by display name (rubiks_jax.models)."""
    out = {f"RubiksNet-{tier}": create_model("rubiksnet", NUM_CLASSES, tier=tier,
                                             num_frames=frames, dtype=dtype)
           for tier in TIERS}
    out[BASELINE] = create_model("tsm", NUM_CLASSES, depth=50, num_frames=frames, dtype=dtype)
    return out


def step_fns(model, variables) -> dict:
    """Jitted training step and inference forward of `model` at fixed initial variables."""
    params, batch_stats = variables["params"], variables["batch_stats"]
    tx, _ = make_optimizer(0.01, steps_per_epoch=100, warmup_epochs=1.0, params=params)
    opt_state = tx.init(params)

    @jax.jit
    def train(x, labels):
        def loss_fn(p):
            logits, updates = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                          mutable=["batch_stats"])
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, updates["batch_stats"]

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, new_opt = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, new_opt, loss

    @jax.jit
    def infer(x, labels):
        return model.apply(variables, x, train=False)

    return {"train": train, "infer": infer}


def run(repeats: int | None = None, quick: bool = False, batch: int | None = None,
        size: int | None = None, frames: int = 8, dtype: str = "float32") -> dict:
    accel = on_accelerator()
    batch = batch or (2 if quick else (8 if accel else 4))
    size = size or (32 if quick else (224 if accel else 128))
    shape = (batch, frames, size, size, 3)
    compute_dtype = jnp.dtype(dtype)

    def make(i):
        kx, kl = jax.random.split(jax.random.PRNGKey(3000 + i))
        x = jax.random.normal(kx, shape, jnp.float32).astype(compute_dtype)
        return x, jax.random.randint(kl, (batch,), 0, NUM_CLASSES)

    n_rep = repeats or default_repeats(cpu=2 if quick else 3, gpu=20)
    rows = []
    for name, model in models(frames, compute_dtype).items():
        if quick and name not in ("RubiksNet-tiny", BASELINE):
            continue
        macs, n_params = flops.totals(flops.count(model, (1,) + shape[1:]))
        variables = model.init(jax.random.PRNGKey(0), jnp.zeros(shape, compute_dtype))
        for mode, fn in step_fns(model, variables).items():
            t = time_fn(fn, make, n_rep)
            rows.append(dict(model=name, mode=mode, shape=list(shape), dtype=dtype, **t.as_dict(),
                             clips_per_s=batch / t.median_s, macs_per_clip=macs, params=n_params))
    base = {r["mode"]: r["clips_per_s"] for r in rows if r["model"] == BASELINE}
    for r in rows:
        r["x_baseline"] = r["clips_per_s"] / base[r["mode"]]
    return {"suite": "model", "machine": machine_description(), "rows": rows}


def format_table(result: dict) -> str:
    r0 = result["rows"][0]
    lines = [f"model benchmark on {result['machine']}",
             f"batch (B,T,H,W,3) = {tuple(r0['shape'])}, {r0['dtype']}; GMACs and params per clip",
             "model              mode    median ms  [min, max] ms        clips/s    GMACs  "
             "params (M)  speed / TSM-R50"]
    for r in result["rows"]:
        lines.append(
            f"{r['model']:18s} {r['mode']:6s} {r['median_s'] * 1e3:10.1f}  "
            f"[{r['min_s'] * 1e3:8.1f}, {r['max_s'] * 1e3:8.1f}] {r['clips_per_s']:10.2f} "
            f"{r['macs_per_clip'] / 1e9:8.2f} {r['params'] / 1e6:10.2f} {r['x_baseline']:10.2f}x")
    return "\n".join(lines)
