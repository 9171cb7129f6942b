"""Squeeze-excite and the RubiksShift block."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rubiks_jax.layers import RubiksShiftBlock, SqueezeExcite

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
    assert "temperature" in v["shift_state"]["attention_shift"]


def test_bad_variant():
    with pytest.raises(ValueError, match="variant must be one of"):
        RubiksShiftBlock(24, variant="rubiks2d").init(jax.random.PRNGKey(1), X)
