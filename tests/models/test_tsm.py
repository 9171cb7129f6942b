"""TSM ResNet baselines."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rubiks_jax.models.tsm import TSMResNet


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


def test_tsm_resnet_checks_its_input_and_takes_any_size():
    model = TSMResNet(18, 5, num_frames=4)
    for shape, match in (((2, 3, 32, 32, 3), "num_frames=4"), ((2, 4, 32, 32), "shape")):
        with pytest.raises(ValueError, match=match):
            jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.ones(shape)))
    out = jax.eval_shape(lambda: model.init_with_output(jax.random.PRNGKey(0),
                                                        jnp.ones((2, 4, 48, 37, 3)))[0])
    assert out.shape == (2, 5)
