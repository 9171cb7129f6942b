"""RubiksShift, AttentionShift and TSM's fixed temporal shift."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rubiks_jax.layers import (TEMPERATURE_COLLECTION, AttentionShift, RubiksShift, attention_weights,
                               shifted_fraction, tsm_temporal_shift)
from rubiks_jax.ops import rubiks_shift

X = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 6, 7, 64))


def test_uniform_init_and_axes():
    v = RubiksShift().init(jax.random.PRNGKey(1), X)
    s = np.asarray(v["params"]["shift"])
    assert s.shape == (64, 3) and s.min() >= -1 and s.max() <= 1
    assert abs(s.mean()) < 0.1 and abs(s.std() - 1 / np.sqrt(3)) < 0.06
    v_hw = RubiksShift(axes="hw").init(jax.random.PRNGKey(1), X)
    assert v_hw["params"]["shift"].shape == (64, 2)
    # dt is held at 0 for axes "hw": output equals the op with a zero temporal column.
    full = jnp.zeros((64, 3)).at[:, 1:].set(v_hw["params"]["shift"])
    np.testing.assert_array_equal(RubiksShift(axes="hw").apply(v_hw, X), rubiks_shift(X, full))


def test_tsm_init():
    s = np.asarray(RubiksShift(shift_init="tsm").init(jax.random.PRNGKey(1), X)["params"]["shift"])
    assert (s[:8, 0] == 1).all() and (s[8:16, 0] == -1).all() and (s[16:, 0] == 0).all()
    assert (s[:, 1:] == 0).all()
    with pytest.raises(ValueError, match="needs axes='thw'"):
        RubiksShift(axes="hw", shift_init="tsm").init(jax.random.PRNGKey(1), X)


def test_bad_axes_and_init():
    with pytest.raises(ValueError, match="axes must be 'thw' or 'hw'"):
        RubiksShift(axes="t").init(jax.random.PRNGKey(1), X)
    with pytest.raises(ValueError, match="shift_init must be one of"):
        RubiksShift(shift_init="normal").init(jax.random.PRNGKey(1), X)


def test_stride_and_integer_form_match_quantized():
    layer = RubiksShift(stride=(1, 2, 2), quantize=True)
    v = layer.init(jax.random.PRNGKey(2), X)
    v = jax.tree_util.tree_map(lambda s: s * 3.0, v)  # spread shifts over several pixels
    y_q = layer.apply(v, X)
    y_int = RubiksShift(stride=(1, 2, 2), integer=True).apply(v, X)
    assert y_q.shape == (2, 5, 3, 4, 64)
    np.testing.assert_array_equal(y_q, y_int)


def _attention(temperature=None, hard=False):
    layer = AttentionShift(hard=hard)
    v = layer.init(jax.random.PRNGKey(3), X)
    if temperature is not None:
        v = {**v, TEMPERATURE_COLLECTION: {"temperature": jnp.asarray(temperature, jnp.float32)}}
    return layer, v


def test_attention_init_and_definition():
    layer, v = _attention()
    w = np.asarray(v["params"]["attention"])
    assert w.shape == (64, 3) and w.min() >= 0 and w.max() < 1
    assert float(v[TEMPERATURE_COLLECTION]["temperature"]) == 2.0
    a = np.asarray(attention_weights(jnp.asarray(w), 2.0))
    # torch.std, the published network's: the unbiased deviation (ddof 1).
    scaled = w / (w.std(axis=1, ddof=1, keepdims=True) + 1e-6) / 2.0
    expected_a = np.exp(scaled) / np.exp(scaled).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(a, expected_a, rtol=1e-5)
    x = np.asarray(X)
    prev = np.concatenate([np.zeros_like(x[:, :1]), x[:, :-1]], axis=1)
    nxt = np.concatenate([x[:, 1:], np.zeros_like(x[:, :1])], axis=1)
    expected = expected_a[:, 0] * prev + expected_a[:, 1] * x + expected_a[:, 2] * nxt
    np.testing.assert_allclose(layer.apply(v, X), expected, rtol=1e-5, atol=1e-5)


def test_attention_normalises_by_the_unbiased_deviation():
    # logits (0, 1, 2): unbiased std 1, so at temperature 1 the weights are softmax(0, 1, 2).
    a = np.asarray(attention_weights(jnp.asarray([[0.0, 1.0, 2.0]]), 1.0))[0]
    expected = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
    np.testing.assert_allclose(a, expected, rtol=1e-5)


def test_temperature_takes_effect_and_low_temperature_approaches_hard():
    layer, v_hot = _attention(2.0)
    _, v_cold = _attention(1e-4)
    y_hot, y_cold = layer.apply(v_hot, X), layer.apply(v_cold, X)
    assert float(jnp.max(jnp.abs(y_hot - y_cold))) > 0.1
    hard_layer = AttentionShift(hard=True)
    y_hard = hard_layer.apply(v_cold, X)
    w = v_hot["params"]["attention"]
    # Channels whose logits are not near-tied have become one-hot at this temperature.
    confident = np.asarray(attention_weights(w, 1e-4)).max(axis=1) > 1 - 1e-6
    assert confident.mean() > 0.8
    np.testing.assert_allclose(np.asarray(y_cold)[..., confident],
                               np.asarray(y_hard)[..., confident], atol=1e-5)
    f_hot, f_cold = float(shifted_fraction(w, 2.0)), float(shifted_fraction(w, 1e-4))
    # Hard choice: the fraction of channels whose argmax is not the middle (shift 0).
    frac_hard = float(np.mean(np.argmax(np.asarray(w), axis=1) != 1))
    assert abs(f_cold - frac_hard) < 1e-3 and abs(f_hot - f_cold) > 1e-3


def test_hard_attention_is_an_integer_temporal_shift():
    layer, v = _attention()
    y = AttentionShift(hard=True).apply(v, X)
    dt = np.argmax(np.asarray(v["params"]["attention"]), axis=1) - 1
    shift = jnp.zeros((64, 3)).at[:, 0].set(dt)
    np.testing.assert_array_equal(y, rubiks_shift(X, shift))


def test_tsm_shift_moves_one_eighth_each_way():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 2, 2, 16))
    y = np.asarray(tsm_temporal_shift(x))
    x = np.asarray(x)
    np.testing.assert_array_equal(y[:, :-1, ..., :2], x[:, 1:, ..., :2])   # reads t + 1
    np.testing.assert_array_equal(y[:, -1, ..., :2], 0)
    np.testing.assert_array_equal(y[:, 1:, ..., 2:4], x[:, :-1, ..., 2:4])  # reads t - 1
    np.testing.assert_array_equal(y[..., 4:], x[..., 4:])
