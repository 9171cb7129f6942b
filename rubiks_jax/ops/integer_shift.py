"""The zero-FLOP integer shift (TSM / ShiftNet / deployed RubiksNet): pure data movement.

    integer_shift(x, shift, *, stride=(1, 1, 1), padding=(0, 0, 0))

x: (..., T, H, W, C); shift: (C, 3) integer (dt, dh, dw). Same indexing as `rubiks_shift` at an
integer shift, y[o] = x[o*s - p + d] with zeros outside, but built from gathers only (no
multiplication), so it costs no arithmetic. Differentiable in x (the adjoint is a scatter).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from rubiks_jax.ops.geometry import as_triple, out_extent


def integer_shift(x: jax.Array, shift: jax.Array, *, stride: int | Sequence[int] = (1, 1, 1),
                  padding: int | Sequence[int] = (0, 0, 0)) -> jax.Array:
    if x.ndim < 5:
        raise ValueError(f"x must have shape (N, T, H, W, C), got shape {tuple(x.shape)}")
    if not jnp.issubdtype(shift.dtype, jnp.integer):
        raise ValueError(f"shift must be an integer array of shape (C, 3), got dtype {shift.dtype}")
    if tuple(shift.shape) != (x.shape[-1], 3):
        raise ValueError(f"shift must have shape (C, 3) = ({x.shape[-1]}, 3), got {tuple(shift.shape)}")
    stride = as_triple(stride, "stride", 1)
    padding = as_triple(padding, "padding", 0)
    y = x
    for a in range(3):
        axis = x.ndim - 4 + a
        length = x.shape[axis]
        lo = out_extent(length, stride[a], padding[a])
        idx = (jnp.arange(lo)[:, None] * stride[a] - padding[a]) + shift[None, :, a].astype(jnp.int32)
        idx = jnp.where((idx >= 0) & (idx < length), idx, length)  # `length` is out of range: fill 0
        shape = [1] * x.ndim
        shape[axis], shape[-1] = lo, x.shape[-1]
        target = list(y.shape)
        target[axis] = lo
        y = jnp.take_along_axis(y, jnp.broadcast_to(idx.reshape(shape), target), axis=axis,
                                mode="fill", fill_value=0)
    return y
