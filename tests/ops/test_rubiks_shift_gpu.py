"""CUDA kernels against the float64 reference and the CPU kernels. Skips without a GPU."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rubiks_jax.ops import cuda_built, rubiks_shift
from tests.ops import reference
from tests.ops.cases import CASES, Case, make_inputs


def _gpu():
    try:
        devices = jax.devices("gpu")
    except RuntimeError:
        return None
    return devices[0] if devices else None


GPU = _gpu()
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(GPU is None or not cuda_built(),
                                 reason="needs an NVIDIA GPU, jax's CUDA plugin and the CUDA kernels")]
TOL = {jnp.float32: 2e-6, jnp.bfloat16: 1e-2, jnp.float16: 2e-3}


def _on(device, *arrays):
    return tuple(jax.device_put(jnp.asarray(a), device) for a in arrays)


def _run(device, x, shift, dy, case: Case, quantize=False):
    x, shift, dy = _on(device, x, shift, dy)
    y, vjp = jax.vjp(lambda a, s: rubiks_shift(a, s, stride=case.stride, padding=case.padding,
                                               quantize=quantize, impl="ffi"), x, shift)
    dx, dshift = vjp(dy)
    assert y.devices() == {device}
    return [np.asarray(v, np.float64) for v in (y, dx, dshift)]


def _close(actual, expected, rel):
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rel * scale)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16],
                         ids=["f32", "bf16", "f16"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_cuda_matches_float64_reference(case, dtype):
    x, shift, dy = make_inputs(case, dtype)
    x64, dy64 = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    y, dx, dshift = _run(GPU, x, shift, dy, case)
    kw = dict(stride=case.stride, padding=case.padding)
    _close(y, reference.forward(x64, shift, **kw), TOL[dtype])
    _close(dx, reference.grad_input(dy64, x.shape, shift, **kw), max(TOL[dtype], 1e-5))
    _close(dshift, reference.grad_shift(x64, dy64, shift, **kw), 5e-5)


@pytest.mark.parametrize("quantize", [False, True])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_cuda_matches_cpu_kernels(case, quantize):
    x, shift, dy = make_inputs(case)
    gpu = _run(GPU, x, shift, dy, case, quantize)
    cpu = _run(jax.devices("cpu")[0], x, shift, dy, case, quantize)
    for g, c in zip(gpu, cpu):  # FMA contraction on the GPU is the only difference
        _close(g, c, 5e-6)


def test_cuda_deterministic_and_bitwise_repeatable():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 8, 56, 56, 72)).astype(np.float32)
    shift = rng.uniform(-2, 2, (72, 3)).astype(np.float32)
    case = Case(x.shape)
    first = _run(GPU, x, shift, x, case)
    for _ in range(3):
        for a, b in zip(first, _run(GPU, x, shift, x, case)):
            np.testing.assert_array_equal(a, b)


def test_cuda_under_jit_vmap_and_pmap():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((3, 2, 4, 6, 5, 7)), jnp.float32)
    s = jnp.asarray(rng.uniform(-1.5, 1.5, (3, 7, 3)), jnp.float32)
    x, s = _on(GPU, x, s)
    loss = lambda a, b: jnp.sum(jnp.sin(rubiks_shift(a, b, stride=(1, 2, 1), impl="ffi")))
    grad = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1))))
    gx, gs = grad(x, s)
    for i in range(3):
        gxi, gsi = jax.grad(loss, argnums=(0, 1))(x[i], s[i])
        np.testing.assert_allclose(gx[i], gxi, atol=1e-5)
        np.testing.assert_allclose(gs[i], gsi, rtol=1e-5, atol=1e-5)
    n = jax.local_device_count()
    xs = jnp.broadcast_to(x[0], (n,) + x.shape[1:])
    ys = jax.pmap(lambda a: rubiks_shift(a, s[0], impl="ffi"))(xs)
    np.testing.assert_allclose(ys[0], rubiks_shift(x[0], s[0], impl="ffi"), atol=1e-6)


def test_cuda_large_tensor_64bit_offsets():
    """More than 2^31 elements in x: offsets must be 64-bit (needs about 20 GB of GPU memory)."""
    free = GPU.memory_stats().get("bytes_limit", 0) if hasattr(GPU, "memory_stats") else 0
    if free < 24 * 2**30:
        pytest.skip("needs 24 GiB of GPU memory")
    shape = (1, 2, 1024, 1024, 1025)  # 2.15e9 elements in bf16
    x = jnp.ones(shape, jnp.bfloat16, device=GPU)
    shift = jnp.zeros((1025, 3), jnp.float32).at[:, 2].set(0.5)
    y = rubiks_shift(x, shift, impl="ffi")
    # Last channel, last row: interior points average two ones; the last column reads padding.
    last = np.asarray(y[0, 1, 1023, :, 1024], np.float32)
    np.testing.assert_array_equal(last[:-1], 1.0)
    assert last[-1] == 0.5
