"""Inference form: integer shifts on the zero-FLOP path with outputs identical to hard mode."""

import jax
import jax.numpy as jnp
import numpy as np

from rubiks_jax import flops
from rubiks_jax.layers import TEMPERATURE_COLLECTION
from rubiks_jax.models import RubiksNet, to_inference

X = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 32, 32, 3))


def _trained(model):
    v = model.init(jax.random.PRNGKey(1), X, train=False)
    # Spread shifts over several pixels and away from init, as training would.
    params = jax.tree_util.tree_map_with_path(
        lambda p, a: a * 2.7 if "shift" in jax.tree_util.keystr(p) else a, v["params"])
    return {**v, "params": params}


def test_quantized_model_deploys_to_rounded_integer_shifts():
    model = RubiksNet("tiny", 5, num_frames=4, variant="rubiks3d_q")
    v = _trained(model)
    deployed, dv = to_inference(model, v)
    s = np.asarray(dv["params"]["layer1_block1"]["shift"]["shift"])
    np.testing.assert_array_equal(s, np.floor(np.asarray(v["params"]["layer1_block1"]["shift"]
                                                         ["shift"], np.float64) + 0.5))
    np.testing.assert_array_equal(deployed.apply(dv, X), model.apply(v, X))
    macs = {r.kind for r in flops.count(deployed, (1, 4, 32, 32, 3))}
    assert "shift" not in macs and "integer_shift" in macs


def test_aq_model_deploys_to_hard_temporal_shifts():
    model = RubiksNet("tiny", 5, num_frames=4, variant="rubiks3d_aq")
    v = _trained(model)
    deployed, dv = to_inference(model, v)
    assert TEMPERATURE_COLLECTION not in dv
    layer = dv["params"]["layer2_block0"]["attention_shift"]
    assert set(layer) == {"temporal_shift"}
    assert set(np.unique(np.asarray(layer["temporal_shift"]))) <= {-1.0, 0.0, 1.0}
    hard = model.clone(hard_attention=True)
    np.testing.assert_array_equal(deployed.apply(dv, X), hard.apply(v, X))
    # Soft attention differs from the hard model (the temperature is 2 at init).
    assert float(jnp.max(jnp.abs(model.apply(v, X) - hard.apply(v, X)))) > 1e-3
    kinds = {r.kind for r in flops.count(deployed, (1, 4, 32, 32, 3))}
    assert "attention_shift" not in kinds


def test_plain_variant_is_unchanged():
    model = RubiksNet("tiny", 5, num_frames=4)
    v = _trained(model)
    deployed, dv = to_inference(model, v)
    assert deployed is model
    np.testing.assert_array_equal(deployed.apply(dv, X), model.apply(v, X))
