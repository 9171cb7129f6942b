"""The three blocks of the paper's layer-level comparison (docs/DESIGN.md, "Layers and models";
the paper's figures in "Published figures"), at equal input and output channels and stride 1, all
pre-activation residual blocks with two convolutions:

- Conv3DBlock: two 3x3x3 convolutions.
- TSMBlock: two (fixed TSM temporal shift + 3x3 2-D convolution).
- RubiksShiftBlock (rubiks_jax.layers.blocks): two 1x1 convolutions around a learnable 3D shift.

Each maps (N, T, H, W, C) to the same shape.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rubiks_jax.layers.blocks import RubiksShiftBlock, batch_norm, conv_init
from rubiks_jax.layers.shift import tsm_temporal_shift


class Conv3DBlock(nn.Module):
    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        norm = functools.partial(batch_norm, train, None, self.dtype)
        conv = functools.partial(nn.Conv, self.features, (3, 3, 3), padding="SAME", use_bias=False,
                                 dtype=self.dtype, kernel_init=conv_init)
        y = conv(name="conv1")(nn.relu(norm("bn1")(x)))
        y = conv(name="conv2")(nn.relu(norm("bn2")(y)))
        return y + x


class TSMBlock(nn.Module):
    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        norm = functools.partial(batch_norm, train, None, self.dtype)
        conv = functools.partial(nn.Conv, self.features, (3, 3), padding=((1, 1), (1, 1)),
                                 use_bias=False, dtype=self.dtype, kernel_init=conv_init)
        y = conv(name="conv1")(tsm_temporal_shift(nn.relu(norm("bn1")(x))))
        y = conv(name="conv2")(tsm_temporal_shift(nn.relu(norm("bn2")(y))))
        return y + x


def layer_blocks(features: int = 72, dtype: Any = jnp.float32,
                 impl: str | None = None) -> dict[str, nn.Module]:
    """The three compared blocks, by name, in the order of the paper's figure."""
    return {"conv3d": Conv3DBlock(features, dtype=dtype),
            "tsm": TSMBlock(features, dtype=dtype),
            "rubiks_shift": RubiksShiftBlock(features, 1, dtype=dtype, impl=impl)}
