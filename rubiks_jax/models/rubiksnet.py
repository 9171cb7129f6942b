"""RubiksNet: the four tiers and three variants (docs/DESIGN.md, "Layers and models").

    model = RubiksNet("small", num_classes=174)
    variables = model.init(key, x, train=False)                  # x: (N, T, H, W, 3)
    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"],
                                  rngs={"dropout": key})         # logits: (N, num_classes)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rubiks_jax.layers.blocks import VARIANTS, RubiksShiftBlock, batch_norm, conv_init
from rubiks_jax.models.inputs import check_video

# tier: (base width w, blocks in layer1..4, squeeze-excite)
TIERS = {
    "tiny": (54, (3, 4, 6, 3), False),
    "small": (72, (3, 4, 6, 3), True),
    "medium": (72, (3, 4, 23, 3), False),
    "large": (72, (3, 8, 36, 3), False),
}


class RubiksNet(nn.Module):
    """RubiksNet of a tier ("tiny" | "small" | "medium" | "large") and variant.

    Attributes:
      tier, num_classes, num_frames: architecture (the tier table of docs/DESIGN.md) and output size.
      variant: "rubiks3d" (learnable dt, dh, dw), "rubiks3d_q" (quantized), "rubiks3d_aq"
        (temporal attention shift with a budget, learnable dh, dw).
      dropout_rate: dropout before the per-frame classifier.
      bn_axis_name: device axis for cross-device BatchNorm statistics (under pmap).
      dtype: compute dtype (parameters stay float32); logits are float32.
      shift_init: "uniform" or "tsm" (rubiks3d / rubiks3d_q only).
      hard_attention: AQ: argmax attention, i.e. integer temporal shifts.
      deployed: inference form (rubiks_jax.models.deploy.to_inference).
      learn_temporal_shift: False holds every dt at 0 (a purely spatial network, for ablations).
      impl: implementation of the shift op (None = kernels when built).
    """

    tier: str
    num_classes: int
    num_frames: int = 8
    variant: str = "rubiks3d"
    dropout_rate: float = 0.0
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    shift_init: str = "uniform"
    hard_attention: bool = False
    deployed: bool = False
    learn_temporal_shift: bool = True
    impl: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.tier not in TIERS:
            raise ValueError(f"tier must be one of {sorted(TIERS)}, got {self.tier!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        check_video(x, self.num_frames)
        width, blocks, se = TIERS[self.tier]
        block = lambda features, stride, name: RubiksShiftBlock(  # noqa: E731
            features, stride, variant=self.variant, se=se, shift_init=self.shift_init,
            hard_attention=self.hard_attention, deployed=self.deployed,
            learn_temporal_shift=self.learn_temporal_shift, bn_axis_name=self.bn_axis_name,
            dtype=self.dtype, impl=self.impl, name=name)

        x = x.astype(self.dtype)
        x = nn.Conv(width, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False,
                    dtype=self.dtype, kernel_init=conv_init, name="stem")(x)
        x = block(width, 1, "layer0_block0")(x, train)
        for stage, n in enumerate(blocks, start=1):
            for b in range(n):
                x = block(width * 2 ** (stage - 1), 2 if b == 0 else 1, f"layer{stage}_block{b}")(
                    x, train)
        x = nn.relu(batch_norm(train, self.bn_axis_name, self.dtype, "bn_final")(x))
        x = jnp.mean(x, axis=(2, 3))  # (N, T, C): pooled per frame
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(x)
        return jnp.mean(logits.astype(jnp.float32), axis=1)  # consensus over frames
