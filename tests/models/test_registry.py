"""The model registry: names and model configs to modules, option checking, the families' losses."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rubiks_jax.layers import TEMPERATURE_COLLECTION
from rubiks_jax.models import MODELS, RubiksNet, budget_loss, create_model, get_loss, mean_budget
from rubiks_jax.models.tsm import TSMResNet


def test_names_and_configs_build_the_registered_modules():
    assert set(MODELS) == {"rubiksnet", "tsm"}
    model = create_model("rubiksnet", 174, tier="small", variant="rubiks3d_q", num_frames=4)
    assert model == RubiksNet("small", 174, num_frames=4, variant="rubiks3d_q")
    config = {"arch": "tsm", "depth": 18, "dtype": "bfloat16", "impl": "",
              "tier": "large", "variant": "rubiks3d_aq", "budget": 0.1}  # others' options ignored
    assert create_model(config, 10, num_frames=2) == TSMResNet(18, 10, num_frames=2,
                                                               dtype=jnp.bfloat16)
    assert create_model({"arch": "rubiksnet", "tier": "tiny", "impl": ""}, 5).impl is None
    assert create_model({"arch": "tsm", "depth": 18}, 5, depth=50).depth == 50  # keywords win


def test_unknown_family_or_option_is_an_error():
    with pytest.raises(ValueError, match=r"unknown model family 'resnet'.*rubiksnet"):
        create_model("resnet", 10)
    with pytest.raises(ValueError, match=r"unknown model options \['tire'\]"):
        create_model("rubiksnet", 10, tire="tiny")
    with pytest.raises(ValueError, match="under 'arch'"):
        get_loss({"tier": "tiny"})


def _aq_variables(temperature: float) -> dict:
    logits = jax.random.uniform(jax.random.PRNGKey(0), (6, 3))
    return {"params": {"block": {"attention": logits}},
            TEMPERATURE_COLLECTION: {"block": {"temperature": jnp.asarray(temperature)}}}


def test_families_supply_their_loss():
    logits = jax.random.normal(jax.random.PRNGKey(1), (4, 7))
    labels = jnp.array([0, 3, 6, 1])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    variables = _aq_variables(0.5)
    for spec in ("tsm", "rubiksnet", {"arch": "rubiksnet", "variant": "rubiks3d_q"}):
        loss, metrics = get_loss(spec)(logits, labels, variables)
        assert loss == ce and set(metrics) == {"cross_entropy"}
    aq = get_loss({"arch": "rubiksnet", "variant": "rubiks3d_aq", "budget": 0.0,
                   "budget_weight": 3.0})
    loss, metrics = aq(logits, labels, variables)
    np.testing.assert_allclose(loss, ce + budget_loss(variables, 0.0, 3.0), rtol=1e-6)
    assert metrics["budget"] == mean_budget(variables) > 0 and metrics["cross_entropy"] == ce
