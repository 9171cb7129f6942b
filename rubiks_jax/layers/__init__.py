"""Flax (Linen) layers of RubiksNet and of the layer-level baselines."""

from rubiks_jax.layers.baselines import Conv3DBlock, TSMBlock, layer_blocks
from rubiks_jax.layers.blocks import (VARIANTS, PointwiseConv, RubiksShiftBlock, SqueezeExcite,
                                      conv_init)
from rubiks_jax.layers.shift import (TEMPERATURE_COLLECTION, AttentionShift, RubiksShift,
                                     attention_weights, hard_temporal_shift, shifted_fraction,
                                     tsm_offsets, tsm_shift_init, tsm_temporal_shift,
                                     uniform_shift_init)

__all__ = ["VARIANTS", "TEMPERATURE_COLLECTION", "AttentionShift", "Conv3DBlock", "PointwiseConv",
           "RubiksShift", "RubiksShiftBlock", "SqueezeExcite", "TSMBlock", "attention_weights",
           "conv_init", "hard_temporal_shift", "layer_blocks", "shifted_fraction", "tsm_offsets",
           "tsm_shift_init", "tsm_temporal_shift", "uniform_shift_init"]
