"""RubiksNet on Something-Something-V2 (8 frames, 224 crops), the published recipe. The argument
picks the tier and variant: --config train/configs/ssv2.py:<tier>[_aq], tier tiny | small | medium
| large; "_aq" is RubiksNet-AQ (temporal attention shift, budget 0.125), e.g. ssv2.py:large_aq."""

import ml_collections

from rubiks_jax.models import TIERS
from train.configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = arg or ""
    tier, aq = arg.removesuffix("_aq"), arg.endswith("_aq")
    if tier not in TIERS:
        raise ValueError(f"train/configs/ssv2.py needs a model after a colon: ssv2.py:<tier> or "
                         f"ssv2.py:<tier>_aq with tier in {list(TIERS)}, got {arg or None!r}")
    c = base.get_config()
    c.data.name = "rubiks_ssv2"
    c.data.eval_split = "validation"
    c.data.flip = "swap_pairs"      # left/right classes exchange under a flip
    c.model.tier = tier
    if aq:
        c.model.variant = "rubiks3d_aq"
        c.model.budget = 0.125
    return c
