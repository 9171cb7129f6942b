"""`rubiks_shift`: the learnable 3D shift with trilinear interpolation (docs/DESIGN.md, "The op").

    rubiks_shift(x, shift, *, stride=(1, 1, 1), padding=(0, 0, 0), quantize=False, impl=None)

x: (..., T, H, W, C) float32 | bfloat16 | float16, channels last; any leading axes are batch.
shift: (C, 3) float, columns (dt, dh, dw) in frames / pixels; a positive dt reads the next frame.
Returns (..., To, Ho, Wo, C) in x's dtype with Lo = (L + 2p - 1) // s + 1 per axis.

Gradients come from a `jax.custom_vjp`: dL/dx is the exact adjoint, dL/dshift the raw derivative
of the trilinear interpolation (floor convention at integer coordinates), accumulated in float32.
With `quantize=True` the forward and dL/dx use the integer shift floor(d + 0.5) while dL/dshift stays
the interpolation derivative at d (straight-through estimator).

Implementations (`impl`): "ffi", the compiled kernels (ffi_kernels.py); "xla", pure JAX written for
speed (xla_shift.py: fused gathers, the same custom_vjp); "reference", the readable pure-JAX oracle
(xla_reference.py, differentiated by jax.vjp), which the tests compare the others with.

"ffi" and "xla" partition under `jit` with shardings (partitioning.py): N and C sharded run
shard by shard with no communication but the shift gradient's (C, 3) all-reduce over N; T, H or W
sharded are gathered, with a warning. They are batched under `vmap` into one call.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import re
import runpy
import sys
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from rubiks_jax.ops import ffi_kernels, partitioning, xla_reference, xla_shift
from rubiks_jax.ops.geometry import Geometry, as_triple

IMPLS = ("ffi", "xla", "reference")
_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


REBUILD_HINT = ("rebuild the kernels against the jaxlib you run: `pip install -e . "
                "--no-build-isolation` in a checkout (scripts/setup.sh does it), or reinstall "
                "rubiks-jax from its sdist with `pip install --no-build-isolation "
                "--no-binary rubiks-jax --force-reinstall --no-deps rubiks-jax`")


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(v) for v in re.findall(r"\d+", version.split("+")[0].split(".dev")[0])[:3])


# setup.py's record of the build, one per interpreter ABI like the extension modules themselves.
BUILD_INFO = f"_build_info_{sys.implementation.cache_tag.replace('-', '_')}"


def built_against_jaxlib() -> str | None:
    """The jaxlib version the compiled kernels were built against (rubiks_jax/_build_info_<python
    tag>.py, which setup.py writes next to them), or None where that record is absent (kernels
    built by hand).

    Kernels loaded from RUBIKS_JAX_KERNELS_DIR (ffi_kernels.kernels_dir()) are described by the
    file of that name in that directory, if it holds one; the package's record is not theirs."""
    kernels_dir = getattr(ffi_kernels, "kernels_dir", lambda: None)()
    if kernels_dir is not None:
        path = os.path.join(kernels_dir, BUILD_INFO + ".py")
        return runpy.run_path(path).get("BUILT_AGAINST_JAXLIB") if os.path.isfile(path) else None
    try:
        info = importlib.import_module(f"rubiks_jax.{BUILD_INFO}")
    except ImportError:
        return None
    return getattr(info, "BUILT_AGAINST_JAXLIB", None)


@functools.cache
def _jaxlib_mismatch() -> str | None:
    """Why the kernels cannot run with this jaxlib, or None when they can.

    XLA's FFI C API is versioned and stays backwards compatible: a handler compiled against older
    headers runs in a newer jaxlib, one compiled against newer headers may not run in an older one.
    So only a running jaxlib older than the one the kernels were built against is refused."""
    built = built_against_jaxlib()
    if built is None:
        return None
    import jaxlib

    running = jaxlib.__version__
    if _version_tuple(running) >= _version_tuple(built):
        return None
    return (f"the rubiks-jax kernels were compiled against jaxlib {built}, but jaxlib {running} "
            f"is running; a handler built against newer XLA FFI headers may not load in an older "
            f"jaxlib. Upgrade jaxlib to >= {built}, or {REBUILD_HINT}; or use impl='xla'")


@functools.cache
def _warn_no_cuda_kernels(platform: str) -> None:
    warnings.warn(f"rubiks_shift: the default backend is {platform!r} but the CUDA kernels of "
                  f"rubiks-jax were not built (rubiks_jax.ops.cuda_built() is False), so impl=None "
                  f"uses the pure-XLA implementation (impl='xla'). Build them with nvcc present "
                  f"(`RUBIKS_JAX_CUDA=1 pip install -e . --no-build-isolation`) for impl='ffi'.",
                  RuntimeWarning, stacklevel=4)


def _on_gpu_without_cuda_kernels() -> str | None:
    """The GPU platform name when the default backend is a GPU and no CUDA kernels were built."""
    platform = jax.default_backend()
    if platform in ("gpu", "cuda", "rocm") and not ffi_kernels.cuda_built():
        return platform
    return None


def _resolve_impl(impl: str | None) -> str:
    """The implementation to run.

    None: "ffi" when the compiled kernels are installed and can run on the default backend, else
    "xla" (on a GPU whose CUDA kernels were not built, with a one-time warning). A jaxlib older than
    the one the kernels were compiled against is refused (RuntimeError naming both versions) for
    None and "ffi" alike: that installation is broken, and silently slower is no fix. "xla" and
    "reference" (pure JAX) always run.
    """
    if impl is not None and impl not in IMPLS:
        raise ValueError(f"impl must be None, 'ffi', 'xla' or 'reference', got {impl!r}")
    if impl in ("xla", "reference"):
        return impl
    if impl == "ffi" and not ffi_kernels.available():
        raise ValueError("impl='ffi' but the compiled kernels (rubiks_jax._rubiks_shift_cpu) are not "
                         "installed: run scripts/setup.sh, or use impl='xla'")
    if impl is None and not ffi_kernels.available():
        return "xla"
    mismatch = _jaxlib_mismatch()
    if mismatch is not None:
        raise RuntimeError(mismatch)
    if impl is None:
        gpu = _on_gpu_without_cuda_kernels()
        if gpu is not None:
            _warn_no_cuda_kernels(gpu)
            return "xla"
        return "ffi"
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
      impl: "ffi" (compiled kernels), "xla" (pure JAX, fused gathers), "reference" (pure JAX, the
        readable oracle of the tests; slow), or None (ffi when built, else xla).
    Returns:
      (..., To, Ho, Wo, C) in x's dtype.
    """
    _check_inputs(x, shift)
    geo = Geometry(tuple(int(v) for v in x.shape[-4:-1]), as_triple(stride, "stride", 1),
                   as_triple(padding, "padding", 0))
    impl = _resolve_impl(impl)
    batch = x.shape[:-4]
    x, shift = partitioning.vary_alike(x, shift.astype(jnp.float32))
    x5 = x.reshape((math.prod(batch),) + x.shape[-4:])
    y = _shift(x5, shift, geo, bool(quantize), impl)
    return y.reshape(batch + y.shape[1:])


# ------------------------------------------------------------------------------------------------
# custom_vjp over rank-5 inputs and a float32 shift.
# ------------------------------------------------------------------------------------------------
_FAST = {"ffi": ffi_kernels, "xla": xla_shift}  # modules with forward, grad_input and grad_shift


# Jitted, so that an eager call compiles one computation per shape instead of dispatching (and
# compiling) each of the pure-JAX paths' dozens of ops one by one; under an outer jit it is inlined.
@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _forward(x, shift, geo: Geometry, quantize: bool, impl: str):
    if impl in _FAST:
        return partitioning.forward(_FAST[impl].forward, x, shift, geo, quantize)
    return xla_reference.forward(x, shift, geo, quantize)


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _backward(x, shift, dy, geo: Geometry, quantize: bool, impl: str):
    if impl in _FAST:
        return (partitioning.grad_input(_FAST[impl].grad_input, dy, shift, geo, quantize),
                partitioning.grad_shift(_FAST[impl].grad_shift, x, dy, shift, geo))
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
