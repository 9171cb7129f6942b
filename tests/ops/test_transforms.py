"""rubiks_shift (every impl) under jit, vmap (leading batch shapes), pmap, jax.checkpoint;
determinism."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rubiks_jax.ops import rubiks_shift
from tests.ops.cases import IMPLS

KW = dict(stride=(1, 2, 1), padding=(1, 0, 1))


def _data(lead=(), c=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(lead + (2, 4, 6, 5, c)).astype(np.float32)
    shift = rng.uniform(-1.5, 1.5, (c, 3)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(shift)


def _loss(x, s, impl):
    y = rubiks_shift(x, s, impl=impl, **KW)
    return jnp.sum(jnp.sin(y) * jnp.arange(y.size, dtype=y.dtype).reshape(y.shape) / y.size)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("lead", [(), (3,), (2, 3)], ids=str)
def test_leading_batch_axes(impl, lead):
    x, s = _data(lead)
    y = rubiks_shift(x, s, impl=impl, **KW)
    flat = rubiks_shift(x.reshape((-1,) + x.shape[-4:]), s, impl=impl, **KW)
    np.testing.assert_array_equal(np.asarray(y).reshape(flat.shape), flat)
    assert y.shape[:len(lead)] == lead


@pytest.mark.parametrize("impl", IMPLS)
def test_vmap_shared_shift(impl):
    x, s = _data((3,))
    y = jax.vmap(lambda a: rubiks_shift(a, s, impl=impl, **KW))(x)
    for i in range(3):
        np.testing.assert_allclose(y[i], rubiks_shift(x[i], s, impl=impl, **KW), atol=1e-6)
    g = jax.vmap(jax.grad(lambda a, b: _loss(a, b, impl), argnums=(0, 1)), in_axes=(0, None))(x, s)
    for i in range(3):
        gi = jax.grad(lambda a, b: _loss(a, b, impl), argnums=(0, 1))(x[i], s)
        np.testing.assert_allclose(g[0][i], gi[0], atol=1e-5)
        np.testing.assert_allclose(g[1][i], gi[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_vmap_per_element_shift_and_nested(impl):
    x, _ = _data((2, 3))
    shifts = jnp.asarray(np.random.default_rng(1).uniform(-2, 2, (2, 3, 6, 3)), jnp.float32)
    f = lambda a, b: rubiks_shift(a, b, impl=impl, **KW)
    y = jax.vmap(jax.vmap(f))(x, shifts)
    grad = jax.grad(lambda a, b: _loss(a, b, impl), argnums=(0, 1))
    g = jax.vmap(jax.vmap(grad))(x, shifts)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(y[i, j], f(x[i, j], shifts[i, j]), atol=1e-6)
            gij = grad(x[i, j], shifts[i, j])
            np.testing.assert_allclose(g[0][i, j], gij[0], atol=1e-5)
            np.testing.assert_allclose(g[1][i, j], gij[1], rtol=1e-5, atol=1e-5)
    # Unbatched x with a batched shift, and the gradient of a sum over a vmapped shift axis.
    y = jax.vmap(f, in_axes=(None, 0))(x[0, 0], shifts[0])
    np.testing.assert_allclose(y[1], f(x[0, 0], shifts[0, 1]), atol=1e-6)
    gs = jax.grad(lambda b: jnp.sum(jax.vmap(f, in_axes=(None, 0))(x[0, 0], b) ** 2))(shifts[0])
    gs1 = jax.grad(lambda b: jnp.sum(f(x[0, 0], b) ** 2))(shifts[0, 1])
    np.testing.assert_allclose(gs[1], gs1, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_jit_and_checkpoint(impl):
    x, s = _data()
    grad = jax.grad(lambda a, b: _loss(a, b, impl), argnums=(0, 1))
    eager = grad(x, s)
    jitted = jax.jit(grad)(x, s)
    remat = jax.jit(jax.grad(jax.checkpoint(lambda a, b: _loss(a, b, impl)), argnums=(0, 1)))(x, s)
    for a, b, c in zip(eager, jitted, remat):  # XLA may fuse and reassociate the float sums
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS[:2])
def test_two_runs_are_bit_identical(impl):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((4, 8, 28, 28, 24)), jnp.float32)
    s = jnp.asarray(rng.uniform(-2, 2, (24, 3)), jnp.float32)
    grad = jax.jit(jax.grad(lambda a, b: _loss(a, b, impl), argnums=(0, 1)))
    first = [np.asarray(v) for v in grad(x, s)]
    for _ in range(3):
        for a, b in zip(first, grad(x, s)):
            np.testing.assert_array_equal(a, b)


PMAP_SCRIPT = textwrap.dedent("""
    import functools, sys
    import jax, jax.numpy as jnp, numpy as np
    from rubiks_jax import ops
    rubiks_shift = functools.partial(ops.rubiks_shift, impl=sys.argv[1])
    assert jax.local_device_count() == 4, jax.devices()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((4, 2, 4, 6, 5, 7)), jnp.float32)
    s = jnp.asarray(rng.uniform(-1.5, 1.5, (7, 3)), jnp.float32)
    def step(a, b):
        loss = lambda a, b: jnp.sum(rubiks_shift(a, b, stride=(1, 2, 1)) ** 2)
        ga, gb = jax.grad(loss, argnums=(0, 1))(a, b)
        return rubiks_shift(a, b, stride=(1, 2, 1)), ga, jax.lax.pmean(gb, "d")
    y, gx, gs = jax.pmap(step, axis_name="d", in_axes=(0, None))(x, s)
    y1 = rubiks_shift(x, s, stride=(1, 2, 1))
    gx1, gs1 = jax.grad(lambda a, b: jnp.sum(rubiks_shift(a, b, stride=(1, 2, 1)) ** 2),
                        argnums=(0, 1))(x, s)
    np.testing.assert_allclose(y, y1, atol=1e-6)
    np.testing.assert_allclose(gx, gx1, atol=1e-5)
    np.testing.assert_allclose(gs[0], gs1 / 4, rtol=1e-5, atol=1e-5)
    print("pmap ok")
""")


@pytest.mark.parametrize("impl", IMPLS[:2])
def test_pmap_over_four_host_devices(impl):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", PMAP_SCRIPT, impl], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and "pmap ok" in out.stdout, out.stderr[-3000:]
