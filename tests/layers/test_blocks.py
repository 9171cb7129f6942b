"""Squeeze-excite and the RubiksShift block."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rubiks_jax.layers import TEMPERATURE_COLLECTION, PointwiseConv, RubiksShiftBlock, SqueezeExcite

X = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 8, 8, 24))


def test_squeeze_excite_gates_per_frame_channel():
    se = SqueezeExcite()
    v = se.init(jax.random.PRNGKey(1), X)
    assert v["params"]["reduce"]["kernel"].shape == (24, 2)
    y = se.apply(v, X)
    gate = y / X
    # One gate per (n, t, c), shared over H and W, in (0, 1).
    np.testing.assert_allclose(gate, jnp.broadcast_to(gate[:, :, :1, :1], gate.shape), rtol=1e-4)
    assert float(gate.min()) > 0 and float(gate.max()) < 1


@pytest.mark.parametrize("features, stride, has_shortcut", [(24, 1, False), (48, 1, True),
                                                            (24, 2, True)])
def test_block_structure(features, stride, has_shortcut):
    block = RubiksShiftBlock(features, stride)
    v = block.init(jax.random.PRNGKey(1), X)
    assert ("shortcut" in v["params"]) == has_shortcut
    assert set(v["params"]) >= {"bn1", "conv1", "bn2", "shift", "conv2"}
    y = block.apply(v, X)
    assert y.shape == (2, 4, 8 // stride, 8 // stride, features)


def test_identity_block_adds_the_input():
    block = RubiksShiftBlock(24, 1)
    v = block.init(jax.random.PRNGKey(1), X)
    zero = jax.tree_util.tree_map(jnp.zeros_like, v["params"]["conv2"])
    v = {**v, "params": {**v["params"], "conv2": zero}}
    np.testing.assert_allclose(block.apply(v, X), X, atol=1e-6)


def test_conv_init_std():
    v = RubiksShiftBlock(256, 1).init(jax.random.PRNGKey(4), jnp.ones((1, 1, 4, 4, 256)))
    k = np.asarray(v["params"]["conv1"]["kernel"])
    assert abs(k.std() - np.sqrt(2.0 / 256)) < 0.003 and abs(k.mean()) < 0.003
    assert (np.asarray(v["params"]["bn1"]["scale"]) == 1).all()
    assert (np.asarray(v["params"]["bn1"]["bias"]) == 0).all()


def test_aq_block_has_attention_and_spatial_shift_only():
    v = RubiksShiftBlock(24, 1, variant="rubiks3d_aq").init(jax.random.PRNGKey(1), X)
    assert v["params"]["attention_shift"]["attention"].shape == (24, 3)
    assert v["params"]["shift"]["shift"].shape == (24, 2)
    assert "temperature" in v[TEMPERATURE_COLLECTION]["attention_shift"]


def test_bad_variant():
    with pytest.raises(ValueError, match="variant must be one of"):
        RubiksShiftBlock(24, variant="rubiks2d").init(jax.random.PRNGKey(1), X)


@pytest.mark.parametrize("stride,padding,use_bias,shape", [
    (1, "SAME", False, (2, 3, 7, 5, 6)),
    (2, "SAME", False, (1, 2, 9, 6, 4)),
    (3, "VALID", True, (2, 11, 7, 3)),
])
def test_pointwise_conv_matches_a_1x1_conv(stride, padding, use_bias, shape):
    """Same parameter tree and, to float32 rounding, the same outputs and gradients as nn.Conv."""
    import flax.linen as nn

    kwargs = dict(features=5, kernel_size=(1, 1), strides=(stride, stride), padding=padding,
                  use_bias=use_bias, bias_init=nn.initializers.normal(1.0))
    conv, pointwise = nn.Conv(**kwargs), PointwiseConv(**kwargs)
    x = jax.random.normal(jax.random.PRNGKey(1), shape)
    variables = conv.init(jax.random.PRNGKey(0), x)
    assert jax.tree_util.tree_structure(pointwise.init(jax.random.PRNGKey(0), x)) == \
        jax.tree_util.tree_structure(variables)
    assert jax.tree_util.tree_map(jnp.shape, pointwise.init(jax.random.PRNGKey(0), x)) == \
        jax.tree_util.tree_map(jnp.shape, variables)
    expected = conv.apply(variables, x)
    np.testing.assert_allclose(pointwise.apply(variables, x), expected, rtol=1e-5, atol=1e-5)

    def loss(module):
        return lambda v, x: jnp.sum(jnp.sin(module.apply(v, x)))

    g_conv = jax.grad(loss(conv), argnums=(0, 1))(variables, x)
    g_point = jax.grad(loss(pointwise), argnums=(0, 1))(variables, x)
    for a, b in zip(jax.tree_util.tree_leaves(g_point), jax.tree_util.tree_leaves(g_conv)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_pointwise_conv_bfloat16_compute():
    m = PointwiseConv(4, (1, 1), dtype=jnp.bfloat16)
    x = jnp.ones((1, 2, 3, 3, 6))
    variables = m.init(jax.random.PRNGKey(0), x)
    assert variables["params"]["kernel"].dtype == jnp.float32  # parameters stay float32
    assert m.apply(variables, x).dtype == jnp.bfloat16


@pytest.mark.parametrize("kwargs,match", [
    (dict(kernel_size=(3, 3)), "kernel_size must be \\(1, 1\\)"),
    (dict(kernel_size=(1, 1), feature_group_count=2), "feature groups"),
    (dict(kernel_size=(1, 1), padding=((1, 1), (1, 1))), "padding must be"),
    (dict(kernel_size=(1, 1), kernel_dilation=(2, 2)), "kernel_dilation must be 1"),
])
def test_pointwise_conv_rejects_what_it_cannot_compute(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PointwiseConv(4, **kwargs).init(jax.random.PRNGKey(0), jnp.ones((1, 4, 4, 8)))
