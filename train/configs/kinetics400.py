"""RubiksNet-Large on Kinetics-400 (our builder, files in manual_dir)."""

from train.configs import base


def get_config():
    c = base.get_config()
    c.data.name = "rubiks_kinetics400"
    c.data.eval_split = "validate"
    c.model.tier = "large"
    c.optim.num_epochs = 100
    c.optim.decay_epochs = (40, 80)
    return c
