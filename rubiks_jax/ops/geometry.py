"""Geometry shared by the shift ops: per-axis arguments, output extents, the rounding of a shift to
whole frames / pixels, and the static Geometry of a call (hashable, usable as a static arg)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np


def as_triple(value: int | Sequence[int], name: str, minimum: int) -> tuple[int, int, int]:
    """An int or 3 ints (t, h, w), each >= minimum, as a tuple of 3 ints; ValueError naming `name`."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value,) * 3
    try:
        out = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be an int or 3 ints (t, h, w), got {value!r}") from None
    if len(out) != 3 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                for v in out):
        raise ValueError(f"{name} must be an int or 3 ints (t, h, w), got {value!r}")
    if any(v < minimum for v in out):
        raise ValueError(f"{name} must be >= {minimum} on every axis, got {out}")
    return tuple(int(v) for v in out)


def out_extent(length: int, stride: int, pad: int) -> int:
    """Output length of one axis: (L + 2p - 1) // s + 1 (0 for an empty axis)."""
    return 0 if length == 0 else (length + 2 * pad - 1) // stride + 1


def round_half_up(d: jnp.ndarray) -> jnp.ndarray:
    """floor(d + 0.5) without the float32 rounding of d + 0.5 (0.49999997 must give 0, not 1).

    The integer shift of a quantized (or deployed) fractional shift d, in d's dtype."""
    f = jnp.floor(d)
    return f + (d - f >= 0.5).astype(d.dtype)


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Spatio-temporal extents (T, H, W) of x and y, with the per-axis stride and padding."""

    in_size: tuple[int, int, int]
    stride: tuple[int, int, int]
    padding: tuple[int, int, int]

    @property
    def out_size(self) -> tuple[int, int, int]:
        return tuple(out_extent(n, s, p) for n, s, p in zip(self.in_size, self.stride, self.padding))

    def with_in_size(self, in_size: tuple[int, int, int]) -> "Geometry":
        return dataclasses.replace(self, in_size=tuple(in_size))
