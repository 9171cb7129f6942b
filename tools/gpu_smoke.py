"""Forward and both gradients of the CUDA kernels over the geometries that matter, for
compute-sanitizer (tools/gpu_check.py sanitize): every dtype, strides, padding, C = 1 and odd C,
shifts beyond the frame, quantize, the paper's shape, and an index extent large enough for the
64-bit-offset kernels. No result checks (the tests do that): this only has to run every kernel
variant once, in a few seconds natively.

  python tools/gpu_smoke.py           # the cases below
  python tools/gpu_smoke.py --huge    # plus a tensor of more than 2^31 elements (bf16, ~20 GB;
                                        # minutes under memcheck, so not part of the default run)
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import jax
import jax.numpy as jnp

from rubiks_jax.ops import cuda_built, rubiks_shift

DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)
# (shape (N, T, H, W, C), stride, padding, shift range, quantize). Random inputs up to 10^7
# elements, ones beyond.
SMALL = [
    ((2, 5, 7, 9, 13), (1, 1, 1), (0, 0, 0), 1.5, False),
    ((2, 5, 7, 9, 13), (2, 2, 1), (1, 0, 2), 6.0, False),
    ((1, 6, 5, 23, 7), (1, 1, 3), (0, 1, 1), 3.0, False),  # w stride > 1
    ((1, 3, 4, 37, 1), (1, 2, 2), (2, 1, 3), 12.0, False),  # C = 1, shifts past the frame
    ((3, 4, 5, 6, 8), (1, 1, 1), (0, 2, 1), 2.5, True),  # quantized shifts
]
PAPER = ((8, 8, 56, 56, 72), (1, 1, 1), (0, 0, 0), 1.0, False)
# 2^28 + 8 frames: index arithmetic along t no longer fits 32 bits (in + out * stride > 2^29), so
# the 64-bit-offset kernels run, on a tensor of only ~0.5 GB in bf16.
LONG_T = ((1, 2**28 + 8, 1, 1, 1), (1, 1, 1), (0, 0, 0), 2.0, False)
# More than 2^31 elements (offsets past int32 themselves); about 4.3 GB per tensor in bf16.
HUGE = ((1, 2, 1024, 1024, 1025), (1, 1, 1), (0, 0, 0), 1.0, False)


def run_case(shape, stride, padding, shift_range, quantize, dtype) -> float:
    """Forward, input gradient and shift gradient once (compiled first); returns seconds run."""
    kx, ks, kd = jax.random.split(jax.random.PRNGKey(sum(shape)), 3)
    s = jax.random.uniform(ks, (shape[-1], 3), jnp.float32, -shift_range, shift_range)

    def op(a, b):
        return rubiks_shift(a, b, stride=stride, padding=padding, quantize=quantize, impl="ffi")

    def data(key, shape):  # a fill kernel is cheaper than XLA's RNG under the sanitizers
        big = math.prod(shape) > 10**7
        return jnp.ones(shape, dtype) if big else jax.random.normal(key, shape, dtype)

    x = data(kx, shape)
    dy = data(kd, jax.eval_shape(op, x, s).shape)

    @jax.jit
    def fwd_bwd(a, b, g):
        y, vjp = jax.vjp(op, a, b)
        return (y,) + vjp(g)

    compiled = fwd_bwd.lower(x, s, dy).compile()
    jax.block_until_ready((x, s, dy))
    start = time.perf_counter()
    jax.block_until_ready(compiled(x, s, dy))
    return time.perf_counter() - start


def cases(huge: bool):
    for case in SMALL:
        for dtype in DTYPES:
            yield case, dtype
    yield PAPER, jnp.float32
    yield LONG_T, jnp.bfloat16
    if huge:
        yield HUGE, jnp.bfloat16


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--huge", action="store_true", help="add a case of more than 2^31 elements")
    args = parser.parse_args()
    # A sanitizer run must never pass on a machine where the kernels cannot have run on a GPU.
    if jax.default_backend() != "gpu":
        print(f"gpu smoke: no GPU: jax devices are {jax.devices()}", file=sys.stderr)
        return 1
    if not cuda_built():
        print("gpu smoke: the CUDA kernels are not built (run tools/gpu_check.py build)",
              file=sys.stderr)
        return 1
    total = time.perf_counter()
    for (shape, stride, padding, shift_range, quantize), dtype in cases(args.huge):
        seconds = run_case(shape, stride, padding, shift_range, quantize, dtype)
        print(f"{jnp.dtype(dtype).name:8s} {str(shape):22s} stride {stride} padding {padding} "
              f"shift +-{shift_range}{' quantized' if quantize else ''}: {seconds * 1e3:8.1f} ms",
              flush=True)
    print(f"gpu smoke ok on {jax.devices()[0].device_kind} ({time.perf_counter() - total:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
