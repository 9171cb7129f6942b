"""Budget statistics of RubiksNet-AQ: the expected fraction of channels shifted in time."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax.traverse_util import flatten_dict

from rubiks_jax.layers.shift import TEMPERATURE_COLLECTION, shifted_fraction


def budget_stats(variables: Mapping) -> dict[str, jax.Array]:
    """Per AttentionShift layer ("layer2_block0/attention_shift" ...): expected shifted fraction
    mean_c (1 - a_c1) at the layer's current temperature. Empty for models without AQ layers."""
    params = flatten_dict(variables["params"], sep="/")
    temps = flatten_dict(variables.get(TEMPERATURE_COLLECTION, {}), sep="/")
    out = {}
    for path, logits in params.items():
        if path.endswith("/attention"):
            layer = path[: -len("/attention")]
            out[layer] = shifted_fraction(logits, temps[f"{layer}/temperature"])
    return out


def mean_budget(variables: Mapping) -> jax.Array:
    """B: the expected shifted fraction averaged over all AQ layers (0 when there are none)."""
    stats = budget_stats(variables)
    return jnp.mean(jnp.stack(list(stats.values()))) if stats else jnp.zeros(())


def budget_loss(variables: Mapping, target: float = 0.125, weight: float = 1.0) -> jax.Array:
    """weight * relu(B - target)^2: keeps the expected shifted fraction at or below the target."""
    return weight * jnp.square(jax.nn.relu(mean_budget(variables) - target))


def set_temperature(variables: Mapping, temperature: float | jax.Array) -> dict:
    """Copy of `variables` with every AttentionShift temperature set to `temperature`."""
    out = dict(variables)
    if TEMPERATURE_COLLECTION in out:
        out[TEMPERATURE_COLLECTION] = jax.tree_util.tree_map(
            lambda t: jnp.full_like(t, temperature), out[TEMPERATURE_COLLECTION])
    return out
