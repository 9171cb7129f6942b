"""Blocks on channels-last video features (N, T, H, W, C): squeeze-excite and the RubiksShift block.

Convolutions are per frame (2-D kernels with N and T as batch axes), BatchNorm statistics are taken
over (N, T, H, W), optionally across devices through `bn_axis_name`.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rubiks_jax.layers.shift import AttentionShift, RubiksShift

VARIANTS = ("rubiks3d", "rubiks3d_q", "rubiks3d_aq")

# normal(0, sqrt(2 / (k * k * Cout))): He init over the fan-out, untruncated (docs/DESIGN.md,
# "Layers and models").
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def batch_norm(train: bool, axis_name: str | None, dtype: Any, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        axis_name=axis_name if train else None, dtype=dtype, name=name)


class PointwiseConv(nn.Conv):
    """A 1x1 `nn.Conv` computed as a matrix product over the channel axis.

    Same attributes, parameters ("kernel" of shape (1, 1, Cin, Cout), "bias") and results as the
    1x1 `nn.Conv` it replaces, so checkpoints move freely between the two. XLA:CPU runs 1x1
    convolutions and their gradients several times slower than the equivalent dot (forward+backward
    at (8, 8, 56, 56, 72): 478 ms as a convolution, 135 ms as a dot, 2-core VM); on GPUs both become
    the same GEMM. Spatial stride s samples rows and columns 0, s, 2s, ... as "SAME" and "VALID"
    padding do for a 1x1 kernel.
    """

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        kernel_size = tuple(self.kernel_size)
        if kernel_size != (1, 1):
            raise ValueError(f"PointwiseConv: kernel_size must be (1, 1), got {kernel_size}")
        if self.feature_group_count != 1 or self.mask is not None:
            raise ValueError("PointwiseConv: feature groups and kernel masks are not supported")
        if not (self.padding in ("SAME", "VALID", 0) or self.padding == ((0, 0), (0, 0))):
            raise ValueError(f"PointwiseConv: padding must be SAME, VALID or zero, got {self.padding!r}")
        for name, dil in (("input_dilation", self.input_dilation),
                          ("kernel_dilation", self.kernel_dilation)):
            if dil not in (None, 1) and tuple(dil) != (1, 1):
                raise ValueError(f"PointwiseConv: {name} must be 1, got {dil}")
        if inputs.ndim < 3:
            raise ValueError(f"PointwiseConv: input must be (..., H, W, C), got shape {inputs.shape}")
        strides = (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides or (1, 1))
        kernel = self.param("kernel", self.kernel_init, (1, 1, inputs.shape[-1], self.features),
                            self.param_dtype)
        bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)
        x = inputs[..., ::strides[0], ::strides[1], :]
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = jax.lax.dot_general(x, kernel[0, 0], (((x.ndim - 1,), (0,)), ((), ())),
                                precision=self.precision)
        return y if bias is None else y + bias


def conv1x1(features: int, stride: int, dtype: Any, name: str) -> nn.Conv:
    return PointwiseConv(features, (1, 1), strides=(stride, stride), use_bias=False, dtype=dtype,
                         kernel_init=conv_init, name=name)


class SqueezeExcite(nn.Module):
    """Per-frame squeeze-excite: pool over (H, W), Dense(C // reduction), ReLU, Dense(C), sigmoid.

    The Dense layers have no bias, as in the published network (its `se.fc.0` and `se.fc.2`)."""

    reduction: int = 12
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        s = jnp.mean(x, axis=(-3, -2), keepdims=True)
        s = nn.relu(nn.Dense(max(1, c // self.reduction), use_bias=False, dtype=self.dtype,
                             name="reduce")(s))
        s = nn.sigmoid(nn.Dense(c, use_bias=False, dtype=self.dtype, name="expand")(s))
        return x * s


class RubiksShiftBlock(nn.Module):
    """Pre-activation RubiksShift block (expansion 1), docs/DESIGN.md, "Layers and models".

    a = relu(bn1(x)); shortcut = x or conv1x1(a, stride); y = conv1x1(a) [after the temporal
    AttentionShift for rubiks3d_aq]; y = relu(bn2(y)); y = shift(y, stride (1, s, s)); [SE];
    y = conv1x1(y); return y + shortcut.

    Attributes:
      features: output channels Cout.
      stride: spatial stride s of the block (applied by the shift and the shortcut).
      variant: "rubiks3d" | "rubiks3d_q" | "rubiks3d_aq".
      se: squeeze-excite after the shift (the Small tier).
      hard_attention: AQ only: argmax attention (an integer temporal shift).
      deployed: inference form (see rubiks_jax.models.deploy): integer shifts on the zero-FLOP path.
      learn_temporal_shift: False holds dt at 0 (spatial shift only): the ablation whose accuracy
        on motion-defined classes should stay near chance.
    """

    features: int
    stride: int = 1
    variant: str = "rubiks3d"
    se: bool = False
    shift_init: str = "uniform"
    hard_attention: bool = False
    deployed: bool = False
    learn_temporal_shift: bool = True
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    impl: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        norm = functools.partial(batch_norm, train, self.bn_axis_name, self.dtype)
        a = nn.relu(norm("bn1")(x))
        if self.stride != 1 or x.shape[-1] != self.features:
            shortcut = conv1x1(self.features, self.stride, self.dtype, "shortcut")(a)
        else:
            shortcut = x
        aq = self.variant == "rubiks3d_aq"
        if aq:
            a = AttentionShift(hard=self.hard_attention, deployed=self.deployed,
                               name="attention_shift")(a)
        y = conv1x1(self.features, 1, self.dtype, "conv1")(a)
        y = nn.relu(norm("bn2")(y))
        spatial_only = aq or not self.learn_temporal_shift
        y = RubiksShift(axes="hw" if spatial_only else "thw", stride=(1, self.stride, self.stride),
                        quantize=self.variant == "rubiks3d_q",
                        integer=self.deployed and self.variant == "rubiks3d_q",
                        shift_init=self.shift_init, impl=self.impl, name="shift")(y)
        if self.se:
            y = SqueezeExcite(dtype=self.dtype, name="se")(y)
        y = conv1x1(self.features, 1, self.dtype, "conv2")(y)
        return y + shortcut
