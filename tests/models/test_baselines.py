"""TSM ResNet baselines and the layer-level comparison blocks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rubiks_jax.models.layer_blocks import layer_blocks
from rubiks_jax.models.tsm import TSMResNet, tsm_temporal_shift


def test_tsm_shift_moves_one_eighth_each_way():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 2, 2, 16))
    y = np.asarray(tsm_temporal_shift(x))
    x = np.asarray(x)
    np.testing.assert_array_equal(y[:, :-1, ..., :2], x[:, 1:, ..., :2])   # reads t + 1
    np.testing.assert_array_equal(y[:, -1, ..., :2], 0)
    np.testing.assert_array_equal(y[:, 1:, ..., 2:4], x[:, :-1, ..., 2:4])  # reads t - 1
    np.testing.assert_array_equal(y[..., 4:], x[..., 4:])


@pytest.mark.parametrize("depth, params_m", [(18, 11.26), (50, 23.86)])
def test_tsm_resnet_shapes_and_size(depth, params_m):
    model = TSMResNet(depth, 174, num_frames=4)
    x = jnp.ones((2, 4, 64, 64, 3))
    v = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
    n = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(v["params"]))
    assert abs(n / 1e6 - params_m) < 0.05
    out = jax.eval_shape(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]), v)
    assert out[0].shape == (2, 174)


def test_tsm_resnet18_runs():
    model = TSMResNet(18, 5, num_frames=4, dropout_rate=0.3)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 32, 32, 3))
    v = model.init(jax.random.PRNGKey(1), x)
    assert np.isfinite(np.asarray(model.apply(v, x))).all()


def test_layer_blocks_keep_shape():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 8, 8, 16))
    for name, block in layer_blocks(16).items():
        v = block.init(jax.random.PRNGKey(1), x)
        assert block.apply(v, x).shape == x.shape, name
