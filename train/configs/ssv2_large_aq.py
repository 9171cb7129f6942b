"""RubiksNet-Large-AQ (temporal attention shift, budget 0.125) on Something-Something-V2."""

from train.configs import ssv2_large


def get_config():
    c = ssv2_large.get_config()
    c.model.variant = "rubiks3d_aq"
    c.aq.budget = 0.125
    return c
