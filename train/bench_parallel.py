"""python -m train.bench_parallel [--config C] [--repeats 30] [--impl ffi|xla] [--json OUT]:
what the two modes of config.parallelism cost, on the devices this process has (on a CPU host,
XLA_FLAGS=--xla_force_host_platform_device_count=4 makes 4).

- "step": the training step of the config's model (the main job's RubiksNet-Tiny by default) on a
  random batch of optim.batch_size clips, under pmap and under jit (train.parallel), steps/s.
- "op": rubiks_shift forward + both gradients (--impl; ffi when built, else xla) at the paper's layer
  shape per device (--op_shape), (8, 8, 56, 56, 72) float32: x split over all devices along N under plain `jit`
  (the op's own partitioning rule), the same under `shard_map` (each device calls the op on its
  block by hand: what partitioning should cost at best), and one device's call on one block.

The variants are timed interleaved (one sample of each in turn), medians of `repeats` samples.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from ml_collections import config_flags

from rubiks_jax.bench.timing import machine_description
from rubiks_jax.ops import rubiks_shift
from train import construct, parallel, steps


FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "train/configs/synthetic.py", "training config")
flags.DEFINE_integer("repeats", 30, "timed samples per variant")
flags.DEFINE_string("json", "bench_out/parallel.json", "where to write the results")
flags.DEFINE_list("op_shape", ["8", "8", "56", "56", "72"], "the op's (N, T, H, W, C) a device")
flags.DEFINE_enum("impl", "", ["", "ffi", "xla"], "the op's implementation (default: ffi when built)")


def interleaved(fns: dict, make_inputs, repeats: int) -> dict[str, float]:
    """{name: median seconds} of fn(*make_inputs(name)), one sample of each fn in turn; the inputs
    are made and ready before each clock starts, every fn runs twice untimed first (compiles)."""
    for name, fn in fns.items():
        for _ in range(2):
            jax.block_until_ready(fn(*make_inputs(name)))
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            args = jax.block_until_ready(make_inputs(name))
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def step_rows(config, repeats: int) -> list[dict]:
    run = construct.assemble(config, [f"class{i}" for i in range(10)], steps_per_epoch=100)
    d = run.data
    batch_size = config.optim.batch_size
    rng = np.random.default_rng(0)
    batch = {"video": rng.standard_normal((batch_size, d.num_frames, d.crop_size, d.crop_size, 3),
                                          np.float32),
             "label": rng.integers(0, 10, (batch_size,)).astype(np.int32)}
    modes = {mode: parallel.Parallel(mode) for mode in parallel.MODES}
    step = functools.partial(steps.train_step, model=run.model, tx=run.tx, loss_fn=run.loss_fn,
                             temperature_fn=run.temperature_fn)
    fns = {mode: m.train_step(step) for mode, m in modes.items()}
    rngs = {mode: m.place(run.dropout_rng) for mode, m in modes.items()}

    def make_inputs(mode):  # a fresh state each call: the step donates it
        m = modes[mode]
        return m.place(run.state), m.shard(batch), rngs[mode]

    median = interleaved(fns, make_inputs, repeats)
    return [dict(kind="step", variant=mode, median_s=median[mode], steps_per_s=1 / median[mode],
                 clips_per_s=batch_size / median[mode], batch=batch_size,
                 model=f"{config.model.arch}-{config.model.tier}") for mode in parallel.MODES]


def op_rows(repeats: int, impl: str, shape: tuple[int, ...]) -> list[dict]:
    from rubiks_jax.ops import ffi_available

    impl = impl or ("ffi" if ffi_available() else "xla")
    devices = jax.devices()
    mesh = Mesh(np.array(devices), ("data",))
    n = shape[0]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n * len(devices),) + shape[1:], np.float32)
    shift = jnp.asarray(rng.uniform(-1.5, 1.5, (shape[-1], 3)), jnp.float32)

    def fwd_bwd(x, s):
        y, vjp = jax.vjp(lambda a, b: rubiks_shift(a, b, impl=impl), x, s)
        return (y,) + vjp(y)

    def per_block(x, s):
        y, dx, ds = fwd_bwd(x, s)
        return y, dx, jax.lax.psum(ds, "data")

    split = NamedSharding(mesh, P("data"))
    placed = {"jit sharded": jax.device_put(x, split), "shard_map": jax.device_put(x, split),
              "one device, one block": jax.device_put(x[:n], devices[0])}
    fns = {"jit sharded": jax.jit(fwd_bwd),
           "shard_map": jax.jit(jax.shard_map(per_block, mesh=mesh, in_specs=(P("data"), P()),
                                              out_specs=(P("data"), P("data"), P()))),
           "one device, one block": jax.jit(fwd_bwd)}
    median = interleaved(fns, lambda name: (placed[name], shift), repeats)
    return [dict(kind="op", variant=name, median_s=t, impl=impl, shape_per_device=list(shape),
                 devices=len(devices)) for name, t in median.items()]


def format_table(result: dict) -> str:
    lines = [f"parallelism benchmark on {result['machine']}, {result['devices']} devices",
             "kind  variant                 median ms   steps/s   clips/s"]
    for r in result["rows"]:
        extra = (f"{r['steps_per_s']:9.2f} {r['clips_per_s']:9.1f}" if r["kind"] == "step"
                 else f"  (op fwd+bwd, impl {r['impl']}, {tuple(r['shape_per_device'])} a device)")
        lines.append(f"{r['kind']:5s} {r['variant']:22s} {r['median_s'] * 1e3:10.2f} {extra}")
    return "\n".join(lines)


def main(argv) -> None:
    del argv
    shape = tuple(int(v) for v in FLAGS.op_shape)
    rows = step_rows(FLAGS.config, FLAGS.repeats) + op_rows(FLAGS.repeats, FLAGS.impl, shape)
    result = {"suite": "parallel", "machine": machine_description(),
              "devices": jax.device_count(), "command": " ".join(sys.argv), "rows": rows}
    print(format_table(result))
    os.makedirs(os.path.dirname(FLAGS.json) or ".", exist_ok=True)
    with open(FLAGS.json, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
    app.run(main)
