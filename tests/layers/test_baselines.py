"""The layer-level comparison blocks."""

import jax

from rubiks_jax.layers.baselines import layer_blocks


def test_layer_blocks_keep_shape():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 8, 8, 16))
    for name, block in layer_blocks(16).items():
        v = block.init(jax.random.PRNGKey(1), x)
        assert block.apply(v, x).shape == x.shape, name
