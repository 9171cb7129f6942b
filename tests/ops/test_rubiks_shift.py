"""Correctness of rubiks_shift (every impl) against the float64 reference and finite differences."""

from __future__ import annotations

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import strategies as st

from rubiks_jax.ops import rubiks_shift
from tests.ops import reference
from tests.ops.cases import CASES, IMPLS, Case, make_inputs, make_shift, needs_ffi


# Tolerances: relative to the largest reference magnitude (float32 accumulation over 8 corners or,
# for the shift gradient, over every output position).
TOL = {jnp.float32: 2e-6, jnp.bfloat16: 1e-2, jnp.float16: 2e-3}


def _close(actual, expected, rel):
    actual = np.asarray(actual, np.float64)
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rel * scale)


def _grads(x, shift, dy, case: Case, impl: str, quantize=False):
    _, vjp = jax.vjp(lambda a, s: rubiks_shift(a, s, stride=case.stride, padding=case.padding,
                                               quantize=quantize, impl=impl), x, shift)
    return vjp(dy)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_matches_float64_reference(case, impl):
    x, shift, _ = make_inputs(case)
    y = rubiks_shift(jnp.asarray(x), jnp.asarray(shift), stride=case.stride,
                     padding=case.padding, impl=impl)
    expected = reference.forward(x, shift, case.stride, case.padding)
    assert y.shape == expected.shape and y.dtype == jnp.float32
    _close(y, expected, TOL[jnp.float32])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_gradients_match_float64_reference(case, impl):
    x, shift, dy = make_inputs(case)
    dx, dshift = _grads(jnp.asarray(x), jnp.asarray(shift), jnp.asarray(dy), case, impl)
    assert dx.shape == x.shape and dx.dtype == jnp.float32
    assert dshift.shape == shift.shape and dshift.dtype == jnp.float32
    _close(dx, reference.grad_input(dy, x.shape, shift, case.stride, case.padding), 1e-5)
    # float32 sums over every output position: allow for that many roundings.
    _close(dshift, reference.grad_shift(x, dy, shift, case.stride, case.padding), 5e-5)


@needs_ffi
@pytest.mark.parametrize("other", ["xla", "reference"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_ffi_matches_pure_jax(case, other):
    x, shift, dy = (jnp.asarray(v) for v in make_inputs(case))
    kw = dict(stride=case.stride, padding=case.padding)
    np.testing.assert_allclose(rubiks_shift(x, shift, impl="ffi", **kw),
                               rubiks_shift(x, shift, impl=other, **kw), rtol=0, atol=1e-6)
    for a, b in zip(_grads(x, shift, dy, case, "ffi"), _grads(x, shift, dy, case, other)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES[:6], ids=str)
def test_half_precision(case, impl, dtype):
    x, shift, dy = make_inputs(case, dtype)
    x64 = np.asarray(x, np.float64)  # the rounded inputs are the reference's inputs
    dy64 = np.asarray(dy, np.float64)
    y = rubiks_shift(jnp.asarray(x), jnp.asarray(shift), stride=case.stride,
                     padding=case.padding, impl=impl)
    assert y.dtype == dtype
    _close(y, reference.forward(x64, shift, case.stride, case.padding), TOL[dtype])
    dx, dshift = _grads(jnp.asarray(x), jnp.asarray(shift), jnp.asarray(dy), case, impl)
    assert dx.dtype == dtype and dshift.dtype == jnp.float32
    _close(dx, reference.grad_input(dy64, x.shape, shift, case.stride, case.padding), TOL[dtype])
    # The shift gradient accumulates in float32 from half inputs: only float32 rounding remains.
    _close(dshift, reference.grad_shift(x64, dy64, shift, case.stride, case.padding), 5e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradients_match_finite_differences(impl):
    """Directional finite differences of the float64 reference at non-integer shifts."""
    rng = np.random.default_rng(7)
    case = Case((1, 5, 6, 7, 6), stride=(1, 2, 1), padding=(1, 0, 1))
    x = rng.standard_normal(case.shape).astype(np.float32)
    # Fractions kept away from integers so +-eps never crosses a kink of the piecewise-linear op.
    shift = (rng.integers(-2, 3, (6, 3)) + rng.uniform(0.2, 0.8, (6, 3))).astype(np.float32)
    w = rng.standard_normal(reference.forward(x, shift, case.stride, case.padding).shape)

    def loss(xv, sv):
        return float(np.sum(w * reference.forward(xv, sv, case.stride, case.padding)))

    dx, dshift = _grads(jnp.asarray(x), jnp.asarray(shift), jnp.asarray(w, jnp.float32), case, impl)
    eps = 1e-3
    for c in range(6):
        for a in range(3):
            e = np.zeros_like(shift, np.float64)
            e[c, a] = eps
            fd = (loss(x, shift + e) - loss(x, shift - e)) / (2 * eps)
            assert abs(float(dshift[c, a]) - fd) < 1e-3 * max(1.0, abs(fd)), (c, a)
    for _ in range(5):  # the op is linear in x: any direction
        v = rng.standard_normal(x.shape)
        fd = (loss(x + eps * v, shift) - loss(x - eps * v, shift)) / (2 * eps)
        assert abs(float(np.sum(np.asarray(dx, np.float64) * v)) - fd) < 1e-3 * max(1.0, abs(fd))


@pytest.mark.parametrize("impl", IMPLS)
def test_integer_shift_gradient_uses_floor_convention(impl):
    """At integer coordinates the gradient is the right derivative x[f+1] - x[f] on that axis,
    with the other axes' weights at r = 0 (not displaced, not doubled as in the published code)."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 4, 5, 6, 3)).astype(np.float32)
    shift = np.array([[0, 1, -2], [1, 0, 0], [-1, 2, 1]], np.float32)
    w = rng.standard_normal(x.shape)
    _, dshift = _grads(jnp.asarray(x), jnp.asarray(shift), jnp.asarray(w, jnp.float32),
                       Case(x.shape), impl)

    def loss(sv):
        return float(np.sum(w * reference.forward(x, sv)))

    eps = 1e-3  # the op is linear in each shift on [f, f + 1): a one-sided difference is exact
    for c in range(3):
        for a in range(3):
            e = np.zeros((3, 3))
            e[c, a] = eps
            right = (loss(shift + e) - loss(shift)) / eps
            np.testing.assert_allclose(float(dshift[c, a]), right, rtol=1e-4, atol=1e-4)
    # And spelled out for channel 2, shift (-1, 2, 1), along w: sum of w * (x[f + 1] - x[f]) with
    # f = (t - 1, h + 2, w + 1) and corners outside the input read as 0.
    def get(n, t, h, wi):
        inside = 0 <= t < 4 and 0 <= h < 5 and 0 <= wi < 6
        return float(x[n, t, h, wi, 2]) if inside else 0.0

    expected = sum(w[n, t, h, wo, 2] * (get(n, t - 1, h + 2, wo + 2) - get(n, t - 1, h + 2, wo + 1))
                   for n in range(2) for t in range(4) for h in range(5) for wo in range(6))
    np.testing.assert_allclose(float(dshift[2, 2]), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_quantize_rounds_forward_and_passes_gradient_straight_through(impl):
    rng = np.random.default_rng(5)
    case = Case((2, 6, 5, 7, 9), stride=(1, 2, 1), padding=(1, 1, 0))
    x, _, dy = make_inputs(case)
    shift = rng.uniform(-2.5, 2.5, (9, 3)).astype(np.float32)
    shift[0] = [0.5, -0.5, 1.5]  # halves round up: floor(d + 0.5)
    shift[1] = [0.49999997, -0.50000006, 2.4999998]  # just below a half: round down
    rounded = np.floor(shift.astype(np.float64) + 0.5)
    assert rounded[1].tolist() == [0.0, -1.0, 2.0] and rounded[0].tolist() == [1.0, 0.0, 2.0]
    kw = dict(stride=case.stride, padding=case.padding)
    y = rubiks_shift(jnp.asarray(x), jnp.asarray(shift), quantize=True, impl=impl, **kw)
    _close(y, reference.forward(x, rounded, **kw), 2e-6)
    dx, dshift = _grads(jnp.asarray(x), jnp.asarray(shift), jnp.asarray(dy), case, impl,
                        quantize=True)
    _close(dx, reference.grad_input(dy, x.shape, rounded, **kw), 1e-5)
    # Straight-through: the interpolation derivative at the real (unrounded) shift.
    _close(dshift, reference.grad_shift(x, dy, shift, **kw), 5e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_non_finite_shift_poisons_only_its_channel(impl):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 4, 5, 6, 5)).astype(np.float32)
    shift = rng.uniform(-1, 1, (5, 3)).astype(np.float32)
    shift[1, 0] = np.nan
    shift[3, 2] = np.inf
    shift[4] = [1e30, -3e38, 2.5]  # huge but finite: reads only zero padding
    y = np.asarray(rubiks_shift(jnp.asarray(x), jnp.asarray(shift), impl=impl))
    assert np.isnan(y[..., 1]).all() and np.isnan(y[..., 3]).all()
    assert np.isfinite(y[..., [0, 2]]).all()
    np.testing.assert_array_equal(y[..., 4], 0.0)
    _close(y[..., [0, 2]], reference.forward(x, shift)[..., [0, 2]], 2e-6)
    dx, dshift = _grads(jnp.asarray(x), jnp.asarray(shift), jnp.ones_like(jnp.asarray(y)),
                        Case(x.shape), impl)
    dx, dshift = np.asarray(dx), np.asarray(dshift)
    assert np.isfinite(dx[..., [0, 2, 4]]).all() and np.isfinite(dshift[[0, 2, 4]]).all()
    assert np.isnan(dshift[1]).any() and np.isnan(dshift[3]).any()


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_shift_is_identity_and_integer_shift_moves_frames(impl):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 4, 3, 4)).astype(np.float32)
    y = rubiks_shift(jnp.asarray(x), jnp.zeros((4, 3)), impl=impl)
    np.testing.assert_array_equal(y, x)
    shift = np.zeros((4, 3), np.float32)
    shift[0, 0] = 1.0  # positive dt reads the next frame
    y = np.asarray(rubiks_shift(jnp.asarray(x), jnp.asarray(shift), impl=impl))
    np.testing.assert_array_equal(y[:, :-1, ..., 0], x[:, 1:, ..., 0])
    np.testing.assert_array_equal(y[:, -1, ..., 0], 0.0)
    np.testing.assert_array_equal(y[..., 1:], x[..., 1:])


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_batch(impl):
    x = jnp.zeros((0, 4, 5, 6, 3))
    y = rubiks_shift(x, jnp.zeros((3, 3)), stride=(1, 2, 2), impl=impl)
    assert y.shape == (0, 4, 3, 3, 3)
    dx, ds = jax.grad(lambda a, s: jnp.sum(rubiks_shift(a, s, impl=impl)),
                      argnums=(0, 1))(x, jnp.ones((3, 3)))
    assert dx.shape == x.shape and np.all(np.asarray(ds) == 0)


@pytest.mark.kernels
@needs_ffi
def test_default_impl_is_ffi_when_built():
    x, shift, _ = make_inputs(CASES[0])
    np.testing.assert_array_equal(rubiks_shift(jnp.asarray(x), jnp.asarray(shift)),
                                  rubiks_shift(jnp.asarray(x), jnp.asarray(shift), impl="ffi"))


def test_shift_dtype_is_cast_and_gradient_keeps_it():
    x, shift, _ = make_inputs(CASES[0])
    s16 = jnp.asarray(shift, jnp.bfloat16)
    g = jax.grad(lambda s: jnp.sum(rubiks_shift(jnp.asarray(x), s)))(s16)
    assert g.dtype == jnp.bfloat16 and g.shape == shift.shape


@st.composite
def _geometries(draw) -> tuple[Case, int]:
    """A small random geometry: (N, T, H, W, C), stride, padding, shift kind, and a data seed."""
    shape = (draw(st.integers(1, 2)), *(draw(st.integers(1, 6)) for _ in range(3)),
             draw(st.integers(1, 19)))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(3))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(3))
    kind = draw(st.sampled_from(["uniform", "large", "integer", "mixed"]))
    return Case(shape, stride, padding, kind), draw(st.integers(0, 2**32 - 1))


@pytest.mark.parametrize("impl", IMPLS[:2])
@hypothesis.given(geometry=_geometries())
def test_random_geometries_against_reference(impl, geometry):
    """Random small geometries (a sweep the fixed cases might miss), for the fast impls; the
    number of examples is the Hypothesis profile's (tests/conftest.py)."""
    case, seed = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case.shape).astype(np.float32)
    shift = make_shift(case.shifts, case.shape[-1], rng)
    y = rubiks_shift(jnp.asarray(x), jnp.asarray(shift), stride=case.stride,
                     padding=case.padding, impl=impl)
    expected = reference.forward(x, shift, case.stride, case.padding)
    _close(y, expected, 2e-6)
    dy = rng.standard_normal(expected.shape).astype(np.float32)
    dx, ds = _grads(jnp.asarray(x), jnp.asarray(shift), jnp.asarray(dy), case, impl)
    _close(dx, reference.grad_input(dy, case.shape, shift, case.stride, case.padding), 1e-5)
    _close(ds, reference.grad_shift(x, dy, shift, case.stride, case.padding), 5e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_integer_shift_ignores_infinite_neighbours(impl):
    """At an integer (or quantized) shift only the sampled corner matters: an infinite value next
    to it, with interpolation weight 0, must not turn the output into NaN."""
    x = np.zeros((1, 3, 3, 5, 1), np.float32)
    x[0, :, :, 3, 0] = np.inf
    shift = np.array([[0.0, 0.0, 1.0]], np.float32)
    y = np.asarray(rubiks_shift(jnp.asarray(x), jnp.asarray(shift), impl=impl))
    np.testing.assert_array_equal(y[0, :, :, [0, 1, 3], 0], 0.0)
    assert np.isinf(y[0, :, :, 2, 0]).all()
    yq = np.asarray(rubiks_shift(jnp.asarray(x), jnp.asarray(shift + 0.3), quantize=True,
                                 impl=impl))
    np.testing.assert_array_equal(yq, y)
