"""RubiksNet-Large on UCF101 (TFDS's own `ucf101`, split 1, prepared in the data directory),
fine-tuned from Kinetics with the same knobs: set --config.init_from=<Kinetics workdir>."""

from train.configs import base


def get_config():
    c = base.get_config()
    c.data.name = "ucf101/ucf101_1"
    c.data.eval_split = "test"
    c.model.tier = "large"
    c.optim.base_lr = 0.001
    c.optim.num_epochs = 15
    c.optim.warmup_epochs = 1
    c.optim.decay_epochs = (10, 13)
    return c
