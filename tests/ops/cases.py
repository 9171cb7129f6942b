"""Random test cases for the RubiksShift op: odd sizes, C = 1 and C not a multiple of 8, strides,
padding, zero / integer / negative / out-of-frame shifts (and, for the kernel-against-kernel
comparisons only, shifts beyond int32 and non-finite ones)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rubiks_jax.ops import ffi_available

needs_ffi = pytest.mark.skipif(not ffi_available(), reason="compiled kernels not installed")
# The op's implementations; the kernels' one runs against every build (marker `kernels`).
IMPLS = [pytest.param("ffi", marks=[needs_ffi, pytest.mark.kernels]), "xla", "reference"]


@dataclasses.dataclass(frozen=True)
class Case:
    shape: tuple[int, int, int, int, int]  # (N, T, H, W, C)
    stride: tuple[int, int, int] = (1, 1, 1)
    padding: tuple[int, int, int] = (0, 0, 0)
    shifts: str = "uniform"  # see make_shift
    seed: int = 0

    def __str__(self) -> str:
        return f"{self.shape}-s{self.stride}-p{self.padding}-{self.shifts}-{self.seed}"


CASES = [
    Case((2, 5, 7, 9, 11)),
    Case((1, 3, 4, 5, 1), shifts="large"),
    Case((2, 8, 6, 6, 13), stride=(1, 2, 2), shifts="mixed"),
    Case((1, 7, 9, 5, 3), stride=(2, 2, 2), padding=(1, 1, 1), shifts="large"),
    Case((3, 4, 5, 6, 8), padding=(0, 2, 1), shifts="integer"),
    Case((1, 6, 5, 7, 17), stride=(2, 1, 3), padding=(1, 0, 2), shifts="mixed", seed=3),
    Case((2, 1, 1, 10, 5), shifts="zero"),
    Case((1, 9, 3, 3, 24), stride=(3, 1, 1), padding=(2, 1, 0), shifts="uniform", seed=5),
    # Wide rows: the CPU kernels' interior fast path along w and its two edges.
    Case((1, 3, 4, 37, 6), stride=(1, 1, 2), padding=(0, 1, 3), shifts="large", seed=6),
    Case((2, 2, 3, 23, 7), padding=(1, 0, 2), shifts="uniform", seed=8),
]


def make_shift(kind: str, channels: int, rng: np.random.Generator) -> np.ndarray:
    """(C, 3) float32 shifts of the given kind."""
    if kind == "uniform":
        s = rng.uniform(-1.0, 1.0, (channels, 3))
    elif kind == "large":  # far beyond the frame on some channels
        s = rng.uniform(-12.0, 12.0, (channels, 3))
    elif kind == "integer":
        s = rng.integers(-3, 4, (channels, 3)).astype(np.float64)
    elif kind == "zero":
        s = np.zeros((channels, 3))
    elif kind == "extreme":  # past any frame, beyond int32, and non-finite, beside ordinary ones
        s = rng.uniform(-2.0, 2.0, (channels, 3))
        pool = np.array([3e9, -3e9, 1e6, -1e6, 2.0**31, -(2.0**31), np.inf, -np.inf, np.nan])
        pick = rng.random((channels, 3)) < 0.3
        s[pick] = rng.choice(pool, int(pick.sum()))
    elif kind == "mixed":  # integers, halves, negatives and fractions side by side
        s = rng.uniform(-3.0, 3.0, (channels, 3))
        s[::3] = np.round(s[::3])
        s[1::4] = np.round(s[1::4] * 2) / 2
    else:
        raise ValueError(kind)
    return s.astype(np.float32)


def make_inputs(case: Case, dtype=np.float32):
    """x (N, T, H, W, C), shift (C, 3) float32, and an upstream gradient of the output's shape."""
    rng = np.random.default_rng(case.seed)
    x = rng.standard_normal(case.shape).astype(np.float32)
    shift = make_shift(case.shifts, case.shape[-1], rng)
    out = [case.shape[0]]
    for a in range(3):
        out.append((case.shape[a + 1] + 2 * case.padding[a] - 1) // case.stride[a] + 1)
    dy = rng.standard_normal(out + [case.shape[-1]]).astype(np.float32)
    return x.astype(dtype), shift, dy.astype(dtype)

# For the kernel-against-kernel comparisons: channels 1 / 13 / 33 / 72 (a CUDA warp spans one or
# several rows and segments; the CPU's vectorised kernels take 16 or 8 channels at a time), W past
# one CUDA segment (32) and past several vectors of 16, strides 1-3 on every axis, padding, and every
# kind of shift.
KERNEL_CASES = CASES + [
    Case((1, 3, 5, 70, 13), stride=(1, 1, 1), padding=(0, 1, 0), shifts="large", seed=21),
    Case((2, 4, 6, 33, 33), stride=(2, 3, 1), padding=(1, 2, 0), shifts="mixed", seed=22),
    Case((1, 5, 4, 40, 72), stride=(1, 2, 3), padding=(2, 0, 1), shifts="uniform", seed=23),
    Case((2, 3, 7, 11, 1), stride=(3, 1, 2), padding=(0, 0, 2), shifts="integer", seed=24),
    Case((1, 4, 5, 66, 13), stride=(1, 1, 2), padding=(1, 1, 1), shifts="extreme", seed=25),
    Case((3, 2, 3, 9, 33), stride=(2, 2, 2), padding=(2, 2, 2), shifts="extreme", seed=26),
    Case((2, 5, 6, 37, 72), stride=(2, 1, 1), padding=(1, 2, 3), shifts="extreme", seed=27),
    Case((1, 2, 9, 17, 40), stride=(1, 2, 1), padding=(0, 0, 0), shifts="large", seed=28),
]
