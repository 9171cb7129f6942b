"""Flax (Linen) layers of RubiksNet."""

from rubiks_jax.layers.blocks import (VARIANTS, PointwiseConv, RubiksShiftBlock, SqueezeExcite,
                                      conv_init)
from rubiks_jax.layers.shift import (TEMPERATURE_COLLECTION, AttentionShift, RubiksShift,
                                     attention_weights, hard_temporal_shift, shifted_fraction,
                                     tsm_shift_init, uniform_shift_init)

__all__ = ["VARIANTS", "TEMPERATURE_COLLECTION", "AttentionShift", "PointwiseConv", "RubiksShift",
           "RubiksShiftBlock", "SqueezeExcite", "attention_weights", "conv_init",
           "hard_temporal_shift", "shifted_fraction", "tsm_shift_init", "uniform_shift_init"]
