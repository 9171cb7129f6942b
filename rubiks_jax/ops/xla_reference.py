"""Pure-JAX RubiksShift (`impl="reference"`): readable, differentiable, the oracle for the kernels
and for the fast pure-XLA path (xla_shift.py, `impl="xla"`).

Because the shift is per channel, trilinear interpolation factorises into three 1-D linear
interpolations (W, then H, then T), each two gathers along one axis with per-channel indices. The
nesting matches the kernels' corner sum, sum_i wt_i * (sum_j wh_j * (sum_k ww_k * x)).
"""

from __future__ import annotations

import jax.numpy as jnp

from rubiks_jax.ops.geometry import Geometry, round_half_up

# Same bound as the kernels (rubiks_shift_math.h): larger shifts read only zero padding.
MAX_ABS_SHIFT = 2.0**30


def split_shift(shift: jnp.ndarray, quantize: bool) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(C, 3) float32 shift -> integer part q (float32, NaN-free) and fraction r (NaN if not finite)."""
    finite = jnp.isfinite(shift)
    d = jnp.where(finite, shift, 0.0)
    if quantize:
        d = round_half_up(d)
    d = jnp.clip(d, -MAX_ABS_SHIFT, MAX_ABS_SHIFT)
    q = jnp.floor(d)
    r = jnp.where(finite, d - q, jnp.nan)
    return q, r


def _interp_axis(x: jnp.ndarray, axis: int, q: jnp.ndarray, r: jnp.ndarray, out_len: int,
                 stride: int, pad: int) -> jnp.ndarray:
    """1-D linear interpolation of f32 `x` (N, T, H, W, C) along `axis` with per-channel q, r (C,)."""
    in_len = x.shape[axis]
    # Clamp q so the int32 index cannot overflow; beyond this range every corner is outside anyway.
    bound = in_len + pad + stride * out_len + 2
    qi = jnp.clip(q, -bound, bound).astype(jnp.int32)
    o = jnp.arange(out_len, dtype=jnp.int32)[:, None] * stride - pad  # (Lo, 1)
    out = 0.0
    for k, weight in ((0, 1.0 - r), (1, r)):
        idx = o + qi[None, :] + k  # (Lo, C)
        valid = (idx >= 0) & (idx < in_len)
        shape = [1] * x.ndim
        shape[axis] = out_len
        shape[-1] = x.shape[-1]
        idx_b = jnp.clip(idx, 0, in_len - 1).reshape(shape)
        gathered = jnp.take_along_axis(x, jnp.broadcast_to(idx_b, _with(x.shape, axis, out_len)),
                                       axis=axis)
        # Select, not multiply by a 0/1 mask: a corner outside the input, or of weight 0, adds
        # exactly 0 even next to an infinite value, as in the kernels. (The weight stays a factor,
        # so the derivative in r at an integer shift still sees x[f + 1].)
        w = weight.reshape([1] * (x.ndim - 1) + [-1])
        finite_or_weighted = jnp.isfinite(gathered) | (w != 0)
        out = out + jnp.where(valid.reshape(shape),
                              w * jnp.where(finite_or_weighted, gathered, 0.0), 0.0)
    return out


def _with(shape: tuple[int, ...], axis: int, n: int) -> tuple[int, ...]:
    s = list(shape)
    s[axis] = n
    return tuple(s)


def forward(x: jnp.ndarray, shift: jnp.ndarray, geo: Geometry, quantize: bool) -> jnp.ndarray:
    """y (N, To, Ho, Wo, C) in x's dtype from x (N, T, H, W, C) and a float32 (C, 3) shift."""
    q, r = split_shift(shift, quantize)
    y = x.astype(jnp.float32)
    for axis in (2, 1, 0):  # W first, T last: the kernels' nesting order
        y = _interp_axis(y, axis + 1, q[:, axis], r[:, axis], geo.out_size[axis],
                         geo.stride[axis], geo.padding[axis])
    # A channel with a non-finite shift is NaN everywhere, as in the kernels.
    y = jnp.where(jnp.all(jnp.isfinite(shift), axis=1), y, jnp.nan)
    return y.astype(x.dtype)
