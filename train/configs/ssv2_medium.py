"""RubiksNet-Medium on Something-Something-V2 (8 frames, 224 crops), the published recipe."""

from train.configs import base


def get_config():
    c = base.get_config()
    c.data.name = "rubiks_ssv2"
    c.data.eval_split = "validation"
    c.data.flip = "swap_pairs"      # left/right classes exchange under a flip
    c.model.tier = "medium"
    return c
