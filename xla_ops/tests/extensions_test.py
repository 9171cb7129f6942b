"""Bazel test (//xla_ops:extensions_test) of the Bazel-built extension modules.

argv[1]: the directory holding them (xla_ops/ of the runfiles). Checks, with the environment's
Python and jax:
  1. each module loads and registrations() names the three targets (suffix _cuda_emulation for the
     emulation module); the CUDA module, when built, loads without a GPU;
  2. forward, input gradient and shift gradient of the CPU handlers through jax.ffi on a small
     input, against a numpy trilinear-interpolation oracle (stride 1, no padding);
  3. the emulated CUDA kernels give the CPU kernels' bits;
  4. the package (rubiks_jax, from the runfiles) with RUBIKS_JAX_KERNELS_DIR=argv[1]: impl="ffi"
     (value and gradients) against impl="xla".
"""

from __future__ import annotations

import os
import sys

KERNELS = os.path.abspath(sys.argv[1])
os.environ["RUBIKS_JAX_KERNELS_DIR"] = KERNELS
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.getcwd())  # the runfiles root: rubiks_jax/ sources

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from rubiks_jax.ops import ffi_kernels, rubiks_shift  # noqa: E402
from rubiks_jax.ops.geometry import Geometry  # noqa: E402

TARGETS = {ffi_kernels.FORWARD, ffi_kernels.GRAD_INPUT, ffi_kernels.GRAD_SHIFT}
ATTRS = dict(stride_t=np.int64(1), stride_h=np.int64(1), stride_w=np.int64(1),
             pad_t=np.int64(0), pad_h=np.int64(0), pad_w=np.int64(0))


def check_modules() -> None:
    files = sorted(os.listdir(KERNELS))
    print("built modules:", [f for f in files if f.endswith(".so")])
    cpu = ffi_kernels.kernel_module("_rubiks_shift_cpu")
    assert os.path.dirname(cpu.__file__) == KERNELS, cpu.__file__
    assert set(cpu.registrations()) == TARGETS
    emu = ffi_kernels.kernel_module("_rubiks_shift_cuda_emulation")
    assert set(emu.registrations()) == {t + "_cuda_emulation" for t in TARGETS}
    expected = ["_rubiks_shift_cpu", "_rubiks_shift_cuda_emulation"]
    if any(f.startswith("_rubiks_shift_cuda.") for f in files):
        cuda = ffi_kernels.kernel_module("_rubiks_shift_cuda")
        assert set(cuda.registrations()) == TARGETS
        expected.insert(1, "_rubiks_shift_cuda")
    assert ffi_kernels._registered_modules() == tuple(expected), ffi_kernels._registered_modules()


def _sample(x: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Oracle: y[n, t, h, w, c] = trilinear sample of x[n, :, :, :, c] at (t, h, w) + shift[c]."""
    n, t, h, w, c = x.shape
    y = np.zeros_like(x, dtype=np.float64)
    for ch in range(c):
        q = np.floor(shift[ch]).astype(int)
        r = shift[ch] - q
        for corner in np.ndindex(2, 2, 2):
            weight = np.prod([r[a] if corner[a] else 1 - r[a] for a in range(3)])
            off = q + np.array(corner)
            src = np.zeros((n, t, h, w))
            dst = [slice(max(0, -o), min(size, size - o)) for o, size in zip(off, (t, h, w))]
            sl = [slice(d.start + o, d.stop + o) for d, o in zip(dst, off)]
            if all(d.start < d.stop for d in dst):
                src[:, dst[0], dst[1], dst[2]] = x[:, sl[0], sl[1], sl[2], ch]
            y[..., ch] += weight * src
    return y


def check_handlers() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5, 6)).astype(np.float32)
    shift = rng.uniform(-1.5, 1.5, (6, 3)).astype(np.float32)
    shift[0] = (1, 0, -1)  # an integer shift: a plain move
    y = jax.ffi.ffi_call(ffi_kernels.FORWARD, jax.ShapeDtypeStruct(x.shape, x.dtype))(
        x, shift, quantize=False, **ATTRS)
    np.testing.assert_allclose(np.asarray(y), _sample(x, shift), rtol=1e-5, atol=1e-5)

    # Input gradient: the adjoint of the forward (<dy, f(x)> == <f*(dy), x>).
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx = jax.ffi.ffi_call(ffi_kernels.GRAD_INPUT, jax.ShapeDtypeStruct(x.shape, x.dtype))(
        dy, shift, quantize=False, **ATTRS)
    lhs = float(np.sum(dy.astype(np.float64) * _sample(x, shift)))
    rhs = float(np.sum(np.asarray(dx, np.float64) * x))
    assert abs(lhs - rhs) < 1e-3 * max(1.0, abs(lhs)), (lhs, rhs)

    # Shift gradient: central differences of <dy, f(x; shift)> away from integer coordinates.
    chunks = ffi_kernels.reduction_chunks(x.shape[0], Geometry((3, 4, 5), (1, 1, 1), (0, 0, 0)))
    frac = shift.copy()
    frac[0] = (0.3, -0.4, 0.6)
    dshift, _ = jax.ffi.ffi_call(
        ffi_kernels.GRAD_SHIFT,
        (jax.ShapeDtypeStruct((6, 3), jnp.float32),
         jax.ShapeDtypeStruct((chunks, 6, 3), jnp.float32)))(x, dy, frac, **ATTRS)
    eps = 1e-3
    numeric = np.zeros((6, 3))
    for c in range(6):
        for a in range(3):
            hi, lo = frac.astype(np.float64), frac.astype(np.float64)
            hi[c, a] += eps
            lo[c, a] -= eps
            numeric[c, a] = (np.sum(dy * _sample(x, hi)) - np.sum(dy * _sample(x, lo))) / (2 * eps)
    np.testing.assert_allclose(np.asarray(dshift), numeric, rtol=1e-3, atol=1e-3)

    # The emulated CUDA kernels, v3 and v4, give the CPU kernels' bits.
    for version in (3, 4):
        y_emu = jax.ffi.ffi_call(ffi_kernels.FORWARD + "_cuda_emulation",
                                 jax.ShapeDtypeStruct(x.shape, x.dtype))(
            x, shift, quantize=False, force_64bit=False, version=np.int64(version), **ATTRS)
        np.testing.assert_array_equal(np.asarray(y_emu), np.asarray(y))


def check_package() -> None:
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((2, 4, 6, 7, 8)), jnp.float32)
    shift = jnp.asarray(rng.uniform(-2, 2, (8, 3)), jnp.float32)

    def loss(impl):
        def f(a, b):
            y = rubiks_shift(a, b, stride=(1, 2, 2), padding=(0, 1, 1), impl=impl)
            return jnp.sum(jnp.sin(y))
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))

    (v_ffi, (dx_ffi, ds_ffi)), (v_xla, (dx_xla, ds_xla)) = loss("ffi")(x, shift), loss("xla")(x, shift)
    np.testing.assert_allclose(v_ffi, v_xla, rtol=1e-5)
    np.testing.assert_allclose(dx_ffi, dx_xla, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ds_ffi, ds_xla, rtol=1e-4, atol=1e-4)


if __name__ == "__main__":
    print(f"python {sys.version.split()[0]}, jax {jax.__version__}, kernels from {KERNELS}")
    check_modules()
    check_handlers()
    check_package()
    print("OK")
