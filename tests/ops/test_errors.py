"""Bad input raises ValueError naming the argument and what was expected, before lowering."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

from rubiks_jax.ops import rubiks_shift

X = jnp.zeros((1, 2, 3, 4, 5))
S = jnp.zeros((5, 3))


@pytest.mark.parametrize("kwargs, message", [
    (dict(x=jnp.zeros((2, 3, 4, 5))), r"x must have shape \(N, T, H, W, C\).*got shape \(2, 3, 4, 5\)"),
    (dict(x=jnp.zeros((1, 2, 3, 4, 5), jnp.int32)), r"x must be float32, bfloat16 or float16, got dtype int32"),
    (dict(shift=jnp.zeros((4, 3))), r"shift must have shape \(C, 3\) = \(5, 3\) to match the 5 channels of x, got shape \(4, 3\)"),
    (dict(shift=jnp.zeros((5, 2))), r"shift must have shape \(C, 3\) = \(5, 3\).*got shape \(5, 2\)"),
    (dict(shift=jnp.zeros((5,))), r"shift must have shape \(C, 3\).*got shape \(5,\)"),
    (dict(shift=jnp.zeros((5, 3), jnp.int32)), r"shift must be a float array of shape \(C, 3\), got dtype int32"),
    (dict(stride=(1, 0, 1)), r"stride must be >= 1 on every axis, got \(1, 0, 1\)"),
    (dict(stride=0), r"stride must be >= 1 on every axis, got \(0, 0, 0\)"),
    (dict(stride=(1, 2)), r"stride must be an int or 3 ints \(t, h, w\), got \(1, 2\)"),
    (dict(stride=(1.5, 1, 1)), r"stride must be an int or 3 ints"),
    (dict(padding=(0, -1, 0)), r"padding must be >= 0 on every axis, got \(0, -1, 0\)"),
    (dict(impl="cuda"), r"impl must be None, 'ffi', 'xla' or 'reference', got 'cuda'"),
])
def test_bad_input_names_the_argument(kwargs, message):
    args = dict(x=X, shift=S)
    args.update(kwargs)
    x, shift = args.pop("x"), args.pop("shift")
    with pytest.raises(ValueError, match=message):
        rubiks_shift(x, shift, **args)


def test_non_array_x():
    with pytest.raises(ValueError, match="x must be float32, bfloat16 or float16, got dtype None"):
        rubiks_shift([[1.0]], S)


def test_float64_x_is_rejected():
    import numpy as np
    with pytest.raises(ValueError, match="x must be float32, bfloat16 or float16, got dtype float64"):
        rubiks_shift(np.zeros((1, 2, 3, 4, 5)), S)


def test_ffi_requested_but_not_built(monkeypatch):
    from rubiks_jax.ops import ffi_kernels
    monkeypatch.setattr(ffi_kernels, "available", lambda: False)
    with pytest.raises(ValueError, match=r"impl='ffi' but the compiled kernels .* not installed"):
        rubiks_shift(X, S, impl="ffi")
    assert rubiks_shift(X, S).shape == X.shape  # impl=None falls back to the reference
