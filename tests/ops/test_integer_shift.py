"""integer_shift: the zero-FLOP path equals rubiks_shift at integer shifts, values and x-gradient."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rubiks_jax.ops import integer_shift, rubiks_shift
from tests.ops import reference


@pytest.mark.parametrize("stride, padding", [((1, 1, 1), (0, 0, 0)), ((2, 2, 1), (1, 0, 2)),
                                             ((1, 3, 2), (0, 2, 0))])
def test_matches_reference_and_rubiks_shift(stride, padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 6, 7, 9)).astype(np.float32)
    s = rng.integers(-4, 5, (9, 3))
    y = integer_shift(jnp.asarray(x), jnp.asarray(s), stride=stride, padding=padding)
    np.testing.assert_array_equal(y, reference.forward(x, s, stride, padding).astype(np.float32))
    g = jax.grad(lambda a: jnp.sum(integer_shift(a, jnp.asarray(s), stride=stride,
                                                 padding=padding) ** 2))(jnp.asarray(x))
    g_ref = jax.grad(lambda a: jnp.sum(rubiks_shift(a, jnp.asarray(s, jnp.float32), stride=stride,
                                                    padding=padding) ** 2))(jnp.asarray(x))
    np.testing.assert_allclose(g, g_ref, atol=1e-6)


def test_costs_no_arithmetic():
    x = jnp.ones((1, 4, 8, 8, 16))
    s = jnp.zeros((16, 3), jnp.int32).at[:4, 0].set(1)
    hlo = jax.jit(lambda a: integer_shift(a, s)).lower(x).as_text()
    float_math = [line for line in hlo.splitlines()
                  if re.search(r"stablehlo\.(multiply|add|subtract|divide)", line) and "f32>" in line]
    assert not float_math and "gather" in hlo  # only index arithmetic, on small int tensors


def test_rejects_float_shift():
    with pytest.raises(ValueError, match="shift must be an integer array"):
        integer_shift(jnp.ones((1, 2, 3, 4, 5)), jnp.zeros((5, 3)))
