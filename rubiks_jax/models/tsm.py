"""TSM ResNet baselines (ResNet18 / ResNet50 with the temporal shift module), channels last.

In every residual branch, before its first convolution, C/8 channels read the next frame and C/8
the previous one (`rubiks_jax.layers.tsm_temporal_shift`, TSM's fixed, zero-FLOP shift); the rest
stay. Convolutions are 2-D
per frame, BatchNorm statistics over (N, T, H, W); post-activation ResNet v1.5 (stride on the 3x3).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rubiks_jax.layers.blocks import batch_norm, conv1x1, conv_init
from rubiks_jax.layers.shift import tsm_temporal_shift
from rubiks_jax.models.inputs import check_video

DEPTHS = {18: ("basic", (2, 2, 2, 2)), 50: ("bottleneck", (3, 4, 6, 3))}


class TSMBasicBlock(nn.Module):
    features: int
    stride: int = 1
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        norm = functools.partial(batch_norm, train, self.bn_axis_name, self.dtype)
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, kernel_init=conv_init)
        y = tsm_temporal_shift(x)
        y = conv(self.features, (3, 3), (self.stride, self.stride), padding=((1, 1), (1, 1)),
                 name="conv1")(y)
        y = nn.relu(norm("bn1")(y))
        y = conv(self.features, (3, 3), padding=((1, 1), (1, 1)), name="conv2")(y)
        y = norm("bn2")(y)
        return nn.relu(y + _shortcut(x, self.features, self.stride, norm, self.dtype))


class TSMBottleneck(nn.Module):
    features: int
    stride: int = 1
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        norm = functools.partial(batch_norm, train, self.bn_axis_name, self.dtype)
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, kernel_init=conv_init)
        y = tsm_temporal_shift(x)
        y = nn.relu(norm("bn1")(conv1x1(self.features, 1, self.dtype, "conv1")(y)))
        y = conv(self.features, (3, 3), (self.stride, self.stride), padding=((1, 1), (1, 1)),
                 name="conv2")(y)
        y = nn.relu(norm("bn2")(y))
        y = norm("bn3")(conv1x1(self.features * 4, 1, self.dtype, "conv3")(y))
        return nn.relu(y + _shortcut(x, self.features * 4, self.stride, norm, self.dtype))


def _shortcut(x, features, stride, norm, dtype):
    if stride == 1 and x.shape[-1] == features:
        return x
    return norm("shortcut_bn")(conv1x1(features, stride, dtype, "shortcut")(x))


class TSMResNet(nn.Module):
    """TSM-ResNet{18, 50}: x (N, T, H, W, 3) -> logits (N, num_classes), frames averaged."""

    depth: int
    num_classes: int
    num_frames: int = 8
    dropout_rate: float = 0.0
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.depth not in DEPTHS:
            raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {self.depth}")
        check_video(x, self.num_frames)
        kind, blocks = DEPTHS[self.depth]
        block_cls = TSMBasicBlock if kind == "basic" else TSMBottleneck
        x = x.astype(self.dtype)
        x = nn.Conv(64, (7, 7), (2, 2), padding=((3, 3), (3, 3)), use_bias=False,
                    dtype=self.dtype, kernel_init=conv_init, name="stem")(x)
        x = nn.relu(batch_norm(train, self.bn_axis_name, self.dtype, "stem_bn")(x))
        x = nn.max_pool(x, (1, 3, 3), (1, 2, 2), padding=((0, 0), (1, 1), (1, 1)))
        for stage, n in enumerate(blocks, start=1):
            for b in range(n):
                stride = 2 if b == 0 and stage > 1 else 1
                x = block_cls(64 * 2 ** (stage - 1), stride, self.bn_axis_name, self.dtype,
                              name=f"layer{stage}_block{b}")(x, train)
        x = jnp.mean(x, axis=(2, 3))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(x)
        return jnp.mean(logits.astype(jnp.float32), axis=1)
