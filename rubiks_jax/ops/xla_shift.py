"""Pure-XLA RubiksShift written for speed (`impl="xla"`): each call is one fused pass, no scatter.

Every destination element gathers its 8 corners straight from the flattened source with int32
indices computed in the same loop, and combines them with selects, so XLA fuses index arithmetic,
gathers and the weighted sum into one pass over the destination (the separable oracle in
xla_reference.py writes a tensor per axis instead).
- forward: corner k of output o on an axis reads input o*s - p + q + k.
- grad_input: the adjoint, written as a gather from dy rather than a scatter: input i receives from
  output o = (i + p - q - k) / s when that division is exact and 0 <= o < Lo.
- grad_shift: the weights are per channel, so the derivative factorises. With the 8 masked
  correlations S_ijk[c] = sum over n and output points of dy * x[corner (i, j, k)], computed in one
  pass, dL/ddt = sum_ijk (-1, +1)_i * wh_j * ww_k * S_ijk, and likewise for h and w.

Arithmetic is float32 for every dtype. As in the kernels, a corner outside the source or of
interpolation weight 0 is dropped by a select, so an infinite neighbour of weight 0 never makes a
NaN; the shift gradient keeps the corners of weight 0 (their derivative weight is -1 or +1). One
batch element of the source (T*H*W*C) must have fewer than 2^31 elements (int32 indices).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from rubiks_jax.ops.geometry import Geometry
from rubiks_jax.ops.xla_reference import split_shift

_INT32_LIMIT = 2**31
# The shift gradient first sums each row of at least this many output points (trailing point
# axes), then the rows: see _correlations.
_MIN_ROW_POINTS = 16


class _Tap(NamedTuple):
    """Corner k of one axis for every destination index along it and every channel."""

    offset: jax.Array  # (Ld, C) int32: source index (clamped in range) times the axis' flat stride
    on: jax.Array  # (Ld, C) bool: the corner exists (inside; for interpolation also weight != 0)
    weight: jax.Array  # (C,) float32: 1 - r for corner 0, r for corner 1


def _axis_taps(q: jax.Array, r: jax.Array, in_len: int, out_len: int, stride: int, pad: int,
               flat_stride: int, adjoint: bool, weighted: bool) -> tuple[_Tap, _Tap]:
    """Both corners of one axis from per-channel q, r (C,). Forward: destination o (of out_len)
    reads source o*s - p + q + k (of in_len). Adjoint: destination i (of in_len) reads source
    (i + p - q - k) / s (of out_len) when the division is exact. `weighted`: a corner of weight 0
    is absent (interpolation); else kept (the shift gradient differentiates its weight)."""
    src_len, dst_len = (out_len, in_len) if adjoint else (in_len, out_len)
    # Beyond this bound every corner lies outside either way: clamping q keeps int32 from overflow.
    bound = in_len + out_len * stride + pad + 2
    qi = jnp.clip(q, -bound, bound).astype(jnp.int32)[None, :]
    pos = jnp.arange(dst_len, dtype=jnp.int32)[:, None]
    taps = []
    for k, weight in ((0, 1.0 - r), (1, r)):
        if adjoint:
            num = pos + pad - qi - k
            idx = num // stride
            on = (idx * stride == num) & (idx >= 0) & (idx < src_len)
        else:
            idx = pos * stride - pad + qi + k
            on = (idx >= 0) & (idx < src_len)
        if weighted:
            on = on & (weight != 0)[None, :]
        taps.append(_Tap(jnp.clip(idx, 0, src_len - 1) * flat_stride, on, weight))
    return taps[0], taps[1]


def _taps(shift: jax.Array, src_shape: tuple[int, ...], geo: Geometry, quantize: bool,
          adjoint: bool, weighted: bool) -> list[tuple[_Tap, _Tap]]:
    """The corners of the t, h and w axes for a source of shape (N, T', H', W', C)."""
    _, _, sh, sw, c = src_shape
    if sh * sw * c * src_shape[1] >= _INT32_LIMIT:
        raise ValueError(f"rubiks_shift impl='xla' indexes with int32: T*H*W*C of one batch "
                         f"element must be below 2^31, got shape {src_shape}")
    q, r = split_shift(shift, quantize)
    flat_strides = (sh * sw * c, sw * c, c)
    return [_axis_taps(q[:, a], r[:, a], geo.in_size[a], geo.out_size[a], geo.stride[a],
                       geo.padding[a], flat_strides[a], adjoint, weighted) for a in range(3)]


def _gather(src: jax.Array, t: _Tap, h: _Tap, w: _Tap) -> jax.Array:
    """One corner of every destination element: (N, Lt, Lh, Lw, C) float32 from src (N, T', H',
    W', C), read through in-range indices (absent corners read a clamped element)."""
    n, c = src.shape[0], src.shape[-1]
    rows = src.reshape(n, -1)
    inner = (t.offset[:, None, None, :] + h.offset[None, :, None, :] + w.offset[None, None, :, :]
             + jnp.arange(c, dtype=jnp.int32))
    batch = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32).reshape(-1, 1, 1, 1, 1),
                             (n,) + inner.shape)
    index = jnp.stack([batch, jnp.broadcast_to(inner, batch.shape)], axis=-1)
    dnums = lax.GatherDimensionNumbers(offset_dims=(), collapsed_slice_dims=(0, 1),
                                       start_index_map=(0, 1))
    value = lax.gather(rows, index, dnums, (1, 1), mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS)
    return value.astype(jnp.float32)


def _on(t: _Tap, h: _Tap, w: _Tap) -> jax.Array:
    """(Lt, Lh, Lw, C) bool: all three corners present."""
    return t.on[:, None, None, :] & h.on[None, :, None, :] & w.on[None, None, :, :]


def _interpolate(src: jax.Array, shift: jax.Array, geo: Geometry, quantize: bool,
                 adjoint: bool) -> jax.Array:
    """y (N, To, Ho, Wo, C) from x (forward) or dx (N, T, H, W, C) from dy (adjoint), in src's
    dtype: the weighted sum of the present corners, nested w, h, t like the kernels' sum."""
    dst_size = geo.in_size if adjoint else geo.out_size
    dst_shape = (src.shape[0], *dst_size, src.shape[-1])
    if 0 in dst_shape:
        return jnp.zeros(dst_shape, src.dtype)
    taps_t, taps_h, taps_w = _taps(shift, src.shape, geo, quantize, adjoint, weighted=True)
    # The 3-axis mask drops absent corners in the innermost sum; the outer sums only scale those
    # by weights that are nonzero wherever a corner is present. (Masking each level of the sum by
    # its own axis instead, as the kernels do, ran 5x slower on XLA:CPU, measured.)
    out = jnp.float32(0)
    for t in taps_t:
        acc_t = jnp.float32(0)
        for h in taps_h:
            acc_h = jnp.float32(0)
            for w in taps_w:
                acc_h = acc_h + jnp.where(_on(t, h, w), w.weight * _gather(src, t, h, w), 0.0)
            acc_t = acc_t + h.weight * acc_h
        out = out + t.weight * acc_t
    # A channel with a non-finite shift is NaN everywhere, as in the kernels.
    out = jnp.where(jnp.all(jnp.isfinite(shift), axis=1), out, jnp.nan)
    return out.astype(src.dtype)


def _correlations(x: jax.Array, dy: jax.Array, taps: list[tuple[_Tap, _Tap]]) -> jax.Array:
    """S (2, 2, 2, C) float32: S[i, j, k, c] = sum over n and output points of dy times corner
    (i, j, k) of x (0 where absent).

    Summed over all points at once (C minor, the gathers fused in), XLA:CPU walks the whole
    tensor once per channel: 6-15x slower than the forward, measured, as one variadic reduction and
    as 8 separate ones alike. So one variadic reduction (one pass, 8 sums) first sums rows, the
    fewest trailing point axes that hold _MIN_ROW_POINTS points, and a plain reduction of the row
    sums (1 / row length of the data) gives S."""
    upstream = dy.astype(jnp.float32)
    products = [jnp.where(_on(t, h, w), _gather(x, t, h, w), 0.0) * upstream
                for t in taps[0] for h in taps[1] for w in taps[2]]
    row_axes, points = (), 1
    for axis in (3, 2, 1, 0):
        if points >= _MIN_ROW_POINTS:
            break
        row_axes, points = (axis,) + row_axes, points * dy.shape[axis]
    zeros = [jnp.float32(0)] * len(products)
    rows = lax.reduce(products, zeros, lambda a, b: [u + v for u, v in zip(a, b)], row_axes)
    sums = jnp.stack([jnp.sum(s, axis=tuple(range(s.ndim - 1))) for s in rows])
    return sums.reshape(2, 2, 2, -1)


# Each entry point is jitted (geometry static): called eagerly, as in tests or a notebook, it runs
# as one compiled program instead of a few hundred dispatched operations; under an outer jit it
# is inlined.
@functools.partial(jax.jit, static_argnums=(2, 3))
def forward(x: jax.Array, shift: jax.Array, geo: Geometry, quantize: bool) -> jax.Array:
    """y (N, To, Ho, Wo, C) in x's dtype from x (N, T, H, W, C) and a float32 (C, 3) shift."""
    return _interpolate(x, shift, geo, quantize, adjoint=False)


@functools.partial(jax.jit, static_argnums=(2, 3))
def grad_input(dy: jax.Array, shift: jax.Array, geo: Geometry, quantize: bool) -> jax.Array:
    """dx (N, T, H, W, C) in dy's dtype from dy (N, To, Ho, Wo, C): the adjoint of the forward at
    the (quantized) shift."""
    return _interpolate(dy, shift, geo, quantize, adjoint=True)


@functools.partial(jax.jit, static_argnums=(3,))
def grad_shift(x: jax.Array, dy: jax.Array, shift: jax.Array, geo: Geometry) -> jax.Array:
    """dshift (C, 3) float32: sum over n and output points of dy * dy/dshift at the unquantized
    shift (the straight-through estimator under quantize), from x (N, T, H, W, C) and dy
    (N, To, Ho, Wo, C)."""
    if x.size == 0 or dy.size == 0:
        return jnp.zeros(shift.shape, jnp.float32)
    # Without quantize the forward reads the same corners of x: in one program (a training step)
    # XLA would share those gathers, or their int32 indices, between the two passes and write all
    # 8 to memory (fwd+bwd measured 2.5x slower). Indices from a barrier's copy of the shift are
    # new values to XLA, so each pass keeps its own fused gathers.
    taps = _taps(lax.optimization_barrier(shift), x.shape, geo, quantize=False, adjoint=False,
                 weighted=False)
    s = _correlations(x, dy, taps)  # (2, 2, 2, C)
    weights = [jnp.stack([tap0.weight, tap1.weight]) for tap0, tap1 in taps]  # (2, C) per axis
    # Differentiating axis a swaps its weight pair (1 - r, r) for (-1, +1) and keeps the other
    # two. Elementwise products, not an einsum: a TPU would run an f32 dot at reduced precision.
    sign = jnp.broadcast_to(jnp.array([[-1.0], [1.0]], jnp.float32), weights[0].shape)
    grads = []
    for a in range(3):
        wt, wh, ww = (sign if b == a else weights[b] for b in range(3))
        grads.append(jnp.sum(s * wt[:, None, None] * wh[None, :, None] * ww[None, None],
                             axis=(0, 1, 2)))
    out = jnp.stack(grads, axis=-1)
    return jnp.where(jnp.all(jnp.isfinite(shift), axis=1, keepdims=True), out, jnp.nan)
