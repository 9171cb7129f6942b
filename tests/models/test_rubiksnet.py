"""RubiksNet: shapes for every tier and variant, BatchNorm and dropout modes, dtype, budget."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rubiks_jax.layers import TEMPERATURE_COLLECTION
from rubiks_jax.models import RubiksNet, budget_loss, budget_stats, mean_budget, set_temperature

X = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 32, 32, 3))
VARIANTS = ["rubiks3d", "rubiks3d_q", "rubiks3d_aq"]


def _init(model, x=X):
    return model.init(jax.random.PRNGKey(1), x, train=False)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("tier", ["tiny", "small", "medium", "large"])
def test_output_shapes_every_tier_and_variant(tier, variant):
    model = RubiksNet(tier, 7, num_frames=4, variant=variant)
    # Shape inference without compiling: the deep tiers would take minutes to compile here.
    variables = jax.eval_shape(lambda: _init(model))
    out = jax.eval_shape(lambda v: model.apply(v, X, train=True, mutable=["batch_stats"],
                                               rngs={"dropout": jax.random.PRNGKey(2)}), variables)
    logits, updates = out
    assert logits.shape == (2, 7) and logits.dtype == jnp.float32
    assert set(updates) == {"batch_stats"}
    n_blocks = sum(1 for k in variables["params"] if k.startswith("layer"))
    assert n_blocks == 1 + sum({"tiny": (3, 4, 6, 3), "small": (3, 4, 6, 3),
                                "medium": (3, 4, 23, 3), "large": (3, 8, 36, 3)}[tier])
    assert ("se" in variables["params"]["layer1_block0"]) == (tier == "small")


@pytest.mark.parametrize("variant", VARIANTS)
def test_tiny_runs_at_any_spatial_size(variant):
    """As the published network: 112x112 (a stride-2 layer takes 7 to 4) and odd sizes."""
    model = RubiksNet("tiny", 5, num_frames=4, variant=variant)
    v = _init(model)
    assert np.isfinite(np.asarray(model.apply(v, X))).all()
    for h, w in ((112, 112), (50, 37), (3, 5)):
        out = model.apply(v, jnp.ones((1, 4, h, w, 3)))
        assert out.shape == (1, 5) and np.isfinite(np.asarray(out)).all()


# Parameters of the published checkpoints at 174 classes (their state_dict: weights, biases and
# BatchNorm affine parameters; running statistics are not parameters).
OFFICIAL_PARAMS = {"tiny": 1_898_760, "small": 3_597_366, "medium": 6_185_622, "large": 8_538_294}


@pytest.mark.parametrize("tier", sorted(OFFICIAL_PARAMS))
def test_parameter_counts_equal_the_published_models(tier):
    model = RubiksNet(tier, 174, num_frames=8)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                  jnp.zeros((1, 8, 32, 32, 3)), train=False))
    count = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(variables["params"]))
    assert count == OFFICIAL_PARAMS[tier]


def test_input_validation():
    model = RubiksNet("tiny", 5, num_frames=4)
    with pytest.raises(ValueError, match="has 8 frames but the model was built with num_frames=4"):
        _init(model, jnp.ones((1, 8, 32, 32, 3)))
    with pytest.raises(ValueError, match=r"shape \(N, T, H, W, 3\)"):
        _init(model, jnp.ones((1, 4, 32, 32)))
    with pytest.raises(ValueError, match="tier must be one of"):
        _init(RubiksNet("huge", 5, num_frames=4))


def test_batchnorm_train_vs_eval():
    model = RubiksNet("tiny", 5, num_frames=4)
    v = _init(model)
    _, upd = model.apply(v, X, train=True, mutable=["batch_stats"])
    before = jax.tree_util.tree_leaves(v["batch_stats"])
    after = jax.tree_util.tree_leaves(upd["batch_stats"])
    assert all(a.shape == b.shape for a, b in zip(before, after))
    assert any(float(jnp.max(jnp.abs(a - b))) > 0 for a, b in zip(before, after))
    # Eval uses running statistics: a sample's logits do not depend on the rest of the batch.
    alone = model.apply(v, X[:1])
    together = model.apply(v, jnp.concatenate([X[:1], 5 * X[1:]]))
    np.testing.assert_allclose(alone, together[:1], rtol=1e-5, atol=1e-5)
    # Train uses batch statistics: it does depend on the rest of the batch.
    t1, _ = model.apply(v, X, train=True, mutable=["batch_stats"])
    t2, _ = model.apply(v, jnp.concatenate([X[:1], 5 * X[1:]]), train=True,
                        mutable=["batch_stats"])
    assert float(jnp.max(jnp.abs(t1[0] - t2[0]))) > 1e-4


def test_dropout_only_in_training():
    model = RubiksNet("tiny", 5, num_frames=4, dropout_rate=0.5)
    v = _init(model)
    np.testing.assert_array_equal(model.apply(v, X), model.apply(v, X))
    run = lambda k: model.apply(v, X, train=True, mutable=["batch_stats"],
                                rngs={"dropout": jax.random.PRNGKey(k)})[0]
    assert float(jnp.max(jnp.abs(run(0) - run(1)))) > 1e-4
    np.testing.assert_array_equal(run(3), run(3))


def test_bfloat16_compute_close_to_float32():
    model = RubiksNet("tiny", 5, num_frames=4)
    v = _init(model)
    y32 = model.apply(v, X)
    y16 = RubiksNet("tiny", 5, num_frames=4, dtype=jnp.bfloat16).apply(v, X)
    assert y16.dtype == jnp.float32
    assert jax.tree_util.tree_leaves(v["params"])[0].dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(y32)))
    assert float(jnp.max(jnp.abs(y16 - y32))) < 0.05 * scale + 0.05


def test_aq_budget_statistics_and_temperature():
    model = RubiksNet("tiny", 5, num_frames=4, variant="rubiks3d_aq")
    v = _init(model)
    stats = budget_stats(v)
    assert len(stats) == 17 and "layer2_block0/attention_shift" in stats
    b = float(mean_budget(v))
    assert 0 < b < 1 and abs(b - np.mean([float(s) for s in stats.values()])) < 1e-6
    np.testing.assert_allclose(float(budget_loss(v, 0.125, 2.0)), 2.0 * max(b - 0.125, 0) ** 2,
                               rtol=1e-5)
    assert float(budget_loss(v, 1.0)) == 0.0
    cold = set_temperature(v, 0.01)
    assert all(float(t) == np.float32(0.01)
               for t in jax.tree_util.tree_leaves(cold[TEMPERATURE_COLLECTION]))
    assert float(mean_budget(cold)) != b
    assert float(jnp.max(jnp.abs(model.apply(cold, X) - model.apply(v, X)))) > 0
    # The budget loss is differentiable in the attention logits.
    g = jax.grad(lambda p: budget_loss({**v, "params": p}, 0.0))(v["params"])
    assert float(jnp.abs(g["layer1_block0"]["attention_shift"]["attention"]).sum()) > 0
    assert budget_stats(_init(RubiksNet("tiny", 5, num_frames=4))) == {}
