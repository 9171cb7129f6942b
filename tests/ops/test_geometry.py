"""Geometry shared by the shift ops: per-axis arguments, extents, rounding of a shift."""

import jax.numpy as jnp
import numpy as np
import pytest

from rubiks_jax.ops.geometry import Geometry, as_triple, out_extent, round_half_up


def test_as_triple():
    assert as_triple(2, "stride", 1) == (2, 2, 2)
    assert as_triple((1, np.int64(2), 3), "stride", 1) == (1, 2, 3)
    for bad in ((1, 2), True, (1, 2.0, 3), "abc"):
        with pytest.raises(ValueError, match="stride must be an int or 3 ints"):
            as_triple(bad, "stride", 1)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        as_triple((0, -1, 0), "padding", 0)


def test_out_extent_and_geometry():
    assert [out_extent(n, 2, 0) for n in (0, 1, 7, 8)] == [0, 1, 4, 4]
    assert out_extent(5, 1, 2) == 9
    geo = Geometry((8, 7, 0), (1, 2, 2), (0, 1, 0))
    assert geo.out_size == (8, 5, 0)
    assert geo.with_in_size((4, 4, 4)).out_size == (4, 3, 2)


def test_round_half_up():
    d = jnp.array([0.49999997, 0.5, 1.5, -0.5, -0.50000006, -1.5, 2.0], jnp.float32)
    np.testing.assert_array_equal(round_half_up(d), [0, 1, 2, 0, -1, -1, 2])
