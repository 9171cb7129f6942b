"""A short demo of the RubiksShift op: recover an unknown per-channel 3D shift by gradient descent.

A random clip is shifted by hidden fractional offsets (dt, dh, dw) per channel; starting from zero,
the shift is learned through the op's shift gradient by minimising the squared error to that target.

    python -m rubiks_jax.demo [--impl ffi|xla] [--steps 200]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from rubiks_jax.ops import ffi_available, rubiks_shift


def smooth_clip(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """(N, T, H, W, C) random clip, blurred so the loss is smooth in the shift over a few pixels."""
    x = jax.random.normal(key, shape)
    for axis in (1, 2, 3):
        for _ in range(3):
            x = (x + jnp.roll(x, 1, axis) + jnp.roll(x, -1, axis)) / 3.0
    return x / jnp.std(x)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=["ffi", "xla"], default=None)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    impl = args.impl or ("ffi" if ffi_available() else "xla")

    k_x, k_s = jax.random.split(jax.random.PRNGKey(args.seed))
    x = smooth_clip(k_x, (2, 8, 32, 32, 8))
    true_shift = jax.random.uniform(k_s, (8, 3), minval=-1.5, maxval=1.5)
    target = rubiks_shift(x, true_shift, impl=impl)

    def loss(shift):
        return jnp.mean((rubiks_shift(x, shift, impl=impl) - target) ** 2)

    @jax.jit
    def step(shift, lr):
        grad = jax.grad(loss)(shift)
        # Per-channel normalised step, as RubiksNet trains its shifts
        # (docs/DESIGN.md, "Training recipe").
        norm = jnp.linalg.norm(grad, axis=1, keepdims=True) + 1e-12
        return shift - lr * grad / norm

    # Step length decays geometrically from --lr to 1e-3 of it over the run.
    decay = 1e-3 ** (1.0 / max(1, args.steps))

    print(f"RubiksShift demo: impl={impl}, jax {jax.__version__} on {jax.devices()[0].platform}")
    print(f"clip {x.shape}, hidden shifts in [-1.5, 1.5] for {true_shift.shape[0]} channels")
    shift = jnp.zeros_like(true_shift)
    start = time.perf_counter()
    for i in range(args.steps + 1):
        if i % max(1, args.steps // 8) == 0 or i == args.steps:
            err = float(jnp.max(jnp.abs(shift - true_shift)))
            print(f"step {i:4d}  loss {float(loss(shift)):.3e}  max |shift error| {err:.4f}")
        if i < args.steps:
            shift = step(shift, args.lr * decay**i)
    elapsed = time.perf_counter() - start
    print(f"learned vs hidden shift of channel 0: {np.round(np.asarray(shift[0]), 3)} vs "
          f"{np.round(np.asarray(true_shift[0]), 3)}  ({elapsed:.1f} s)")


if __name__ == "__main__":
    main()
