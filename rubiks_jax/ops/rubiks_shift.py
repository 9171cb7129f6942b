"""`rubiks_shift`: the learnable 3D shift with trilinear interpolation (docs/DESIGN.md, "The op").

    rubiks_shift(x, shift, *, stride=(1, 1, 1), padding=(0, 0, 0), quantize=False, impl=None)

x: (..., T, H, W, C) float32 | bfloat16 | float16, channels last; any leading axes are batch.
shift: (C, 3) float, columns (dt, dh, dw) in frames / pixels; a positive dt reads the next frame.
Returns (..., To, Ho, Wo, C) in x's dtype with Lo = (L + 2p - 1) // s + 1 per axis.

Gradients come from a `jax.custom_vjp`: dL/dx is the exact adjoint, dL/dshift the raw derivative
of the trilinear interpolation (floor convention at integer coordinates), accumulated in float32.
With `quantize=True` the forward and dL/dx use the integer shift floor(d + 0.5) while dL/dshift stays
the interpolation derivative at d (straight-through estimator).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from rubiks_jax.ops import ffi_kernels, xla_reference
from rubiks_jax.ops.geometry import Geometry, as_triple

IMPLS = ("ffi", "xla")
_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


def _resolve_impl(impl: str | None) -> str:
    if impl is None:
        return "ffi" if ffi_kernels.available() else "xla"
    if impl not in IMPLS:
        raise ValueError(f"impl must be None, 'ffi' or 'xla', got {impl!r}")
    if impl == "ffi" and not ffi_kernels.available():
        raise ValueError("impl='ffi' but the compiled kernels (rubiks_jax._rubiks_shift_cpu) are not "
                         "installed: run scripts/setup.sh, or use impl='xla'")
    return impl


def _check_inputs(x, shift) -> None:
    x_dtype = getattr(x, "dtype", None)
    if x_dtype is None or not any(x_dtype == d for d in _DTYPES):
        raise ValueError(f"x must be float32, bfloat16 or float16, got dtype {x_dtype}")
    if x.ndim < 5:
        raise ValueError(f"x must have shape (N, T, H, W, C) (extra leading axes are batch), got "
                         f"shape {tuple(x.shape)}")
    channels = x.shape[-1]
    s_dtype = getattr(shift, "dtype", None)
    if s_dtype is None or not jnp.issubdtype(s_dtype, jnp.floating):
        raise ValueError(f"shift must be a float array of shape (C, 3), got dtype {s_dtype}")
    if tuple(shift.shape) != (channels, 3):
        raise ValueError(f"shift must have shape (C, 3) = ({channels}, 3) to match the {channels} "
                         f"channels of x, got shape {tuple(shift.shape)}")


def rubiks_shift(x: jax.Array, shift: jax.Array, *, stride: int | Sequence[int] = (1, 1, 1),
                 padding: int | Sequence[int] = (0, 0, 0), quantize: bool = False,
                 impl: str | None = None) -> jax.Array:
    """Shifts every channel of x by its own fractional (dt, dh, dw) with trilinear interpolation.

    Args:
      x: (..., T, H, W, C) float32 / bfloat16 / float16.
      shift: (C, 3) float; integer dtypes are rejected (they carry no gradient).
      stride: output stride per axis (t, h, w), >= 1.
      padding: zero padding per axis, >= 0.
      quantize: use the rounded shift forward, the straight-through gradient backward.
      impl: "ffi" (compiled kernels), "xla" (pure JAX), or None (ffi when built, else xla).
    Returns:
      (..., To, Ho, Wo, C) in x's dtype.
    """
    _check_inputs(x, shift)
    geo = Geometry(tuple(int(v) for v in x.shape[-4:-1]), as_triple(stride, "stride", 1),
                   as_triple(padding, "padding", 0))
    impl = _resolve_impl(impl)
    batch = x.shape[:-4]
    x5 = x.reshape((math.prod(batch),) + x.shape[-4:])
    y = _shift(x5, shift.astype(jnp.float32), geo, bool(quantize), impl)
    return y.reshape(batch + y.shape[1:])


# ------------------------------------------------------------------------------------------------
# custom_vjp over rank-5 inputs and a float32 shift.
# ------------------------------------------------------------------------------------------------
def _forward(x, shift, geo: Geometry, quantize: bool, impl: str):
    if impl == "ffi":
        return ffi_kernels.forward(x, shift, geo, quantize)
    return xla_reference.forward(x, shift, geo, quantize)


def _backward(x, shift, dy, geo: Geometry, quantize: bool, impl: str):
    if impl == "ffi":
        return (ffi_kernels.grad_input(dy, shift, geo, quantize),
                ffi_kernels.grad_shift(x, dy, shift, geo))
    # The reference is differentiable: dx is the adjoint at the (possibly quantized) shift,
    # dshift the derivative of the unquantized interpolation.
    _, vjp_x = jax.vjp(lambda v: xla_reference.forward(v, shift, geo, quantize), x)
    _, vjp_s = jax.vjp(lambda s: xla_reference.forward(x.astype(jnp.float32), s, geo, False), shift)
    return vjp_x(dy)[0], vjp_s(dy.astype(jnp.float32))[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _shift(x, shift, geo: Geometry, quantize: bool, impl: str):
    return _forward(x, shift, geo, quantize, impl)


def _shift_fwd(x, shift, geo, quantize, impl):
    return _forward(x, shift, geo, quantize, impl), (x, shift)


def _shift_bwd(geo, quantize, impl, residuals, dy):
    x, shift = residuals
    dx, dshift = _backward(x, shift, dy, geo, quantize, impl)
    return dx.astype(x.dtype), dshift.astype(shift.dtype)


_shift.defvjp(_shift_fwd, _shift_bwd)
