"""Inference form of trained RubiksNet variables.

- rubiks3d_q: shifts rounded to integers (floor(d + 0.5), exactly as the quantized forward), run
  through the zero-FLOP integer path.
- rubiks3d_aq: each attention becomes its argmax, an integer temporal shift (parameter
  `temporal_shift`), the temperature state is dropped; the spatial shifts stay fractional.
- rubiks3d: unchanged (its shifts are fractional by design).
The deployed model's outputs equal those of the trained model in eval mode (hard attention for AQ).
"""

from __future__ import annotations

from collections.abc import Mapping

from flax.traverse_util import flatten_dict, unflatten_dict

from rubiks_jax.layers.shift import TEMPERATURE_COLLECTION, hard_temporal_shift
from rubiks_jax.models.rubiksnet import RubiksNet
from rubiks_jax.ops.geometry import round_half_up


def to_inference(model: RubiksNet, variables: Mapping) -> tuple[RubiksNet, dict]:
    """Returns (deployed model, its variables) for a trained `model` and its `variables`."""
    if model.variant == "rubiks3d":
        return model, dict(variables)
    params = flatten_dict(variables["params"], sep="/")
    out = {}
    for path, value in params.items():
        if model.variant == "rubiks3d_q" and path.endswith("/shift/shift"):
            out[path] = round_half_up(value)
        elif model.variant == "rubiks3d_aq" and path.endswith("/attention"):
            out[path[: -len("attention")] + "temporal_shift"] = hard_temporal_shift(value)
        else:
            out[path] = value
    deployed_vars = {k: v for k, v in variables.items()
                     if k not in ("params", TEMPERATURE_COLLECTION)}
    deployed_vars["params"] = unflatten_dict(out, sep="/")
    return model.clone(deployed=True, hard_attention=True), deployed_vars

